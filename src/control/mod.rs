//! The control plane: one frontend message per `vu_dispatch`, validated, handled, answered.

mod config;
mod inflight;
mod log;
mod memory;
mod vring;

use crate::abi::VhostUserRequest::*;
use crate::abi::*;
use crate::device::Dev;
use crate::fd::close_fd;
use crate::message::{self, set_reply_u64, write_message, VHOST_USER_VERSION};
use crate::queue::split::{
    VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
};

pub use vring::kick_watch_cb;

/// What a handler wants sent back.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// Send `vmsg` as the reply.
    Reply,
    /// No reply of its own (an ack of 0 if the frontend asked for one).
    Done,
    /// The request was refused (after a `panic`): an ack reports failure if one was asked for.
    Failed,
}

/// The fds that arrived with a message. Handlers take the ones they keep; the rest are closed
/// when this is dropped, so no request leaks an fd whatever it carried.
pub struct Incoming {
    fds: [libc::c_int; VHOST_MEMORY_BASELINE_NREGIONS],
    n: usize,
}

impl Incoming {
    fn from_msg(vmsg: &VhostUserMsg) -> Incoming {
        let (fds, n) = message::msg_fds(vmsg);
        Incoming { fds, n }
    }

    pub fn count(&self) -> usize {
        self.n
    }

    /// Takes ownership of fd `i`.
    pub fn take(&mut self, i: usize) -> Option<libc::c_int> {
        if i >= self.n || self.fds[i] < 0 {
            return None;
        }
        Some(std::mem::replace(&mut self.fds[i], -1))
    }

    pub fn close_all(&mut self) {
        for fd in self.fds.iter_mut().take(self.n) {
            close_fd(std::mem::replace(fd, -1));
        }
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.close_all();
    }
}

/// Refuses a message whose payload size is not what its request needs.
fn check_size(dev: Dev, vmsg: &VhostUserMsg, ok: bool) -> bool {
    if !ok {
        let (req, size) = (vmsg.request, vmsg.size);
        dev.panic(&format!(
            "Invalid message size {size} for request {} ({req})",
            request_name(req as u32)
        ));
    }
    ok
}

fn payload_u64(vmsg: &VhostUserMsg) -> u64 {
    // SAFETY: every payload variant is plain data; reading u64 from the zero-initialised union is valid.
    unsafe { vmsg.payload.u64 }
}

pub fn request_name(req: u32) -> &'static str {
    crate::ffi::request_str(req).to_str().unwrap_or("unknown")
}

/// `vu_dispatch`: reads one message with the device's reader, handles it, replies.
pub fn dispatch(dev: Dev) -> bool {
    let mut vmsg = message::zeroed_msg();
    let Some(read) = dev.read_msg() else { return false };
    // SAFETY: the reader given to vu_init (ours or the caller's) with our device and message.
    let ok = unsafe { read(dev.raw(), dev.sock(), &mut vmsg) };
    let success = ok && handle(dev, &mut vmsg);
    let data = vmsg.data;
    if !data.is_null() {
        // SAFETY: a caller-supplied reader may attach a malloc'd buffer; the original frees it.
        unsafe { libc::free(data.cast()) };
    }
    success
}

fn handle(dev: Dev, vmsg: &mut VhostUserMsg) -> bool {
    let fd_num = { vmsg.fd_num };
    if !(0..=VHOST_MEMORY_BASELINE_NREGIONS as i32).contains(&fd_num) {
        // Only a caller-supplied reader can do this; we cannot know which fds are real.
        dev.panic(&format!("Invalid fd count {fd_num} in message"));
        return true;
    }
    let need_reply = vmsg.flags & VHOST_USER_NEED_REPLY_MASK != 0;
    let outcome = process(dev, vmsg);
    let reply = match outcome {
        Outcome::Reply => true,
        Outcome::Done if need_reply => {
            set_reply_u64(vmsg, 0);
            true
        }
        Outcome::Failed if need_reply => {
            set_reply_u64(vmsg, 1);
            true
        }
        _ => false,
    };
    if !reply {
        return true;
    }
    send_reply(dev, vmsg)
}

pub fn send_reply(dev: Dev, vmsg: &mut VhostUserMsg) -> bool {
    vmsg.flags =
        (vmsg.flags & !VHOST_USER_VERSION_MASK) | VHOST_USER_VERSION | VHOST_USER_REPLY_MASK;
    match write_message(dev.sock(), vmsg) {
        Ok(()) => true,
        Err(e) => {
            dev.panic(&format!("Error while writing: {e}"));
            false
        }
    }
}

