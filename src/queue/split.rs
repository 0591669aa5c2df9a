//! Split virtqueue operations behind `vu_queue_*`: pop, fill, flush, push, notify and friends.
//! Every function takes the queue's device, the memory table (read-locked by the caller, so
//! guest memory stays mapped), and the queue itself (one thread per queue, as in C).

use std::ops::ControlFlow;
use std::sync::atomic::{fence, Ordering};

use libc::iovec;

use crate::abi::*;
use crate::device::Dev;
use crate::dirty_log::VHOST_F_LOG_ALL;
use crate::inflight;
use crate::memory::MemoryTable;
use crate::queue::chain::{self, VRING_DESC_F_WRITE};
use crate::queue::element::ElementBuilder;
use crate::queue::ring::{avail_ring_size, desc_table_size, used_ring_size, SplitRing};
use crate::queue::Fault;

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

/// Points `vq.vring` at its three parts, each checked to lie wholly in one region and be
/// aligned as the virtio spec requires; on failure the ring is left unmapped.
pub fn map_ring(mem: &MemoryTable, vq: &mut VuVirtq) -> Result<(), &'static str> {
    vq.vring.desc = std::ptr::null_mut();
    vq.vring.avail = std::ptr::null_mut();
    vq.vring.used = std::ptr::null_mut();
    let num = vq.vring.num;
    if !valid_ring_size(num) {
        return Err("invalid ring size");
    }
    let n = u64::from(num);
    let part = |qva: u64, len: u64, align: usize| {
        mem.qva_to_va(qva, len)
            .filter(|p| (*p as usize).is_multiple_of(align))
            .ok_or("ring address outside guest memory or misaligned")
    };
    let desc = part(vq.vra.desc_user_addr, desc_table_size(n), 16)?;
    let avail = part(vq.vra.avail_user_addr, avail_ring_size(n), 2)?;
    let used = part(vq.vra.used_user_addr, used_ring_size(n), 4)?;
    vq.vring.desc = desc.cast();
    vq.vring.avail = avail.cast();
    vq.vring.used = used.cast();
    Ok(())
}

