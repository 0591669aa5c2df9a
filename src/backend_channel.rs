//! The backend channel (SET_BACKEND_REQ_FD): requests from us to the frontend, serialised by
//! the C-visible `backend_mutex`.

use std::os::fd::{IntoRawFd, OwnedFd};

use crate::abi::VhostUserBackendRequest::*;
use crate::abi::*;
use crate::device::Dev;
use crate::fd::close_fd;
use crate::message::{self, read_message, write_message, VHOST_USER_VERSION};

/// Holds `backend_mutex` for its lifetime.
struct ChannelLock {
    mutex: *mut libc::pthread_mutex_t,
}

impl ChannelLock {
    fn new(dev: Dev) -> ChannelLock {
        let mutex = dev.backend_mutex();
        // SAFETY: vu_init initialised the mutex; it lives in the C VuDev.
        unsafe { libc::pthread_mutex_lock(mutex) };
        ChannelLock { mutex }
    }
}

impl Drop for ChannelLock {
    fn drop(&mut self) {
        // SAFETY: locked in `new` by this thread.
        unsafe { libc::pthread_mutex_unlock(self.mutex) };
    }
}

/// Replaces the channel fd (SET_BACKEND_REQ_FD), or closes it (`None`, at deinit).
pub fn replace_channel(dev: Dev, fd: Option<OwnedFd>) {
    let _lock = ChannelLock::new(dev);
    close_fd(dev.backend_fd());
    dev.set_backend_fd(fd.map_or(-1, IntoRawFd::into_raw_fd));
}

fn new_msg(request: VhostUserBackendRequest, size: usize, need_reply: bool) -> VhostUserMsg {
    let mut m = message::zeroed_msg();
    m.request = request as libc::c_int;
    m.flags = VHOST_USER_VERSION | if need_reply { VHOST_USER_NEED_REPLY_MASK } else { 0 };
    m.size = size as u32;
    m
}

/// Sends `vmsg`; with NEED_REPLY, waits for the frontend's ack and returns whether it is 0.
/// The reply (if any) is returned for callers that need its fds.
fn transact(dev: Dev, vmsg: &VhostUserMsg) -> (bool, Option<VhostUserMsg>) {
    let (ok, reply, what) = exchange(dev, vmsg);
    let (request, size) = (vmsg.request, vmsg.size);
    crate::diagnostics::backend_message(request, size, message::msg_fds(vmsg).1, what);
    (ok, reply)
}

/// `transact`, saying what happened for the diagnostics.
fn exchange(dev: Dev, vmsg: &VhostUserMsg) -> (bool, Option<VhostUserMsg>, &'static str) {
    let _lock = ChannelLock::new(dev);
    let fd = dev.backend_fd();
    if fd < 0 {
        return (false, None, "not sent: no backend channel");
    }
    if let Err(e) = write_message(fd, vmsg) {
        dev.panic(&format!("Error while writing: {e}"));
        return (false, None, "write failed");
    }
    if vmsg.flags & VHOST_USER_NEED_REPLY_MASK == 0 {
        return (true, None, "sent");
    }
    let mut reply = message::zeroed_msg();
    if let Err(e) = read_message(fd, &mut reply) {
        dev.panic(&e.to_string());
        return (false, None, "sent, reading the reply failed");
    }
    if reply.request != vmsg.request {
        message::close_msg_fds(&mut reply);
        return (false, None, "sent, reply to another request");
    }
    let ok = message::body::<u64>(&reply) == 0;
    (ok, Some(reply), if ok { "sent, frontend acked 0" } else { "sent, frontend acked failure" })
}

pub fn set_queue_host_notifier(
    dev: Dev,
    qidx: usize,
    fd: libc::c_int,
    size: i32,
    offset: i32,
) -> bool {
    if !dev.has_protocol_feature(VhostUserProtocolFeature::VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD) {
        return false;
    }
    let mut m = new_msg(
        VHOST_USER_BACKEND_VRING_HOST_NOTIFIER_MSG,
        std::mem::size_of::<VhostUserVringArea>(),
        true,
    );
    let mut u = qidx as u64 & VHOST_USER_VRING_IDX_MASK;
    if fd == -1 {
        u |= VHOST_USER_VRING_NOFD_MASK;
    } else {
        message::attach_fd(&mut m, fd);
    }
    // The original sign-extends the int size and offset into the u64 fields.
    m.payload.area =
        VhostUserVringArea { u64: u, size: size as i64 as u64, offset: offset as i64 as u64 };
    let (ok, reply) = transact(dev, &m);
    if let Some(mut r) = reply {
        message::close_msg_fds(&mut r);
    }
    ok
}

