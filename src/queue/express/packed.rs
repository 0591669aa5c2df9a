//! The express lane on a packed ring (see the module above for what it takes and hands over).
//! Ring positions (`Pos`) and the per-id state (`QueueIds`) as in `queue::packed`.

use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use crate::abi::{VuVirtq, VuVirtqElement};
use crate::device::Dev;
use crate::inflight::{self, PackedInflight};
use crate::memory::MemoryTable;
use crate::queue::chain::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use crate::queue::ids::{self, QueueIds};
use crate::queue::packed_ring::{
    avail_flags, is_avail, used_flags, PackedDesc, PackedRing, Pos, VRING_PACKED_DESC_F_AVAIL,
    VRING_PACKED_DESC_F_USED,
};
use crate::queue::Completed;

use super::{lane_open, resubmitting, Buffers, PUSH_GENERAL_ONLY};

/// The ring and the queue's id table, when both are as the general path's prologue
/// (`Queue::ring`) requires: mapped, the table sized for the ring, both positions on it.
#[inline(always)]
fn ring_and_ids<'a>(
    dev: Dev<'a>,
    mem: &MemoryTable,
    vq: &VuVirtq,
    qidx: usize,
) -> Option<(PackedRing, &'a mut QueueIds)> {
    let ring = ring_on_positions(mem, vq)?;
    Some((ring, queue_ids_for(dev, &ring, qidx)?))
}

/// The ring, if mapped with both positions on it (`ring_and_ids` without the table).
#[inline(always)]
fn ring_on_positions(mem: &MemoryTable, vq: &VuVirtq) -> Option<PackedRing> {
    let ring = PackedRing::under(vq, mem)?;
    (ring.holds(Pos(vq.last_avail_idx)) && ring.holds(Pos(vq.used_idx))).then_some(ring)
}

/// The queue's id table, if sized for `ring` (the rest of `ring_and_ids`).
#[inline(always)]
fn queue_ids_for<'a>(dev: Dev<'a>, ring: &PackedRing, qidx: usize) -> Option<&'a mut QueueIds> {
    let ids = ids::queue_ids(dev, qidx)?;
    (ids.ids.len() == usize::from(ring.num())).then_some(ids)
}

/// `pop` for a queue without an inflight area (a function, not a closure, so that the
/// caller's generic continuation inlines it).
#[inline(always)]
pub fn pop_untracked(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    sz: usize,
) -> Option<Option<NonNull<VuVirtqElement>>> {
    pop(dev, mem, vq, qidx, sz, &mut NoRecord)
}

/// `pop` for a queue with an inflight area: each ring descriptor is recorded in the packed
/// inflight layout as the general path records it (nothing, when the feature is not acked).
#[inline(always)]
pub fn pop_tracked(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    sz: usize,
) -> Option<Option<NonNull<VuVirtqElement>>> {
    // An area the general path refuses is its to report (it does so only for a chain).
    match inflight::packed(dev, vq, qidx).ok()? {
        Some(mut area) => pop(dev, mem, vq, qidx, sz, &mut area),
        None => pop(dev, mem, vq, qidx, sz, &mut NoRecord),
    }
}

/// What a pop records of the ring descriptors it reads: nothing, or (`PackedInflight`) the
/// inflight area's copies. A record handed over to the general path is taken back first
/// (`abort`), so that path starts from the same area.
trait Record {
    /// Records ring descriptor `d` of the chain (`None`: the area refuses it).
    fn desc(&mut self, d: &PackedDesc, first: bool, last: bool) -> Option<()>;
    /// Takes back what `desc` recorded of a chain that is not popped.
    fn abort(&mut self);
    /// The chain is popped: its inflight entry (the fetch counter goes back to `vq`).
    fn commit(&mut self, vq: &mut VuVirtq) -> u16;
    /// Before a push: the entries of the chain at `entry` back to the free list (false: the
    /// area refuses them, nothing changed).
    fn put(&mut self, entry: u16) -> bool;
    /// The used position after the push, recorded before its descriptor is published.
    fn used(&mut self, next: Pos);
    /// After the used descriptor is published: the chain at `entry` is out of flight, the
    /// used position `next` (as `used` recorded it) committed.
    fn done(&mut self, entry: u16, next: Pos);
}

/// The record of a queue without an inflight area.
struct NoRecord;

