//! The split ring's implementation of the queue operations.

use std::ops::ControlFlow;
use std::sync::atomic::{fence, Ordering};

use crate::abi::*;
use crate::device::Dev;
use crate::dirty_log::VHOST_F_LOG_ALL;
use crate::inflight;
use crate::iotlb::{PERM_RO, PERM_WO};
use crate::memory::MemoryTable;
use crate::queue::chain::{self, VRING_DESC_F_WRITE};
use crate::queue::mapper::ElementMapper;
use crate::queue::ring::{avail_ring_size, desc_table_size, used_ring_size, SplitRing};
use crate::queue::{Completed, Fault, Queue, RingOps};

pub const VIRTIO_F_NOTIFY_ON_EMPTY: u32 = 24;
pub const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;
pub const VIRTIO_F_VERSION_1: u32 = 32;
const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
const VRING_USED_F_NO_NOTIFY: u16 = 1;

/// Whether `num` is a ring size we accept: a power of two from 1 to 1024.
pub fn valid_ring_size(num: u32) -> bool {
    num.is_power_of_two() && num <= VIRTQUEUE_MAX_SIZE
}

/// Points `vq.vring` at the three parts of a split ring, each checked to lie wholly in one
/// region (with the IOMMU: to be translated by IOTLB entries that allow what the device does
/// with it) and be aligned as the virtio spec requires; on failure the ring is left unmapped.
pub fn map_ring(mem: &MemoryTable, vq: &mut VuVirtq) -> Result<(), Fault> {
    super::unmap_ring(vq);
    let num = vq.vring.num;
    if !valid_ring_size(num) {
        return Err(Fault::Remap);
    }
    let n = u64::from(num);
    let desc = mem.ring_part(vq.vra.desc_user_addr, desc_table_size(n), 16, PERM_RO)?;
    let avail = mem.ring_part(vq.vra.avail_user_addr, avail_ring_size(n), 2, PERM_RO)?;
    let used = mem.ring_part(vq.vra.used_user_addr, used_ring_size(n), 4, PERM_WO)?;
    // `desc` last: it is the mapped flag (see `unmap_ring`).
    vq.vring.avail = avail.cast();
    vq.vring.used = used.cast();
    vq.vring.desc = desc.cast();
    Ok(())
}

/// Reads the driver's avail index into `shadow_avail_idx`, refusing a jump of more than the
/// ring size past `from`.
#[inline]
fn refresh_avail(ring: &SplitRing, vq: &mut VuVirtq, from: u16) -> Result<u16, Fault> {
    let idx = ring.avail_idx();
    if idx.wrapping_sub(from) > ring.num() {
        return Err(Fault::AvailIndexJump { from, to: idx });
    }
    vq.shadow_avail_idx = idx;
    Ok(idx)
}

/// Whether no buffer is waiting.
#[inline]
fn is_empty(ring: &SplitRing, vq: &mut VuVirtq) -> Result<bool, Fault> {
    if vq.shadow_avail_idx != vq.last_avail_idx {
        return Ok(false);
    }
    Ok(refresh_avail(ring, vq, vq.last_avail_idx)? == vq.last_avail_idx)
}

/// `is_empty` for a caller that will wait for a kick when it is: the ring is armed first
/// (`arm_avail_event`), so a buffer published meanwhile is seen here or kicked.
#[inline]
fn is_empty_armed(dev: Dev, ring: &SplitRing, vq: &mut VuVirtq) -> Result<bool, Fault> {
    if !is_empty(ring, vq)? {
        return Ok(false);
    }
    if !arm_avail_event(dev, ring, vq) {
        return Ok(true);
    }
    Ok(refresh_avail(ring, vq, vq.last_avail_idx)? == vq.last_avail_idx)
}

/// EVENT_IDX, when a pop or `vu_queue_empty` finds the ring empty: sets `avail_event` to
/// `last_avail_idx` unless it already holds it, then fences (unless notifications are off),
/// so that the caller's second look at the avail index sees any buffer the driver published
/// before reading `avail_event` (the driver kicks for any buffer it publishes after). True
/// when it armed the ring: the caller must read the avail index again.
///
/// Otherwise `avail_event` is written only where its value can decide a kick (at a pop that
/// takes the last buffer the device knew of, `keep_avail_event_at_pop`, and before an unpop
/// or rewind), so a backend that goes to sleep without having seen the ring empty is kicked
/// when the original's would be.
#[inline(always)]
pub fn arm_avail_event(dev: Dev, ring: &SplitRing, vq: &VuVirtq) -> bool {
    if !asks_for_kicks(dev, vq) {
        return false;
    }
    if ring.avail_event() != vq.last_avail_idx {
        ring.set_avail_event(vq.last_avail_idx);
    }
    // Fenced even when it held the value already: the pop that wrote it did not fence, and the
    // driver reads it after publishing (each side stores, then loads the other's index).
    fence(Ordering::SeqCst);
    true
}

