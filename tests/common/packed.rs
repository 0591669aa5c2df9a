// SPDX-License-Identifier: GPL-2.0-or-later
//! Driver side of a packed virtqueue (virtio 1.1, "Packed Virtqueues"),
//! living in the test's guest memory. Written from the spec, independent of
//! the library: descriptor ring of 16-byte `{le64 addr; le32 len; le16 id;
//! le16 flags}`, AVAIL (bit 7) / USED (bit 15) flags against wrap counters,
//! driver and device event suppression areas `{le16 off_wrap; le16 flags}`.

use std::collections::{HashMap, VecDeque};
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost::VringConfigData;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::mem::GuestMemory;
use super::vring::{
    need_event, wait_readable, Buf, VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
};

pub const VIRTIO_F_RING_PACKED: u64 = 1 << 34;

pub const VRING_PACKED_DESC_F_AVAIL: u16 = 1 << 7;
pub const VRING_PACKED_DESC_F_USED: u16 = 1 << 15;

/// Event suppression flags (`flags` of both event areas).
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
pub const RING_EVENT_FLAGS_DESC: u16 = 2;

/// A raw packed-ring descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackedDesc {
    pub addr: u64,
    pub len: u32,
    pub id: u16,
    pub flags: u16,
}

/// AVAIL/USED bits that make a descriptor available in lap `wrap`.
pub fn avail_bits(wrap: bool) -> u16 {
    if wrap {
        VRING_PACKED_DESC_F_AVAIL
    } else {
        VRING_PACKED_DESC_F_USED
    }
}

/// AVAIL/USED bits of a descriptor the device used in lap `wrap`.
pub fn used_bits(wrap: bool) -> u16 {
    if wrap {
        VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED
    } else {
        0
    }
}

/// The vhost-user SET/GET_VRING_BASE encoding of a packed ring's state:
/// bits 0-14 next avail index, 15 avail wrap counter, 16-30 next used
/// index, 31 used wrap counter.
pub fn encode_base(avail: u16, avail_wrap: bool, used: u16, used_wrap: bool) -> u32 {
    assert!(avail < 0x8000 && used < 0x8000);
    avail as u32 | (avail_wrap as u32) << 15 | (used as u32) << 16 | (used_wrap as u32) << 31
}

/// A ring position: index in the ring and the wrap counter of that lap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos {
    pub idx: u16,
    pub wrap: bool,
}

impl Pos {
    /// Position `n` slots later in a ring of `size` slots.
    pub fn advance(self, n: u16, size: u16) -> Pos {
        let mut idx = self.idx as u32 + n as u32;
        let mut wrap = self.wrap;
        while idx >= size as u32 {
            idx -= size as u32;
            wrap = !wrap;
        }
        Pos { idx: idx as u16, wrap }
    }

    /// The position reached after `count` slots from a reset ring (index 0,
    /// wrap counter 1): the packed counterpart of a split ring's free
    /// running 16-bit index (`size` a power of two).
    pub fn from_count(count: u16, size: u16) -> Pos {
        assert!(size.is_power_of_two());
        Pos { idx: count % size, wrap: (count / size).is_multiple_of(2) }
    }
}

/// A buffer made available (or added, awaiting publication).
struct Chain {
    id: u16,
    head: Pos,
    head_flags: u16,
    slots: u16,
}

pub struct PackedQueue {
    pub mem: Arc<GuestMemory>,
    pub size: u16,
    /// Descriptor ring (SET_VRING_ADDR desc_user_addr).
    pub ring: u64,
    /// Driver event suppression area, written by us (avail_user_addr).
    pub driver_event: u64,
    /// Device event suppression area, written by the device (used_user_addr).
    pub device_event: u64,
    pub event_idx: bool,
    /// Next slot to fill.
    pub avail: Pos,
    /// Next slot where the device will write a used descriptor.
    pub used: Pos,
    free_ids: Vec<u16>,
    free_slots: u16,
    /// Added, not yet published (in ring order).
    pending: VecDeque<Chain>,
    /// id -> ring slots the buffer occupies, for buffers made available.
    inflight: HashMap<u16, u16>,
    pub kick: EventFd,
    pub call: EventFd,
    /// Slots made available since the last kick decision.
    added_since_kick: u16,
    pub kicks: u64,
}

