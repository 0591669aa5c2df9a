//! RESET_DEVICE (VHOST_USER_PROTOCOL_F_RESET_DEVICE): every ring back to its initial state,
//! ready for the next start; the connection, ownership, protocol features, memory table, dirty
//! log and backend channel stay (the spec: "the back-end retains ownership of the device").
//! RESET_OWNER, which QEMU no longer sends, keeps the original's handling (rings disabled).

use super::Outcome;
use crate::abi::{vhost_vring_addr, VuVirtq};
use crate::device::Dev;

pub const VHOST_USER_RESET_DEVICE: u32 = 34;
pub const VHOST_USER_PROTOCOL_F_RESET_DEVICE: u32 = 13;

pub fn reset_device(dev: Dev) -> Outcome {
    // Started queues are stopped through the device first, with no lock of ours held: a
    // device with queue threads joins them there, and they may need the memory lock to get
    // out of a queue operation (as at GET_VRING_BASE). The fds go next (remove_watch is the
    // caller's code, so it does not run under our locks either).
    for vq in dev.queues() {
        if vq.started() {
            vq.set_started(false);
        }
        vq.replace_kick(None);
        let mut mem = dev.mem_mut();
        mem.replace_call(vq, None);
        mem.replace_err(vq, None);
    }
    {
        // A queue thread the device did not stop is inside a queue operation or waits to
        // start one: either way it holds or waits for the read lock, and afterwards finds an
        // unmapped ring (its operations then do nothing). With every `inuse` at 0, guest
        // mappings retired for the elements of before the reset are unmapped as the guard
        // goes.
        let mut mem = dev.mem_mut();
        for vq in dev.queues() {
            mem.with_queue(vq, forget_ring_state);
        }
    }
    // The inflight area goes too: after a reset the frontend asks for a fresh one.
    super::release_inflight(dev);
    // A reset device has negotiated nothing yet and its status is 0 (virtio 2.1).
    // (through the queues' layout switch: packed rings forget their per-id state too)
    if crate::queue::setup::apply_features(dev, 0).is_err() {
        dev.set_features(0);
    }
    dev.flags().set_status(0);
    Outcome::Done
}

/// Puts a queue's ring back into its state after `vu_init` (the device's handler stays).
fn forget_ring_state(vq: &mut VuVirtq, _: &crate::memory::MemoryTable) {
    vq.vring.num = 0;
    crate::queue::unmap_ring(vq);
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
}