impl Record for NoRecord {
    #[inline(always)]
    fn desc(&mut self, _: &PackedDesc, _: bool, _: bool) -> Option<()> {
        Some(())
    }
    #[inline(always)]
    fn abort(&mut self) {}
    #[inline(always)]
    fn commit(&mut self, _: &mut VuVirtq) -> u16 {
        0
    }
    #[inline(always)]
    fn put(&mut self, _: u16) -> bool {
        true
    }
    #[inline(always)]
    fn used(&mut self, _: Pos) {}
    #[inline(always)]
    fn done(&mut self, _: u16, _: Pos) {}
}

impl Record for PackedInflight {
    #[inline(always)]
    fn desc(&mut self, d: &PackedDesc, first: bool, last: bool) -> Option<()> {
        self.record(d, first, last).ok()
    }
    #[inline(always)]
    fn abort(&mut self) {
        self.abort_pop();
    }
    #[inline(always)]
    fn commit(&mut self, vq: &mut VuVirtq) -> u16 {
        vq.counter = self.counter();
        self.commit_pop()
    }
    #[inline(always)]
    fn put(&mut self, entry: u16) -> bool {
        PackedInflight::put(self, entry).is_ok()
    }
    #[inline(always)]
    fn used(&mut self, next: Pos) {
        self.set_used(next);
    }
    #[inline(always)]
    fn done(&mut self, entry: u16, next: Pos) {
        self.finish_one(entry, next);
    }
}

/// `vu_queue_pop` on a packed ring: `Some(Some(element))`, `Some(None)` when the descriptor at
/// the avail position is not available, `None` (nothing changed) for the general path. The
/// head found available, the chain from it (direct, or one indirect descriptor with its table
/// in place): each descriptor read once (and found available in its own lap) and translated
/// straight into iovecs, then popped under its buffer id, each ring descriptor recorded in
/// `rec`: `NoRecord` for a queue without an inflight area, `pop_tracked` for one with it (the
/// caller dispatches on `vq.inflight`, so that each has its own function and registers).
#[inline(always)]
fn pop(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    sz: usize,
    rec: &mut impl Record,
) -> Option<Option<NonNull<VuVirtqElement>>> {
    if !lane_open(dev, 0) || resubmitting(vq) {
        return None;
    }
    let ring = ring_on_positions(mem, vq)?;
    let head = Pos(vq.last_avail_idx);
    if !is_avail(ring.flags(head)?, head.wrap()) {
        // Empty: ask for a kick, then look once more (as the general path).
        if !crate::queue::packed::arm_device_event(dev, &ring, vq)
            || !is_avail(ring.flags(head)?, head.wrap())
        {
            return Some(None);
        }
    }
    // Read the chain only after seeing its head available.
    fence(Ordering::Acquire);
    let num = ring.num();
    if vq.inuse >= u32::from(num) {
        return None;
    }
    let mut bufs = Buffers::new(mem, sz)?;
    let Some((id, k)) = chain(&mut bufs, &ring, head, rec) else {
        rec.abort();
        return None;
    };
    // The id table only now, so that nothing about it is kept through the walk (and an
    // empty ring needs none).
    let Some(ids) = queue_ids_for(dev, &ring, qidx) else {
        rec.abort();
        return None;
    };
    let last_popped = ids.last_popped;
    let Some(st) = ids.get(id).filter(|st| st.ndescs == 0) else {
        rec.abort();
        return None;
    };
    let entry = rec.commit(vq);
    let elem = bufs.finish(id)?;
    st.ndescs = k;
    st.entry = entry;
    st.prev = last_popped;
    st.head = head.0;
    ids.last_popped = id;
    let next = head.advance(k, num);
    vq.last_avail_idx = next.0;
    vq.shadow_avail_idx = next.0;
    vq.inuse += 1;
    Some(Some(elem))
}

/// The buffers of the chain at `head` (direct, or one indirect descriptor with its table in
/// place), each ring descriptor recorded in `rec`: its buffer id and the ring
/// slots it takes. `None` for the general path (the caller takes the record back).
#[inline(always)]
fn chain(
    bufs: &mut Buffers,
    ring: &PackedRing,
    head: Pos,
    rec: &mut impl Record,
) -> Option<(u16, u16)> {
    let first = ring.read_slot(head.slot())?;
    if first.flags & VRING_DESC_F_INDIRECT == 0 {
        return walk(bufs, ring, head, first, rec);
    }
    // An indirect descriptor is a chain of its own, and its table the buffers.
    let last = first.flags & VRING_DESC_F_NEXT == 0;
    rec.desc(&first, true, last)?;
    if !last {
        return None;
    }
    let table = bufs.table(first.addr, first.len)?;
    for i in 0..table.len {
        // Packed table entries read as split ones: `next` holds the flags.
        let e = table.get(i)?;
        if e.next & VRING_DESC_F_INDIRECT != 0 {
            return None;
        }
        bufs.add(e.addr, e.len, e.next & VRING_DESC_F_WRITE)?;
    }
    Some((first.id, 1))
}

