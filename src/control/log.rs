//! Dirty log setup: SET_LOG_BASE and SET_LOG_FD.

use std::os::fd::BorrowedFd;

use super::{Incoming, Outcome};
use crate::abi::*;
use crate::device::Dev;
use crate::fd::close_fd;
use crate::message::set_reply_u64;
use crate::mmap::{mappable_size, Mapping};

/// Installs a new log table (or none), unmapping the old one. The caller holds the memory
/// write lock, so no queue operation is logging into the old table.
fn replace_log(dev: Dev, new: Option<Mapping>) {
    let (old, old_size) = (dev.log_table(), dev.log_size());
    let (table, size) = new.map_or((std::ptr::null_mut(), 0), |m| {
        let (p, len) = m.into_raw();
        (p, len as u64)
    });
    dev.set_log_table(table);
    dev.set_log_size(size);
    // SAFETY: the old table was mapped by this module and handed over with into_raw.
    drop(unsafe { Mapping::from_raw(old, old_size as usize) });
}

pub fn set_log_base(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    if fds.count() != 1 || vmsg.size as usize != std::mem::size_of::<VhostUserLog>() {
        fds.close_all();
        dev.panic("Invalid log_base message");
        set_reply_u64(vmsg, 1);
        return Outcome::Reply;
    }
    // SAFETY: plain-data union read.
    let log = unsafe { vmsg.payload.log };
    let fd = fds.take(0).unwrap_or(-1);
    let mapped = {
        // SAFETY: fd came with the message and is open until closed below.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let fits = mappable_size(borrowed).is_none_or(|size| {
            log.mmap_offset.checked_add(log.mmap_size).is_some_and(|end| end <= size)
        });
        if fits {
            Mapping::map_shared(
                borrowed,
                log.mmap_size,
                log.mmap_offset,
                libc::PROT_READ | libc::PROT_WRITE,
                false,
            )
            .map_err(|e| e.to_string())
        } else {
            Err("log region extends beyond the end of its file".to_string())
        }
    };
    close_fd(fd);
    let ok = mapped.is_ok();
    let err = {
        let _mem = dev.mem_mut();
        match mapped {
            Ok(m) => {
                replace_log(dev, Some(m));
                None
            }
            Err(e) => {
                replace_log(dev, None);
                Some(e)
            }
        }
    };
    if let Some(e) = err {
        dev.panic(&format!("log mmap error: {e}"));
    }
    set_reply_u64(vmsg, if ok { 0 } else { 1 });
    Outcome::Reply
}

pub fn set_log_fd(dev: Dev, fds: &mut Incoming) -> Outcome {
    if fds.count() != 1 {
        fds.close_all();
        dev.panic("Invalid log_fd message");
        return Outcome::Failed;
    }
    let fd = fds.take(0).unwrap_or(-1);
    crate::fd::set_nonblocking(fd);
    // Queue threads signal this fd under the memory read lock.
    let _mem = dev.mem_mut();
    close_fd(dev.log_call_fd());
    dev.set_log_call_fd(fd);
    Outcome::Done
}

/// Closes the dirty log at deinit.
pub fn close_log(dev: Dev) {
    let _mem = dev.mem_mut();
    replace_log(dev, None);
    close_fd(dev.log_call_fd());
    dev.set_log_call_fd(-1);
}