impl PackedQueue {
    /// A ring whose driver and device positions both start at `start`.
    pub fn new_at(mem: &Arc<GuestMemory>, size: u16, event_idx: bool, start: Pos) -> Self {
        assert!(size > 0 && size <= 0x8000 && start.idx < size);
        let n = size as u64;
        let ring = mem.alloc(16 * n, 16);
        let driver_event = mem.alloc(4, 4);
        let device_event = mem.alloc(4, 4);
        let q = PackedQueue {
            mem: mem.clone(),
            size,
            ring,
            driver_event,
            device_event,
            event_idx,
            avail: start,
            used: start,
            free_ids: (0..size).rev().collect(),
            free_slots: size,
            pending: VecDeque::new(),
            inflight: HashMap::new(),
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
            added_since_kick: 0,
            kicks: 0,
        };
        // The ring as a device leaves it after the previous lap: slots from
        // `start` on were used in lap !wrap, those before it in lap wrap.
        // Neither is available nor used in the current lap.
        for i in 0..size {
            let lap = if i >= start.idx { !start.wrap } else { start.wrap };
            q.mem.store_u16(q.flags_addr(i), used_bits(lap));
        }
        q
    }

    /// Like a split ring's `base`: start `base` slots after a reset.
    pub fn new(mem: &Arc<GuestMemory>, size: u16, event_idx: bool, base: u16) -> Self {
        Self::new_at(mem, size, event_idx, Pos::from_count(base, size))
    }

    pub fn renew_eventfds(&mut self) {
        self.kick = EventFd::new(EFD_NONBLOCK).unwrap();
        self.call = EventFd::new(EFD_NONBLOCK).unwrap();
    }

    /// SET_VRING_ADDR for a packed ring: desc = descriptor ring, avail =
    /// driver event area, used = device event area.
    pub fn config(&self, flags: u32) -> VringConfigData {
        VringConfigData {
            queue_max_size: self.size,
            queue_size: self.size,
            flags,
            desc_table_addr: self.mem.qva(self.ring),
            used_ring_addr: self.mem.qva(self.device_event),
            avail_ring_addr: self.mem.qva(self.driver_event),
            log_addr: None,
        }
    }

    /// SET_VRING_BASE value for the driver's current state (everything
    /// published so far consumed and used).
    pub fn ring_state(&self) -> u32 {
        encode_base(self.avail.idx, self.avail.wrap, self.used.idx, self.used.wrap)
    }

    pub fn desc_addr(&self, i: u16) -> u64 {
        self.ring + 16 * i as u64
    }
    fn flags_addr(&self, i: u16) -> u64 {
        self.desc_addr(i) + 14
    }

    /// Write descriptor `i` of the ring: addr, len, id, then flags (release).
    pub fn write_desc(&self, i: u16, d: PackedDesc) {
        let a = self.desc_addr(i);
        self.mem.write_u64(a, d.addr);
        self.mem.write_u32(a + 8, d.len);
        self.mem.write_u16(a + 12, d.id);
        self.mem.store_u16(a + 14, d.flags);
    }

    /// Everything but the flags of descriptor `i`.
    fn write_desc_body(&self, i: u16, d: PackedDesc) {
        let a = self.desc_addr(i);
        self.mem.write_u64(a, d.addr);
        self.mem.write_u32(a + 8, d.len);
        self.mem.write_u16(a + 12, d.id);
    }

    pub fn read_desc(&self, i: u16) -> PackedDesc {
        let a = self.desc_addr(i);
        let flags = self.mem.load_u16(a + 14);
        let b = self.mem.read(a, 12);
        PackedDesc {
            addr: u64::from_le_bytes(b[0..8].try_into().unwrap()),
            len: u32::from_le_bytes(b[8..12].try_into().unwrap()),
            id: u16::from_le_bytes(self.mem.read(a + 12, 2).try_into().unwrap()),
            flags,
        }
    }

