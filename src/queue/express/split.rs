//! The express lane on a split ring (see the module above for what it takes and hands over).

use std::ptr::NonNull;
use std::sync::atomic::{fence, Ordering};

use crate::abi::{vring_desc, VuVirtq, VuVirtqElement};
use crate::device::Dev;
use crate::inflight::{self, TrackedPut};
use crate::memory::MemoryTable;
use crate::queue::chain::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
use crate::queue::ring::SplitRing;
use crate::queue::split;
use crate::queue::Completed;

use super::{lane_open, resubmitting, Buffers, Head, Pushed, PUSH_GENERAL_ONLY};

/// `vu_queue_pop`'s first part on a split ring: the ring's readiness and the avail ring's
/// next head, checked as the general path checks them (changes only `shadow_avail_idx`, to a
/// valid avail index, as the general path would).
#[inline(always)]
pub fn pop_head(dev: Dev, mem: &MemoryTable, vq: &mut VuVirtq) -> Head {
    if !lane_open(dev, 0) || resubmitting(vq) {
        return Head::General;
    }
    let Some(ring) = SplitRing::under(vq, mem) else { return Head::General };
    let last = vq.last_avail_idx;
    if vq.shadow_avail_idx == last {
        let mut idx = ring.avail_idx();
        if idx == last {
            // Empty: ask for a kick, then look once more (as the general path).
            if !split::arm_avail_event(dev, &ring, vq) {
                return Head::Empty;
            }
            idx = ring.avail_idx();
        }
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
    // The kick request, as the general path writes it (should the chain go there, that
    // writes the same).
    split::keep_avail_event_at_pop(dev, &ring, last.wrapping_add(1), vq);
    Head::At(head)
}

/// `vu_queue_pop`'s second part on a split ring, for the head `pop_head` found: the chain at
/// `head` (direct, or an indirect table in place), each descriptor read once and translated
/// straight into iovecs, then popped; `None` (nothing changed) for the general path.
///
/// # Safety
/// `pop_head` returned `Head::At(head)` for `vq` and the caller has not left the memory lock
/// (`mem`'s) since: the ring it checked is still mapped, as it found it.
#[inline(always)]
pub unsafe fn pop_chain(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    head: u16,
    sz: usize,
) -> Option<NonNull<VuVirtqElement>> {
    // SAFETY: this function's contract: `SplitRing::under` found the ring mapped in this
    // entry of the lock, and ring pointers change only under the write lock.
    let ring = unsafe { SplitRing::checked_earlier(vq) };
    let mut bufs = Buffers::new(mem, sz)?;
    let first = ring.desc(head)?;
    if first.flags & VRING_DESC_F_INDIRECT != 0 {
        let table = bufs.table(first.addr, first.len)?;
        walk(&mut bufs, table.len, table.get(0)?, |i| table.get(i))?;
    } else {
        walk(&mut bufs, ring.num(), first, |i| ring.desc(i))?;
    }
    let elem = bufs.finish(head)?;
    if !vq.inflight.is_null() && inflight::track_pop(dev, vq, qidx, u32::from(head)).is_err() {
        // The general path pops the head again and reports the refusal.
        // SAFETY: our own element, just built and not handed out.
        unsafe { libc::free(elem.as_ptr().cast()) };
        return None;
    }
    vq.last_avail_idx = vq.last_avail_idx.wrapping_add(1);
    vq.inuse += 1;
    Some(elem)
}

/// The buffers of the chain that starts with `d`, in a table of `len` descriptors (the ring,
/// or an indirect table: `get` reads entry `i`). `None` for what the general path refuses: a
/// `next` outside the table, more than `len` descriptors (a loop), an indirect descriptor
/// (in a chain, or nested in a table), and the buffers' own faults.
#[inline(always)]
fn walk(
    bufs: &mut Buffers,
    len: u16,
    mut d: vring_desc,
    get: impl Fn(u16) -> Option<vring_desc>,
) -> Option<()> {
    let mut left = len;
    loop {
        if d.flags & VRING_DESC_F_INDIRECT != 0 {
            return None;
        }
        bufs.add(d.addr, d.len, d.flags)?;
        if d.flags & VRING_DESC_F_NEXT == 0 {
            return Some(());
        }
        // A chain visits at most `len` descriptors; one more is a loop.
        left -= 1;
        if left == 0 {
            return None;
        }
        d = get(d.next)?;
    }
}

/// `vu_queue_push` on a split ring: the used entry, then the used index.
#[inline(always)]
pub fn push(dev: Dev, mem: &MemoryTable, vq: &mut VuVirtq, elem: Completed, len: u32) -> Pushed {
    if !lane_open(dev, PUSH_GENERAL_ONLY) {
        return Pushed::General;
    }
    // (Without the feature acked an area is not tracked: the plain push below.)
    if !vq.inflight.is_null() && inflight::tracking(dev) {
        return Pushed::Tracked;
    }
    let Some(ring) = SplitRing::under(vq, mem) else { return Pushed::General };
    publish(ring, vq, elem, len);
    Pushed::Done
}

/// `push` with an inflight area and the feature acked (`Pushed::Tracked`): the entry is
/// marked around the used entry and index. False (nothing changed) for the general path.
#[inline(always)]
pub fn push_tracked(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    elem: Completed,
    len: u32,
) -> bool {
    let Some(ring) = SplitRing::under(vq, mem) else { return false };
    // No slot for the head: the general path reports it.
    let Some(put) = TrackedPut::begin_tracked(dev, vq, elem.index) else { return false };
    let used_idx = publish(ring, vq, elem, len);
    put.finish_at(used_idx);
    true
}

/// The used entry, then the used index (returned).
#[inline(always)]
fn publish(ring: SplitRing, vq: &mut VuVirtq, elem: Completed, len: u32) -> u16 {
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
    new
}