/// Maps the chain at `head` into one malloc'd element of `sz` bytes (NULL when out of memory).
#[inline(always)]
fn map_element(
    mem: &MemoryTable,
    ring: &SplitRing,
    head: u16,
    sz: usize,
) -> Result<*mut VuVirtqElement, Fault> {
    let Some(mut elem) = ElementMapper::new(mem, sz) else { return Ok(std::ptr::null_mut()) };
    chain::map_chain(mem, ring, head, &mut elem)?;
    Ok(elem.finish(u32::from(head)))
}

/// At a pop (once the head is taken, before its chain is read): `avail_event` to `next`, the
/// `last_avail_idx` after it, as the original writes it at every pop, but only when this pop
/// takes the last buffer the device knows of. That is the one case where the value can
/// decide a kick: with buffers left that the device saw, the driver's avail index is past
/// them, so past both the stale value and this one, and neither asks for a kick. Saved: the
/// store to the cache line the driver reads at every kick decision, and, where the device
/// catches up with the driver only now and then, the driver's kicks (the example backend at
/// depth 16, polling: 1.26 → 1.60 requests/s of the original's). At the pop rather than at
/// the next notify or empty ring: there the store would hold up the fence that follows for a
/// round trip to the other CPU (7.2 consumers at depth 1: 0.98 → 1.02 IOPS of the original's),
/// here it completes while the request is processed. No fence: an empty ring's arm fences.
#[inline(always)]
pub fn keep_avail_event_at_pop(dev: Dev, ring: &SplitRing, next: u16, vq: &VuVirtq) {
    if vq.shadow_avail_idx == next && asks_for_kicks(dev, vq) {
        ring.set_avail_event(next);
    }
}

/// Whether the device keeps `avail_event` (EVENT_IDX, notifications on): the one condition of
/// every write of it.
#[inline(always)]
fn asks_for_kicks(dev: Dev, vq: &VuVirtq) -> bool {
    dev.features() & 1 << VIRTIO_RING_F_EVENT_IDX != 0 && vq.notification
}

/// Sets `avail_event` to the original's value, `last_avail_idx`, unless it holds it or
/// notifications are off (see `arm_avail_event`; no fence). True when it wrote.
#[inline(always)]
pub fn keep_avail_event(dev: Dev, ring: &SplitRing, vq: &VuVirtq) -> bool {
    let stale = asks_for_kicks(dev, vq) && ring.avail_event() != vq.last_avail_idx;
    if stale {
        ring.set_avail_event(vq.last_avail_idx);
    }
    stale
}

/// Before elements go back to the ring: `avail_event` as the original has it then (the
/// index after the last pop), if the ring is mapped.
fn keep_avail_event_before_rewind(dev: Dev, mem: &MemoryTable, vq: &VuVirtq) {
    if let Some(ring) = SplitRing::under(vq, mem) {
        keep_avail_event(dev, &ring, vq);
    }
}

/// `vu_queue_unpop` (the original's arithmetic, ring or not).
pub fn unpop(dev: Dev, mem: &MemoryTable, vq: &mut VuVirtq) {
    keep_avail_event_before_rewind(dev, mem, vq);
    vq.last_avail_idx = vq.last_avail_idx.wrapping_sub(1);
    vq.inuse = vq.inuse.wrapping_sub(1);
}

/// `vu_queue_rewind` (no ring needed).
pub fn rewind(dev: Dev, mem: &MemoryTable, vq: &mut VuVirtq, num: u32) -> bool {
    if num > vq.inuse {
        return false;
    }
    keep_avail_event_before_rewind(dev, mem, vq);
    vq.last_avail_idx = vq.last_avail_idx.wrapping_sub(num as u16);
    vq.inuse -= num;
    true
}

/// Whether migration logging is on (checked inline; the logging itself is out of line).
#[inline]
pub fn logging(dev: Dev) -> bool {
    dev.has_feature(VHOST_F_LOG_ALL)
}

