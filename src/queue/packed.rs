//! The packed ring's implementation of the queue operations (virtio 1.1 §2.8).
//!
//! State: `VuVirtq.last_avail_idx` and `used_idx` are ring positions (`Pos`: slot and wrap
//! counter), `shadow_avail_idx` the position after the last chain seen available, `inuse` the
//! elements in flight, `signalled_used(_valid)` the used position last notified. Per buffer id
//! the chain length and inflight entry live in the queue's [`QueueIds`].

use std::ops::ControlFlow;
use std::sync::atomic::{fence, Ordering};

use crate::abi::*;
use crate::device::Dev;
use crate::inflight::{self, PackedInflight};
use crate::iotlb::{PERM_RO, PERM_RW, PERM_WO};
use crate::memory::MemoryTable;
use crate::queue::chain::{
    indirect_table, Table, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};
use crate::queue::ids::{IdState, QueueIds};
use crate::queue::mapper::ElementMapper;
use crate::queue::packed_ring::*;
use crate::queue::split::{
    log_write, log_written, logging, valid_ring_size, VIRTIO_F_NOTIFY_ON_EMPTY,
    VIRTIO_RING_F_EVENT_IDX,
};
use crate::queue::{Completed, Fault, Queue, RingOps};

/// Points `vq.vring` at a packed ring: `desc` the descriptor ring, `avail` the driver event
/// suppression area, `used` the device event suppression area (SET_VRING_ADDR's packed
/// meaning), each checked to lie in one region and be aligned.
pub fn map_ring(mem: &MemoryTable, vq: &mut VuVirtq) -> Result<(), Fault> {
    super::unmap_ring(vq);
    let num = vq.vring.num;
    if !valid_ring_size(num) {
        return Err(Fault::Remap);
    }
    // With the IOMMU each part must allow what the device does with it: it reads and
    // writes descriptors, reads the driver's area and writes its own.
    let desc = mem.ring_part(vq.vra.desc_user_addr, desc_ring_size(u64::from(num)), 16, PERM_RW)?;
    let driver = mem.ring_part(vq.vra.avail_user_addr, EVENT_AREA_SIZE, 4, PERM_RO)?;
    let device = mem.ring_part(vq.vra.used_user_addr, EVENT_AREA_SIZE, 4, PERM_WO)?;
    // `desc` last: it is the mapped flag (see `unmap_ring`).
    vq.vring.avail = driver.cast();
    vq.vring.used = device.cast();
    vq.vring.desc = desc.cast();
    Ok(())
}

/// EVENT_IDX on a packed ring just mapped: the device asks for a kick at the avail position
/// only (DESC flags, the offset written first), as `vu_queue_set_notification(1)` does. The
/// driver leaves the area zeroed, which reads ENABLE: a kick for every batch it publishes,
/// where a split ring's `avail_event` suppresses them from the start. (Notifications turned
/// off by the backend are left so.)
pub fn suppress_kicks(dev: Dev, vq: &VuVirtq) {
    if !dev.has_feature(VIRTIO_RING_F_EVENT_IDX) || !vq.notification {
        return;
    }
    // SAFETY: just mapped by `map_ring`, under the caller's memory lock.
    let Some(ring) = (unsafe { PackedRing::of(vq) }) else { return };
    ring.set_device_event_offset(vq.last_avail_idx);
    fence(Ordering::Release);
    ring.set_device_flags(VRING_PACKED_EVENT_FLAG_DESC);
}

/// Where the descriptors of a chain come from: the ring, or (resubmission after a reconnect)
/// the copies in the inflight area.
trait DescSource {
    /// The `k`-th descriptor of the chain (`k` < the ring size).
    fn get(&mut self, k: u16) -> Result<PackedDesc, Fault>;
}

struct RingSource<'r> {
    ring: &'r PackedRing,
    head: Pos,
}

impl DescSource for RingSource<'_> {
    #[inline]
    fn get(&mut self, k: u16) -> Result<PackedDesc, Fault> {
        let pos = self.head.advance(k, self.ring.num());
        let d = self.ring.read(pos).ok_or(Fault::BadPosition)?;
        // The caller found the head available; every later descriptor of the chain must be
        // available in its own lap too (its wrap counter flips where the chain wraps), or the
        // driver never published it (a stale or used descriptor).
        if k > 0 && !is_avail(d.flags, pos.wrap()) {
            return Err(Fault::DescNotAvailable(pos.slot()));
        }
        Ok(d)
    }
}

