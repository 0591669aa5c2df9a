//! Inflight I/O tracking (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD): a shared-memory record of
//! which descriptors the device popped and has not completed, so that after a backend crash
//! and reconnect they are handed out again in their original order.

use std::sync::atomic::{compiler_fence, Ordering};

use crate::abi::*;
use crate::device::Dev;
use crate::queue::Fault;

/// The version written into a fresh inflight area.
pub const INFLIGHT_VERSION: u16 = 1;
const INFLIGHT_ALIGNMENT: u64 = 64;

/// Bytes of one queue's inflight area, as QEMU computes it (the frontend sizes the fd so).
pub fn queue_region_size(queue_size: u16) -> u64 {
    let raw = std::mem::size_of::<VuDescStateSplit>() as u64 * u64::from(queue_size) + 2;
    raw.div_ceil(INFLIGHT_ALIGNMENT) * INFLIGHT_ALIGNMENT
}

/// How many descriptor states fit between the queue's area and the end of the inflight
/// mapping (`VuDev.inflight_info`), which SET_INFLIGHT_FD set together with `vq.inflight`.
/// The frontend's own `desc_num` in shared memory is never trusted for bounds.
fn capacity(dev: Dev, vq: &VuVirtq) -> usize {
    let info = dev.inflight_info();
    let (start, end) =
        (info.addr as usize, (info.addr as usize).saturating_add(info.size as usize));
    let area = vq.inflight as usize;
    if area < start || area >= end {
        return 0;
    }
    (end - area).saturating_sub(std::mem::size_of::<VuVirtqInflight>())
        / std::mem::size_of::<VuDescStateSplit>()
}

/// The state slot of descriptor `idx` in the queue's area, if the area has one.
#[inline]
fn slot(
    dev: Dev,
    vq: &VuVirtq,
    qidx: usize,
    idx: u32,
) -> Result<Option<*mut VuDescStateSplit>, Fault> {
    if vq.inflight.is_null()
        || !dev.has_protocol_feature(VhostUserProtocolFeature::VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD)
    {
        return Ok(None);
    }
    if idx as usize >= capacity(dev, vq) {
        return Err(Fault::InflightSlot { queue: qidx, desc: idx });
    }
    // SAFETY: `inflight` points into the inflight mapping, which holds at least `capacity`
    // slots past it and stays mapped under the memory lock the caller holds; idx is below.
    Ok(Some(unsafe {
        (std::ptr::addr_of_mut!((*vq.inflight).desc) as *mut VuDescStateSplit).add(idx as usize)
    }))
}

/// Records that `head` was popped (the original's `vu_queue_inflight_get`).
#[inline]
pub fn on_pop(dev: Dev, vq: &mut VuVirtq, qidx: usize, head: u32) -> Result<(), Fault> {
    if let Some(s) = slot(dev, vq, qidx, head)? {
        let counter = vq.counter;
        vq.counter = counter.wrapping_add(1);
        // SAFETY: `s` is a valid slot (see `slot`); the frontend may read it at any time.
        unsafe {
            std::ptr::addr_of_mut!((*s).counter).write_volatile(counter);
            std::ptr::addr_of_mut!((*s).inflight).write_volatile(1);
        }
    }
    Ok(())
}

/// Before publishing `head` as used: remember it as the last batch head.
#[inline]
pub fn before_put(dev: Dev, vq: &mut VuVirtq, qidx: usize, head: u32) -> Result<(), Fault> {
    if slot(dev, vq, qidx, head)?.is_some() {
        // SAFETY: `inflight` is valid (slot() checked it).
        unsafe {
            std::ptr::addr_of_mut!((*vq.inflight).last_batch_head).write_volatile(head as u16)
        };
    }
    Ok(())
}