/// The buffers of the direct chain whose first descriptor `d` is at `head`: its buffer id
/// and the ring slots it takes. `None` for what the general path refuses: a later descriptor
/// not available in its own lap (its wrap counter flips where the chain wraps), an indirect
/// one, a chain longer than the ring, and the buffers' own faults.
///
/// The walk keeps no count: a chain is too long when its next slot is the head's again, and
/// the slots it takes follow from where it ends (the ring's end crossed at most once).
#[inline(always)]
fn walk(
    bufs: &mut Buffers,
    ring: &PackedRing,
    head: Pos,
    mut d: PackedDesc,
    rec: &mut impl Record,
) -> Option<(u16, u16)> {
    const MARKS: u16 = VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED;
    let first = head.slot();
    let (mut slot, mut want) = (first, avail_flags(head.wrap()));
    loop {
        if d.flags & VRING_DESC_F_INDIRECT != 0 {
            return None;
        }
        bufs.add(d.addr, d.len, d.flags & VRING_DESC_F_WRITE)?;
        // Recorded after its buffer (the general path records it before): whichever refuses
        // first, the call goes to the general path, which records the chain again.
        let last = d.flags & VRING_DESC_F_NEXT == 0;
        rec.desc(&d, slot == first, last)?;
        if last {
            let taken = if slot >= first { slot - first } else { slot + (ring.num() - first) };
            return Some((d.id, taken + 1));
        }
        // The next slot, read before it is checked (any slot of the ring may be read): its
        // bounds check is the test for the ring's end.
        slot += 1;
        d = match ring.read_slot(slot) {
            Some(d) => d,
            None => {
                // Once a lap at most: a branch, not the conditional moves of every step.
                std::hint::cold_path();
                (slot, want) = (0, want ^ MARKS);
                ring.read_slot(0)?
            }
        };
        if slot == first || d.flags & MARKS != want {
            return None;
        }
    }
}

/// `push` for a queue without an inflight area (as `pop_untracked`).
#[inline(always)]
pub fn push_untracked(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    elem: Completed,
    len: u32,
) -> bool {
    push(dev, mem, vq, qidx, elem, len, &mut NoRecord)
}

/// `push` for a queue with an inflight area, as the general path's `publish` of a batch of
/// one: the entries back to the free list first (nothing else changed if that fails), the
/// used position recorded before the used descriptor is published, then the entry out of
/// flight and the batch committed. Without the feature acked: the general path's.
#[inline(always)]
pub fn push_tracked(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    elem: Completed,
    len: u32,
) -> bool {
    let Ok(Some(mut area)) = inflight::packed(dev, vq, qidx) else { return false };
    push(dev, mem, vq, qidx, elem, len, &mut area)
}

/// `vu_queue_push` on a packed ring: the used descriptor at the used position (its flags
/// last), the id out of flight, recorded in `rec` (`NoRecord`, or `push_tracked`'s area, as
/// for `pop`). False (nothing changed) for the general path.
#[inline(always)]
fn push(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    elem: Completed,
    len: u32,
    rec: &mut impl Record,
) -> bool {
    if !lane_open(dev, PUSH_GENERAL_ONLY) {
        return false;
    }
    let Some((ring, ids)) = ring_and_ids(dev, mem, vq, qidx) else { return false };
    // An index past the table (sized for the ring: at most 2^15) is no id.
    let Some(st) = ids.ids.get_mut(elem.index as usize).filter(|st| st.ndescs != 0) else {
        return false;
    };
    let id = elem.index as u16;
    let entry = st.entry;
    if !rec.put(entry) {
        return false;
    }
    let ndescs = std::mem::take(&mut st.ndescs);
    let num = ring.num();
    let at = Pos(vq.used_idx);
    let next = at.advance(ndescs, num);
    let flags = used_flags(at.wrap()) | if len > 0 { VRING_DESC_F_WRITE } else { 0 };
    ring.write_used_body(at, id, len);
    rec.used(next);
    ring.publish_used_flags(at, flags);
    rec.done(entry, next);
    // As the general path's `publish`: the last signalled position tells new used
    // descriptors apart only while it is less than a lap behind.
    if vq.signalled_used_valid && next.lap_or_more_past(Pos(vq.signalled_used)) {
        vq.signalled_used_valid = false;
    }
    vq.used_idx = next.0;
    vq.inuse = vq.inuse.saturating_sub(1);
    true
}
