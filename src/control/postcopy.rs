//! Postcopy live migration requests: POSTCOPY_ADVISE / LISTEN / END and the second half of
//! the postcopy form of SET_MEM_TABLE.

use super::{send_reply, Outcome};
use crate::abi::*;
use crate::device::Dev;
use crate::fd::close_fd;
use crate::message::{self, set_reply_u64};
use crate::userfaultfd::{generate_faults, open_userfaultfd, uffd_api};

pub fn advise(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    vmsg.size = 0;
    vmsg.fd_num = 0;
    let fd = match open_userfaultfd() {
        Some(fd) if uffd_api(fd, 0) => fd,
        Some(fd) => {
            let e = std::io::Error::last_os_error();
            close_fd(fd);
            dev.panic(&format!("Failed UFFDIO_API: {e}"));
            return Outcome::Reply;
        }
        None => {
            dev.panic(&format!("Userfaultfd not available: {}", std::io::Error::last_os_error()));
            return Outcome::Reply;
        }
    };
    close_fd(dev.postcopy_ufd());
    dev.set_postcopy_ufd(fd);
    // Hand the frontend its own copy of the ufd.
    message::attach_fd(vmsg, fd);
    Outcome::Reply
}

pub fn listen(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    if dev.nregions() != 0 {
        dev.panic("Regions already registered at postcopy-listen");
        set_reply_u64(vmsg, u64::MAX);
        return Outcome::Reply;
    }
    dev.set_postcopy_listening(true);
    set_reply_u64(vmsg, 0);
    Outcome::Reply
}

pub fn end(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    dev.set_postcopy_listening(false);
    close_fd(dev.postcopy_ufd());
    dev.set_postcopy_ufd(-1);
    set_reply_u64(vmsg, 0);
    Outcome::Reply
}

/// Postcopy SET_MEM_TABLE: reply with our mapping addresses, wait for the frontend's ack,
/// then register the regions with userfaultfd.
pub fn finish_set_mem_table(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    vmsg.fd_num = 0;
    if !send_reply(dev, vmsg) {
        dev.panic("failed to respond to set-mem-table for postcopy");
        return Outcome::Failed;
    }
    let mut ack = message::zeroed_msg();
    if dev.read_msg().is_none() {
        return Outcome::Failed;
    }
    let ok = dev.read_message(&mut ack);
    message::close_msg_fds(&mut ack);
    if !ok || ack.size != 8 || message::body::<u64>(&ack) != 0 {
        dev.panic("failed to receive valid ack for postcopy set-mem-table");
        return Outcome::Failed;
    }
    let _ = generate_faults(dev);
    Outcome::Done
}