pub fn lookup_shared_object(dev: Dev, uuid: [u8; UUID_LEN]) -> Option<libc::c_int> {
    if !dev.has_protocol_feature(VhostUserProtocolFeature::VHOST_USER_PROTOCOL_F_SHARED_OBJECT) {
        return None;
    }
    let mut m = new_msg(VHOST_USER_BACKEND_SHARED_OBJECT_LOOKUP, UUID_LEN, true);
    m.payload.object = VhostUserShared { uuid };
    // Like the original: the answer counts if it carries exactly one fd and a zero status.
    let (_, reply) = transact(dev, &m);
    let mut r = reply?;
    let (fds, n) = message::msg_fds(&r);
    let status = message::body::<u64>(&r);
    if n == 1 && fds[0] > 0 && status == 0 {
        return Some(fds[0]);
    }
    message::close_msg_fds(&mut r);
    None
}

fn shared_object_msg(dev: Dev, request: VhostUserBackendRequest, uuid: [u8; UUID_LEN]) -> bool {
    if !dev.has_protocol_feature(VhostUserProtocolFeature::VHOST_USER_PROTOCOL_F_SHARED_OBJECT) {
        return false;
    }
    let mut m = new_msg(request, UUID_LEN, false);
    m.payload.object = VhostUserShared { uuid };
    transact(dev, &m).0
}

pub fn add_shared_object(dev: Dev, uuid: [u8; UUID_LEN]) -> bool {
    shared_object_msg(dev, VHOST_USER_BACKEND_SHARED_OBJECT_ADD, uuid)
}

pub fn rm_shared_object(dev: Dev, uuid: [u8; UUID_LEN]) -> bool {
    shared_object_msg(dev, VHOST_USER_BACKEND_SHARED_OBJECT_REMOVE, uuid)
}

pub fn config_change(dev: Dev) {
    let m = new_msg(VHOST_USER_BACKEND_CONFIG_CHANGE_MSG, 0, false);
    let _ = transact(dev, &m);
}

/// VHOST_USER_BACKEND_IOTLB_MSG (an IOTLB miss or access failure), sent without asking for
/// a reply and without waiting: a queue thread sends it, and the frontend answers a miss
/// with an update on the main socket. A channel that cannot take the message right now
/// (the frontend is not reading it) drops it: the queue stays waiting and asks again on its
/// next kick, rather than blocking a queue thread on the frontend. Returns whether it was sent.
pub fn iotlb_msg(dev: Dev, kind: u8, iova: u64, perm: u8) -> bool {
    let mut m = new_msg(VHOST_USER_BACKEND_IOTLB_MSG, 0, false);
    let body = crate::iotlb::IotlbMsg { iova, perm, kind, ..Default::default() };
    message::set_body(&mut m, body);
    let (sent, what) = {
        let _lock = ChannelLock::new(dev);
        let fd = dev.backend_fd();
        if fd < 0 {
            (false, "not sent: no backend channel")
        } else if !crate::fd::writable_now(fd) {
            (false, "not sent: the channel is full")
        } else if let Err(e) = write_message(fd, &m) {
            log::warn!("IOTLB message for iova {iova:#x} not sent: {e}");
            (false, "write failed")
        } else {
            (true, "sent")
        }
    };
    crate::diagnostics::backend_message(m.request, m.size, 0, what);
    sent
}

/// In-band call (VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS).
pub fn vring_call(dev: Dev, qidx: usize, ack: bool) {
    let mut m =
        new_msg(VHOST_USER_BACKEND_VRING_CALL, std::mem::size_of::<vhost_vring_state>(), ack);
    m.payload.state = vhost_vring_state { index: qidx as u32, num: 0 };
    if let (_, Some(mut r)) = transact(dev, &m) {
        message::close_msg_fds(&mut r);
    }
}
