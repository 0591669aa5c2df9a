//! Inflight area setup: GET_INFLIGHT_FD (we allocate it) and SET_INFLIGHT_FD (the frontend
//! hands one back, e.g. after we were restarted).

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd};

use super::{Incoming, Outcome};
use crate::abi::*;
use crate::device::Dev;
use crate::fd::close_fd;
use crate::inflight::region_size;
use crate::mmap::{mappable_size, Mapping};

fn valid_geometry(dev: Dev, num_queues: u16, queue_size: u16) -> bool {
    num_queues >= 1
        && num_queues <= dev.max_queues()
        && queue_size >= 1
        && u32::from(queue_size) <= VIRTQUEUE_MAX_SIZE
}

/// Replaces the device's inflight area (`VuDev.inflight_info`: fd, address, size) with
/// `new`, unmapping and closing the old one. The caller holds the memory write lock.
fn replace_area(dev: Dev, new: Option<(Mapping, libc::c_int)>) {
    let old = dev.inflight_info();
    let info = match new {
        Some((m, fd)) => {
            let (addr, len) = m.into_raw();
            VuDevInflightInfo { fd, addr: addr.cast(), size: len as u64 }
        }
        None => VuDevInflightInfo { fd: -1, addr: std::ptr::null_mut(), size: 0 },
    };
    dev.set_inflight_info(info);
    // SAFETY: the old area was mapped by this module and handed over with into_raw.
    drop(unsafe { Mapping::from_raw(old.addr.cast(), old.size as usize) });
    close_fd(old.fd);
}

/// Installs `mapping` (with its fd) as the device's inflight area and points the first
/// `num_queues` queues at their parts of it.
fn install(
    dev: Dev,
    mapping: Mapping,
    fd: libc::c_int,
    num_queues: u16,
    queue_size: u16,
    init_desc_num: bool,
) {
    // Queue operations use the inflight pointers under the memory read lock.
    let _mem = dev.mem_mut();
    let per_queue = region_size(dev, queue_size) as usize;
    for i in 0..usize::from(dev.max_queues()) {
        let Some(vq) = dev.vq(i) else { continue };
        // SAFETY: in-range queue, under the write lock; the area for queue i < num_queues lies
        // inside the mapping (its size was checked against num_queues * per_queue).
        unsafe {
            if i < usize::from(num_queues) {
                let area = mapping.as_ptr().add(i * per_queue) as *mut VuVirtqInflight;
                if init_desc_num {
                    std::ptr::addr_of_mut!((*area).desc_num).write_volatile(queue_size);
                }
                (*vq).inflight = area;
            } else {
                (*vq).inflight = std::ptr::null_mut();
            }
        }
    }
    replace_area(dev, Some((mapping, fd)));
}

/// Releases the inflight area at deinit.
pub fn release(dev: Dev) {
    let _mem = dev.mem_mut();
    for i in 0..usize::from(dev.max_queues()) {
        if let Some(vq) = dev.vq(i) {
            // SAFETY: in-range queue, under the write lock.
            unsafe { (*vq).inflight = std::ptr::null_mut() };
        }
    }
    replace_area(dev, None);
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
    let mapping = Mapping::map_shared(
        fd.as_fd_borrowed(),
        size,
        0,
        libc::PROT_READ | libc::PROT_WRITE,
        false,
    )?;
    Ok((fd, mapping))
}

trait AsFdBorrowed {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_>;
}
impl AsFdBorrowed for OwnedFd {
    fn as_fd_borrowed(&self) -> BorrowedFd<'_> {
        std::os::fd::AsFd::as_fd(self)
    }
}

pub fn get_inflight_fd(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    if vmsg.size as usize != std::mem::size_of::<VhostUserInflight>() {
        dev.panic(&format!("Invalid get_inflight_fd message:{}", { vmsg.size }));
        vmsg.payload.inflight.mmap_size = 0;
        return Outcome::Reply;
    }
    // SAFETY: plain-data union read.
    let req = unsafe { vmsg.payload.inflight };
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
            let raw = fd.into_raw_fd();
            install(dev, mapping, raw, req.num_queues, req.queue_size, false);
            vmsg.payload.inflight.mmap_size = size;
            vmsg.payload.inflight.mmap_offset = 0;
            let mut fds = vmsg.fds;
            fds[0] = raw;
            vmsg.fds = fds;
            vmsg.fd_num = 1;
        }
        Err(e) => {
            dev.panic(&format!("Failed to alloc vhost inflight area: {e}"));
            vmsg.payload.inflight.mmap_size = 0;
        }
    }
    Outcome::Reply
}

pub fn set_inflight_fd(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    if fds.count() != 1 || vmsg.size as usize != std::mem::size_of::<VhostUserInflight>() {
        let n = fds.count();
        fds.close_all();
        dev.panic(&format!("Invalid set_inflight_fd message size:{} fds:{n}", { vmsg.size }));
        return Outcome::Failed;
    }
    // SAFETY: plain-data union read.
    let req = unsafe { vmsg.payload.inflight };
    let fd = fds.take(0).unwrap_or(-1);
    let needed = region_size(dev, req.queue_size) * u64::from(req.num_queues);
    if !valid_geometry(dev, req.num_queues, req.queue_size) || req.mmap_size < needed {
        close_fd(fd);
        dev.panic(&format!(
            "Invalid set_inflight_fd geometry: {} queues of {} descriptors in {} bytes",
            req.num_queues, req.queue_size, req.mmap_size
        ));
        return Outcome::Failed;
    }
    // SAFETY: fd came with the message and is open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let fits = mappable_size(borrowed)
        .is_none_or(|s| req.mmap_offset.checked_add(req.mmap_size).is_some_and(|e| e <= s));
    let mapped = if fits {
        Mapping::map_shared(
            borrowed,
            req.mmap_size,
            req.mmap_offset,
            libc::PROT_READ | libc::PROT_WRITE,
            false,
        )
        .map_err(|e| e.to_string())
    } else {
        Err("area extends beyond the end of its file".to_string())
    };
    match mapped {
        Ok(mapping) => {
            install(dev, mapping, fd, req.num_queues, req.queue_size, true);
            Outcome::Done
        }
        Err(e) => {
            close_fd(fd);
            dev.panic(&format!("set_inflight_fd mmap error: {e}"));
            Outcome::Failed
        }
    }
}
