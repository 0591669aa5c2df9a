//! The express lane of the three calls every request makes on a split ring — pop, push and
//! notify — for the common case: a working device without the IOMMU or migration logging, a
//! mapped ring, no resubmissions pending. Each is a small function whose state stays in
//! registers, on the values the general path (`Queue`) would compute anyway.
//!
//! The lane refuses nothing itself. Whatever it does not handle — the unusual configurations
//! above, indirect tables, and every guest error (bad heads, loops, bad addresses, index jumps)
//! — it hands to the general path by returning `None` *before it has changed anything* that
//! path reads: the general path then starts over from the ring, sees what the guest wrote and
//! gives the original's reaction. So each check the general path makes is made here too (the
//! lane just answers "not mine" instead of naming the fault), and handing a call over is always
//! safe.

use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use libc::iovec;

use crate::abi::{VuVirtq, VuVirtqElement};
use crate::device::Dev;
use crate::dirty_log::VHOST_F_LOG_ALL;
use crate::inflight;
use crate::iommu::VIRTIO_F_IOMMU_PLATFORM;
use crate::memory::{MemoryTable, RegionHint};
use crate::queue::chain::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use crate::queue::element::ElementBuilder;
use crate::queue::ring::SplitRing;
use crate::queue::split::VIRTIO_RING_F_EVENT_IDX;
use crate::queue::{Completed, VIRTIO_F_RING_PACKED};

/// Negotiated features that take every call to the general path.
const GENERAL_ONLY: u64 = 1 << VIRTIO_F_RING_PACKED | 1 << VIRTIO_F_IOMMU_PLATFORM;

/// The ring, when the lane may work the queue: the device works, the features are the lane's,
/// the ring is mapped.
#[inline(always)]
fn lane_ring(dev: Dev, mem: &MemoryTable, vq: &VuVirtq, excluded: u64) -> Option<SplitRing> {
    if dev.features() & excluded != 0 || dev.broken() || mem.iotlb().is_some() {
        return None;
    }
    SplitRing::under(vq, mem)
}

/// What the first part of `vu_queue_pop` found.
pub enum Head {
    /// Nothing is waiting.
    Empty,
    /// The chain at this head is next (nothing changed yet: `pop_chain` takes it).
    At(u16),
    /// The general path takes the call.
    General,
}

/// `vu_queue_pop`'s first part: the ring's readiness and the next head, checked as the
/// general path checks them. Changes only `shadow_avail_idx` (to a valid avail index, as the
/// general path would).
#[inline(always)]
pub fn pop_head(dev: Dev, mem: &MemoryTable, vq: &mut VuVirtq) -> Head {
    let Some(ring) = lane_ring(dev, mem, vq, GENERAL_ONLY) else { return Head::General };
    if !vq.resubmit_list.is_null() && vq.resubmit_num > 0 {
        return Head::General;
    }
    let last = vq.last_avail_idx;
    if vq.shadow_avail_idx == last {
        let idx = ring.avail_idx();
        if idx.wrapping_sub(last) > ring.num() {
            return Head::General;
        }
        vq.shadow_avail_idx = idx;
        if idx == last {
            return Head::Empty;
        }
    }
    // Read the descriptors only after seeing the avail index that covers them.
    fence(Ordering::Acquire);
    if vq.inuse >= u32::from(ring.num()) {
        return Head::General;
    }
    let head = ring.avail_entry(last);
    if head >= ring.num() {
        return Head::General;
    }
    Head::At(head)
}

/// `vu_queue_pop`'s second part, for the head `pop_head` found: the element, popped, or
/// `None` (nothing changed) for the general path.
#[inline(always)]
pub fn pop_chain(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    head: u16,
    sz: usize,
) -> Option<NonNull<VuVirtqElement>> {
    // The ring `pop_head` saw (the caller has not left the memory lock since).
    let ring = SplitRing::under(vq, mem)?;
    let elem = map_chain(mem, &ring, head, sz)?;
    if !vq.inflight.is_null() && inflight::on_pop(dev, vq, qidx, u32::from(head)).is_err() {
        // The general path pops the head again and reports the refusal.
        // SAFETY: our own element, just built and not handed out.
        unsafe { libc::free(elem.as_ptr().cast()) };
        return None;
    }
    let next = vq.last_avail_idx.wrapping_add(1);
    vq.last_avail_idx = next;
    vq.inuse += 1;
    if dev.features() & 1 << VIRTIO_RING_F_EVENT_IDX != 0 && vq.notification {
        ring.set_avail_event(next);
    }
    Some(elem)
}

