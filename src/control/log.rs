//! Dirty log setup: SET_LOG_BASE and SET_LOG_FD.

use std::os::fd::{AsFd, IntoRawFd};

use super::{map_file_range, refuse, Incoming, MapError, Outcome};
use crate::abi::*;
use crate::device::Dev;
use crate::fd::close_fd;
use crate::message::{self, set_reply_u64, Size};

pub fn set_log_base(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    if fds.count() != 1 || !Size::of::<VhostUserLog>().admits(vmsg.size) {
        refuse(dev, fds, "Invalid log_base message");
        set_reply_u64(vmsg, 1);
        return Outcome::Reply;
    }
    let log = message::body::<VhostUserLog>(vmsg);
    let Some(fd) = fds.take(0) else {
        refuse(dev, fds, "Invalid log_base message");
        set_reply_u64(vmsg, 1);
        return Outcome::Reply;
    };
    // The mapping keeps the memory; the fd is closed at the end of this block.
    let mapped = map_file_range(fd.as_fd(), log.mmap_size, log.mmap_offset);
    drop(fd);
    let ok = mapped.is_ok();
    let err = {
        let mut mem = dev.mem_mut();
        match mapped {
            Ok(m) => {
                mem.replace_log(Some(m));
                None
            }
            Err(e) => {
                mem.replace_log(None);
                Some(e)
            }
        }
    };
    match err {
        Some(MapError::BeyondEnd) => {
            dev.panic("log mmap error: log region extends beyond the end of its file")
        }
        Some(MapError::Mmap(e)) => dev.panic(&format!("log mmap error: {e}")),
        None => {}
    }
    set_reply_u64(vmsg, if ok { 0 } else { 1 });
    Outcome::Reply
}

pub fn set_log_fd(dev: Dev, fds: &mut Incoming) -> Outcome {
    let fd = match fds.take_one(dev, |_| "Invalid log_fd message".to_string()) {
        Ok(fd) => fd.into_raw_fd(),
        Err(refused) => return refused,
    };
    crate::fd::set_nonblocking(fd);
    dev.flags().note_notify_fd(fd);
    // Queue threads signal this fd under the memory read lock.
    let _mem = dev.mem_mut();
    close_fd(dev.log_call_fd());
    dev.set_log_call_fd(fd);
    Outcome::Done
}

/// Closes the dirty log at deinit.
pub fn close_log(dev: Dev) {
    let mut mem = dev.mem_mut();
    mem.replace_log(None);
    close_fd(dev.log_call_fd());
    dev.set_log_call_fd(-1);
}
