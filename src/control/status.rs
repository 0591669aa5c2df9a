//! SET_STATUS / GET_STATUS (VHOST_USER_PROTOCOL_F_STATUS): the virtio device status byte.
//!
//! QEMU sends SET_STATUS(0) when it stops the device (also for migration), so 0 is a stop and
//! changes nothing but the byte: rings and their state are reset by RESET_DEVICE only.

use super::{body, invalid_size, Outcome};
use crate::abi::VhostUserMsg;
use crate::device::Dev;
use crate::message::{set_reply_u64, Size};

pub const VHOST_USER_SET_STATUS: u32 = 39;
pub const VHOST_USER_GET_STATUS: u32 = 40;
pub const VHOST_USER_PROTOCOL_F_STATUS: u32 = 16;

// Device status bits (virtio 1.x, 2.1).
pub const ACKNOWLEDGE: u8 = 1;
pub const DRIVER: u8 = 2;
pub const DRIVER_OK: u8 = 4;
pub const FEATURES_OK: u8 = 8;
pub const FAILED: u8 = 128;
/// The bits a driver may set. DEVICE_NEEDS_RESET (64) is the device's to set; bits 4-5 and
/// everything above bit 7 are undefined.
const DRIVER_BITS: u64 = (ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK | FAILED) as u64;

pub fn set_status(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some(value) = body::<u64>(dev, vmsg, Size::Exact(8), invalid_size) else {
        return Outcome::Failed;
    };
    if value & !DRIVER_BITS != 0 {
        // Not worth breaking the device over; the status stays what it was (GET_STATUS shows
        // it) and an ack, if asked for, reports the failure.
        log::warn!("vhost-user: SET_STATUS {value:#x} sets bits a driver may not set: refused");
        return Outcome::Failed;
    }
    let mut status = value as u8;
    // The device does not keep FEATURES_OK for features it cannot accept (virtio 3.1.1):
    // the driver reads the status back and sees the negotiation failed.
    if status & FEATURES_OK != 0 && !super::features_acceptable(dev) {
        log::warn!(
            "vhost-user: FEATURES_OK for unacceptable features {:#x}: not kept",
            dev.features()
        );
        status &= !FEATURES_OK;
    }
    dev.flags().set_status(status);
    Outcome::Done
}

pub fn get_status(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    set_reply_u64(vmsg, u64::from(dev.flags().status()));
    Outcome::Reply
}
