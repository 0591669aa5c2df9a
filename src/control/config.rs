//! Device config space (GET/SET_CONFIG) and shared objects (GET_SHARED_OBJECT).

use super::{check_size, Outcome};
use crate::abi::*;
use crate::device::Dev;

const CONFIG_HDR: usize = 12;

pub fn get_config(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    // SAFETY: plain-data union read.
    let len = unsafe { vmsg.payload.config.size } as usize;
    let ok = vmsg.size as usize >= CONFIG_HDR
        && len <= VHOST_USER_MAX_CONFIG_SIZE
        && CONFIG_HDR + len <= vmsg.size as usize;
    if !check_size(dev, vmsg, ok) {
        vmsg.size = 0;
        return Outcome::Reply;
    }
    let ret = match dev.iface().get_config {
        // SAFETY: the device's C callback writes at most `len` (<= 256) bytes into the region.
        Some(f) => unsafe {
            f(dev.raw(), std::ptr::addr_of_mut!(vmsg.payload.config.region) as *mut u8, len as u32)
        },
        None => -1,
    };
    if ret != 0 {
        // A zero-sized reply tells the frontend that reading failed.
        vmsg.size = 0;
    }
    Outcome::Reply
}

pub fn set_config(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    // SAFETY: plain-data union read.
    let (offset, len, flags) = unsafe {
        (vmsg.payload.config.offset, vmsg.payload.config.size, vmsg.payload.config.flags)
    };
    let ok = vmsg.size as usize >= CONFIG_HDR
        && (len as usize) <= VHOST_USER_MAX_CONFIG_SIZE
        && CONFIG_HDR + len as usize <= vmsg.size as usize
        && (offset as u64 + len as u64) <= VHOST_USER_MAX_CONFIG_SIZE as u64;
    if !check_size(dev, vmsg, ok) {
        return Outcome::Failed;
    }
    if let Some(f) = dev.iface().set_config {
        // SAFETY: the device's C callback reads `len` bytes of the region.
        let ret = unsafe {
            f(
                dev.raw(),
                std::ptr::addr_of!(vmsg.payload.config.region) as *const u8,
                offset,
                len,
                flags,
            )
        };
        if ret != 0 {
            dev.panic("Set virtio configuration space failed");
            return Outcome::Failed;
        }
    }
    Outcome::Done
}

pub fn get_shared_object(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    if !check_size(dev, vmsg, vmsg.size as usize == UUID_LEN) {
        vmsg.size = 0;
        return Outcome::Reply;
    }
    let mut fd = -1;
    if let Some(f) = dev.iface().get_shared_object {
        // SAFETY: the device's C callback reads the 16-byte UUID.
        fd = unsafe { f(dev.raw(), std::ptr::addr_of!(vmsg.payload.object.uuid) as *const u8) };
    }
    if fd != -1 {
        let mut fds = vmsg.fds;
        fds[0] = fd;
        vmsg.fds = fds;
        vmsg.fd_num = 1;
    } else {
        vmsg.fd_num = 0;
    }
    Outcome::Reply
}