/// What a chain walk does with what it reads.
trait ChainSink {
    /// A ring descriptor of the chain (an indirect one included), before its buffers.
    fn ring_desc(&mut self, _d: &PackedDesc, _first: bool, _last: bool) -> Result<(), Fault> {
        Ok(())
    }
    /// A buffer (direct or from the indirect table); `Break` ends the walk early.
    fn buffer(&mut self, addr: u64, len: u32, write: bool) -> Result<ControlFlow<()>, Fault>;
}

/// Walks one chain of at most `num` ring descriptors; returns its buffer id and the ring slots
/// it takes (`None` if the sink stopped early). Refuses chains longer than the ring, INDIRECT
/// together with NEXT or inside a chain, nested indirect tables and bad indirect tables.
#[inline]
fn walk(
    mem: &MemoryTable,
    num: u16,
    src: &mut impl DescSource,
    sink: &mut impl ChainSink,
) -> Result<Option<(u16, u16)>, Fault> {
    let mut k = 0u16;
    loop {
        if k >= num {
            return Err(Fault::ChainTooLong);
        }
        let d = src.get(k)?;
        k += 1;
        let last = d.flags & VRING_DESC_F_NEXT == 0;
        sink.ring_desc(&d, k == 1, last)?;
        if d.flags & VRING_DESC_F_INDIRECT != 0 {
            if !last || k != 1 {
                return Err(Fault::IndirectInChain);
            }
            let table = indirect_table(
                mem,
                &vring_desc { addr: d.addr, len: d.len, flags: d.flags, next: 0 },
            )?;
            if walk_table(&table, sink)?.is_break() {
                return Ok(None);
            }
            return Ok(Some((d.id, 1)));
        }
        if sink.buffer(d.addr, d.len, d.flags & VRING_DESC_F_WRITE != 0)?.is_break() {
            return Ok(None);
        }
        if last {
            return Ok(Some((d.id, k)));
        }
    }
}

/// Maps the chain whose head is at `head` into `elem`, in one pass over the ring slots (the
/// hot path of `pop`; `walk` serves the rest): returns its buffer id and ring slots. Records
/// each ring descriptor in the inflight area when tracking.
#[inline(always)]
fn map_chain(
    mem: &MemoryTable,
    ring: &PackedRing,
    head: Pos,
    elem: &mut ElementMapper,
    mut inflight: Option<&mut PackedInflight>,
) -> Result<(u16, u16), Fault> {
    let num = ring.num();
    let mut slot = head.slot();
    // The wrap counter of `slot`'s lap: it flips where the chain wraps.
    let mut wrap = head.wrap();
    let mut k = 0u16;
    loop {
        let d = ring.read_slot(slot).ok_or(Fault::BadPosition)?;
        // The caller found the head available; a later descriptor must be available in its
        // own lap too, or the driver never published it (stale or used).
        if k > 0 && !is_avail(d.flags, wrap) {
            return Err(Fault::DescNotAvailable(slot));
        }
        k += 1;
        let last = d.flags & VRING_DESC_F_NEXT == 0;
        if let Some(a) = inflight.as_deref_mut() {
            a.record(&d, k == 1, last)?;
        }
        if d.flags & VRING_DESC_F_INDIRECT != 0 {
            if !last || k != 1 {
                return Err(Fault::IndirectInChain);
            }
            // An inline loop (see split's map_chain): `elem` stays in registers.
            let desc = vring_desc { addr: d.addr, len: d.len, flags: d.flags, next: 0 };
            let table = crate::queue::chain::indirect_table_cold(mem, &desc)?;
            for i in 0..table.len() {
                let Some(e) = table.get(i) else { return Err(Fault::IndirectTable) };
                // Packed descriptors: `vring_desc.next` holds the flags (see walk_table).
                let flags = e.next;
                if flags & VRING_DESC_F_INDIRECT != 0 {
                    return Err(Fault::NestedIndirect);
                }
                elem.add(e.addr, e.len, flags & VRING_DESC_F_WRITE != 0)?;
            }
            return Ok((d.id, 1));
        }
        elem.add(d.addr, d.len, d.flags & VRING_DESC_F_WRITE != 0)?;
        if last {
            return Ok((d.id, k));
        }
        if k >= num {
            return Err(Fault::ChainTooLong);
        }
        slot += 1;
        if slot == num {
            slot = 0;
            wrap = !wrap;
        }
    }
}

