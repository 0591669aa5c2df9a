//! Per-queue setup requests: SET_VRING_*, GET_VRING_BASE, SET_VRING_ENABLE, VRING_KICK.

use super::{check_size, payload_u64, Incoming, Outcome};
use crate::abi::*;
use crate::device::Dev;
use crate::fd::close_fd;
use crate::queue::ring::SplitRing;
use crate::queue::{is_packed, map_ring, valid_ring_size};

/// The queue named by a `vhost_vring_state` payload, refusing bad sizes and indexes.
fn state_queue(dev: Dev, vmsg: &VhostUserMsg) -> Option<(usize, u32, *mut VuVirtq)> {
    if !check_size(dev, vmsg, vmsg.size as usize == std::mem::size_of::<vhost_vring_state>()) {
        return None;
    }
    // SAFETY: plain-data union read.
    let state = unsafe { vmsg.payload.state };
    let idx = state.index as usize;
    match dev.vq(idx) {
        Some(vq) => Some((idx, state.num, vq)),
        None => {
            dev.panic(&format!("Invalid queue index: {}", state.index));
            None
        }
    }
}

pub fn set_vring_num(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some((_, num, vq)) = state_queue(dev, vmsg) else { return Outcome::Failed };
    if !valid_ring_size(num) {
        dev.panic(&format!("Invalid vring size: {num}"));
        return Outcome::Failed;
    }
    // Hold the memory lock: a queue thread may be reading the ring geometry.
    let _mem = dev.mem_mut();
    // SAFETY: in-range queue; the write lock keeps queue operations out.
    let vq = unsafe { &mut *vq };
    vq.vring.num = num;
    // The ring parts were checked for the old size; they are remapped (and checked) on use.
    vq.vring.desc = std::ptr::null_mut();
    vq.vring.avail = std::ptr::null_mut();
    vq.vring.used = std::ptr::null_mut();
    Outcome::Done
}

pub fn set_vring_addr(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    if !check_size(dev, vmsg, vmsg.size as usize == std::mem::size_of::<vhost_vring_addr>()) {
        return Outcome::Failed;
    }
    // SAFETY: plain-data union read.
    let addr = unsafe { vmsg.payload.addr };
    let idx = addr.index as usize;
    let Some(vq) = dev.vq(idx) else {
        dev.panic(&format!("Invalid queue index: {}", addr.index));
        return Outcome::Failed;
    };
    let used_idx = {
        let mem = dev.mem_mut();
        let table = mem.table();
        // SAFETY: in-range queue; the write lock keeps queue operations out.
        let vq = unsafe { &mut *vq };
        vq.vra = addr;
        vq.vring.flags = addr.flags;
        vq.vring.log_guest_addr = addr.log_guest_addr;
        if map_ring(dev, &table, vq).is_err() {
            drop(mem);
            dev.panic("Invalid vring_addr message");
            return Outcome::Failed;
        }
        if is_packed(dev) {
            // A packed ring's used position came with SET_VRING_BASE.
            vq.used_idx
        } else {
            // SAFETY: just mapped, under the lock.
            let used = unsafe { SplitRing::of(vq) }.map(|r| r.used_idx()).unwrap_or(0);
            vq.used_idx = used;
            used
        }
    };
    // SAFETY: in-range queue.
    let last_avail = unsafe { (*vq).last_avail_idx };
    if last_avail != used_idx {
        let resume = match dev.iface().queue_is_processed_in_order {
            // SAFETY: the device's C callback.
            Some(f) => unsafe { f(dev.raw(), idx as libc::c_int) },
            None => false,
        };
        if resume {
            // SAFETY: in-range queue.
            unsafe {
                (*vq).last_avail_idx = used_idx;
                (*vq).shadow_avail_idx = used_idx;
            }
        }
    }
    Outcome::Done
}

pub fn set_vring_base(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some((idx, num, vq)) = state_queue(dev, vmsg) else { return Outcome::Failed };
    let result = {
        let _mem = dev.mem_mut();
        // SAFETY: in-range queue; the write lock keeps queue operations out.
        crate::queue::setup::set_vring_base(dev, unsafe { &mut *vq }, idx, num)
    };
    match result {
        Ok(()) => Outcome::Done,
        Err(why) => {
            dev.panic(&why);
            Outcome::Failed
        }
    }
}

pub fn get_vring_base(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some((idx, _, vq)) = state_queue(dev, vmsg) else { return Outcome::Failed };
    // SAFETY: in-range queue (raw accesses: the callbacks below get the device too).
    unsafe {
        vmsg.payload.state.num = crate::queue::setup::vring_base(dev, &*vq);
        vmsg.size = std::mem::size_of::<vhost_vring_state>() as u32;
        (*vq).started = false;
    }
    dev.queue_set_started(idx, false);
    // SAFETY: in-range queue.
    unsafe {
        close_fd(std::mem::replace(&mut (*vq).call_fd, -1));
        let kick = (*vq).kick_fd;
        if kick != -1 {
            dev.remove_watch(kick);
            close_fd(kick);
            (*vq).kick_fd = -1;
        }
    }
    Outcome::Reply
}