    /// Write an indirect table (entries in order, only WRITE meaningful).
    pub fn write_table(&self, table: u64, k: u16, d: PackedDesc) {
        let a = table + 16 * k as u64;
        self.mem.write_u64(a, d.addr);
        self.mem.write_u32(a + 8, d.len);
        self.mem.write_u16(a + 12, d.id);
        self.mem.write_u16(a + 14, d.flags);
    }

    pub fn free_count(&self) -> usize {
        self.free_slots as usize
    }

    fn take_id(&mut self) -> u16 {
        self.free_ids.pop().expect("no free buffer ids")
    }

    /// Lay out descriptors `descs` (flags without AVAIL/USED) from the
    /// current avail position under buffer id `id`, all but the head's
    /// flags; the head becomes visible at `publish`.
    fn add_raw(&mut self, id: u16, descs: &[PackedDesc]) {
        let n = descs.len() as u16;
        assert!(n > 0);
        assert!(n <= self.free_slots, "no room for {n} descriptors ({} free)", self.free_slots);
        let head = self.avail;
        let mut head_flags = 0;
        for (k, d) in descs.iter().enumerate() {
            let p = head.advance(k as u16, self.size);
            let flags = d.flags | avail_bits(p.wrap);
            self.write_desc_body(p.idx, *d);
            if k == 0 {
                head_flags = flags;
            } else {
                self.mem.store_u16(self.flags_addr(p.idx), flags);
            }
        }
        self.avail = head.advance(n, self.size);
        self.free_slots -= n;
        self.pending.push_back(Chain { id, head, head_flags, slots: n });
    }

    /// Build a direct chain (every descriptor carries the buffer id);
    /// returns the buffer id.
    pub fn add(&mut self, bufs: &[Buf]) -> u16 {
        let id = self.take_id();
        let descs: Vec<PackedDesc> = bufs
            .iter()
            .enumerate()
            .map(|(k, b)| {
                let mut flags = if b.write { VRING_DESC_F_WRITE } else { 0 };
                if k + 1 < bufs.len() {
                    flags |= VRING_DESC_F_NEXT;
                }
                PackedDesc { addr: b.gpa, len: b.len, id, flags }
            })
            .collect();
        self.add_raw(id, &descs);
        id
    }

    /// Build an indirect table for `bufs` and one ring descriptor pointing
    /// at it; returns the buffer id.
    pub fn add_indirect(&mut self, bufs: &[Buf]) -> u16 {
        let n = bufs.len() as u64;
        let table = self.mem.alloc(16 * n, 16);
        for (k, b) in bufs.iter().enumerate() {
            let flags = if b.write { VRING_DESC_F_WRITE } else { 0 };
            self.write_table(table, k as u16, PackedDesc { addr: b.gpa, len: b.len, id: 0, flags });
        }
        let id = self.take_id();
        self.add_raw(
            id,
            &[PackedDesc { addr: table, len: (16 * n) as u32, id, flags: VRING_DESC_F_INDIRECT }],
        );
        id
    }

    /// Hand-written (possibly invalid) descriptors under buffer id `id`
    /// (not taken from the free list; hostile tests). `descs[..].flags`
    /// are without AVAIL/USED; `id` fields are written as given.
    pub fn add_descs(&mut self, id: u16, descs: &[PackedDesc]) {
        self.add_raw(id, descs);
    }

    /// Make buffer `id` available: write its head's flags (release). Buffers
    /// are published in the order they were added.
    pub fn publish(&mut self, id: u16) {
        let c = self.pending.pop_front().expect("nothing added to publish");
        assert_eq!(c.id, id, "packed buffers are published in the order they were added");
        self.mem.store_u16(self.flags_addr(c.head.idx), c.head_flags);
        self.added_since_kick = self.added_since_kick.wrapping_add(c.slots);
        self.inflight.insert(c.id, c.slots);
    }

    /// Would the device want a kick for what was published since the last
    /// kick decision? (Linux's kick_prepare_packed.)
    pub fn needs_kick(&self) -> bool {
        if self.added_since_kick == 0 {
            return false;
        }
        let (off_wrap, flags) = self.device_event();
        if flags != RING_EVENT_FLAGS_DESC || !self.event_idx {
            return flags != RING_EVENT_FLAGS_DISABLE;
        }
        let new = self.avail.idx;
        let old = new.wrapping_sub(self.added_since_kick);
        let mut event = off_wrap & 0x7fff;
        if (off_wrap >> 15 != 0) != self.avail.wrap {
            event = event.wrapping_sub(self.size);
        }
        need_event(event, new, old)
    }

