//! Dirty log setup: SET_LOG_BASE and SET_LOG_FD.

use std::os::fd::BorrowedFd;

use super::{Incoming, Outcome};
use crate::abi::*;
use crate::device::{close_fd, Dev};
use crate::dirty_log::DirtyLog;
use crate::message::set_reply_u64;
use crate::mmap::{mappable_size, Mapping};

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
        let fits = mappable_size(borrowed).is_none_or(|size| log.mmap_offset.checked_add(log.mmap_size).is_some_and(|end| end <= size));
        if fits {
            Mapping::map_shared(borrowed, log.mmap_size, log.mmap_offset, libc::PROT_READ | libc::PROT_WRITE, false)
                .map_err(|e| e.to_string())
        } else {
            Err("log region extends beyond the end of its file".to_string())
        }
    };
    close_fd(fd);
    let state = dev.state();
    let mut slot = state.log.write();
    match mapped {
        Ok(m) => {
            let new = DirtyLog::new(m);
            dev.set_log_table(new.table());
            dev.set_log_size(new.size());
            *slot = Some(new);
            drop(slot);
            set_reply_u64(vmsg, 0);
        }
        Err(e) => {
            *slot = None;
            dev.set_log_table(std::ptr::null_mut());
            dev.set_log_size(0);
            drop(slot);
            dev.panic(&format!("log mmap error: {e}"));
            set_reply_u64(vmsg, 1);
        }
    }
    Outcome::Reply
}

pub fn set_log_fd(dev: Dev, fds: &mut Incoming) -> Outcome {
    if fds.count() != 1 {
        fds.close_all();
        dev.panic("Invalid log_fd message");
        return Outcome::Failed;
    }
    let fd = fds.take(0).unwrap_or(-1);
    crate::device::set_nonblocking(fd);
    // Queue threads signal this fd under the log's read lock.
    let _guard = dev.state().log.write();
    close_fd(dev.log_call_fd());
    dev.set_log_call_fd(fd);
    Outcome::Done
}

/// Closes the dirty log at deinit.
pub fn close_log(dev: Dev) {
    let mut slot = dev.state().log.write();
    *slot = None;
    dev.set_log_table(std::ptr::null_mut());
    close_fd(dev.log_call_fd());
    dev.set_log_call_fd(-1);
}