/// The direct chain at `head` as an element of `sz` bytes: each descriptor read once and
/// translated straight into iovecs. `None` for anything else (an indirect table, any guest
/// error, no memory), with nothing kept.
#[inline(always)]
fn map_chain(
    mem: &MemoryTable,
    ring: &SplitRing,
    head: u16,
    sz: usize,
) -> Option<NonNull<VuVirtqElement>> {
    if sz < std::mem::size_of::<VuVirtqElement>() {
        return None;
    }
    let mut elem = ElementBuilder::new(sz)?;
    let mut hint = mem.first_hint();
    let (mut i, mut left) = (head, ring.num());
    loop {
        let d = ring.desc(i)?;
        if d.flags & VRING_DESC_F_INDIRECT != 0 || d.len == 0 {
            return None;
        }
        let write = d.flags & VRING_DESC_F_WRITE != 0;
        // The out iovecs come first: a readable buffer after a writable one is out of order.
        if !write && !elem.only_readable() {
            return None;
        }
        let len = u64::from(d.len);
        let host = match hint.whole(d.addr, len) {
            Some(p) => Some(p),
            None => {
                hint = mem.hint_at(d.addr)?;
                hint.whole(d.addr, len)
            }
        };
        match host {
            Some(p) => {
                if !elem.push(iovec { iov_base: p.cast(), iov_len: len as usize }) {
                    return None;
                }
            }
            // It spans regions.
            None => (elem, hint) = map_buffer(*mem, elem, d.addr, len)?,
        }
        if !write {
            elem.end_readable();
        }
        if d.flags & VRING_DESC_F_NEXT == 0 {
            return NonNull::new(elem.finish(u32::from(head)));
        }
        // A chain visits at most `num` descriptors; one more is a loop.
        left -= 1;
        if left == 0 {
            return None;
        }
        i = d.next;
    }
}

/// A buffer outside the hint's region: translated region by region (it may span several),
/// with the region of its end as the new hint. Out of line, on values, so that the caller's
/// element and hint stay in registers.
#[inline(never)]
fn map_buffer(
    mem: MemoryTable,
    mut elem: ElementBuilder,
    mut addr: u64,
    mut rest: u64,
) -> Option<(ElementBuilder, RegionHint)> {
    let mut hint = RegionHint::default();
    loop {
        if !hint.holds(addr) {
            hint = mem.hint_at(addr)?;
        }
        let (p, n) = hint.host(addr, rest);
        if !elem.push(iovec { iov_base: p.cast(), iov_len: n as usize }) {
            return None;
        }
        rest -= n;
        if rest == 0 {
            return Some((elem, hint));
        }
        addr = addr.checked_add(n)?;
    }
}

/// `vu_queue_push`: true once the element is used, false for the general path (which also
/// takes every push with an inflight area: it tracks the element around the used index).
#[inline(always)]
pub fn push(dev: Dev, mem: &MemoryTable, vq: &mut VuVirtq, elem: Completed, len: u32) -> bool {
    let Some(ring) = lane_ring(dev, mem, vq, GENERAL_ONLY | 1 << VHOST_F_LOG_ALL) else {
        return false;
    };
    if !vq.inflight.is_null() {
        return false;
    }
    let old = vq.used_idx;
    let new = old.wrapping_add(1);
    ring.write_used(old, elem.index, len);
    ring.publish_used_idx(new);
    vq.used_idx = new;
    vq.inuse = vq.inuse.saturating_sub(1);
    // The driver's last signalled index fell out of the window the new entry opened.
    if (new.wrapping_sub(vq.signalled_used) as i16) < 1 {
        vq.signalled_used_valid = false;
    }
    true
}
