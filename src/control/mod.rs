//! The control plane: one frontend message per `vu_dispatch`, validated, handled, answered.
//!
//! A handler gets the device, the message and the fds that came with it ([`Incoming`], owned
//! fds: whatever a handler does not take is closed). It reads its payload with [`body`]
//! (size checked, the original's wording on refusal), refuses bad input with [`refuse`]
//! (`panic` with `dev->broken` set, as the original does) and reaches the queues through
//! [`Vq`](crate::device::Vq) handles and the memory lock's guards.

mod config;
mod device_state;
mod inflight;
mod iotlb;
mod log;
mod mem_table;
mod postcopy;
mod reset;
mod status;
mod vring;

use std::os::fd::{BorrowedFd, OwnedFd};

use crate::mmap::{mappable_size, Mapping};

use crate::abi::VhostUserRequest::{self, *};
use crate::abi::*;
use crate::device::Dev;
use crate::message::{self, set_reply_u64, write_message, Body, Size, VHOST_USER_VERSION};
use crate::queue::split::{
    VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
};
use crate::request::request_name;

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

/// The fds that arrived with a message, owned. Handlers take the ones they keep; the rest are
/// closed when this is dropped, so no request leaks an fd whatever it carried.
pub struct Incoming {
    fds: [Option<OwnedFd>; VHOST_MEMORY_BASELINE_NREGIONS],
    n: usize,
}

impl Incoming {
    /// Takes ownership of the message's fds (and makes the message forget them).
    fn from_msg(vmsg: &mut VhostUserMsg) -> Incoming {
        let (fds, n) = message::take_fds(vmsg);
        Incoming { fds, n }
    }

    pub fn count(&self) -> usize {
        self.n
    }

    /// Takes ownership of fd `i`.
    pub fn take(&mut self, i: usize) -> Option<OwnedFd> {
        self.fds.get_mut(i)?.take()
    }

    /// The one fd a request must carry; refuses the request (see [`refuse`]) with
    /// `wording(count)` when it came with another number of fds.
    pub fn take_one(
        &mut self,
        dev: Dev,
        wording: impl FnOnce(usize) -> String,
    ) -> Result<OwnedFd, Outcome> {
        if self.n != 1 {
            let n = self.n;
            return Err(refuse(dev, self, &wording(n)));
        }
        match self.take(0) {
            Some(fd) => Ok(fd),
            // A caller's reader counted an fd it did not give.
            None => Err(refuse(dev, self, &wording(1))),
        }
    }

    pub fn close_all(&mut self) {
        self.fds = Default::default();
    }
}

/// Refuses a request: closes its fds, reports `msg` through `panic` (the device is broken)
/// and answers with failure.
pub fn refuse(dev: Dev, fds: &mut Incoming, msg: &str) -> Outcome {
    fds.close_all();
    dev.panic(msg);
    Outcome::Failed
}

/// The original's wording for a payload of the wrong size.
fn invalid_size(vmsg: &VhostUserMsg) -> String {
    let (req, size) = (vmsg.request, vmsg.size);
    format!(
        "Invalid message size {size} for request {} ({req})",
        request_name(req as u32).to_str().unwrap_or("unknown")
    )
}

/// The payload as a `T` when its size is what `want` says; otherwise `panic` with
/// `wording(vmsg)` (the original's message for this request) and `None`.
fn body<T: Body>(
    dev: Dev,
    vmsg: &VhostUserMsg,
    want: Size,
    wording: impl FnOnce(&VhostUserMsg) -> String,
) -> Option<T> {
    body_if(dev, vmsg, want, |_| true, wording)
}

/// [`body`] with a check of the contents too (a length inside the payload, say).
fn body_if<T: Body>(
    dev: Dev,
    vmsg: &VhostUserMsg,
    want: Size,
    valid: impl FnOnce(&T) -> bool,
    wording: impl FnOnce(&VhostUserMsg) -> String,
) -> Option<T> {
    let payload = message::body::<T>(vmsg);
    if want.admits(vmsg.size) && valid(&payload) {
        Some(payload)
    } else {
        dev.panic(&wording(vmsg));
        None
    }
}

