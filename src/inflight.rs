//! Inflight I/O tracking (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD): a shared-memory record of
//! which descriptors the device popped and has not completed, so that after a backend crash
//! and reconnect they are handed out again in their original order.

use std::sync::atomic::{compiler_fence, Ordering};

use crate::abi::*;
use crate::device::Dev;
use crate::mmap::Mapping;
use crate::queue::packed_ring::{is_avail, PackedDesc, PackedRing, Pos};
use crate::queue::Fault;

/// The version written into a fresh inflight area.
pub const INFLIGHT_VERSION: u16 = 1;
const INFLIGHT_ALIGNMENT: u64 = 64;

/// Bytes of one queue's inflight area, as QEMU computes it (the frontend sizes the fd so).
pub fn queue_region_size(queue_size: u16) -> u64 {
    let raw = std::mem::size_of::<VuDescStateSplit>() as u64 * u64::from(queue_size) + 2;
    raw.div_ceil(INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT
}

/// A split queue's inflight area (the spec's `QueueRegionSplit`): header fields and the state
/// of each descriptor, every access volatile (the frontend shares the memory) and every index
/// checked against the mapping (`VuDev.inflight_info`, set by SET_INFLIGHT_FD together with
/// `vq.inflight`); the frontend's own `desc_num` is never trusted for bounds.
pub struct InflightArea {
    area: *mut VuVirtqInflight,
    /// Bytes of the mapping from `area` on (0 when `area` lies outside it).
    room: usize,
}

const HEADER: usize = std::mem::size_of::<VuVirtqInflight>();
const STATE: usize = std::mem::size_of::<VuDescStateSplit>();

impl InflightArea {
    /// The area of queue `vq` when inflight tracking is on (`None` otherwise); it has no room
    /// when `vq.inflight` lies outside the mapping.
    #[inline(always)]
    pub fn of(dev: Dev, vq: &VuVirtq) -> Option<InflightArea> {
        if vq.inflight.is_null() || !tracking(dev) {
            return None;
        }
        Some(InflightArea::in_mapping(dev, vq))
    }

    /// The area `vq.inflight` points to, with the room the mapping has from there (none when
    /// it lies outside), whether or not tracking is on.
    #[inline(always)]
    fn in_mapping(dev: Dev, vq: &VuVirtq) -> InflightArea {
        let info = dev.inflight_info();
        // Below the mapping's start the offset wraps past its size.
        let off = (vq.inflight as usize).wrapping_sub(info.addr as usize);
        let room = (info.size as usize).saturating_sub(off);
        InflightArea { area: vq.inflight, room }
    }

    /// How many descriptor states the mapping holds for this queue.
    pub fn capacity(&self) -> usize {
        self.room.saturating_sub(HEADER) / STATE
    }

    fn header_ok(&self) -> bool {
        self.capacity() > 0
    }

    pub fn version(&self) -> u16 {
        debug_assert!(self.header_ok());
        // SAFETY: `area` heads a queue area inside the mapping (capacity() > 0: callers check).
        unsafe { std::ptr::addr_of!((*self.area).version).read_volatile() }
    }

    pub fn set_version(&self, v: u16) {
        // SAFETY: as in `version`.
        unsafe { std::ptr::addr_of_mut!((*self.area).version).write_volatile(v) }
    }

    pub fn desc_num(&self) -> u16 {
        // SAFETY: as in `version`.
        unsafe { std::ptr::addr_of!((*self.area).desc_num).read_volatile() }
    }

    pub fn used_idx(&self) -> u16 {
        // SAFETY: as in `version`.
        unsafe { std::ptr::addr_of!((*self.area).used_idx).read_volatile() }
    }

    pub fn set_used_idx(&self, v: u16) {
        // SAFETY: as in `version`.
        unsafe { std::ptr::addr_of_mut!((*self.area).used_idx).write_volatile(v) }
    }

    pub fn last_batch_head(&self) -> u16 {
        // SAFETY: as in `version`.
        unsafe { std::ptr::addr_of!((*self.area).last_batch_head).read_volatile() }
    }

    pub fn set_last_batch_head(&self, v: u16) {
        // SAFETY: as in `version`.
        unsafe { std::ptr::addr_of_mut!((*self.area).last_batch_head).write_volatile(v) }
    }

    /// The state of descriptor `i`, if the mapping holds it: the header and `i + 1` states
    /// from `area` on (one comparison, no division: a pop and a push ask this).
    #[inline(always)]
    pub fn slot(&self, i: usize) -> Option<DescSlot> {
        let need = i.checked_add(1)?.checked_mul(STATE)?.checked_add(HEADER)?;
        if need > self.room {
            return None;
        }
        // SAFETY: the header and i + 1 states lie in the mapping from `area` on (checked above).
        let p =
            unsafe { (std::ptr::addr_of_mut!((*self.area).desc) as *mut VuDescStateSplit).add(i) };
        Some(DescSlot(p))
    }
}

/// One descriptor state of a split inflight area (checked by `InflightArea::slot`).
pub struct DescSlot(*mut VuDescStateSplit);

impl DescSlot {
    pub fn inflight(&self) -> u8 {
        // SAFETY: a state inside the mapping (see `InflightArea::slot`).
        unsafe { std::ptr::addr_of!((*self.0).inflight).read_volatile() }
    }
    pub fn set_inflight(&self, v: u8) {
        // SAFETY: as above.
        unsafe { std::ptr::addr_of_mut!((*self.0).inflight).write_volatile(v) }
    }
    pub fn counter(&self) -> u64 {
        // SAFETY: as above.
        unsafe { std::ptr::addr_of!((*self.0).counter).read_volatile() }
    }
    pub fn set_counter(&self, v: u64) {
        // SAFETY: as above.
        unsafe { std::ptr::addr_of_mut!((*self.0).counter).write_volatile(v) }
    }
}

/// Whether the device tracks inflight elements (acked the feature; its queues with an area).
#[inline(always)]
pub fn tracking(dev: Dev) -> bool {
    dev.has_protocol_feature(VhostUserProtocolFeature::VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)
}

/// The state slot of descriptor `idx` in the queue's area, if tracking is on.
#[inline(always)]
fn slot(
    dev: Dev,
    vq: &VuVirtq,
    qidx: usize,
    idx: u32,
) -> Result<Option<(InflightArea, DescSlot)>, Fault> {
    let Some(area) = InflightArea::of(dev, vq) else { return Ok(None) };
    match area.slot(idx as usize) {
        Some(s) => Ok(Some((area, s))),
        None => Err(Fault::InflightSlot { queue: qidx, desc: idx }),
    }
}

/// Records that `head` was popped (the original's `vu_queue_inflight_get`).
#[inline(always)]
pub fn on_pop(dev: Dev, vq: &mut VuVirtq, qidx: usize, head: u32) -> Result<(), Fault> {
    // Checked inline: without an inflight area (most devices) the pop pays one load.
    if vq.inflight.is_null() {
        return Ok(());
    }
    on_pop_tracked(dev, vq, qidx, head)
}

#[inline(never)]
fn on_pop_tracked(dev: Dev, vq: &mut VuVirtq, qidx: usize, head: u32) -> Result<(), Fault> {
    track_pop(dev, vq, qidx, head)
}

/// `on_pop` for a queue with `vq.inflight` set, inline (the express lane's pop; the general
/// path calls it out of line through `on_pop`).
#[inline(always)]
pub fn track_pop(dev: Dev, vq: &mut VuVirtq, qidx: usize, head: u32) -> Result<(), Fault> {
    if let Some((_, s)) = slot(dev, vq, qidx, head)? {
        let counter = vq.counter;
        vq.counter = counter.wrapping_add(1);
        // The frontend may read the state at any time.
        s.set_counter(counter);
        s.set_inflight(1);
    }
    Ok(())
}

/// Before publishing `head` as used: remember it as the last batch head.
#[inline]
pub fn before_put(dev: Dev, vq: &mut VuVirtq, qidx: usize, head: u32) -> Result<(), Fault> {
    TrackedPut::begin(dev, vq, qidx, head).map(drop)
}

/// After publishing `head` as used: clear it and record the used index.
#[inline]
pub fn after_put(dev: Dev, vq: &mut VuVirtq, qidx: usize, head: u32) -> Result<(), Fault> {
    if let Some(put) = TrackedPut::of(slot(dev, vq, qidx, head)?) {
        put.finish(vq);
    }
    Ok(())
}

/// A tracked element being put (`before_put` done): `finish` once it is published.
pub struct TrackedPut(InflightArea, DescSlot);

impl TrackedPut {
    fn of(slot: Option<(InflightArea, DescSlot)>) -> Option<TrackedPut> {
        slot.map(|(area, s)| TrackedPut(area, s))
    }

    /// `before_put` for `head`, keeping what `after_put` needs: `None` without an inflight
    /// area, `Err` when the area has no slot for `head` (nothing changed then).
    #[inline(always)]
    pub fn begin(
        dev: Dev,
        vq: &VuVirtq,
        qidx: usize,
        head: u32,
    ) -> Result<Option<TrackedPut>, Fault> {
        if vq.inflight.is_null() || !tracking(dev) {
            return Ok(None);
        }
        match TrackedPut::begin_tracked(dev, vq, head) {
            Some(put) => Ok(Some(put)),
            None => Err(Fault::InflightSlot { queue: qidx, desc: head }),
        }
    }

    /// `begin` for a queue with an area and a device that acked the feature (the express
    /// lane checked both): `None` when the area has no slot for `head` (nothing changed).
    #[inline(always)]
    pub fn begin_tracked(dev: Dev, vq: &VuVirtq, head: u32) -> Option<TrackedPut> {
        let area = InflightArea::in_mapping(dev, vq);
        let s = area.slot(head as usize)?;
        area.set_last_batch_head(head as u16);
        Some(TrackedPut(area, s))
    }

    /// `after_put`: the element is no longer in flight; the area records the used index.
    #[inline]
    pub fn finish(self, vq: &VuVirtq) {
        self.finish_at(vq.used_idx);
    }

    /// `finish` with the queue's used index as the caller just set it.
    #[inline(always)]
    pub fn finish_at(self, used_idx: u16) {
        let TrackedPut(area, s) = self;
        compiler_fence(Ordering::SeqCst);
        s.set_inflight(0);
        compiler_fence(Ordering::SeqCst);
        area.set_used_idx(used_idx);
    }
}

/// On queue start (SET_VRING_KICK): rebuild `inuse` and the resubmit list from the area, as
/// the original's `vu_check_queue_inflights`. `used_idx` is the ring's current used index.
pub fn check_queue(
    dev: Dev,
    vq: &mut VuVirtq,
    _qidx: usize,
    used_idx: Option<u16>,
) -> Result<(), String> {
    if !dev.has_protocol_feature(VhostUserProtocolFeature::VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) {
        return Ok(());
    }
    let area = InflightArea::of(dev, vq).ok_or("no inflight area")?;
    if !area.header_ok() {
        return Err("inflight area outside the inflight mapping".into());
    }
    if area.version() == 0 {
        area.set_version(INFLIGHT_VERSION);
        return Ok(());
    }
    let used_idx = used_idx.ok_or("rings not mapped")?;
    vq.used_idx = used_idx;
    free_resubmit_list(vq);
    vq.counter = 0;
    if area.used_idx() != used_idx {
        if let Some(s) = area.slot(usize::from(area.last_batch_head())) {
            s.set_inflight(0);
        }
        compiler_fence(Ordering::SeqCst);
        area.set_used_idx(used_idx);
    }
    let desc_num = usize::from(area.desc_num()).min(area.capacity());
    let mut pending: Vec<VuVirtqInflightDesc> = (0..desc_num)
        .filter_map(|i| area.slot(i).map(|s| (i, s)))
        .filter(|(_, s)| s.inflight() == 1)
        .map(|(i, s)| VuVirtqInflightDesc { index: i as u16, counter: s.counter() })
        .collect();
    vq.inuse = pending.len() as u32;
    let last = vq.inuse.wrapping_add(u32::from(used_idx)) as u16;
    vq.last_avail_idx = last;
    vq.shadow_avail_idx = last;
    if !pending.is_empty() {
        // Oldest last: pop takes from the end, so requests resume in fetch order.
        pending.sort_by_key(|d| std::cmp::Reverse(d.counter));
        vq.counter = pending[0].counter.wrapping_add(1);
        install_resubmit_list(vq, &pending)?;
    }
    // In case of an I/O hang after reconnecting: make the device look at the queue.
    if vq.kick_fd >= 0 {
        crate::fd::eventfd_write(vq.kick_fd, dev.flags().guard_sigpipe())
            .map_err(|e| format!("kick eventfd write: {e}"))?;
    }
    Ok(())
}

/// Hands `list` (resubmitted last first) to the queue as its malloc'd resubmit list.
fn install_resubmit_list(vq: &mut VuVirtq, list: &[VuVirtqInflightDesc]) -> Result<(), String> {
    let bytes = std::mem::size_of_val(list);
    // SAFETY: malloc of a bounded size, checked for NULL; C code may look at (and free) it.
    let p = unsafe { libc::malloc(bytes) } as *mut VuVirtqInflightDesc;
    if p.is_null() {
        return Err("out of memory".into());
    }
    // SAFETY: `p` holds list.len() entries.
    unsafe { std::ptr::copy_nonoverlapping(list.as_ptr(), p, list.len()) };
    vq.resubmit_list = p;
    vq.resubmit_num = list.len() as u16;
    Ok(())
}

/// The head `next_resubmit` would return, without taking it (the list is not empty).
pub fn peek_resubmit(vq: &VuVirtq) -> u16 {
    // SAFETY: the list holds resubmit_num > 0 entries (the caller checked), malloc'd by
    // `check_queue`.
    unsafe { (*vq.resubmit_list.add(usize::from(vq.resubmit_num) - 1)).index }
}

/// Takes the next descriptor to resubmit (the list is not empty), freeing the list after the
/// last one.
pub fn next_resubmit(vq: &mut VuVirtq) -> u16 {
    vq.resubmit_num -= 1;
    // SAFETY: the list holds the original resubmit_num entries (malloc'd by `check_queue`).
    let head = unsafe { (*vq.resubmit_list.add(usize::from(vq.resubmit_num))).index };
    if vq.resubmit_num == 0 {
        free_resubmit_list(vq);
    }
    head
}

/// Frees the resubmit list (allocated with malloc, as C code may look at it).
pub fn free_resubmit_list(vq: &mut VuVirtq) {
    if !vq.resubmit_list.is_null() {
        // SAFETY: allocated by `check_queue` with malloc and owned by the queue.
        unsafe { libc::free(vq.resubmit_list.cast()) };
        vq.resubmit_list = std::ptr::null_mut();
    }
    vq.resubmit_num = 0;
}

// ---- packed rings --------------------------------------------------------------------------

/// One descriptor's state in a packed queue's inflight area (the spec's `DescStatePacked`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct DescStatePacked {
    inflight: u8,
    padding: u8,
    next: u16,
    last: u16,
    num: u16,
    counter: u64,
    id: u16,
    flags: u16,
    len: u32,
    addr: u64,
}

