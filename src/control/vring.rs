//! Per-queue setup requests: SET_VRING_*, GET_VRING_BASE, SET_VRING_ENABLE, VRING_KICK.

use std::os::fd::{AsRawFd, OwnedFd};

use super::{body, invalid_size, refuse, Incoming, Outcome};
use crate::abi::*;
use crate::device::{Dev, Vq};
use crate::message::Size;
use crate::queue::ring::SplitRing;
use crate::queue::{is_packed, map_ring, valid_ring_size};

/// The queue named by a `vhost_vring_state` payload, refusing bad sizes and indexes.
fn state_queue<'a>(dev: Dev<'a>, vmsg: &VhostUserMsg) -> Option<(Vq<'a>, u32)> {
    let state: vhost_vring_state = body(dev, vmsg, Size::of::<vhost_vring_state>(), invalid_size)?;
    match dev.queue(state.index as usize) {
        Some(vq) => Some((vq, state.num)),
        None => {
            dev.panic(&format!("Invalid queue index: {}", state.index));
            None
        }
    }
}

pub fn set_vring_num(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some((vq, num)) = state_queue(dev, vmsg) else { return Outcome::Failed };
    if !valid_ring_size(num) {
        dev.panic(&format!("Invalid vring size: {num}"));
        return Outcome::Failed;
    }
    // Hold the memory lock: a queue thread may be reading the ring geometry.
    let mut mem = dev.mem_mut();
    mem.with_queue(vq, |q, _| q.vring.num = num);
    // The ring parts were checked for the old size; they are remapped (and checked) on use.
    mem.forget_ring(vq);
    Outcome::Done
}

pub fn set_vring_addr(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some(addr) =
        body::<vhost_vring_addr>(dev, vmsg, Size::of::<vhost_vring_addr>(), invalid_size)
    else {
        return Outcome::Failed;
    };
    let Some(vq) = dev.queue(addr.index as usize) else {
        dev.panic(&format!("Invalid queue index: {}", addr.index));
        return Outcome::Failed;
    };
    let mapped = dev.mem_mut().with_queue(vq, |q, table| {
        q.vra = addr;
        q.vring.flags = addr.flags;
        q.vring.log_guest_addr = addr.log_guest_addr;
        map_ring(dev, table, q)?;
        if is_packed(dev) {
            // A packed ring's used position came with SET_VRING_BASE.
            return Ok(q.used_idx);
        }
        let used = SplitRing::under(q, table).map(|r| r.used_idx()).unwrap_or(0);
        q.used_idx = used;
        Ok(used)
    });
    let used_idx = match mapped {
        Ok(used) => used,
        Err(fault) if crate::iommu::translating(dev) => {
            // With the IOMMU the rings are IOVAs the IOTLB may not translate yet (QEMU sends
            // their updates after this): they are mapped on first use. A miss is asked for
            // now, so the queue is woken when its update arrives.
            dev.ext().iommu.defer_ring(vq.index(), dev.queue_is_processed_in_order(vq.index()));
            if let crate::queue::Fault::IotlbMiss { iova, perm } = fault {
                crate::iommu::report_miss(dev, vq.index(), iova, perm);
            }
            return Outcome::Done;
        }
        Err(_) => {
            dev.panic("Invalid vring_addr message");
            return Outcome::Failed;
        }
    };
    if vq.last_avail_idx() != used_idx && dev.queue_is_processed_in_order(vq.index()) {
        vq.set_avail_base(used_idx);
    }
    Outcome::Done
}

pub fn set_vring_base(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some((vq, num)) = state_queue(dev, vmsg) else { return Outcome::Failed };
    let result = dev
        .mem_mut()
        .with_queue(vq, |q, _| crate::queue::setup::set_vring_base(dev, q, vq.index(), num));
    match result {
        Ok(()) => Outcome::Done,
        Err(why) => {
            dev.panic(&why);
            Outcome::Failed
        }
    }
}