/// The buffers of a packed indirect table, in order; `Break` if the sink stopped early.
fn walk_table(table: &Table, sink: &mut impl ChainSink) -> Result<ControlFlow<()>, Fault> {
    for i in 0..table.len() {
        let Some(e) = table.get(i) else { return Err(Fault::IndirectTable) };
        // The table holds packed descriptors: `vring_desc.flags` read the id and
        // `vring_desc.next` the flags.
        let flags = e.next;
        if flags & VRING_DESC_F_INDIRECT != 0 {
            return Err(Fault::NestedIndirect);
        }
        if sink.buffer(e.addr, e.len, flags & VRING_DESC_F_WRITE != 0)?.is_break() {
            return Ok(ControlFlow::Break(()));
        }
    }
    Ok(ControlFlow::Continue(()))
}

/// Builds the element; records the ring descriptors in the inflight area when tracking.
struct PopSink<'m, 'i> {
    elem: ElementMapper<'m>,
    inflight: Option<&'i mut PackedInflight>,
}

impl ChainSink for PopSink<'_, '_> {
    #[inline]
    fn ring_desc(&mut self, d: &PackedDesc, first: bool, last: bool) -> Result<(), Fault> {
        match self.inflight.as_deref_mut() {
            Some(area) => area.record(d, first, last),
            None => Ok(()),
        }
    }

    #[inline]
    fn buffer(&mut self, addr: u64, len: u32, write: bool) -> Result<ControlFlow<()>, Fault> {
        self.elem.add(addr, len, write)?;
        Ok(ControlFlow::Continue(()))
    }
}

/// Counts the bytes of a chain, up to the caller's maxima.
struct BytesSink {
    in_total: u32,
    out_total: u32,
    max_in: u32,
    max_out: u32,
}

impl BytesSink {
    fn done(&self) -> bool {
        self.in_total >= self.max_in && self.out_total >= self.max_out
    }
}

impl ChainSink for BytesSink {
    fn buffer(&mut self, _addr: u64, len: u32, write: bool) -> Result<ControlFlow<()>, Fault> {
        if write {
            self.in_total = self.in_total.saturating_add(len);
        } else {
            self.out_total = self.out_total.saturating_add(len);
        }
        Ok(if self.done() { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
    }
}

/// Whether the device used the descriptor at `event` while its used position moved from `old`
/// to `new` (`vring_need_event` on packed positions: `event` in `[old, new)`). Exact while
/// `old` is less than a lap behind `new`, which `Packed::publish` keeps true by invalidating
/// `signalled_used` otherwise.
///
/// Then `event` is in the range only if it is less than a lap past `old` too, and two such
/// positions compare by their slots counted from `old`'s lap (a lap more for the other wrap
/// counter): no two-lap distances.
#[inline(always)]
fn need_event(num: u16, event: Pos, new: Pos, old: Pos) -> bool {
    let ahead = |p: Pos| {
        u32::from(p.slot()) + if (p.0 ^ old.0) & Pos::WRAP != 0 { u32::from(num) } else { 0 }
    };
    !event.lap_or_more_past(old) && ahead(event) < ahead(new)
}

/// The driver's event offset if its flags make us use it and it lies outside the ring.
#[inline(always)]
fn bad_event_offset(ring: &PackedRing, e: EventSuppress) -> Option<u16> {
    let off = e.off_wrap & !Pos::WRAP;
    let by_offset =
        e.flags != VRING_PACKED_EVENT_FLAG_DISABLE && e.flags != VRING_PACKED_EVENT_FLAG_ENABLE;
    (by_offset && off >= ring.num()).then_some(off)
}

/// The packed notify rule after the used descriptors were exposed, NOTIFY_ON_EMPTY was
/// handled and the event offset checked (`bad_event_offset`): the driver's event flags or
/// offset. Records what is now signalled.
#[inline(always)]
fn wants_interrupt(ring: &PackedRing, e: EventSuppress, vq: &mut VuVirtq) -> bool {
    let old = Pos(vq.signalled_used);
    let new = Pos(vq.used_idx);
    vq.signalled_used = new.0;
    let valid = vq.signalled_used_valid;
    vq.signalled_used_valid = true;
    match e.flags {
        VRING_PACKED_EVENT_FLAG_DISABLE => false,
        VRING_PACKED_EVENT_FLAG_ENABLE => true,
        // The event offset's bit 15 is the used wrap counter of the lap the driver means,
        // so positions compare over two laps, across the end of the ring.
        _ => !valid || need_event(ring.num(), Pos(e.off_wrap), new, old),
    }
}

/// `vu_queue_notify`'s common case for a mapped packed ring (see
/// `queue::quick_notify_open`): `None`, with nothing changed, when the ring is not mapped
/// or the driver's event offset is bad (the general path reports it).
#[inline(always)]
pub fn quick_should_notify(dev: Dev, vq: &mut VuVirtq) -> Option<bool> {
    // SAFETY: ring pointers are only set by `map_ring` (a layout change unmaps them), and
    // the caller holds the memory lock.
    let ring = unsafe { PackedRing::of(vq) }?;
    // (The general path, should it take the call, writes the same.)
    keep_device_event(dev, &ring, vq);
    // Expose the used descriptors before reading the driver's suppression state.
    fence(Ordering::SeqCst);
    let e = ring.driver_event();
    if bad_event_offset(&ring, e).is_some() {
        return None;
    }
    Some(wants_interrupt(&ring, e, vq))
}

/// A packed queue for one call: its ring and its private per-id state.
pub struct Packed<'a> {
    pub ring: PackedRing,
    pub ids: &'a mut QueueIds,
}

impl Packed<'_> {
    /// The in-flight state of the caller's element `index`.
    #[inline]
    fn in_flight(&mut self, index: u32) -> Result<(u16, IdState), Fault> {
        let id = u16::try_from(index).map_err(|_| Fault::BadElement)?;
        match self.ids.get(id) {
            Some(st) if st.ndescs != 0 => Ok((id, *st)),
            _ => Err(Fault::BadElement),
        }
    }