/// Why a shared area the frontend sent (dirty log, inflight area) could not be mapped.
#[derive(Debug)]
pub enum MapError {
    /// The area extends beyond the end of its file.
    BeyondEnd,
    Mmap(std::io::Error),
}

/// Maps `[offset, offset + size)` of `fd` read/write, refusing a range that extends beyond the
/// end of a file whose size bounds it (a mapping there would fault on access).
fn map_file_range(fd: BorrowedFd<'_>, size: u64, offset: u64) -> Result<Mapping, MapError> {
    let fits =
        mappable_size(fd).is_none_or(|s| offset.checked_add(size).is_some_and(|end| end <= s));
    if !fits {
        return Err(MapError::BeyondEnd);
    }
    Mapping::map_shared(fd, size, offset, libc::PROT_READ | libc::PROT_WRITE, false)
        .map_err(MapError::Mmap)
}

/// `vu_dispatch`: reads one message with the device's reader, handles it, replies.
pub fn dispatch(dev: Dev) -> bool {
    #[cfg(test)]
    crate::fault_injection::fire_if_armed();
    if dev.read_msg().is_none() {
        return false;
    }
    let mut vmsg = message::zeroed_msg();
    let success = dev.read_message(&mut vmsg) && handle(dev, &mut vmsg);
    let data = vmsg.data;
    if !data.is_null() {
        // SAFETY: a caller-supplied reader may attach a malloc'd buffer; the original frees it.
        unsafe { libc::free(data.cast()) };
    }
    success
}

/// One request as it arrived, for the record of what was done with it.
#[derive(Clone, Copy, Debug)]
struct Received {
    /// The raw request code and what it decodes to.
    code: u32,
    request: Option<VhostUserRequest>,
    size: u32,
    fds: usize,
}

fn handle(dev: Dev, vmsg: &mut VhostUserMsg) -> bool {
    let fd_num = { vmsg.fd_num };
    if !(0..=VHOST_MEMORY_BASELINE_NREGIONS as i32).contains(&fd_num) {
        // Only a caller-supplied reader can do this; we cannot know which fds are real.
        dev.panic(&format!("Invalid fd count {fd_num} in message"));
        return true;
    }
    let code = vmsg.request as u32;
    let received = Received {
        code,
        request: VhostUserRequest::from_raw(code),
        size: vmsg.size,
        fds: message::fd_count(vmsg),
    };
    let need_reply = vmsg.flags & VHOST_USER_NEED_REPLY_MASK != 0;
    let outcome = process(dev, vmsg, received.request);
    finish(dev, vmsg, received, outcome, need_reply)
}