/// The header of a packed queue's inflight area (the spec's `QueueRegionPacked`; 29 bytes of
/// fields, the descriptor states from offset 32).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct QueueRegionPacked {
    features: u64,
    version: u16,
    desc_num: u16,
    free_head: u16,
    old_free_head: u16,
    used_idx: u16,
    old_used_idx: u16,
    used_wrap_counter: u8,
    old_used_wrap_counter: u8,
    padding: [u8; 7],
}

const _: () = {
    assert!(std::mem::size_of::<DescStatePacked>() == 32);
    assert!(std::mem::size_of::<QueueRegionPacked>() == 32);
};

/// Bytes of one packed queue's inflight area (as DPDK sizes it: header, 32 bytes a descriptor,
/// 64-byte aligned).
pub fn packed_queue_region_size(queue_size: u16) -> u64 {
    let raw = 32 * u64::from(queue_size) + 32;
    raw.div_ceil(INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT
}

/// Bytes of one queue's inflight area for the ring layout the frontend negotiated.
pub fn region_size(dev: Dev, queue_size: u16) -> u64 {
    if crate::queue::is_packed(dev) {
        packed_queue_region_size(queue_size)
    } else {
        queue_region_size(queue_size)
    }
}

/// A packed queue's inflight area, for one queue call: header fields and descriptor states,
/// every access volatile (the frontend shares it) and every index checked against the
/// mapping, never against the frontend's `desc_num`.
pub struct PackedInflight {
    area: *mut QueueRegionPacked,
    map_cap: u16,
    cap: u16,
    counter: u64,
    head: u16,
    /// While `record` records a chain: the entry its next descriptor goes to, and how many
    /// it recorded (the area's free head and the head's count are written at its end).
    free: u16,
    recorded: u16,
    /// Whether `record` started a chain (`head` is its head entry): `abort_pop` takes back
    /// only what was recorded.
    recording: bool,
}

macro_rules! hdr {
    ($get:ident, $set:ident, $f:ident, $t:ty) => {
        #[inline]
        fn $get(&self) -> $t {
            // SAFETY: `area` heads a mapped packed queue area (see `packed`).
            unsafe { std::ptr::addr_of!((*self.area).$f).read_volatile() }
        }
        #[inline]
        fn $set(&self, v: $t) {
            // SAFETY: as above.
            unsafe { std::ptr::addr_of_mut!((*self.area).$f).write_volatile(v) }
        }
    };
}

macro_rules! entry {
    ($get:ident, $set:ident, $f:ident, $t:ty) => {
        #[inline]
        fn $get(&self, i: u16) -> Result<$t, Fault> {
            let d = self.entry(i)?;
            // SAFETY: `entry` checked that `d` is a descriptor state inside the mapping.
            Ok(unsafe { std::ptr::addr_of!((*d).$f).read_volatile() })
        }
        #[inline]
        fn $set(&self, i: u16, v: $t) -> Result<(), Fault> {
            let d = self.entry(i)?;
            // SAFETY: as above.
            unsafe { std::ptr::addr_of_mut!((*d).$f).write_volatile(v) };
            Ok(())
        }
    };
}

/// The inflight area of packed queue `vq`, when inflight tracking is on.
#[inline]
pub fn packed(dev: Dev, vq: &VuVirtq, _qidx: usize) -> Result<Option<PackedInflight>, Fault> {
    if vq.inflight.is_null()
        || !dev.has_protocol_feature(VhostUserProtocolFeature::VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)
    {
        return Ok(None);
    }
    let info = dev.inflight_info();
    let (start, end) =
        (info.addr as usize, (info.addr as usize).saturating_add(info.size as usize));
    let area = vq.inflight as usize;
    if area < start || area >= end || end - area < std::mem::size_of::<QueueRegionPacked>() {
        return Err(Fault::InflightArea);
    }
    let cap = (end - area - std::mem::size_of::<QueueRegionPacked>())
        / std::mem::size_of::<DescStatePacked>();
    let map_cap = u16::try_from(cap.min(usize::from(u16::MAX))).unwrap_or(u16::MAX);
    let mut area = PackedInflight {
        area: vq.inflight.cast(),
        map_cap,
        cap: 0,
        counter: vq.counter,
        head: 0,
        free: 0,
        recorded: 0,
        recording: false,
    };
    // The states a queue owns: `desc_num` (its queue size), within the mapping.
    area.cap = area.desc_num().min(map_cap);
    Ok(Some(area))
}

impl PackedInflight {
    hdr!(version, set_version, version, u16);
    hdr!(free_head, set_free_head, free_head, u16);
    hdr!(old_free_head, set_old_free_head, old_free_head, u16);
    hdr!(used_idx, set_used_idx, used_idx, u16);
    hdr!(old_used_idx, set_old_used_idx, old_used_idx, u16);
    hdr!(used_wrap, set_used_wrap, used_wrap_counter, u8);
    hdr!(old_used_wrap, set_old_used_wrap, old_used_wrap_counter, u8);
    hdr!(desc_num, set_desc_num, desc_num, u16);
    entry!(inflight, set_inflight, inflight, u8);
    entry!(next, set_next, next, u16);
    entry!(last, set_last, last, u16);
    entry!(num, set_num, num, u16);
    entry!(counter_of, set_counter, counter, u64);

    /// Descriptor state `i`, if the mapping holds it.
    #[inline]
    fn entry(&self, i: u16) -> Result<*mut DescStatePacked, Fault> {
        if i >= self.cap {
            return Err(Fault::InflightArea);
        }
        // SAFETY: i < cap states follow the header inside the mapping (see `packed`).
        Ok(unsafe { (self.area.add(1) as *mut DescStatePacked).add(usize::from(i)) })
    }

    /// The fetch counter to store back into `VuVirtq.counter`.
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// Records ring descriptor `d` of the chain being popped (the spec's steps for
    /// "receiving available buffers"). Inline: the express lane's packed pop calls it once
    /// per descriptor, and a call costs that loop its registers (about 100 instructions a
    /// request).
    ///
    /// The spec moves the free head at each descriptor and counts them in the head entry;
    /// here both are kept in `self` and written with the chain's last descriptor, where the
    /// old free head moves too. What a crash leaves is the same: recovery starts from the old
    /// free head, which a chain moves only once it is recorded whole, and reads the counts of
    /// chains in flight only.
    #[inline(always)]
    pub fn record(&mut self, d: &PackedDesc, first: bool, last: bool) -> Result<(), Fault> {
        if first {
            let head = self.old_free_head();
            self.head = head;
            self.free = self.free_head();
            self.recorded = 0;
            self.recording = true;
            self.set_counter(head, self.counter)?;
            self.counter = self.counter.wrapping_add(1);
            self.set_inflight(head, 1)?;
        }
        let free = self.free;
        let e = self.entry(free)?;
        // SAFETY: `entry` checked `e`.
        let next = unsafe {
            std::ptr::addr_of_mut!((*e).addr).write_volatile(d.addr);
            std::ptr::addr_of_mut!((*e).len).write_volatile(d.len);
            std::ptr::addr_of_mut!((*e).flags).write_volatile(d.flags);
            std::ptr::addr_of_mut!((*e).id).write_volatile(d.id);
            std::ptr::addr_of!((*e).next).read_volatile()
        };
        self.free = next;
        self.recorded = self.recorded.wrapping_add(1);
        if last {
            let head = self.head;
            self.set_last(head, free)?;
            self.set_num(head, self.recorded)?;
            self.set_free_head(next);
            self.set_old_free_head(next);
        }
        Ok(())
    }

    /// Takes back a chain `record` started but that was not popped (an IOTLB miss): its
    /// entries go back to the free list and its head is not in flight.
    pub fn abort_pop(&mut self) {
        if !self.recording {
            // Nothing recorded (the chain was refused before its first descriptor was).
            return;
        }
        // `record` only wrote entries and moved the heads (never a `next` link), so the free
        // list is whole again from the chain's head, which was the old free head (`record`
        // moved that too if it saw the chain's last descriptor).
        let _ = self.set_inflight(self.head, 0);
        self.set_free_head(self.head);
        self.set_old_free_head(self.head);
    }

    /// The head entry of the chain just recorded.
    pub fn commit_pop(&mut self) -> u16 {
        self.head
    }

    /// Returns the entries of the chain at `entry` to the free list (before publishing it used).
    pub fn put(&mut self, entry: u16) -> Result<(), Fault> {
        let last = self.last(entry)?;
        self.set_next(last, self.free_head())?;
        self.set_free_head(entry);
        Ok(())
    }

    /// Records the used position after a batch (before its head is published).
    pub fn set_used(&mut self, at: Pos) {
        self.set_used_idx(at.slot());
        self.set_used_wrap(at.wrap() as u8);
    }

    /// The chain at `entry` is no longer in flight (after its used descriptor is published).
    pub fn clear(&mut self, entry: u16) {
        let _ = self.set_inflight(entry, 0);
    }

    /// Commits a published batch of one: the chain at `entry`, which `put` just made the free
    /// head, used up to `at`, which `set_used` just recorded (`clear` and `finish_batch`
    /// without reading back what they wrote).
    pub fn finish_one(&mut self, entry: u16, at: Pos) {
        self.clear(entry);
        self.commit(entry, at.slot(), at.wrap() as u8);
    }

    /// Commits a published batch.
    pub fn finish_batch(&mut self) {
        self.commit(self.free_head(), self.used_idx(), self.used_wrap());
    }

    /// The old (committed) free head and used position become these.
    fn commit(&mut self, free_head: u16, used_idx: u16, used_wrap: u8) {
        self.set_old_free_head(free_head);
        self.set_old_used_idx(used_idx);
        self.set_old_used_wrap(used_wrap);
    }

    /// Gives back a chain that was popped and not completed (`vu_queue_rewind`).
    pub fn release(&mut self, entry: u16) {
        if self.put(entry).is_ok() {
            self.clear(entry);
            self.set_old_free_head(self.free_head());
        }
    }

    /// The copies of the chain whose head entry is `entry`.
    pub fn chain(&self, entry: u16) -> ChainCopies<'_> {
        ChainCopies { area: self, cur: entry, remaining: self.num(entry).unwrap_or(0) }
    }

    /// A fresh area: every entry free, both used positions at `used`.
    fn init(&mut self, used: Pos) -> Result<(), Fault> {
        for i in 0..self.cap {
            self.set_next(i, i.wrapping_add(1))?;
            self.set_inflight(i, 0)?;
        }
        self.set_free_head(0);
        self.set_old_free_head(0);
        self.set_used(used);
        self.finish_batch();
        self.set_version(INFLIGHT_VERSION);
        Ok(())
    }

    /// The spec's "when reconnecting" steps; returns the in-flight chains' head entries,
    /// oldest first, and the used position to resume at.
    fn recover(&mut self, ring: &PackedRing) -> Result<(Vec<(u16, u64)>, Pos), Fault> {
        let old = Pos(self.old_used_idx() & !Pos::WRAP
            | if self.old_used_wrap() != 0 { Pos::WRAP } else { 0 });
        let cur =
            Pos(self.used_idx() & !Pos::WRAP | if self.used_wrap() != 0 { Pos::WRAP } else { 0 });
        if !ring.holds(old) || !ring.holds(cur) {
            return Err(Fault::InflightArea);
        }
        if old != cur {
            let flags = ring.flags(old).ok_or(Fault::InflightArea)?;
            if !is_avail(flags, old.wrap()) {
                // The batch was published before the crash: commit it.
                self.finish_batch();
            }
        }
        // Roll back whatever was in progress.
        self.set_free_head(self.old_free_head());
        self.set_used_idx(self.old_used_idx());
        self.set_used_wrap(self.old_used_wrap());
        let used =
            Pos(self.used_idx() & !Pos::WRAP | if self.used_wrap() != 0 { Pos::WRAP } else { 0 });
        let mut free = self.free_head();
        for _ in 0..self.cap {
            if self.entry(free).is_err() {
                break;
            }
            self.set_inflight(free, 0)?;
            free = self.next(free)?;
        }
        let mut heads = Vec::new();
        for i in 0..self.cap.min(self.desc_num()) {
            if self.inflight(i)? == 1 {
                heads.push((i, self.counter_of(i)?));
            }
        }
        heads.sort_by_key(|h| h.1);
        Ok((heads, used))
    }
}

