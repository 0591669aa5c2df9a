//! RESET_DEVICE (VHOST_USER_PROTOCOL_F_RESET_DEVICE): every ring back to its initial state,
//! ready for the next start; the connection, ownership, protocol features, memory table, dirty
//! log and backend channel stay (the spec: "the back-end retains ownership of the device").
//! RESET_OWNER, which QEMU no longer sends, keeps the original's handling (rings disabled).

use super::Outcome;
use crate::abi::vhost_vring_addr;
use crate::device::Dev;
use crate::fd::close_fd;

pub const VHOST_USER_RESET_DEVICE: u32 = 34;
pub const VHOST_USER_PROTOCOL_F_RESET_DEVICE: u32 = 13;

pub fn reset_device(dev: Dev) -> Outcome {
    let queues = usize::from(dev.max_queues());
    // Started queues are stopped through the device first, with no lock of ours held: a
    // device with queue threads joins them there, and they may need the memory lock to get
    // out of a queue operation (as at GET_VRING_BASE).
    for i in 0..queues {
        let Some(vq) = dev.vq(i) else { continue };
        // SAFETY: in-range queue (raw accesses: the callback gets the device too).
        let started = unsafe { std::mem::replace(&mut (*vq).started, false) };
        if started {
            dev.queue_set_started(i, false);
        }
    }
    // Kick watches go before the fds they watch; remove_watch is the caller's code, so it
    // does not run under our locks either.
    for i in 0..queues {
        let Some(vq) = dev.vq(i) else { continue };
        // SAFETY: in-range queue.
        let kick = unsafe { std::mem::replace(&mut (*vq).kick_fd, -1) };
        if kick != -1 {
            dev.remove_watch(kick);
            close_fd(kick);
        }
    }
    {
        // A queue thread the device did not stop is inside a queue operation or waits to
        // start one: either way it holds or waits for the read lock, and afterwards finds an
        // unmapped ring (its operations then do nothing).
        let _mem = dev.mem_mut();
        for i in 0..queues {
            let Some(vq) = dev.vq(i) else { continue };
            // SAFETY: in-range queue, under the write lock.
            let vq = unsafe { &mut *vq };
            forget_ring(vq);
        }
    }
    // The inflight area goes too: after a reset the frontend asks for a fresh one.
    super::release_inflight(dev);
    // A reset device has negotiated nothing yet and its status is 0 (virtio 2.1).
    dev.set_features(0);
    dev.ext().set_status(0);
    Outcome::Done
}

/// Puts a queue back into its state after `vu_init`, keeping only the device's handler.
fn forget_ring(vq: &mut crate::abi::VuVirtq) {
    vq.vring.num = 0;
    vq.vring.desc = std::ptr::null_mut();
    vq.vring.avail = std::ptr::null_mut();
    vq.vring.used = std::ptr::null_mut();
    vq.vring.log_guest_addr = 0;
    vq.vring.flags = 0;
    vq.vra = vhost_vring_addr::default();
    crate::inflight::free_resubmit_list(vq);
    vq.inflight = std::ptr::null_mut();
    vq.counter = 0;
    vq.last_avail_idx = 0;
    vq.shadow_avail_idx = 0;
    vq.used_idx = 0;
    vq.signalled_used = 0;
    vq.signalled_used_valid = false;
    vq.notification = true;
    vq.inuse = 0;
    vq.enable = 0;
    vq.started = false;
    close_fd(std::mem::replace(&mut vq.call_fd, -1));
    close_fd(std::mem::replace(&mut vq.err_fd, -1));
}