    /// Logs the buffers the device wrote for a completed element (up to `len` bytes, found
    /// back from the element's iovecs). Out of line, on values (see `queue::remap`).
    #[cold]
    #[inline(never)]
    fn log_buffers(dev: Dev, mem: MemoryTable, elem: Completed, len: u32) -> Result<(), Fault> {
        if dev.log_table().is_null() {
            return Ok(());
        }
        log_written(dev, &mem, elem, len)
    }

    /// Logs the used descriptor written at `desc_offset` in the descriptor ring, by the guest
    /// physical address of where it is mapped (with the IOMMU the ring address is an IOVA).
    /// Out of line, on values (see `queue::remap`).
    #[cold]
    #[inline(never)]
    fn log_desc(dev: Dev, mem: MemoryTable, vq: &VuVirtq, desc_offset: u64) -> Result<(), Fault> {
        if dev.log_table().is_null() {
            return Ok(());
        }
        let host = (vq.vring.desc as u64).wrapping_add(desc_offset);
        log_write(dev, mem.host_to_gpa(host, 16).ok_or(Fault::BadAddress)?, 16)
    }

    /// Marks the `batch` ids (with their lengths) used, from the used position on: every
    /// descriptor but the first is published as it is written, the first one's flags last
    /// (the spec's order); inflight entries are cleared after that.
    #[inline(always)]
    fn publish(&mut self, q: &mut Queue, batch: &[(u16, u32)]) -> Result<(), Fault> {
        let num = self.ring.num();
        let log = logging(q.dev);
        let start = Pos(q.vq.used_idx);
        let mut area = inflight::packed(q.dev, q.vq, q.qidx)?;
        let mut at = start;
        let mut head_flags = 0u16;
        for (i, &(id, len)) in batch.iter().enumerate() {
            let st = match self.ids.get(id) {
                Some(st) if st.ndescs != 0 => st,
                _ => return Err(Fault::BadElement),
            };
            let (ndescs, entry) = (st.ndescs, st.entry);
            st.ndescs = 0;
            if let Some(a) = area.as_mut() {
                a.put(entry)?;
            }
            let flags = used_flags(at.wrap()) | if len > 0 { VRING_DESC_F_WRITE } else { 0 };
            self.ring.write_used_body(at, id, len);
            if i == 0 {
                head_flags = flags;
            } else {
                self.ring.publish_used_flags(at, flags);
            }
            if log {
                Self::log_desc(q.dev, q.mem, q.vq, self.ring.desc_offset(at))?;
            }
            at = at.advance(ndescs, num);
        }
        if batch.is_empty() {
            return Ok(());
        }
        if let Some(a) = area.as_mut() {
            a.set_used(at);
        }
        self.ring.publish_used_flags(start, head_flags);
        if let Some(a) = area.as_mut() {
            for &(id, _) in batch {
                if let Some(st) = self.ids.get(id) {
                    a.clear(st.entry);
                }
            }
            a.finish_batch();
        }
        let vq = &mut *q.vq;
        // The last signalled position says which used descriptors are new only while it is
        // less than a lap behind (slot and wrap counter tell two laps apart): further behind,
        // the next notify signals unconditionally. Invalidating on every wrap instead (as
        // QEMU does) gives a call before the driver's event descriptor each lap.
        // While it is valid it is less than a lap behind `start` and the batch is at most a
        // lap long, so it is a lap or more behind the new position exactly when it fell out.
        if vq.signalled_used_valid && at.lap_or_more_past(Pos(vq.signalled_used)) {
            vq.signalled_used_valid = false;
        }
        vq.used_idx = at.0;
        vq.inuse = vq.inuse.saturating_sub(batch.len() as u32);
        Ok(())
    }