/// Checks a SET_VRING_{KICK,CALL,ERR} message: its queue, and its fd unless NOFD.
/// Returns the queue index and the fd (-1 for NOFD).
fn queue_fd(dev: Dev, vmsg: &VhostUserMsg, fds: &mut Incoming) -> Option<(usize, libc::c_int)> {
    if !check_size(dev, vmsg, vmsg.size == 8) {
        fds.close_all();
        return None;
    }
    let v = payload_u64(vmsg);
    let idx = (v & VHOST_USER_VRING_IDX_MASK) as usize;
    let nofd = v & VHOST_USER_VRING_NOFD_MASK != 0;
    if dev.vq(idx).is_none() {
        fds.close_all();
        dev.panic(&format!("Invalid queue index: {idx}"));
        return None;
    }
    if nofd {
        fds.close_all();
        return Some((idx, -1));
    }
    if fds.count() != 1 {
        fds.close_all();
        dev.panic(&format!("Invalid fds in request: {}", { vmsg.request }));
        return None;
    }
    Some((idx, fds.take(0).unwrap_or(-1)))
}

/// The watch callback for kick eventfds: drains the kick and runs the queue handler.
///
/// # Safety
/// Called by the C event loop with the device that registered the watch.
pub unsafe extern "C" fn kick_watch_cb(
    raw: *mut VuDev,
    _condition: libc::c_int,
    data: *mut libc::c_void,
) {
    crate::ffi::guard((), || {
        // SAFETY: called by the C event loop with the device it registered the watch for.
        let Some(dev) = (unsafe { Dev::from_raw(raw) }) else { return };
        let idx = data as usize;
        let Some(vq) = dev.vq(idx) else { return };
        // SAFETY: in-range queue.
        let kick_fd = unsafe { (*vq).kick_fd };
        let mut value: u64 = 0;
        // SAFETY: reading 8 bytes from the kick eventfd into a local.
        let rc = unsafe { libc::read(kick_fd, (&mut value as *mut u64).cast(), 8) };
        if rc != 8 {
            let err = std::io::Error::last_os_error();
            if matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                return; // a spurious wakeup: nothing to do
            }
            dev.panic(&format!("kick eventfd_read(): {err}"));
            dev.remove_watch(kick_fd);
            return;
        }
        // SAFETY: in-range queue; the handler is the device's C callback.
        if let Some(handler) = unsafe { (*vq).handler } {
            unsafe { handler(dev.raw(), idx as libc::c_int) };
        }
    })
}

pub fn set_vring_kick(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    let Some((idx, fd)) = queue_fd(dev, vmsg, fds) else { return Outcome::Failed };
    let Some(vq) = dev.vq(idx) else { return Outcome::Failed };
    // SAFETY: in-range queue; raw accesses because the callbacks below get the device too.
    unsafe {
        let old = (*vq).kick_fd;
        if old != -1 {
            dev.remove_watch(old);
            close_fd(old);
        }
        (*vq).kick_fd = fd;
        (*vq).started = true;
    }
    dev.queue_set_started(idx, true);
    // SAFETY: in-range queue.
    let (kick, has_handler) = unsafe { ((*vq).kick_fd, (*vq).handler.is_some()) };
    if kick != -1 && has_handler {
        dev.set_watch(
            kick,
            VuWatchCondtion::VU_WATCH_IN as libc::c_int,
            Some(kick_watch_cb),
            idx as *mut libc::c_void,
        );
    }
    let result = {
        let mem = dev.mem();
        // SAFETY: in-range queue, under the memory lock for its ring.
        let q = unsafe { &mut *vq };
        crate::queue::check_inflight(dev, &mem, q, idx)
    };
    if let Err(why) = result {
        dev.panic(&format!("Failed to check inflights for vq: {idx} ({why})"));
    }
    Outcome::Done
}

pub fn set_vring_call(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    let Some((idx, fd)) = queue_fd(dev, vmsg, fds) else { return Outcome::Failed };
    let Some(vq) = dev.vq(idx) else { return Outcome::Failed };
    // SAFETY: in-range queue.
    unsafe { close_fd(std::mem::replace(&mut (*vq).call_fd, fd)) };
    if fd != -1 {
        crate::fd::set_nonblocking(fd);
        // In case of an I/O hang after reconnecting: let the driver look at the used ring.
        let _ = crate::queue::signal_eventfd(fd);
    }
    Outcome::Done
}

pub fn set_vring_err(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    let Some((idx, fd)) = queue_fd(dev, vmsg, fds) else { return Outcome::Failed };
    let Some(vq) = dev.vq(idx) else { return Outcome::Failed };
    // SAFETY: in-range queue.
    unsafe { close_fd(std::mem::replace(&mut (*vq).err_fd, fd)) };
    Outcome::Done
}

pub fn set_vring_enable(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some((_, enable, vq)) = state_queue(dev, vmsg) else { return Outcome::Failed };
    // SAFETY: in-range queue.
    unsafe { (*vq).enable = enable };
    Outcome::Done
}

/// In-band kick (VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS).
pub fn vring_kick(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some((idx, _, vq)) = state_queue(dev, vmsg) else { return Outcome::Failed };
    // SAFETY: in-range queue.
    let started = unsafe { (*vq).started };
    if !started {
        // SAFETY: in-range queue.
        unsafe { (*vq).started = true };
        dev.queue_set_started(idx, true);
    }
    // SAFETY: in-range queue; the handler is the device's C callback.
    if let Some(handler) = unsafe { (*vq).handler } {
        unsafe { handler(dev.raw(), idx as libc::c_int) };
    }
    Outcome::Done
}
