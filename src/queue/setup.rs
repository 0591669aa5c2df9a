//! What the control plane asks of the queues about their layout: whether packed rings are
//! offered, the features taking effect, and the ring state of SET/GET_VRING_BASE.

use std::sync::OnceLock;

use crate::abi::VuVirtq;
use crate::device::Dev;
use crate::iommu::VIRTIO_F_IOMMU_PLATFORM;
use crate::queue::ids;
use crate::queue::packed_ring::Pos;
use crate::queue::unmap_ring;
use crate::queue::{is_packed, VIRTIO_F_RING_PACKED};

/// The environment variable that turns packed rings off for every device of the process.
pub const NO_PACKED_ENV: &str = "LIBVHOST_USER_NO_PACKED";

fn env_disables_packed() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os(NO_PACKED_ENV).is_some_and(|v| !v.is_empty() && v != "0"))
}

/// Whether the library offers `VIRTIO_F_RING_PACKED` for `dev`: unless the environment or
/// `vu_set_packed_ring_enabled(dev, false)` turned it off.
pub fn packed_offered(dev: Dev) -> bool {
    !env_disables_packed() && !ids::packed_disabled(dev)
}

/// The features the library adds to the backend's (`get_features`), and the backend bits it
/// masks: packed rings are the library's business.
pub fn offer(dev: Dev, backend_features: u64) -> u64 {
    let packed = 1u64 << VIRTIO_F_RING_PACKED;
    if packed_offered(dev) {
        backend_features | packed
    } else {
        backend_features & !packed
    }
}

/// SET_FEATURES: stores the features under the memory write lock (queue threads read the
/// layout under the read lock) and, when the ring layout changes, forgets every ring mapping
/// (remapped for the new layout on next use) and starts the rings at their reset positions.
/// Refuses packed rings the library did not offer.
pub fn apply_features(dev: Dev, features: u64) -> Result<(), &'static str> {
    if features & (1u64 << VIRTIO_F_RING_PACKED) != 0 && !packed_offered(dev) {
        return Err("the frontend acked packed rings, which were not offered");
    }
    if features & (1u64 << VIRTIO_F_IOMMU_PLATFORM) != 0 && !crate::iommu::offered(dev) {
        return Err("the frontend acked VIRTIO_F_IOMMU_PLATFORM, which was not offered");
    }
    let mut mem = dev.mem_mut();
    let was_packed = is_packed(dev);
    let was_iommu = dev.has_feature(VIRTIO_F_IOMMU_PLATFORM);
    dev.set_features(features);
    let packed = is_packed(dev);
    if dev.has_feature(VIRTIO_F_IOMMU_PLATFORM) != was_iommu {
        // Ring addresses change meaning (IOVAs or frontend addresses): map them again on use;
        // translations of before are not the new negotiation's.
        for vq in dev.queues() {
            mem.forget_ring(vq);
        }
        mem.clear_iotlb();
        if let Some(ext) = dev.ext_if_any() {
            ext.iommu.reset();
        }
    }
    if packed {
        ids::ensure_tables(dev);
    }
    if packed != was_packed {
        for i in 0..usize::from(dev.max_queues()) {
            let Some(vq) = dev.vq(i) else { continue };
            // SAFETY: in-range queue, under the write lock.
            let vq = unsafe { &mut *vq };
            unmap_ring(vq);
            let start = if packed { Pos::START.0 } else { 0 };
            vq.last_avail_idx = start;
            vq.shadow_avail_idx = start;
            vq.used_idx = start;
            vq.signalled_used = start;
            vq.signalled_used_valid = false;
            if let Some(ids) = ids::queue_ids(dev, i) {
                ids.reset(0);
            }
        }
    }
    Ok(())
}

/// GET_VRING_BASE's `num`: split, the next avail index; packed, the avail position in bits
/// 0–15 and the used position in bits 16–31 (each with its wrap counter in the top bit).
pub fn vring_base(dev: Dev, vq: &VuVirtq) -> u32 {
    if is_packed(dev) {
        u32::from(vq.last_avail_idx) | u32::from(vq.used_idx) << 16
    } else {
        u32::from(vq.last_avail_idx)
    }
}

/// SET_VRING_BASE: the ring state to start from (the encoding of `vring_base`). The caller
/// holds the memory write lock.
pub fn set_vring_base(dev: Dev, vq: &mut VuVirtq, qidx: usize, num: u32) -> Result<(), String> {
    if !is_packed(dev) {
        let base = u16::try_from(num).map_err(|_| format!("Invalid vring base: {num}"))?;
        vq.last_avail_idx = base;
        vq.shadow_avail_idx = base;
        return Ok(());
    }
    let (avail, used) = (num as u16, (num >> 16) as u16);
    // Positions past the ring are refused when the ring is used (its size may come later).
    vq.last_avail_idx = avail;
    vq.shadow_avail_idx = avail;
    vq.used_idx = used;
    vq.signalled_used = used;
    vq.signalled_used_valid = false;
    if let Some(ids) = ids::queue_ids(dev, qidx) {
        ids.reset(u16::try_from(vq.vring.num).unwrap_or(0));
    }
    Ok(())
}