fn process(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let iface = dev.iface();
    if let Some(process_msg) = iface.process_msg {
        let mut do_reply: libc::c_int = 0;
        // SAFETY: the device's C callback, with our message; it may take the message's fds.
        if unsafe { process_msg(dev.raw(), vmsg, &mut do_reply) } != 0 {
            return if do_reply != 0 { Outcome::Reply } else { Outcome::Done };
        }
    }
    let mut fds = Incoming::from_msg(vmsg);
    vmsg.fd_num = 0;
    let req = vmsg.request as u32;
    use memory::*;
    use vring::*;
    match req {
        r if r == VHOST_USER_GET_FEATURES as u32 => get_features(dev, vmsg),
        r if r == VHOST_USER_SET_FEATURES as u32 => set_features(dev, vmsg),
        r if r == VHOST_USER_GET_PROTOCOL_FEATURES as u32 => {
            set_reply_u64(vmsg, protocol_features(dev));
            Outcome::Reply
        }
        r if r == VHOST_USER_SET_PROTOCOL_FEATURES as u32 => set_protocol_features(dev, vmsg),
        r if r == VHOST_USER_SET_OWNER as u32 => Outcome::Done,
        r if r == VHOST_USER_RESET_OWNER as u32 => {
            set_all_rings_enabled(dev, false);
            Outcome::Done
        }
        r if r == VHOST_USER_SET_MEM_TABLE as u32 => set_mem_table(dev, vmsg, &mut fds),
        r if r == VHOST_USER_SET_LOG_BASE as u32 => log::set_log_base(dev, vmsg, &mut fds),
        r if r == VHOST_USER_SET_LOG_FD as u32 => log::set_log_fd(dev, &mut fds),
        r if r == VHOST_USER_SET_VRING_NUM as u32 => set_vring_num(dev, vmsg),
        r if r == VHOST_USER_SET_VRING_ADDR as u32 => set_vring_addr(dev, vmsg),
        r if r == VHOST_USER_SET_VRING_BASE as u32 => set_vring_base(dev, vmsg),
        r if r == VHOST_USER_GET_VRING_BASE as u32 => get_vring_base(dev, vmsg),
        r if r == VHOST_USER_SET_VRING_KICK as u32 => set_vring_kick(dev, vmsg, &mut fds),
        r if r == VHOST_USER_SET_VRING_CALL as u32 => set_vring_call(dev, vmsg, &mut fds),
        r if r == VHOST_USER_SET_VRING_ERR as u32 => set_vring_err(dev, vmsg, &mut fds),
        r if r == VHOST_USER_GET_QUEUE_NUM as u32 => {
            set_reply_u64(vmsg, u64::from(dev.max_queues()));
            Outcome::Reply
        }
        r if r == VHOST_USER_SET_VRING_ENABLE as u32 => set_vring_enable(dev, vmsg),
        r if r == VHOST_USER_SET_BACKEND_REQ_FD as u32 => set_backend_req_fd(dev, &mut fds),
        r if r == VHOST_USER_GET_CONFIG as u32 => config::get_config(dev, vmsg),
        r if r == VHOST_USER_SET_CONFIG as u32 => config::set_config(dev, vmsg),
        r if r == VHOST_USER_NONE as u32 => {
            // The original ends the process here (it is also what a closed connection reads
            // as); a device that needs to do more intercepts NONE in process_msg.
            drop(fds);
            // SAFETY: exit() runs the process's atexit handlers, as the original's does.
            unsafe { libc::exit(0) }
        }
        r if r == VHOST_USER_POSTCOPY_ADVISE as u32 => crate::postcopy::advise(dev, vmsg),
        r if r == VHOST_USER_POSTCOPY_LISTEN as u32 => crate::postcopy::listen(dev, vmsg),
        r if r == VHOST_USER_POSTCOPY_END as u32 => crate::postcopy::end(dev, vmsg),
        r if r == VHOST_USER_GET_INFLIGHT_FD as u32 => inflight::get_inflight_fd(dev, vmsg),
        r if r == VHOST_USER_SET_INFLIGHT_FD as u32 => {
            inflight::set_inflight_fd(dev, vmsg, &mut fds)
        }
        r if r == VHOST_USER_VRING_KICK as u32 => vring_kick(dev, vmsg),
        r if r == VHOST_USER_GET_MAX_MEM_SLOTS as u32 => {
            set_reply_u64(vmsg, VHOST_USER_MAX_RAM_SLOTS as u64);
            Outcome::Reply
        }
        r if r == VHOST_USER_ADD_MEM_REG as u32 => add_mem_reg(dev, vmsg, &mut fds),
        r if r == VHOST_USER_REM_MEM_REG as u32 => rem_mem_reg(dev, vmsg, &mut fds),
        r if r == VHOST_USER_GET_SHARED_OBJECT as u32 => config::get_shared_object(dev, vmsg),
        _ => {
            fds.close_all();
            dev.panic(&format!("Unhandled request: {}", { vmsg.request }));
            // The original acks an unhandled request like a handled one.
            Outcome::Done
        }
    }
}

