//! Device config space (GET/SET_CONFIG) and shared objects (GET_SHARED_OBJECT).

use super::{body, body_if, invalid_size, Outcome};
use crate::abi::*;
use crate::device::Dev;
use crate::message::{attach_fd, payload_bytes, payload_bytes_mut, Size};

const CONFIG_HDR: usize = 12;

pub fn get_config(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let size = vmsg.size as usize;
    let fits = |c: &VhostUserConfig| {
        c.size as usize <= VHOST_USER_MAX_CONFIG_SIZE && CONFIG_HDR + c.size as usize <= size
    };
    let Some(config) = body_if(dev, vmsg, Size::AtLeast(CONFIG_HDR), fits, invalid_size) else {
        vmsg.size = 0;
        return Outcome::Reply;
    };
    let len = config.size as usize;
    let region = &mut payload_bytes_mut(vmsg)[CONFIG_HDR..CONFIG_HDR + len];
    if !dev.device_get_config(region) {
        // A zero-sized reply tells the frontend that reading failed.
        vmsg.size = 0;
    }
    Outcome::Reply
}

pub fn set_config(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let size = vmsg.size as usize;
    let fits = |c: &VhostUserConfig| {
        (c.size as usize) <= VHOST_USER_MAX_CONFIG_SIZE
            && CONFIG_HDR + c.size as usize <= size
            && (c.offset as u64 + c.size as u64) <= VHOST_USER_MAX_CONFIG_SIZE as u64
    };
    let Some(config) = body_if(dev, vmsg, Size::AtLeast(CONFIG_HDR), fits, invalid_size) else {
        return Outcome::Failed;
    };
    let (offset, len, flags) = (config.offset, config.size, config.flags);
    let region = &payload_bytes(vmsg)[CONFIG_HDR..CONFIG_HDR + len as usize];
    if !dev.device_set_config(region, offset, flags) {
        dev.panic("Set virtio configuration space failed");
        return Outcome::Failed;
    }
    Outcome::Done
}

pub fn get_shared_object(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some(object) = body::<VhostUserShared>(dev, vmsg, Size::Exact(UUID_LEN), invalid_size)
    else {
        vmsg.size = 0;
        return Outcome::Reply;
    };
    let fd = dev.device_shared_object(&object.uuid);
    if fd != -1 {
        attach_fd(vmsg, fd);
    } else {
        vmsg.fd_num = 0;
    }
    Outcome::Reply
}
