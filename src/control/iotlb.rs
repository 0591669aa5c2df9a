//! VHOST_USER_IOTLB_MSG (22): the frontend's updates and invalidations of the device IOTLB
//! (`crate::iotlb`, `crate::iommu`).
//!
//! A bad entry (size 0, a wrapping range, an unknown permission, a user address outside the
//! memory table, an overlap with an entry that translates differently) and a message type
//! the frontend does not send (miss, access failure: those go the other way) are refused
//! with a failure reply and leave the table as it was; the device is not broken, as in
//! DPDK: QEMU reports a failed update and carries on. An invalidation of a range without
//! entries is done (nothing to do), as the spec and DPDK have it.

use super::{body, invalid_size, Incoming, Outcome};
use crate::abi::VhostUserMsg;
use crate::device::Dev;
use crate::iommu::{ranges_intersect, ring_ranges, VIRTIO_F_IOMMU_PLATFORM};
use crate::iotlb::{IotlbMsg, IOTLB_INVALIDATE, IOTLB_MSG_SIZE, IOTLB_UPDATE};
use crate::message::Size;

pub fn iotlb_msg(dev: Dev, vmsg: &mut VhostUserMsg, fds: &mut Incoming) -> Outcome {
    fds.close_all();
    let Some(msg) = body::<IotlbMsg>(dev, vmsg, Size::Exact(IOTLB_MSG_SIZE), invalid_size) else {
        return Outcome::Failed;
    };
    if !dev.has_feature(VIRTIO_F_IOMMU_PLATFORM) {
        return refused(&msg, "VIRTIO_F_IOMMU_PLATFORM was not negotiated");
    }
    match msg.kind {
        IOTLB_UPDATE => update(dev, &msg),
        IOTLB_INVALIDATE => invalidate(dev, &msg),
        kind => refused(&msg, &format!("message type {kind} is not one a frontend sends")),
    }
}

/// A refusal: a failure reply, the table unchanged, the device not broken.
fn refused(msg: &IotlbMsg, why: &str) -> Outcome {
    let (iova, size, uaddr, perm) = (msg.iova, msg.size, msg.uaddr, msg.perm);
    log::warn!(
        "IOTLB message refused ({why}): iova {iova:#x} size {size:#x} uaddr {uaddr:#x} perm {perm}"
    );
    Outcome::Failed
}

fn update(dev: Dev, msg: &IotlbMsg) -> Outcome {
    let result = {
        let mut mem = dev.mem_mut();
        let mapped = msg.size == 0
            || msg.uaddr.checked_add(msg.size - 1).is_none()
            || mem.table().qva_range_mapped(msg.uaddr, msg.size);
        if !mapped {
            return refused(msg, "the user address range is not in the memory table");
        }
        // Entries that back mapped rings are the last to be evicted.
        let rings: Vec<(u64, u64)> = dev
            .queues()
            .flat_map(|vq| {
                mem.with_queue(vq, |q, _| {
                    if q.vring.desc.is_null() {
                        [(0, 0); 3]
                    } else {
                        ring_ranges(dev, q)
                    }
                })
            })
            .collect();
        mem.iotlb_mut().insert(msg.iova, msg.size, msg.uaddr, msg.perm, |e| {
            ranges_intersect(&rings, e.iova, e.size)
        })
    };
    match result {
        Ok(()) => {
            crate::iommu::wake_waiting(dev);
            Outcome::Done
        }
        Err(e) => refused(msg, &e.to_string()),
    }
}

fn invalidate(dev: Dev, msg: &IotlbMsg) -> Outcome {
    let mut mem = dev.mem_mut();
    mem.iotlb_mut().invalidate(msg.iova, msg.size);
    // Rings inside the range lose their mapping: the device may no longer use those pages;
    // the next queue operation translates them again (a miss, if the guest unmapped them).
    // Popped elements keep pointing into the memory table's mappings, which an invalidation
    // does not touch.
    for vq in dev.queues() {
        let hit = mem.with_queue(vq, |q, _| {
            !q.vring.desc.is_null() && ranges_intersect(&ring_ranges(dev, q), msg.iova, msg.size)
        });
        if hit {
            mem.forget_ring(vq);
        }
    }
    Outcome::Done
}