    /// Pops the next element to resubmit after a reconnect, from the inflight area's copies.
    #[cold]
    fn pop_resubmit(&mut self, q: &mut Queue, sz: usize) -> Result<*mut VuVirtqElement, Fault> {
        let entry = inflight::peek_resubmit(q.vq);
        let area = inflight::packed(q.dev, q.vq, q.qidx)?.ok_or(Fault::InflightArea)?;
        let Some(elem) = ElementMapper::new(&q.mem, sz) else {
            inflight::next_resubmit(q.vq);
            return Ok(std::ptr::null_mut());
        };
        let mut sink = PopSink { elem, inflight: None };
        let mut src = area.chain(entry);
        let walked = walk(&q.mem, self.ring.num(), &mut src, &mut sink);
        // An IOTLB miss keeps the request for the retry.
        if let Err(f) = walked {
            if f.is_miss() {
                return Err(f);
            }
        }
        inflight::next_resubmit(q.vq);
        let (id, _) = walked?.ok_or(Fault::InflightArea)?;
        match self.ids.get(id) {
            Some(st) if st.ndescs != 0 && st.entry == entry => {}
            _ => return Err(Fault::InflightArea),
        }
        Ok(sink.elem.finish(u32::from(id)))
    }
}

impl DescSource for inflight::ChainCopies<'_> {
    fn get(&mut self, k: u16) -> Result<PackedDesc, Fault> {
        self.next_desc(k).ok_or(Fault::InflightArea)
    }
}

impl Packed<'_> {
    /// Whether the descriptor at the avail position is not available.
    fn head_empty(&self, q: &Queue) -> Result<bool, Fault> {
        let head = Pos(q.vq.last_avail_idx);
        let flags = self.ring.flags(head).ok_or(Fault::BadPosition)?;
        Ok(!is_avail(flags, head.wrap()))
    }
}

/// EVENT_IDX on a packed ring, as `split::arm_avail_event`: the device event offset is set
/// to the avail position only when the ring was found empty (unless it already holds it, or
/// notifications are off), then fenced; true when the caller must look at the ring again.
#[inline(always)]
pub fn arm_device_event(dev: Dev, ring: &PackedRing, vq: &VuVirtq) -> bool {
    if !keep_device_event(dev, ring, vq) {
        return false;
    }
    fence(Ordering::SeqCst);
    true
}

/// As `split::keep_avail_event`: the device event offset the original's way (the avail
/// position) at each notify and before a rewind, unless it holds it or notifications are
/// off; no fence. True when it wrote.
#[inline(always)]
pub fn keep_device_event(dev: Dev, ring: &PackedRing, vq: &VuVirtq) -> bool {
    let stale = dev.features() & 1 << VIRTIO_RING_F_EVENT_IDX != 0
        && vq.notification
        && ring.device_event_offset() != vq.last_avail_idx;
    if stale {
        ring.set_device_event_offset(vq.last_avail_idx);
    }
    stale
}