pub fn get_vring_base(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some((vq, _)) = state_queue(dev, vmsg) else { return Outcome::Failed };
    vmsg.payload.state.num =
        dev.mem().with_queue(vq, |q, _| crate::queue::setup::vring_base(dev, q));
    vmsg.size = std::mem::size_of::<vhost_vring_state>() as u32;
    vq.set_started(false);
    let mut mem = dev.mem_mut();
    mem.replace_call(vq, None);
    if !dev.queues().any(|q| q.started()) {
        // The device is stopped: QEMU stops telling us about the guest's unmaps until it
        // starts it again, so what the IOTLB holds may go stale; the next start asks afresh.
        mem.clear_iotlb();
    }
    drop(mem);
    vq.replace_kick(None);
    Outcome::Reply
}

/// Checks a SET_VRING_{KICK,CALL,ERR} message: its queue, and its fd unless NOFD.
/// Returns the queue and the fd (`None` for NOFD).
fn queue_fd<'a>(
    dev: Dev<'a>,
    vmsg: &VhostUserMsg,
    fds: &mut Incoming,
) -> Result<(Vq<'a>, Option<OwnedFd>), Outcome> {
    let Some(v) = body::<u64>(dev, vmsg, Size::Exact(8), invalid_size) else {
        fds.close_all();
        return Err(Outcome::Failed);
    };
    let idx = (v & VHOST_USER_VRING_IDX_MASK) as usize;
    let Some(vq) = dev.queue(idx) else {
        return Err(refuse(dev, fds, &format!("Invalid queue index: {idx}")));
    };
    if v & VHOST_USER_VRING_NOFD_MASK != 0 {
        fds.close_all();
        return Ok((vq, None));
    }
    let request = vmsg.request;
    let fd = fds.take_one(dev, |_| format!("Invalid fds in request: {request}"))?;
    Ok((vq, Some(fd)))
}

pub fn set_vring_kick(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    let (vq, fd) = match queue_fd(dev, vmsg, fds) {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    if let Some(fd) = &fd {
        // The library writes the kick fd itself after an inflight resubmission.
        dev.flags().note_notify_fd(fd.as_raw_fd());
    }
    vq.replace_kick(fd);
    vq.set_started(true);
    vq.watch_kick();
    let result = dev
        .mem()
        .with_queue(vq, |q, table| crate::queue::check_inflight(dev, table, q, vq.index()));
    if let Err(why) = result {
        dev.panic(&format!("Failed to check inflights for vq: {} ({why})", vq.index()));
    }
    Outcome::Done
}

pub fn set_vring_call(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    let (vq, fd) = match queue_fd(dev, vmsg, fds) {
        Ok(v) => v,
        Err(refused) => return refused,
    };
    let raw = fd.as_ref().map(|f| f.as_raw_fd());
    // Non-blocking before queue threads can see it: they write it under the memory lock.
    if let Some(fd) = raw {
        crate::fd::set_nonblocking(fd);
        dev.flags().note_notify_fd(fd);
    }
    dev.mem_mut().replace_call(vq, fd);
    if let Some(fd) = raw {
        // In case of an I/O hang after reconnecting: let the driver look at the used ring.
        let _ = crate::queue::signal_eventfd(dev, fd);
    }
    Outcome::Done
}

pub fn set_vring_err(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    match queue_fd(dev, vmsg, fds) {
        Ok((vq, fd)) => {
            dev.mem_mut().replace_err(vq, fd);
            Outcome::Done
        }
        Err(refused) => refused,
    }
}

pub fn set_vring_enable(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some((vq, enable)) = state_queue(dev, vmsg) else { return Outcome::Failed };
    vq.set_enable(enable);
    Outcome::Done
}

/// In-band kick (VHOST_USER_PROTOCOL_F_INBAND_NOTIFICATIONS).
pub fn vring_kick(dev: Dev, vmsg: &mut VhostUserMsg) -> Outcome {
    let Some((vq, _)) = state_queue(dev, vmsg) else { return Outcome::Failed };
    if !vq.started() {
        vq.set_started(true);
    }
    vq.run_handler();
    Outcome::Done
}