/// Marks guest memory the device wrote as dirty when migration logging is on.
#[cold]
#[inline(never)]
pub fn log_write(dev: Dev, addr: u64, len: u64) -> Result<(), Fault> {
    if !logging(dev) || len == 0 {
        return Ok(());
    }
    if dev.log_table().is_null() {
        return Ok(());
    }
    if !crate::dirty_log::mark(dev, addr, len) {
        return Err(Fault::LogTooSmall { addr, len });
    }
    // The caller holds the memory lock: SET_LOG_FD replaces the fd under the write lock.
    let fd = dev.log_call_fd();
    if fd >= 0 {
        signal_eventfd(dev, fd)?;
    }
    Ok(())
}

/// Logs the device-writable buffers of a completed element, up to `len` bytes, and its used
/// ring entry. Out of line, on values (see `queue::remap`).
#[cold]
#[inline(never)]
fn log_fill(
    dev: Dev,
    mem: MemoryTable,
    log_guest_addr: u64,
    ring: SplitRing,
    elem: Completed,
    len: u32,
    slot: u16,
) -> Result<(), Fault> {
    if dev.log_table().is_null() {
        return Ok(());
    }
    log_written(dev, &mem, elem, len)?;
    if mem.iotlb().is_some() {
        // With the IOMMU `log_guest_addr` is an IOVA: the used entry is logged by where it is.
        return log_used_host(dev, mem, ring, ring.used_entry_offset(slot), 8);
    }
    log_write(dev, log_guest_addr.wrapping_add(ring.used_entry_offset(slot)), 8)
}

/// Logs what the device wrote for a completed element: its device-writable buffers (the
/// element's own iovecs, so what was written, not what the guest's descriptors say now), up
/// to `len` bytes, each by the guest physical address of where it is mapped (the dirty log is
/// indexed by guest physical address, with or without the IOMMU). Both ring layouts.
pub fn log_written(
    dev: Dev,
    mem: &MemoryTable,
    elem: Completed,
    mut len: u32,
) -> Result<(), Fault> {
    for iov in elem.in_sg() {
        if len == 0 {
            break;
        }
        let n = (iov.iov_len as u64).min(u64::from(len));
        let gpa = mem.host_to_gpa(iov.iov_base as u64, n).ok_or(Fault::BadElement)?;
        log_write(dev, gpa, n)?;
        len -= n as u32;
    }
    Ok(())
}

/// Logs `len` bytes at `offset` in the used ring by where the ring is mapped (with the
/// IOMMU, where `log_guest_addr` is an IOVA).
#[cold]
#[inline(never)]
fn log_used_host(
    dev: Dev,
    mem: MemoryTable,
    ring: SplitRing,
    offset: u64,
    len: u64,
) -> Result<(), Fault> {
    let host = ring.used_host().wrapping_add(offset);
    let gpa = mem.host_to_gpa(host, len).ok_or(Fault::BadAddress)?;
    log_write(dev, gpa, len)
}

/// Pushing with no ring mapped: nothing to publish, but the element is no longer in flight.
pub fn forget(q: &mut Queue, index: u32) -> Result<(), Fault> {
    inflight::before_put(q.dev, q.vq, q.qidx, index)?;
    inflight::after_put(q.dev, q.vq, q.qidx, index)
}

fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// The split notify rule after the used entries were exposed and NOTIFY_ON_EMPTY was
/// handled: EVENT_IDX's used event (recording what is now signalled), else the driver's
/// NO_INTERRUPT flag.
#[inline(always)]
pub(crate) fn wants_interrupt(ring: &SplitRing, event_idx: bool, vq: &mut VuVirtq) -> bool {
    if !event_idx {
        return ring.avail_flags() & VRING_AVAIL_F_NO_INTERRUPT == 0;
    }
    let valid = vq.signalled_used_valid;
    vq.signalled_used_valid = true;
    let old = vq.signalled_used;
    let new = vq.used_idx;
    vq.signalled_used = new;
    !valid || need_event(ring.used_event(), new, old)
}

/// `vu_queue_notify`'s common case for a mapped split ring (see
/// `queue::quick_notify_open`): `None`, with nothing changed, when the ring is not mapped.
#[inline(always)]
pub fn quick_should_notify(dev: Dev, vq: &mut VuVirtq) -> Option<bool> {
    // SAFETY: ring pointers are only set by `map_ring` (a layout change unmaps them), and
    // the caller holds the memory lock.
    let ring = unsafe { SplitRing::of(vq) }?;
    // Read before the fence, which would have it read again (the features change only under
    // the write lock).
    let event_idx = dev.has_feature(VIRTIO_RING_F_EVENT_IDX);
    // Expose the used entries before reading the driver's suppression state.
    fence(Ordering::SeqCst);
    Some(wants_interrupt(&ring, event_idx, vq))
}