/// The descriptor copies of one chain in a packed inflight area, in chain order.
pub struct ChainCopies<'a> {
    area: &'a PackedInflight,
    cur: u16,
    remaining: u16,
}

impl ChainCopies<'_> {
    /// The next descriptor (`k` is its place in the chain, for the caller's bound).
    pub fn next_desc(&mut self, _k: u16) -> Option<PackedDesc> {
        if self.remaining == 0 {
            return None;
        }
        let e = self.area.entry(self.cur).ok()?;
        // SAFETY: `entry` checked `e`.
        let mut d = unsafe {
            PackedDesc {
                addr: std::ptr::addr_of!((*e).addr).read_volatile(),
                len: std::ptr::addr_of!((*e).len).read_volatile(),
                id: std::ptr::addr_of!((*e).id).read_volatile(),
                flags: std::ptr::addr_of!((*e).flags).read_volatile(),
            }
        };
        self.remaining -= 1;
        // The chain ends where the record says, whatever the copied flags say.
        if self.remaining == 0 {
            d.flags &= !crate::queue::chain::VRING_DESC_F_NEXT;
        } else {
            d.flags |= crate::queue::chain::VRING_DESC_F_NEXT;
            d.flags &= !crate::queue::chain::VRING_DESC_F_INDIRECT;
            self.cur = self.area.next(self.cur).ok()?;
        }
        Some(d)
    }
}

