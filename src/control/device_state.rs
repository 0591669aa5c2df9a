//! SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE (VHOST_USER_PROTOCOL_F_DEVICE_STATE), offered only
//! when the backend registered save/load handlers; the transfer is `crate::state_transfer`.

use super::{body, invalid_size, Incoming, Outcome};
use crate::abi::VhostUserMsg;
use crate::device::Dev;
use crate::message::{set_reply_u64, Size};
use crate::state_transfer::Direction;

pub const VHOST_USER_SET_DEVICE_STATE_FD: u32 = 42;
pub const VHOST_USER_CHECK_DEVICE_STATE: u32 = 43;
pub const VHOST_USER_PROTOCOL_F_DEVICE_STATE: u32 = 19;

/// SET_DEVICE_STATE_FD reply: bits 0-7 an error code, bit 8 "no fd of the backend's own"
/// (we always use the frontend's).
const REPLY_FAILED: u64 = 1;
const REPLY_NO_FD: u64 = 1 << 8;
/// The only transfer phase the protocol defines: the device is stopped.
const PHASE_STOPPED: u32 = 0;

pub fn set_device_state_fd(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    let started = body::<u64>(dev, vmsg, Size::Exact(8), invalid_size)
        .is_some_and(|params| start(dev, params, fds));
    fds.close_all();
    set_reply_u64(vmsg, if started { REPLY_NO_FD } else { REPLY_NO_FD | REPLY_FAILED });
    Outcome::Reply
}

/// Starts the transfer the payload `{u32 direction; u32 phase}` asks for; refusals are
/// reported in the reply, without breaking the device.
fn start(dev: Dev, params: u64, fds: &mut Incoming) -> bool {
    let (direction, phase) = (params as u32, (params >> 32) as u32);
    let refuse = |why: String| {
        log::warn!("vhost-user: SET_DEVICE_STATE_FD refused: {why}");
        false
    };
    if fds.count() != 1 {
        return refuse(format!("{} fds instead of 1", fds.count()));
    }
    let direction = match direction {
        0 => Direction::Save,
        1 => Direction::Load,
        d => return refuse(format!("unknown direction {d}")),
    };
    if phase != PHASE_STOPPED {
        return refuse(format!("unknown phase {phase}"));
    }
    let Some(fd) = fds.take(0) else { return refuse("no fd".into()) };
    match dev.ext().state.start(dev, direction, fd) {
        Ok(()) => true,
        Err(why) => refuse(why),
    }
}

pub fn check_device_state(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let ok = body::<u64>(dev, vmsg, Size::Exact(0), invalid_size).is_some()
        && match dev.ext().state.check(dev) {
            Ok(()) => true,
            Err(why) => {
                log::warn!("vhost-user: device state transfer failed: {why}");
                false
            }
        };
    set_reply_u64(vmsg, if ok { 0 } else { 1 });
    Outcome::Reply
}
