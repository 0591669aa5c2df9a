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
use crate::queue::split::{VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_RING_F_EVENT_IDX};
use crate::queue::{Completed, Fault, VIRTIO_F_RING_PACKED};

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

/// `vu_queue_pop`: `Some(element)`, `Some(NULL)` when the ring is empty, `None` for the
/// general path.
#[inline(always)]
pub fn pop(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    sz: usize,
) -> Option<*mut VuVirtqElement> {
    let ring = lane_ring(dev, mem, vq, GENERAL_ONLY)?;
    if !vq.resubmit_list.is_null() && vq.resubmit_num > 0 {
        return None;
    }
    let last = vq.last_avail_idx;
    if vq.shadow_avail_idx == last {
        let idx = ring.avail_idx();
        if idx.wrapping_sub(last) > ring.num() {
            return None;
        }
        vq.shadow_avail_idx = idx;
        if idx == last {
            return Some(std::ptr::null_mut());
        }
    }
    // Read the descriptors only after seeing the avail index that covers them.
    fence(Ordering::Acquire);
    if vq.inuse >= u32::from(ring.num()) {
        return None;
    }
    let head = ring.avail_entry(last);
    if head >= ring.num() {
        return None;
    }
    let elem = map_chain(mem, &ring, head, sz)?;
    if !vq.inflight.is_null() && inflight::on_pop(dev, vq, qidx, u32::from(head)).is_err() {
        // The general path pops the head again and reports the refusal.
        // SAFETY: our own element, just built and not handed out.
        unsafe { libc::free(elem.as_ptr().cast()) };
        return None;
    }
    let next = last.wrapping_add(1);
    vq.last_avail_idx = next;
    vq.inuse += 1;
    if dev.features() & 1 << VIRTIO_RING_F_EVENT_IDX != 0 && vq.notification {
        ring.set_avail_event(next);
    }
    Some(elem.as_ptr())
}

/// The direct chain at `head` as an element of `sz` bytes: each descriptor read once and
/// translated straight into iovecs. `None` for anything else (an indirect table, any guest
/// error, no memory), with nothing kept. Out of line: its own registers hold the walk.
#[inline(never)]
fn map_chain(
    mem: &MemoryTable,
    ring: &SplitRing,
    head: u16,
    sz: usize,
) -> Option<NonNull<VuVirtqElement>> {
    let (mem, ring) = (*mem, *ring);
    if sz < std::mem::size_of::<VuVirtqElement>() {
        return None;
    }
    let mut elem = ElementBuilder::new(sz)?;
    let mut hint = mem.first_hint();
    let (mut i, mut left) = (head, ring.num());
    // The out iovecs come first: a readable buffer after `out_num` iovecs is out of order.
    let mut out_num = 0usize;
    loop {
        let d = ring.desc(i)?;
        if d.flags & VRING_DESC_F_INDIRECT != 0 || d.len == 0 {
            return None;
        }
        let write = d.flags & VRING_DESC_F_WRITE != 0;
        if !write && elem.len() != out_num {
            return None;
        }
        let len = u64::from(d.len);
        match hint.whole(d.addr, len) {
            Some(p) => {
                if !elem.push(iovec { iov_base: p.cast(), iov_len: len as usize }) {
                    return None;
                }
            }
            None => (elem, hint) = map_buffer(mem, elem, d.addr, len)?,
        }
        if !write {
            out_num = elem.len();
        }
        if d.flags & VRING_DESC_F_NEXT == 0 {
            return NonNull::new(elem.finish(u32::from(head), out_num));
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

/// `vu_queue_push`: `Some` once the element is used (or the fault to report), `None` for the
/// general path.
#[inline(always)]
pub fn push(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    elem: Completed,
    len: u32,
) -> Option<Result<(), Fault>> {
    let ring = lane_ring(dev, mem, vq, GENERAL_ONLY | 1 << VHOST_F_LOG_ALL)?;
    let tracked = !vq.inflight.is_null();
    if tracked && inflight::before_put(dev, vq, qidx, elem.index).is_err() {
        return None;
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
    if tracked {
        return Some(inflight::after_put(dev, vq, qidx, elem.index));
    }
    Some(Ok(()))
}

/// Whether `vu_queue_notify` should signal the driver; `None` (nothing changed) for the
/// general path.
#[inline(always)]
pub fn should_notify(dev: Dev, mem: &MemoryTable, vq: &mut VuVirtq) -> Option<bool> {
    let ring = lane_ring(dev, mem, vq, GENERAL_ONLY | 1 << VIRTIO_F_NOTIFY_ON_EMPTY)?;
    // Expose the used entries before reading the driver's suppression state.
    fence(Ordering::SeqCst);
    Some(crate::queue::split::wants_interrupt(&ring, dev, vq))
}