impl RingOps for Packed<'_> {
    #[inline]
    fn pop(&mut self, q: &mut Queue, sz: usize) -> Result<*mut VuVirtqElement, Fault> {
        if !q.vq.resubmit_list.is_null() && q.vq.resubmit_num > 0 {
            return self.pop_resubmit(q, sz);
        }
        let num = self.ring.num();
        let head = Pos(q.vq.last_avail_idx);
        if self.is_empty(q)? {
            return Ok(std::ptr::null_mut());
        }
        // Read the chain only after seeing its head available.
        fence(Ordering::Acquire);
        if q.vq.inuse >= u32::from(num) {
            return Err(Fault::SizeExceeded);
        }
        let Some(mut elem) = ElementMapper::new(&q.mem, sz) else {
            return Ok(std::ptr::null_mut());
        };
        let mut area = inflight::packed(q.dev, q.vq, q.qidx)?;
        let (id, ndescs) = match map_chain(&q.mem, &self.ring, head, &mut elem, area.as_mut()) {
            Err(f) if f.is_miss() => {
                // Nothing popped: the retry after the IOTLB update starts from this head.
                if let Some(a) = area.as_mut() {
                    a.abort_pop();
                }
                return Err(f);
            }
            r => r?,
        };
        let entry = match area.as_mut() {
            Some(a) => {
                q.vq.counter = a.counter();
                a.commit_pop()
            }
            None => 0,
        };
        let last_popped = self.ids.last_popped;
        let st = self.ids.get(id).ok_or(Fault::BadId(id))?;
        if st.ndescs != 0 {
            return Err(Fault::IdInFlight(id));
        }
        st.ndescs = ndescs;
        st.entry = entry;
        st.prev = last_popped;
        st.head = head.0;
        self.ids.last_popped = id;
        let next = head.advance(ndescs, num);
        let vq = &mut *q.vq;
        vq.last_avail_idx = next.0;
        vq.shadow_avail_idx = next.0;
        vq.inuse += 1;
        Ok(elem.finish(u32::from(id)))
    }

    /// Gives back the last `num` popped elements, if they are the newest in flight, in pop
    /// order, and end at the avail position (nothing completed in between).
    fn rewind(&mut self, q: &mut Queue, num: u32) -> bool {
        if num > q.vq.inuse {
            return false;
        }
        keep_device_event(q.dev, &self.ring, q.vq);
        let ring_num = self.ring.num();
        let mut end = Pos(q.vq.last_avail_idx);
        let mut id = self.ids.last_popped;
        let mut chain = Vec::new();
        for _ in 0..num {
            let Some(st) = self.ids.get(id).copied() else { return false };
            if st.ndescs == 0 || Pos(st.head).advance(st.ndescs, ring_num) != end {
                return false;
            }
            chain.push((id, st));
            end = Pos(st.head);
            id = st.prev;
        }
        let area = inflight::packed(q.dev, q.vq, q.qidx).ok().flatten();
        let mut area = area;
        for (id, st) in &chain {
            if let Some(a) = area.as_mut() {
                a.release(st.entry);
            }
            if let Some(s) = self.ids.get(*id) {
                s.ndescs = 0;
            }
        }
        self.ids.last_popped = id;
        q.vq.last_avail_idx = end.0;
        q.vq.shadow_avail_idx = end.0;
        q.vq.inuse -= num;
        true
    }

    fn fill(&mut self, q: &mut Queue, elem: Completed, len: u32, idx: u32) -> Result<(), Fault> {
        let (id, _) = self.in_flight(elem.index)?;
        let num = usize::from(self.ring.num());
        let pos = usize::try_from(idx).ok().filter(|i| *i < num).ok_or(Fault::BadElement)?;
        if logging(q.dev) {
            Self::log_buffers(q.dev, q.mem, elem, len)?;
        }
        self.ids.get(id).ok_or(Fault::BadElement)?.len = len;
        self.ids.ids[pos].batch = id;
        Ok(())
    }

    fn flush(&mut self, q: &mut Queue, count: u32) -> Result<(), Fault> {
        let num = usize::from(self.ring.num());
        let count = usize::try_from(count).ok().filter(|c| *c <= num).ok_or(Fault::BadElement)?;
        let batch: Vec<(u16, u32)> = (0..count)
            .map(|i| {
                let id = self.ids.ids[i].batch;
                (id, self.ids.get(id).map_or(0, |s| s.len))
            })
            .collect();
        self.publish(q, &batch)
    }

    #[inline]
    fn push(&mut self, q: &mut Queue, elem: Completed, len: u32) -> Result<(), Fault> {
        let (id, _) = self.in_flight(elem.index)?;
        if logging(q.dev) {
            Self::log_buffers(q.dev, q.mem, elem, len)?;
        }
        self.publish(q, &[(id, len)])
    }

    /// Whether no buffer is waiting, the ring armed first when none is (`arm_device_event`:
    /// the caller may wait for a kick).
    fn is_empty(&mut self, q: &mut Queue) -> Result<bool, Fault> {
        if !self.head_empty(q)? {
            return Ok(false);
        }
        if !arm_device_event(q.dev, &self.ring, q.vq) {
            return Ok(true);
        }
        self.head_empty(q)
    }

    fn should_notify(&mut self, q: &mut Queue) -> Result<bool, Fault> {
        keep_device_event(q.dev, &self.ring, q.vq);
        // Expose the used descriptors before reading the driver's suppression state.
        fence(Ordering::SeqCst);
        if q.dev.has_feature(VIRTIO_F_NOTIFY_ON_EMPTY) && q.vq.inuse == 0 && self.head_empty(q)? {
            return Ok(true);
        }
        let e = self.ring.driver_event();
        if let Some(off) = bad_event_offset(&self.ring, e) {
            return Err(Fault::EventOffset(off));
        }
        Ok(wants_interrupt(&self.ring, e, q.vq))
    }

    fn set_notification(&mut self, q: &mut Queue, enable: bool) -> Result<(), Fault> {
        if !enable {
            self.ring.set_device_flags(VRING_PACKED_EVENT_FLAG_DISABLE);
        } else if q.dev.has_feature(VIRTIO_RING_F_EVENT_IDX) {
            self.ring.set_device_event_offset(q.vq.last_avail_idx);
            // The offset before the flags that make the driver read it.
            fence(Ordering::Release);
            self.ring.set_device_flags(VRING_PACKED_EVENT_FLAG_DESC);
        } else {
            self.ring.set_device_flags(VRING_PACKED_EVENT_FLAG_ENABLE);
        }
        if enable {
            // Expose the suppression state before the caller re-checks the ring.
            fence(Ordering::SeqCst);
        }
        Ok(())
    }

    fn avail_bytes(
        &mut self,
        q: &mut Queue,
        max_in: u32,
        max_out: u32,
    ) -> Result<(u32, u32), Fault> {
        let num = self.ring.num();
        let mut sink = BytesSink { in_total: 0, out_total: 0, max_in, max_out };
        let mut head = Pos(q.vq.last_avail_idx);
        let mut seen = 0u16;
        // Once only: a driver rewriting the event offset must not keep this loop going.
        let mut may_arm = true;
        while seen < num {
            let flags = self.ring.flags(head).ok_or(Fault::BadPosition)?;
            if !is_avail(flags, head.wrap()) {
                // Nothing at all: the caller may wait for a kick (see `arm_device_event`).
                if seen == 0 && may_arm && arm_device_event(q.dev, &self.ring, q.vq) {
                    may_arm = false;
                    continue;
                }
                break;
            }
            fence(Ordering::Acquire);
            let mut src = RingSource { ring: &self.ring, head };
            let Some((_, n)) = walk(&q.mem, num - seen, &mut src, &mut sink)? else { break };
            seen += n;
            head = head.advance(n, num);
        }
        Ok((sink.in_total, sink.out_total))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule agrees with `vring_need_event` over two-lap distances wherever `old` is less
    /// than a lap behind `new` (every valid `signalled_used`).
    #[test]
    fn need_event_agrees_with_the_distances() {
        for num in [1u16, 2, 3, 5, 8] {
            let on_ring = || (0..num).flat_map(|s| [Pos(s), Pos(s | Pos::WRAP)]);
            for old in on_ring() {
                for new in on_ring().filter(|n| old.distance_to(*n, num) < u32::from(num)) {
                    for event in on_ring() {
                        let want = old.distance_to(event, num) < old.distance_to(new, num);
                        assert_eq!(
                            need_event(num, event, new, old),
                            want,
                            "{old:?} {new:?} {event:?}"
                        );
                    }
                }
            }
        }
    }
}