/// On queue start (SET_VRING_KICK) for a packed ring: a fresh area is initialised; otherwise
/// the ring state (positions, wrap counters, in-flight ids) is taken from the area, since
/// the frontend's SET_VRING_BASE is stale after a crash, and the in-flight chains are queued
/// for resubmission in fetch order.
pub fn check_packed_queue(dev: Dev, vq: &mut VuVirtq, qidx: usize) -> Result<(), String> {
    let mut area = match packed(dev, vq, qidx) {
        Ok(Some(a)) => a,
        Ok(None) => return Err("no inflight area".into()),
        Err(_) => return Err("inflight area outside the inflight mapping".into()),
    };
    // SAFETY: ring pointers are set by `queue::map_ring`; the caller holds the memory lock.
    let ring = unsafe { PackedRing::of(vq) }.ok_or("rings not mapped")?;
    let num = ring.num();
    if area.version() == 0 {
        if area.desc_num() == 0 {
            // GET_INFLIGHT_FD without SET_INFLIGHT_FD: size the area for this ring.
            area.set_desc_num(num.min(area.map_cap));
            area.cap = area.desc_num();
        }
        area.init(Pos(vq.used_idx)).map_err(|f| f.to_string())?;
        return Ok(());
    }
    let (heads, used) = area.recover(&ring).map_err(|f| f.to_string())?;
    let ids = crate::queue::ids::queue_ids(dev, qidx).ok_or("no packed queue state")?;
    ids.reset(num);
    let mut total: u32 = 0;
    for &(entry, _) in &heads {
        let n = area.num(entry).map_err(|f| f.to_string())?;
        let mut e = entry;
        for _ in 1..n {
            e = area.next(e).map_err(|f| f.to_string())?;
        }
        let ie = area.entry(e).map_err(|f| f.to_string())?;
        // SAFETY: `entry` checked `ie`.
        let id = unsafe { std::ptr::addr_of!((*ie).id).read_volatile() };
        total += u32::from(n);
        let st = ids.get(id).ok_or("inflight buffer id outside the ring")?;
        if n == 0 || total > u32::from(num) || st.ndescs != 0 {
            return Err("inflight area disagrees with the ring".into());
        }
        st.ndescs = n;
        st.entry = entry;
        st.prev = crate::queue::ids::NO_ID;
    }
    vq.used_idx = used.0;
    let avail = used.advance(total as u16, num);
    vq.last_avail_idx = avail.0;
    vq.shadow_avail_idx = avail.0;
    vq.inuse = heads.len() as u32;
    free_resubmit_list(vq);
    vq.counter = heads.last().map_or(0, |h| h.1.wrapping_add(1));
    if !heads.is_empty() {
        // Oldest last: pop takes from the end.
        let list: Vec<VuVirtqInflightDesc> = heads
            .iter()
            .rev()
            .map(|&(entry, counter)| VuVirtqInflightDesc { index: entry, counter })
            .collect();
        install_resubmit_list(vq, &list)?;
    }
    if vq.kick_fd >= 0 {
        crate::fd::eventfd_write(vq.kick_fd, dev.flags().guard_sigpipe())
            .map_err(|e| format!("kick eventfd write: {e}"))?;
    }
    Ok(())
}