/// How a notification should be delivered, decided under the memory lock and carried out
/// after it is released (an in-band message may block on the frontend).
#[derive(Clone, Copy)]
pub enum Notify {
    None,
    Eventfd(libc::c_int),
    InBand { ack: bool },
}

/// How to signal the driver once the layout decided it wants a notification.
#[inline]
pub fn delivery(dev: Dev, vq: &VuVirtq, sync: bool) -> Notify {
    if vq.call_fd >= 0 {
        return Notify::Eventfd(vq.call_fd);
    }
    use VhostUserProtocolFeature::*;
    if dev.has_protocol_feature(VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS)
        && dev.has_protocol_feature(VHOST_USER_PROTOCOL_F_BACKEND_REQ)
    {
        return Notify::InBand {
            ack: sync && dev.has_protocol_feature(VHOST_USER_PROTOCOL_F_REPLY_ACK),
        };
    }
    // No call fd and no in-band channel (the frontend polls): nothing to signal.
    Notify::None
}

pub fn signal_eventfd(dev: Dev, fd: libc::c_int) -> Result<(), Fault> {
    crate::fd::eventfd_write(fd, dev.flags().guard_sigpipe())
        .map_err(|e| Fault::EventfdWrite(e.raw_os_error().unwrap_or(0)))
}

impl SplitRing {
    #[inline]
    fn fill_at(&self, q: &Queue, elem: Completed, len: u32, idx: u32) -> Result<(), Fault> {
        let slot = q.vq.used_idx.wrapping_add(idx as u16);
        self.write_used(slot, elem.index, len);
        if logging(q.dev) {
            log_fill(q.dev, q.mem, q.vq.vring.log_guest_addr, *self, elem, len, slot)?;
        }
        Ok(())
    }

    #[inline]
    fn flush_count(&self, q: &mut Queue, count: u32) -> Result<(), Fault> {
        let vq = &mut *q.vq;
        let old = vq.used_idx;
        let new = old.wrapping_add(count as u16);
        self.publish_used_idx(new);
        vq.used_idx = new;
        vq.inuse = vq.inuse.saturating_sub(count);
        if i32::from(new.wrapping_sub(vq.signalled_used) as i16) < i32::from(new.wrapping_sub(old))
        {
            vq.signalled_used_valid = false;
        }
        if logging(q.dev) {
            if q.mem.iotlb().is_some() {
                log_used_host(q.dev, q.mem, *self, 2, 2)?;
            } else {
                log_write(q.dev, vq.vring.log_guest_addr.wrapping_add(2), 2)?;
            }
        }
        Ok(())
    }
}

impl RingOps for SplitRing {
    #[inline]
    fn pop(&mut self, q: &mut Queue, sz: usize) -> Result<*mut VuVirtqElement, Fault> {
        let vq = &mut *q.vq;
        if !vq.resubmit_list.is_null() && vq.resubmit_num > 0 {
            let head = inflight::peek_resubmit(vq);
            if head >= self.num() {
                inflight::next_resubmit(vq);
                return Err(Fault::BadHead(u32::from(head)));
            }
            let elem = map_element(&q.mem, self, head, sz);
            // An IOTLB miss keeps the request for the retry.
            if !matches!(elem, Err(f) if f.is_miss()) {
                inflight::next_resubmit(q.vq);
            }
            return elem;
        }

        if is_empty_armed(q.dev, self, vq)? {
            return Ok(std::ptr::null_mut());
        }
        // Read the descriptors only after seeing the avail index that covers them.
        fence(Ordering::Acquire);

        if vq.inuse >= u32::from(self.num()) {
            return Err(Fault::SizeExceeded);
        }
        let head = self.avail_entry(vq.last_avail_idx);
        if head >= self.num() {
            vq.last_avail_idx = vq.last_avail_idx.wrapping_add(1);
            return Err(Fault::BadHead(u32::from(head)));
        }
        keep_avail_event_at_pop(q.dev, self, vq.last_avail_idx.wrapping_add(1), vq);
        vq.last_avail_idx = vq.last_avail_idx.wrapping_add(1);
        let Some(mut elem) = ElementMapper::new(&q.mem, sz) else {
            return Ok(std::ptr::null_mut());
        };
        match chain::map_chain(&q.mem, self, head, &mut elem) {
            Err(f) if f.is_miss() => {
                // Nothing popped: the retry after the IOTLB update starts from this head.
                q.vq.last_avail_idx = q.vq.last_avail_idx.wrapping_sub(1);
                return Err(f);
            }
            r => r?,
        }
        q.vq.inuse += 1;
        // The element is handed out only once the inflight area took the head: a refusal
        // drops (frees) it, as the original frees its element when vu_queue_inflight_get fails.
        inflight::on_pop(q.dev, q.vq, q.qidx, u32::from(head))?;
        Ok(elem.finish(u32::from(head)))
    }