/// The ring if the queue can be used now, remapping it if a memory change unmapped it
/// (the original's `vu_is_vq_usable`).
#[inline]
pub fn usable(dev: Dev, mem: &MemoryTable, vq: &mut VuVirtq) -> Result<Option<SplitRing>, Fault> {
    if dev.broken() {
        return Ok(None);
    }
    // SAFETY: ring pointers are only ever set by `map_ring`, and the caller holds the read lock.
    if let Some(r) = unsafe { SplitRing::of(vq) } {
        return Ok(Some(r));
    }
    if vq.vra.desc_user_addr == 0 || vq.vra.used_user_addr == 0 || vq.vra.avail_user_addr == 0 {
        return Ok(None);
    }
    if map_ring(mem, vq).is_err() {
        return Err(Fault::Remap);
    }
    // SAFETY: just mapped by `map_ring`.
    Ok(unsafe { SplitRing::of(vq) })
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

/// Whether no buffer is waiting (`vu_queue_empty`).
#[inline]
pub fn is_empty(ring: &SplitRing, vq: &mut VuVirtq) -> Result<bool, Fault> {
    if vq.shadow_avail_idx != vq.last_avail_idx {
        return Ok(false);
    }
    Ok(refresh_avail(ring, vq, vq.last_avail_idx)? == vq.last_avail_idx)
}

/// `vu_queue_empty`: true when nothing is waiting or the queue is not ready.
pub fn empty(dev: Dev, mem: &MemoryTable, vq: &mut VuVirtq) -> Result<bool, Fault> {
    match usable(dev, mem, vq)? {
        Some(ring) => is_empty(&ring, vq),
        None => Ok(true),
    }
}

/// Maps the chain at `head` into one malloc'd element of `sz` bytes (NULL when out of memory).
fn map_element(
    mem: &MemoryTable,
    ring: &SplitRing,
    head: u16,
    sz: usize,
) -> Result<*mut VuVirtqElement, Fault> {
    let Some(mut elem) = ElementBuilder::new(sz) else { return Ok(std::ptr::null_mut()) };
    let mut out_num = 0usize;
    let mut writing = false;
    let mut hint = 0usize;
    chain::walk(mem, ring, head, |d| {
        let is_write = d.flags & VRING_DESC_F_WRITE != 0;
        if !is_write && writing {
            return Err(Fault::Order);
        }
        if d.len == 0 {
            return Err(Fault::ZeroSized);
        }
        let (mut addr, mut left) = (d.addr, u64::from(d.len));
        while left > 0 {
            let (p, len) = mem.translate_cached(addr, left, &mut hint).ok_or(Fault::BadAddress)?;
            if !elem.push(iovec { iov_base: p.cast(), iov_len: len as usize }) {
                return Err(Fault::TooManySegments);
            }
            left -= len;
            addr = addr.checked_add(len).ok_or(Fault::BadAddress)?;
        }
        if is_write {
            writing = true;
        } else {
            out_num = elem.len();
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(elem.finish(u32::from(head), out_num))
}

/// `vu_queue_pop`: the next request, or NULL when there is none (or no memory for it).
pub fn pop(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    sz: usize,
) -> Result<*mut VuVirtqElement, Fault> {
    let Some(ring) = usable(dev, mem, vq)? else { return Ok(std::ptr::null_mut()) };

    if !vq.resubmit_list.is_null() && vq.resubmit_num > 0 {
        vq.resubmit_num -= 1;
        // SAFETY: the list holds the original resubmit_num entries (malloc'd by inflight).
        let head = unsafe { (*vq.resubmit_list.add(usize::from(vq.resubmit_num))).index };
        if vq.resubmit_num == 0 {
            inflight::free_resubmit_list(vq);
        }
        if head >= ring.num() {
            return Err(Fault::BadHead(u32::from(head)));
        }
        return map_element(mem, &ring, head, sz);
    }

    if is_empty(&ring, vq)? {
        return Ok(std::ptr::null_mut());
    }
    // Read the descriptors only after seeing the avail index that covers them.
    fence(Ordering::Acquire);

    if vq.inuse >= u32::from(ring.num()) {
        return Err(Fault::SizeExceeded);
    }
    let head = ring.avail_entry(vq.last_avail_idx);
    vq.last_avail_idx = vq.last_avail_idx.wrapping_add(1);
    if head >= ring.num() {
        return Err(Fault::BadHead(u32::from(head)));
    }
    if dev.has_feature(VIRTIO_RING_F_EVENT_IDX) && vq.notification {
        ring.set_avail_event(vq.last_avail_idx);
    }
    let elem = map_element(mem, &ring, head, sz)?;
    if elem.is_null() {
        return Ok(elem);
    }
    vq.inuse += 1;
    inflight::on_pop(dev, vq, qidx, u32::from(head))?;
    Ok(elem)
}

/// `vu_queue_unpop`.
pub fn unpop(vq: &mut VuVirtq) {
    vq.last_avail_idx = vq.last_avail_idx.wrapping_sub(1);
    vq.inuse = vq.inuse.wrapping_sub(1);
}

/// `vu_queue_rewind`.
pub fn rewind(vq: &mut VuVirtq, num: u32) -> bool {
    if num > vq.inuse {
        return false;
    }
    vq.last_avail_idx = vq.last_avail_idx.wrapping_sub(num as u16);
    vq.inuse -= num;
    true
}

/// Whether migration logging is on (checked inline; the logging itself is out of line).
#[inline]
fn logging(dev: Dev) -> bool {
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
        signal_eventfd(fd)?;
    }
    Ok(())
}

/// Logs the device-writable buffers of a completed element, up to `len` bytes, and its used
/// ring entry.
#[cold]
#[inline(never)]
fn log_fill(
    dev: Dev,
    mem: &MemoryTable,
    ring: &SplitRing,
    vq: &VuVirtq,
    head: u32,
    mut len: u32,
    slot: u16,
) -> Result<(), Fault> {
    if dev.log_table().is_null() {
        return Ok(());
    }
    let head = u16::try_from(head).ok().filter(|h| *h < ring.num()).ok_or(Fault::BadElement)?;
    chain::walk(mem, ring, head, |d| {
        if d.flags & VRING_DESC_F_WRITE != 0 {
            let n = d.len.min(len);
            log_write(dev, d.addr, u64::from(n))?;
            len -= n;
        }
        Ok(if len == 0 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) })
    })?;
    log_write(dev, vq.vring.log_guest_addr.wrapping_add(ring.used_entry_offset(slot)), 8)
}

#[inline]
fn fill_ring(
    dev: Dev,
    mem: &MemoryTable,
    ring: &SplitRing,
    vq: &VuVirtq,
    index: u32,
    len: u32,
    idx: u32,
) -> Result<(), Fault> {
    let slot = vq.used_idx.wrapping_add(idx as u16);
    ring.write_used(slot, index, len);
    if logging(dev) {
        log_fill(dev, mem, ring, vq, index, len, slot)?;
    }
    Ok(())
}

#[inline]
fn flush_ring(dev: Dev, ring: &SplitRing, vq: &mut VuVirtq, count: u32) -> Result<(), Fault> {
    let old = vq.used_idx;
    let new = old.wrapping_add(count as u16);
    ring.publish_used_idx(new);
    vq.used_idx = new;
    vq.inuse = vq.inuse.saturating_sub(count);
    if i32::from(new.wrapping_sub(vq.signalled_used) as i16) < i32::from(new.wrapping_sub(old)) {
        vq.signalled_used_valid = false;
    }
    if logging(dev) {
        log_write(dev, vq.vring.log_guest_addr.wrapping_add(2), 2)?;
    }
    Ok(())
}

/// `vu_queue_fill`.
pub fn fill(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    index: u32,
    len: u32,
    idx: u32,
) -> Result<(), Fault> {
    let Some(ring) = usable(dev, mem, vq)? else { return Ok(()) };
    fill_ring(dev, mem, &ring, vq, index, len, idx)
}

/// `vu_queue_flush`.
pub fn flush(dev: Dev, mem: &MemoryTable, vq: &mut VuVirtq, count: u32) -> Result<(), Fault> {
    let Some(ring) = usable(dev, mem, vq)? else { return Ok(()) };
    flush_ring(dev, &ring, vq, count)
}

/// `vu_queue_push`: fill + flush of one element, with inflight bookkeeping around the flush.
pub fn push(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
    index: u32,
    len: u32,
) -> Result<(), Fault> {
    let Some(ring) = usable(dev, mem, vq)? else {
        // No ring: nothing to publish, but the element is no longer in flight.
        inflight::before_put(dev, vq, qidx, index)?;
        return inflight::after_put(dev, vq, qidx, index);
    };
    fill_ring(dev, mem, &ring, vq, index, len, 0)?;
    inflight::before_put(dev, vq, qidx, index)?;
    flush_ring(dev, &ring, vq, 1)?;
    inflight::after_put(dev, vq, qidx, index)
}

fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// Whether the driver wants an interrupt now (EVENT_IDX and NOTIFY_ON_EMPTY rules).
fn should_notify(dev: Dev, ring: &SplitRing, vq: &mut VuVirtq) -> Result<bool, Fault> {
    // Expose the used entries before reading the driver's suppression state.
    fence(Ordering::SeqCst);
    if dev.has_feature(VIRTIO_F_NOTIFY_ON_EMPTY) && vq.inuse == 0 && is_empty(ring, vq)? {
        return Ok(true);
    }
    if !dev.has_feature(VIRTIO_RING_F_EVENT_IDX) {
        return Ok(ring.avail_flags() & VRING_AVAIL_F_NO_INTERRUPT == 0);
    }
    let valid = vq.signalled_used_valid;
    vq.signalled_used_valid = true;
    let old = vq.signalled_used;
    let new = vq.used_idx;
    vq.signalled_used = new;
    Ok(!valid || need_event(ring.used_event(), new, old))
}

/// How a notification should be delivered, decided under the memory lock and carried out
/// after it is released (an in-band message may block on the frontend).
#[derive(Clone, Copy)]
pub enum Notify {
    None,
    Eventfd(libc::c_int),
    InBand { ack: bool },
}

/// Decides whether and how `vu_queue_notify(_sync)` signals the driver.
pub fn notify_decision(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    sync: bool,
) -> Result<Notify, Fault> {
    let Some(ring) = usable(dev, mem, vq)? else { return Ok(Notify::None) };
    if !should_notify(dev, &ring, vq)? {
        return Ok(Notify::None);
    }
    if vq.call_fd >= 0 {
        return Ok(Notify::Eventfd(vq.call_fd));
    }
    use VhostUserProtocolFeature::*;
    if dev.has_protocol_feature(VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS)
        && dev.has_protocol_feature(VHOST_USER_PROTOCOL_F_BACKEND_REQ)
    {
        return Ok(Notify::InBand {
            ack: sync && dev.has_protocol_feature(VHOST_USER_PROTOCOL_F_REPLY_ACK),
        });
    }
    // No call fd and no in-band channel (the frontend polls): nothing to signal.
    Ok(Notify::None)
}

pub fn signal_eventfd(fd: libc::c_int) -> Result<(), Fault> {
    crate::fd::eventfd_write(fd).map_err(|e| Fault::EventfdWrite(e.raw_os_error().unwrap_or(0)))
}

/// `vu_queue_set_notification`.
pub fn set_notification(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    enable: bool,
) -> Result<(), Fault> {
    vq.notification = enable;
    let Some(ring) = usable(dev, mem, vq)? else { return Ok(()) };
    if dev.has_feature(VIRTIO_RING_F_EVENT_IDX) {
        let idx = refresh_avail(&ring, vq, vq.last_avail_idx)?;
        if vq.notification {
            ring.set_avail_event(idx);
        }
    } else if enable {
        ring.set_used_flags(ring.used_flags() & !VRING_USED_F_NO_NOTIFY);
    } else {
        ring.set_used_flags(ring.used_flags() | VRING_USED_F_NO_NOTIFY);
    }
    if enable {
        // Expose the event index / flags before the caller re-checks the avail index.
        fence(Ordering::SeqCst);
    }
    Ok(())
}

/// `vu_queue_get_avail_bytes`: bytes the driver offers in waiting requests, counted up to
/// the given maxima. Returns (in, out).
pub fn avail_bytes(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    max_in: u32,
    max_out: u32,
) -> Result<(u32, u32), Fault> {
    let Some(ring) = usable(dev, mem, vq)? else { return Ok((0, 0)) };
    let (mut in_total, mut out_total) = (0u32, 0u32);
    let mut idx = vq.last_avail_idx;
    loop {
        let avail = ring.avail_idx();
        let pending = avail.wrapping_sub(idx);
        if avail.wrapping_sub(vq.last_avail_idx) > ring.num() {
            return Err(Fault::AvailIndexJump { from: idx, to: avail });
        }
        if pending == 0 {
            return Ok((in_total, out_total));
        }
        fence(Ordering::Acquire);
        let head = ring.avail_entry(idx);
        idx = idx.wrapping_add(1);
        if head >= ring.num() {
            return Err(Fault::BadHead(u32::from(head)));
        }
        let mut done = false;
        chain::walk(mem, &ring, head, |d| {
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