/// Answers a handled request. The one place where the request, its payload size, its fd
/// count and the outcome are all known: the place to trace requests.
fn finish(
    dev: Dev,
    vmsg: &mut VhostUserMsg,
    received: Received,
    outcome: Outcome,
    need_reply: bool,
) -> bool {
    crate::diagnostics::request(received.code, received.size, received.fds, outcome, need_reply);
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
    !reply || send_reply(dev, vmsg)
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

fn process(dev: Dev, vmsg: &mut VhostUserMsg, request: Option<VhostUserRequest>) -> Outcome {
    if let Some(reply) = dev.device_process_msg(vmsg) {
        if request == Some(VHOST_USER_IOTLB_MSG) && dev.ext().iommu.set_backend_owned() {
            // The backend keeps the IOTLB itself: the library leaves guest addresses alone
            // (rings are mapped again, as frontend addresses, on use).
            let mut mem = dev.mem_mut();
            for vq in dev.queues() {
                mem.forget_ring(vq);
            }
        }
        return if reply { Outcome::Reply } else { Outcome::Done };
    }
    let mut fds = Incoming::from_msg(vmsg);
    let fds = &mut fds;
    use mem_table::*;
    use vring::*;
    match request {
        Some(VHOST_USER_GET_FEATURES) => get_features(dev, vmsg),
        Some(VHOST_USER_SET_FEATURES) => set_features(dev, vmsg),
        Some(VHOST_USER_GET_PROTOCOL_FEATURES) => {
            set_reply_u64(vmsg, protocol_features(dev));
            Outcome::Reply
        }
        Some(VHOST_USER_SET_PROTOCOL_FEATURES) => set_protocol_features(dev, vmsg),
        Some(VHOST_USER_SET_OWNER) => Outcome::Done,
        Some(VHOST_USER_RESET_OWNER) => {
            set_all_rings_enabled(dev, false);
            Outcome::Done
        }
        Some(VHOST_USER_SET_MEM_TABLE) => set_mem_table(dev, vmsg, fds),
        Some(VHOST_USER_SET_LOG_BASE) => log::set_log_base(dev, vmsg, fds),
        Some(VHOST_USER_SET_LOG_FD) => log::set_log_fd(dev, fds),
        Some(VHOST_USER_SET_VRING_NUM) => set_vring_num(dev, vmsg),
        Some(VHOST_USER_SET_VRING_ADDR) => set_vring_addr(dev, vmsg),
        Some(VHOST_USER_SET_VRING_BASE) => set_vring_base(dev, vmsg),
        Some(VHOST_USER_GET_VRING_BASE) => get_vring_base(dev, vmsg),
        Some(VHOST_USER_SET_VRING_KICK) => set_vring_kick(dev, vmsg, fds),
        Some(VHOST_USER_SET_VRING_CALL) => set_vring_call(dev, vmsg, fds),
        Some(VHOST_USER_SET_VRING_ERR) => set_vring_err(dev, vmsg, fds),
        Some(VHOST_USER_GET_QUEUE_NUM) => {
            set_reply_u64(vmsg, u64::from(dev.max_queues()));
            Outcome::Reply
        }
        Some(VHOST_USER_SET_VRING_ENABLE) => set_vring_enable(dev, vmsg),
        Some(VHOST_USER_SET_BACKEND_REQ_FD) => set_backend_req_fd(dev, fds),
        Some(VHOST_USER_GET_CONFIG) => config::get_config(dev, vmsg),
        Some(VHOST_USER_SET_CONFIG) => config::set_config(dev, vmsg),
        Some(VHOST_USER_NONE) => {
            // The original ends the process here (it is also what a closed connection reads
            // as); a device that needs to do more intercepts NONE in process_msg.
            fds.close_all();
            // SAFETY: exit() runs the process's atexit handlers, as the original's does.
            unsafe { libc::exit(0) }
        }
        Some(VHOST_USER_POSTCOPY_ADVISE) => postcopy::advise(dev, vmsg),
        Some(VHOST_USER_POSTCOPY_LISTEN) => postcopy::listen(dev, vmsg),
        Some(VHOST_USER_POSTCOPY_END) => postcopy::end(dev, vmsg),
        Some(VHOST_USER_GET_INFLIGHT_FD) => inflight::get_inflight_fd(dev, vmsg),
        Some(VHOST_USER_SET_INFLIGHT_FD) => inflight::set_inflight_fd(dev, vmsg, fds),
        Some(VHOST_USER_VRING_KICK) => vring_kick(dev, vmsg),
        Some(VHOST_USER_GET_MAX_MEM_SLOTS) => {
            set_reply_u64(vmsg, VHOST_USER_MAX_RAM_SLOTS as u64);
            Outcome::Reply
        }
        Some(VHOST_USER_ADD_MEM_REG) => add_mem_reg(dev, vmsg, fds),
        Some(VHOST_USER_REM_MEM_REG) => rem_mem_reg(dev, vmsg, fds),
        Some(VHOST_USER_GET_SHARED_OBJECT) => config::get_shared_object(dev, vmsg),
        Some(VHOST_USER_IOTLB_MSG) => iotlb::iotlb_msg(dev, vmsg, fds),
        _ => beyond_10_0(dev, vmsg, fds),
    }
}

/// Requests newer than QEMU 10.0's C enum, which names none of them (status.rs, reset.rs,
/// device_state.rs); the rest is unhandled, as in the original.
fn beyond_10_0(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    match vmsg.request as u32 {
        status::VHOST_USER_SET_STATUS => status::set_status(dev, vmsg),
        status::VHOST_USER_GET_STATUS => status::get_status(dev, vmsg),
        reset::VHOST_USER_RESET_DEVICE => reset::reset_device(dev),
        device_state::VHOST_USER_SET_DEVICE_STATE_FD => {
            device_state::set_device_state_fd(dev, vmsg, fds)
        }
        device_state::VHOST_USER_CHECK_DEVICE_STATE => device_state::check_device_state(dev, vmsg),
        _ => {
            fds.close_all();
            dev.panic(&format!("Unhandled request: {}", { vmsg.request }));
            // The original acks an unhandled request like a handled one.
            Outcome::Done
        }
    }
}

fn get_features(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    // Not set_reply_u64: this reply keeps the request's flags, as the original's does.
    vmsg.payload.u64 = offered_features(dev);
    vmsg.size = 8;
    Outcome::Reply
}

/// The virtio features GET_FEATURES offers: the library's and the device's.
fn offered_features(dev: Dev) -> u64 {
    let features = 1u64 << VIRTIO_F_NOTIFY_ON_EMPTY
        | 1u64 << VIRTIO_RING_F_INDIRECT_DESC
        | 1u64 << VIRTIO_RING_F_EVENT_IDX
        | 1u64 << VIRTIO_F_VERSION_1
        | 1u64 << crate::dirty_log::VHOST_F_LOG_ALL
        | 1u64 << VHOST_USER_F_PROTOCOL_FEATURES;
    // Packed rings and the IOMMU are the library's business (offered unless turned off).
    let features = crate::iommu::offer(dev, features | dev.device_features());
    crate::queue::setup::offer(dev, features)
}

/// Whether the features of SET_FEATURES are ones the device can accept: only offered ones,
/// and VERSION_1 (legacy devices are not supported).
fn features_acceptable(dev: Dev) -> bool {
    dev.features() & !offered_features(dev) == 0 && dev.has_feature(VIRTIO_F_VERSION_1)
}

fn set_all_rings_enabled(dev: Dev, enabled: bool) {
    for vq in dev.queues() {
        vq.set_enable(enabled as u32);
    }
}

fn set_features(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some(features) = body::<u64>(dev, vmsg, Size::Exact(8), invalid_size) else {
        return Outcome::Failed;
    };
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
    dev.device_set_features(features);
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
    if crate::userfaultfd::userfault_available() {
        features |= 1u64 << VHOST_USER_PROTOCOL_F_PAGEFAULT as u32;
    }
    // Beyond the original: STATUS and RESET_DEVICE always, DEVICE_STATE once a backend
    // registered its save/load handlers.
    features |= 1u64 << status::VHOST_USER_PROTOCOL_F_STATUS
        | 1u64 << reset::VHOST_USER_PROTOCOL_F_RESET_DEVICE;
    if dev.ext_if_any().is_some_and(|e| e.state.available()) {
        features |= 1u64 << device_state::VHOST_USER_PROTOCOL_F_DEVICE_STATE;
    }
    let iface = dev.iface();
    if iface.get_config.is_some() && iface.set_config.is_some() {
        features |= 1u64 << VHOST_USER_PROTOCOL_F_CONFIG as u32;
    }
    features |= dev.device_protocol_features();
    features
}

fn set_protocol_features(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    use VhostUserProtocolFeature::*;
    let Some(features) = body::<u64>(dev, vmsg, Size::Exact(8), invalid_size) else {
        return Outcome::Failed;
    };
    dev.set_protocol_features(features);
    if dev.has_protocol_feature(VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS)
        && (!dev.has_protocol_feature(VHOST_USER_PROTOCOL_F_BACKEND_REQ)
            || !dev.has_protocol_feature(VHOST_USER_PROTOCOL_F_REPLY_ACK))
    {
        // In-band kicks and calls are for simulation, which needs both to be synchronous.
        dev.panic("F_IN_BAND_NOTIFICATIONS requires F_BACKEND_REQ && F_REPLY_ACK");
        return Outcome::Failed;
    }
    dev.device_set_protocol_features(features);
    Outcome::Done
}

fn set_backend_req_fd(dev: Dev, fds: &mut Incoming) -> Outcome {
    match fds.take_one(dev, |n| format!("Invalid backend_req_fd message ({n} fd's)")) {
        Ok(fd) => {
            crate::backend_channel::replace_channel(dev, Some(fd));
            Outcome::Done
        }
        Err(refused) => refused,
    }
}

pub use inflight::release as release_inflight;
pub use log::close_log;