    fn rewind(&mut self, q: &mut Queue, num: u32) -> bool {
        rewind(q.dev, &q.mem, q.vq, num)
    }

    fn fill(&mut self, q: &mut Queue, elem: Completed, len: u32, idx: u32) -> Result<(), Fault> {
        self.fill_at(q, elem, len, idx)
    }

    fn flush(&mut self, q: &mut Queue, count: u32) -> Result<(), Fault> {
        self.flush_count(q, count)
    }

    #[inline]
    fn push(&mut self, q: &mut Queue, elem: Completed, len: u32) -> Result<(), Fault> {
        self.fill_at(q, elem, len, 0)?;
        inflight::before_put(q.dev, q.vq, q.qidx, elem.index)?;
        self.flush_count(q, 1)?;
        inflight::after_put(q.dev, q.vq, q.qidx, elem.index)
    }

    fn is_empty(&mut self, q: &mut Queue) -> Result<bool, Fault> {
        is_empty_armed(q.dev, self, q.vq)
    }

    /// Whether the driver wants an interrupt now (EVENT_IDX and NOTIFY_ON_EMPTY rules).
    #[inline]
    fn should_notify(&mut self, q: &mut Queue) -> Result<bool, Fault> {
        let dev = q.dev;
        let vq = &mut *q.vq;
        // Expose the used entries before reading the driver's suppression state.
        fence(Ordering::SeqCst);
        if dev.has_feature(VIRTIO_F_NOTIFY_ON_EMPTY) && vq.inuse == 0 && is_empty(self, vq)? {
            return Ok(true);
        }
        Ok(wants_interrupt(self, dev.has_feature(VIRTIO_RING_F_EVENT_IDX), vq))
    }

    fn set_notification(&mut self, q: &mut Queue, enable: bool) -> Result<(), Fault> {
        if q.dev.has_feature(VIRTIO_RING_F_EVENT_IDX) {
            let idx = refresh_avail(self, q.vq, q.vq.last_avail_idx)?;
            if q.vq.notification {
                self.set_avail_event(idx);
            }
        } else if enable {
            self.set_used_flags(self.used_flags() & !VRING_USED_F_NO_NOTIFY);
        } else {
            self.set_used_flags(self.used_flags() | VRING_USED_F_NO_NOTIFY);
        }
        if enable {
            // Expose the event index / flags before the caller re-checks the avail index.
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
        let (mut in_total, mut out_total) = (0u32, 0u32);
        let mut idx = q.vq.last_avail_idx;
        // Once only: a driver rewriting `avail_event` must not keep this loop going.
        let mut may_arm = true;
        loop {
            let avail = self.avail_idx();
            let pending = avail.wrapping_sub(idx);
            if avail.wrapping_sub(q.vq.last_avail_idx) > self.num() {
                return Err(Fault::AvailIndexJump { from: idx, to: avail });
            }
            if pending == 0 {
                // Nothing at all: the caller may wait for a kick (see `arm_avail_event`).
                if idx == q.vq.last_avail_idx && may_arm && arm_avail_event(q.dev, self, q.vq) {
                    may_arm = false;
                    continue;
                }
                return Ok((in_total, out_total));
            }
            fence(Ordering::Acquire);
            let head = self.avail_entry(idx);
            idx = idx.wrapping_add(1);
            if head >= self.num() {
                return Err(Fault::BadHead(u32::from(head)));
            }
            let mut done = false;
            chain::walk(&q.mem, self, head, |d| {
                if d.flags & VRING_DESC_F_WRITE != 0 {
                    in_total = in_total.saturating_add(d.len);
                } else {
                    out_total = out_total.saturating_add(d.len);
                }
                done = in_total >= max_in && out_total >= max_out;
                Ok(if done { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
            })?;
            if done {
                return Ok((in_total, out_total));
            }
        }
    }
}
