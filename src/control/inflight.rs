//! Inflight area setup: GET_INFLIGHT_FD (we allocate it) and SET_INFLIGHT_FD (the frontend
//! hands one back, e.g. after we were restarted).

use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use super::{body, map_file_range, refuse, Incoming, MapError, Outcome};
use crate::abi::*;
use crate::device::Dev;
use crate::inflight::region_size;
use crate::message::{self, Size};
use crate::mmap::Mapping;

fn valid_geometry(dev: Dev, num_queues: u16, queue_size: u16) -> bool {
    num_queues >= 1
        && num_queues <= dev.max_queues()
        && queue_size >= 1
        && u32::from(queue_size) <= VIRTQUEUE_MAX_SIZE
}

/// Installs `mapping` (with its fd) as the device's inflight area and points the first
/// `num_queues` queues at their parts of it.
fn install(
    dev: Dev,
    mapping: Mapping,
    fd: OwnedFd,
    num_queues: u16,
    queue_size: u16,
    init_desc_num: bool,
) {
    // Queue operations use the inflight pointers under the memory read lock.
    let mut mem = dev.mem_mut();
    let per_queue = region_size(dev, queue_size) as usize;
    for vq in dev.queues() {
        let i = vq.index();
        let area = if i < usize::from(num_queues) {
            if init_desc_num {
                crate::inflight::init_desc_num(&mapping, i * per_queue, queue_size);
            }
            mapping.as_ptr().wrapping_add(i * per_queue) as *mut VuVirtqInflight
        } else {
            std::ptr::null_mut()
        };
        mem.with_queue(vq, |q, _| q.inflight = area);
    }
    mem.replace_inflight_area(Some((mapping, fd)));
}

/// Releases the inflight area at deinit.
pub fn release(dev: Dev) {
    let mut mem = dev.mem_mut();
    for vq in dev.queues() {
        mem.with_queue(vq, |q, _| q.inflight = std::ptr::null_mut());
    }
    mem.replace_inflight_area(None);
}

fn memfd_area(size: u64) -> std::io::Result<(OwnedFd, Mapping)> {
    let name = c"vhost-inflight";
    // SAFETY: memfd_create with a valid name; the result is checked.
    let raw =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING | libc::MFD_CLOEXEC) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh fd we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let len =
        libc::off_t::try_from(size).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: plain syscalls on our fd.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let seals = libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: plain syscall on our fd.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mapping =
        Mapping::map_shared(fd.as_fd(), size, 0, libc::PROT_READ | libc::PROT_WRITE, false)?;
    Ok((fd, mapping))
}

pub fn get_inflight_fd(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some(req) = body::<VhostUserInflight>(dev, vmsg, Size::of::<VhostUserInflight>(), |m| {
        format!("Invalid get_inflight_fd message:{}", { m.size })
    }) else {
        vmsg.payload.inflight.mmap_size = 0;
        return Outcome::Reply;
    };
    if !valid_geometry(dev, req.num_queues, req.queue_size) {
        dev.panic(&format!(
            "Invalid inflight geometry: {} queues of {} descriptors",
            req.num_queues, req.queue_size
        ));
        vmsg.payload.inflight.mmap_size = 0;
        return Outcome::Reply;
    }
    let size = region_size(dev, req.queue_size) * u64::from(req.num_queues);
    match memfd_area(size) {
        Ok((fd, mapping)) => {
            // A fresh memfd reads as zeros: every descriptor starts out not inflight.
            let raw = fd.as_raw_fd();
            install(dev, mapping, fd, req.num_queues, req.queue_size, false);
            vmsg.payload.inflight.mmap_size = size;
            vmsg.payload.inflight.mmap_offset = 0;
            // The device keeps the fd; the reply sends a copy.
            message::attach_fd(vmsg, raw);
        }
        Err(e) => {
            dev.panic(&format!("Failed to alloc vhost inflight area: {e}"));
            vmsg.payload.inflight.mmap_size = 0;
        }
    }
    Outcome::Reply
}

pub fn set_inflight_fd(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    let size = vmsg.size;
    if fds.count() != 1 || !Size::of::<VhostUserInflight>().admits(size) {
        let n = fds.count();
        return refuse(dev, fds, &format!("Invalid set_inflight_fd message size:{size} fds:{n}"));
    }
    let req = message::body::<VhostUserInflight>(vmsg);
    let Some(fd) = fds.take(0) else {
        return refuse(dev, fds, &format!("Invalid set_inflight_fd message size:{size} fds:1"));
    };
    let needed = region_size(dev, req.queue_size) * u64::from(req.num_queues);
    if !valid_geometry(dev, req.num_queues, req.queue_size) || req.mmap_size < needed {
        drop(fd);
        dev.panic(&format!(
            "Invalid set_inflight_fd geometry: {} queues of {} descriptors in {} bytes",
            req.num_queues, req.queue_size, req.mmap_size
        ));
        return Outcome::Failed;
    }
    match map_file_range(fd.as_fd(), req.mmap_size, req.mmap_offset) {
        Ok(mapping) => {
            install(dev, mapping, fd, req.num_queues, req.queue_size, true);
            Outcome::Done
        }
        Err(e) => {
            drop(fd);
            let e = match e {
                MapError::BeyondEnd => "area extends beyond the end of its file".to_string(),
                MapError::Mmap(e) => e.to_string(),
            };
            dev.panic(&format!("set_inflight_fd mmap error: {e}"));
            Outcome::Failed
        }
    }
}