fn get_features(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let mut features = 1u64 << VIRTIO_F_NOTIFY_ON_EMPTY
        | 1u64 << VIRTIO_RING_F_INDIRECT_DESC
        | 1u64 << VIRTIO_RING_F_EVENT_IDX
        | 1u64 << VIRTIO_F_VERSION_1
        | 1u64 << crate::dirty_log::VHOST_F_LOG_ALL
        | 1u64 << VHOST_USER_F_PROTOCOL_FEATURES;
    if let Some(f) = dev.iface().get_features {
        // SAFETY: the device's C callback.
        features |= unsafe { f(dev.raw()) };
    }
    // Packed rings are the library's business (offered unless turned off).
    let features = crate::queue::setup::offer(dev, features);
    vmsg.payload.u64 = features;
    vmsg.size = 8;
    vmsg.fd_num = 0;
    Outcome::Reply
}

fn set_all_rings_enabled(dev: Dev, enabled: bool) {
    for i in 0..usize::from(dev.max_queues()) {
        if let Some(vq) = dev.vq(i) {
            // SAFETY: in-range queue of an initialised device.
            unsafe { (*vq).enable = enabled as u32 };
        }
    }
}

fn set_features(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    if !check_size(dev, vmsg, vmsg.size == 8) {
        return Outcome::Failed;
    }
    let features = payload_u64(vmsg);
    if let Err(why) = crate::queue::setup::apply_features(dev, features) {
        dev.panic(why);
        return Outcome::Failed;
    }
    if !dev.has_feature(VIRTIO_F_VERSION_1) {
        dev.panic("virtio legacy devices aren't supported by libvhost-user");
        return Outcome::Failed;
    }
    // Without the protocol-features extension there is no SET_VRING_ENABLE: rings start enabled.
    if !dev.has_feature(VHOST_USER_F_PROTOCOL_FEATURES) {
        set_all_rings_enabled(dev, true);
    }
    if let Some(f) = dev.iface().set_features {
        // SAFETY: the device's C callback.
        unsafe { f(dev.raw(), features) };
    }
    Outcome::Done
}

fn protocol_features(dev: Dev) -> u64 {
    use VhostUserProtocolFeature::*;
    let mut features = [
        VHOST_USER_PROTOCOL_F_MQ,
        VHOST_USER_PROTOCOL_F_LOG_SHMFD,
        VHOST_USER_PROTOCOL_F_BACKEND_REQ,
        VHOST_USER_PROTOCOL_F_HOST_NOTIFIER,
        VHOST_USER_PROTOCOL_F_BACKEND_SEND_FD,
        VHOST_USER_PROTOCOL_F_REPLY_ACK,
        VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS,
    ]
    .iter()
    .fold(0u64, |acc, f| acc | 1u64 << (*f as u32));
    if crate::postcopy::userfault_available() {
        features |= 1u64 << VHOST_USER_PROTOCOL_F_PAGEFAULT as u32;
    }
    let iface = dev.iface();
    if iface.get_config.is_some() && iface.set_config.is_some() {
        features |= 1u64 << VHOST_USER_PROTOCOL_F_CONFIG as u32;
    }
    if let Some(f) = iface.get_protocol_features {
        // SAFETY: the device's C callback.
        features |= unsafe { f(dev.raw()) };
    }
    features
}

fn set_protocol_features(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    use VhostUserProtocolFeature::*;
    if !check_size(dev, vmsg, vmsg.size == 8) {
        return Outcome::Failed;
    }
    let features = payload_u64(vmsg);
    dev.set_protocol_features(features);
    if dev.has_protocol_feature(VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS)
        && (!dev.has_protocol_feature(VHOST_USER_PROTOCOL_F_BACKEND_REQ)
            || !dev.has_protocol_feature(VHOST_USER_PROTOCOL_F_REPLY_ACK))
    {
        // In-band kicks and calls are for simulation, which needs both to be synchronous.
        dev.panic("F_IN_BAND_NOTIFICATIONS requires F_BACKEND_REQ && F_REPLY_ACK");
        return Outcome::Failed;
    }
    if let Some(f) = dev.iface().set_protocol_features {
        // SAFETY: the device's C callback.
        unsafe { f(dev.raw(), features) };
    }
    Outcome::Done
}

fn set_backend_req_fd(dev: Dev, fds: &mut Incoming) -> Outcome {
    if fds.count() != 1 {
        let n = fds.count();
        fds.close_all();
        dev.panic(&format!("Invalid backend_req_fd message ({n} fd's)"));
        return Outcome::Failed;
    }
    let fd = fds.take(0).unwrap_or(-1);
    crate::backend::replace_channel(dev, fd);
    Outcome::Done
}

pub use inflight::release as release_inflight;
pub use log::close_log;