    pub fn kick_if_needed(&mut self) -> bool {
        let k = self.needs_kick();
        self.added_since_kick = 0;
        if k {
            self.kick_now();
        }
        k
    }

    pub fn kick_now(&mut self) {
        self.added_since_kick = 0;
        self.kicks += 1;
        self.kick.write(1).unwrap();
    }

    /// Device event suppression area: (off_wrap, flags).
    pub fn device_event(&self) -> (u16, u16) {
        (self.mem.load_u16(self.device_event), self.mem.load_u16(self.device_event + 2))
    }

    /// Driver event suppression area: flags (ENABLE / DISABLE / DESC).
    pub fn set_driver_event_flags(&self, flags: u16) {
        self.mem.store_u16(self.driver_event + 2, flags);
    }

    /// Ask for a call once the device writes the used descriptor at `at`
    /// (flags = DESC).
    pub fn set_driver_event(&self, at: Pos) {
        self.mem.store_u16(self.driver_event, at.idx | (at.wrap as u16) << 15);
        self.mem.store_u16(self.driver_event + 2, RING_EVENT_FLAGS_DESC);
    }

    /// Raw driver event area contents (hostile tests).
    pub fn set_driver_event_raw(&self, off_wrap: u16, flags: u16) {
        self.mem.store_u16(self.driver_event, off_wrap);
        self.mem.store_u16(self.driver_event + 2, flags);
    }

    /// Buffers made available and not used yet.
    pub fn in_flight(&self) -> usize {
        self.inflight.len()
    }

    /// Nothing in flight, nothing pending, and no used descriptor at the
    /// next used position.
    pub fn settled(&self) -> bool {
        let f = self.read_desc(self.used.idx).flags;
        let used = f & VRING_PACKED_DESC_F_USED != 0;
        let avail = f & VRING_PACKED_DESC_F_AVAIL != 0;
        self.inflight.is_empty()
            && self.pending.is_empty()
            && self.used == self.avail
            && !(avail == used && used == self.used.wrap)
    }

    /// Take one used descriptor if there is one: (id, len).
    pub fn poll_used(&mut self) -> Option<(u16, u32)> {
        if self.inflight.is_empty() {
            return None;
        }
        let d = self.read_desc(self.used.idx);
        let avail = d.flags & VRING_PACKED_DESC_F_AVAIL != 0;
        let used = d.flags & VRING_PACKED_DESC_F_USED != 0;
        if avail != used || used != self.used.wrap {
            return None;
        }
        let slots = self.inflight.remove(&d.id).unwrap_or_else(|| {
            panic!(
                "device used id {} at {:?} which is not in flight ({:?})",
                d.id, self.used, self.inflight
            )
        });
        if d.id < self.size {
            self.free_ids.push(d.id);
        }
        self.free_slots += slots;
        self.used = self.used.advance(slots, self.size);
        Some((d.id, d.len))
    }

    /// Wait (bounded) for the next used descriptor.
    pub fn wait_used(&mut self, timeout: Duration) -> (u16, u32) {
        let t0 = Instant::now();
        loop {
            if let Some(e) = self.poll_used() {
                return e;
            }
            if t0.elapsed() > timeout {
                panic!(
                    "timeout: no used descriptor at {:?} (flags {:#x}), avail at {:?}, {} in flight",
                    self.used,
                    self.read_desc(self.used.idx).flags,
                    self.avail,
                    self.inflight.len()
                );
            }
            wait_readable(self.call.as_raw_fd(), Duration::from_millis(2));
        }
    }

    pub fn wait_call(&self, timeout: Duration) -> Option<u64> {
        if wait_readable(self.call.as_raw_fd(), timeout) {
            self.call.read().ok()
        } else {
            None
        }
    }

    pub fn take_calls(&self) -> u64 {
        self.call.read().unwrap_or(0)
    }
}