/// Writes `queue_size` into `desc_num` of the queue region at `offset` of a fresh inflight
/// `mapping` (GET_INFLIGHT_FD: we allocated the area). A region that does not fit the
/// mapping is left alone (the caller sized the mapping for every region).
pub fn init_desc_num(mapping: &Mapping, offset: usize, queue_size: u16) {
    let fits = offset
        .checked_add(std::mem::size_of::<VuVirtqInflight>())
        .is_some_and(|end| end <= mapping.len());
    if !fits || !offset.is_multiple_of(std::mem::align_of::<VuVirtqInflight>()) {
        return;
    }
    let area = mapping.as_ptr().wrapping_add(offset).cast::<VuVirtqInflight>();
    // SAFETY: the region lies inside the live, page-aligned mapping, at an aligned offset
    // (both checked above); the frontend shares the memory, hence a volatile write.
    unsafe { std::ptr::addr_of_mut!((*area).desc_num).write_volatile(queue_size) };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A split area with `room` bytes of the mapping from its start (the slots are only
    /// computed here, never dereferenced).
    fn area_with_room(buf: &mut [u8], room: usize) -> InflightArea {
        InflightArea { area: buf.as_mut_ptr().cast(), room }
    }

    #[test]
    fn a_slot_exists_only_when_the_mapping_holds_the_header_and_it() {
        let mut buf = vec![0u8; HEADER + 8 * STATE];
        let a = area_with_room(&mut buf, HEADER + 3 * STATE);
        assert_eq!(a.capacity(), 3);
        assert!((0..3).all(|i| a.slot(i).is_some()));
        assert!(a.slot(3).is_none(), "one state past the mapping");
        assert!(a.slot(usize::MAX).is_none(), "no overflow to a small size");
        let a = area_with_room(&mut buf, HEADER + 3 * STATE - 1);
        assert_eq!(a.capacity(), 2);
        assert!(a.slot(1).is_some() && a.slot(2).is_none(), "a state cut by the mapping's end");
        let a = area_with_room(&mut buf, HEADER);
        assert!(a.slot(0).is_none() && !a.header_ok(), "the header alone holds no state");
        let a = area_with_room(&mut buf, 0);
        assert!(a.slot(0).is_none() && a.capacity() == 0);
    }
}