/// After publishing `head` as used: clear it and record the used index.
#[inline]
pub fn after_put(dev: Dev, vq: &mut VuVirtq, qidx: usize, head: u32) -> Result<(), Fault> {
    if let Some(s) = slot(dev, vq, qidx, head)? {
        compiler_fence(Ordering::SeqCst);
        // SAFETY: valid slot and area header (see `slot`).
        unsafe {
            std::ptr::addr_of_mut!((*s).inflight).write_volatile(0);
            compiler_fence(Ordering::SeqCst);
            std::ptr::addr_of_mut!((*vq.inflight).used_idx).write_volatile(vq.used_idx);
        }
    }
    Ok(())
}

/// On queue start (SET_VRING_KICK): rebuild `inuse` and the resubmit list from the area, as
/// the original's `vu_check_queue_inflights`. `used_idx` is the ring's current used index.
pub fn check_queue(
    dev: Dev,
    vq: &mut VuVirtq,
    qidx: usize,
    used_idx: Option<u16>,
) -> Result<(), String> {
    if !dev.has_protocol_feature(VhostUserProtocolFeature::VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD) {
        return Ok(());
    }
    if vq.inflight.is_null() {
        return Err("no inflight area".into());
    }
    let _ = qidx;
    let cap = capacity(dev, vq);
    let area = vq.inflight;
    if cap == 0 {
        return Err("inflight area outside the inflight mapping".into());
    }
    // SAFETY: `area` is a queue area of our inflight mapping with `cap` slots; all accesses
    // below are volatile and bounded by `cap` because the frontend shares this memory.
    unsafe {
        let version = std::ptr::addr_of!((*area).version).read_volatile();
        if version == 0 {
            std::ptr::addr_of_mut!((*area).version).write_volatile(INFLIGHT_VERSION);
            return Ok(());
        }
        let used_idx = used_idx.ok_or("rings not mapped")?;
        vq.used_idx = used_idx;
        free_resubmit_list(vq);
        vq.counter = 0;
        let desc = std::ptr::addr_of_mut!((*area).desc) as *mut VuDescStateSplit;
        if std::ptr::addr_of!((*area).used_idx).read_volatile() != used_idx {
            let head = usize::from(std::ptr::addr_of!((*area).last_batch_head).read_volatile());
            if head < cap {
                std::ptr::addr_of_mut!((*desc.add(head)).inflight).write_volatile(0);
            }
            compiler_fence(Ordering::SeqCst);
            std::ptr::addr_of_mut!((*area).used_idx).write_volatile(used_idx);
        }
        let desc_num = usize::from(std::ptr::addr_of!((*area).desc_num).read_volatile()).min(cap);
        let mut pending: Vec<VuVirtqInflightDesc> = Vec::new();
        for i in 0..desc_num {
            let s = desc.add(i);
            if std::ptr::addr_of!((*s).inflight).read_volatile() == 1 {
                pending.push(VuVirtqInflightDesc {
                    index: i as u16,
                    counter: std::ptr::addr_of!((*s).counter).read_volatile(),
                });
            }
        }
        vq.inuse = pending.len() as u32;
        let last = vq.inuse.wrapping_add(u32::from(used_idx)) as u16;
        vq.last_avail_idx = last;
        vq.shadow_avail_idx = last;
        if !pending.is_empty() {
            // Oldest last: pop takes from the end, so requests resume in fetch order.
            pending.sort_by_key(|d| std::cmp::Reverse(d.counter));
            let bytes = pending.len() * std::mem::size_of::<VuVirtqInflightDesc>();
            let list = libc::malloc(bytes) as *mut VuVirtqInflightDesc;
            if list.is_null() {
                return Err("out of memory".into());
            }
            std::ptr::copy_nonoverlapping(pending.as_ptr(), list, pending.len());
            vq.resubmit_list = list;
            vq.resubmit_num = pending.len() as u16;
            vq.counter = pending[0].counter.wrapping_add(1);
        }
    }
    // In case of an I/O hang after reconnecting: make the device look at the queue.
    if vq.kick_fd >= 0 {
        crate::fd::eventfd_write(vq.kick_fd).map_err(|e| format!("kick eventfd write: {e}"))?;
    }
    Ok(())
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
