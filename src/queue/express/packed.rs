//! The express lane on a packed ring (see the module above for what it takes and hands over).
//! Ring positions (`Pos`) and the per-id state (`QueueIds`) as in `queue::packed`.

use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use crate::abi::{VuVirtq, VuVirtqElement};
use crate::device::Dev;
use crate::memory::MemoryTable;
use crate::queue::chain::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use crate::queue::ids::{self, QueueIds};
use crate::queue::packed_ring::{
    avail_flags, is_avail, used_flags, PackedDesc, PackedRing, Pos, VRING_PACKED_DESC_F_AVAIL,
    VRING_PACKED_DESC_F_USED,
};
use crate::queue::split::VIRTIO_RING_F_EVENT_IDX;
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
    let ring = PackedRing::under(vq, mem)?;
    let ids = ids::queue_ids(dev, qidx)?;
    let ok = ids.ids.len() == usize::from(ring.num())
        && ring.holds(Pos(vq.last_avail_idx))
        && ring.holds(Pos(vq.used_idx));
    ok.then_some((ring, ids))
}

/// `vu_queue_pop` on a packed ring: `Some(Some(element))`, `Some(None)` when the descriptor at
/// the avail position is not available, `None` (nothing changed) for the general path. The
/// head found available, the chain from it (direct, or one indirect descriptor with its table
/// in place): each descriptor read once (and found available in its own lap) and translated
/// straight into iovecs, then popped under its buffer id. The packed inflight layout is the
/// general path's.
#[inline(always)]
pub fn pop(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    sz: usize,
) -> Option<Option<NonNull<VuVirtqElement>>> {
    if !lane_open(dev, 0) || resubmitting(vq) || !vq.inflight.is_null() {
        return None;
    }
    let (ring, ids) = ring_and_ids(dev, mem, vq, qidx)?;
    let head = Pos(vq.last_avail_idx);
    if !is_avail(ring.flags(head)?, head.wrap()) {
        return Some(None);
    }
    // Read the chain only after seeing its head available.
    fence(Ordering::Acquire);
    let num = ring.num();
    if vq.inuse >= u32::from(num) {
        return None;
    }
    let mut bufs = Buffers::new(mem, sz)?;
    let first = ring.read_slot(head.slot())?;
    let (id, k) = if first.flags & VRING_DESC_F_INDIRECT != 0 {
        // An indirect descriptor is a chain of its own, and its table the buffers.
        if first.flags & VRING_DESC_F_NEXT != 0 {
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
        (first.id, 1)
    } else {
        walk(&mut bufs, &ring, head, first)?
    };
    let last_popped = ids.last_popped;
    let st = ids.get(id)?;
    if st.ndescs != 0 {
        return None;
    }
    let elem = bufs.finish(id)?;
    st.ndescs = k;
    st.entry = 0;
    st.prev = last_popped;
    st.head = head.0;
    ids.last_popped = id;
    let next = head.advance(k, num);
    vq.last_avail_idx = next.0;
    vq.shadow_avail_idx = next.0;
    vq.inuse += 1;
    if vq.notification && dev.features() & 1 << VIRTIO_RING_F_EVENT_IDX != 0 {
        ring.set_device_event_offset(next.0);
    }
    Some(Some(elem))
}

/// The buffers of the direct chain whose first descriptor `d` is at `head`: its buffer id
/// and the ring slots it takes. `None` for what the general path refuses: a later descriptor
/// not available in its own lap (its wrap counter flips where the chain wraps), an indirect
/// one, a chain longer than the ring, and the buffers' own faults. A ring whose size is not a
/// power of two (never mapped so) is the general path's too.
#[inline(always)]
fn walk(bufs: &mut Buffers, ring: &PackedRing, head: Pos, mut d: PackedDesc) -> Option<(u16, u16)> {
    const MARKS: u16 = VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED;
    let num = ring.num();
    if !num.is_power_of_two() {
        return None;
    }
    let mask = num - 1;
    let (mut slot, mut want) = (head.slot(), avail_flags(head.wrap()));
    let mut k = 1u16;
    loop {
        if d.flags & VRING_DESC_F_INDIRECT != 0 {
            return None;
        }
        bufs.add(d.addr, d.len, d.flags & VRING_DESC_F_WRITE)?;
        if d.flags & VRING_DESC_F_NEXT == 0 {
            return Some((d.id, k));
        }
        if k > mask {
            return None;
        }
        k += 1;
        slot = (slot + 1) & mask;
        if slot == 0 {
            want ^= MARKS;
        }
        d = ring.read_slot(slot)?;
        if d.flags & MARKS != want {
            return None;
        }
    }
}

/// `vu_queue_push` on a packed ring: the used descriptor at the used position (its flags
/// last), the id out of flight. False (nothing changed) for the general path.
#[inline(always)]
pub fn push(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    elem: Completed,
    len: u32,
) -> bool {
    if !lane_open(dev, PUSH_GENERAL_ONLY) || !vq.inflight.is_null() {
        return false;
    }
    let Some((ring, ids)) = ring_and_ids(dev, mem, vq, qidx) else { return false };
    let Ok(id) = u16::try_from(elem.index) else { return false };
    let Some(st) = ids.get(id).filter(|st| st.ndescs != 0) else { return false };
    let ndescs = std::mem::take(&mut st.ndescs);
    let num = ring.num();
    let at = Pos(vq.used_idx);
    let flags = used_flags(at.wrap()) | if len > 0 { VRING_DESC_F_WRITE } else { 0 };
    ring.write_used_body(at, id, len);
    ring.publish_used_flags(at, flags);
    // As the general path's `publish`: the last signalled position tells new used
    // descriptors apart only while it is less than a lap behind.
    if vq.signalled_used_valid {
        let since = Pos(vq.signalled_used).distance_to(at, num) + u32::from(ndescs);
        if since >= u32::from(num) {
            vq.signalled_used_valid = false;
        }
    }
    vq.used_idx = at.advance(ndescs, num).0;
    vq.inuse = vq.inuse.saturating_sub(1);
    true
}
