//! `VIRTIO_F_IOMMU_PLATFORM` (virtio feature 33) around the IOTLB table (`crate::iotlb`):
//! whether the library offers it, whether a device's guest addresses are IOVAs, and what
//! happens on a miss.
//!
//! A miss (a queue operation found no IOTLB entry for a guest address) is sent to the
//! frontend as VHOST_USER_BACKEND_IOTLB_MSG (type miss) on the backend channel, after the
//! memory lock is released and without waiting for an answer: QEMU answers by sending an
//! update on the main socket (and waits for its ack there), so the dispatch thread must stay
//! free to serve it. The operation that missed did nothing (`vu_queue_pop` returned NULL);
//! the queue is marked as waiting, and when the next update arrives every waiting queue is
//! woken: the library writes its kick eventfd, which runs the backend's handler (or, with
//! no kick fd, runs the handler itself, as an in-band kick does).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::abi::VuVirtq;
use crate::device::Dev;
use crate::queue::ring::SplitRing;
use crate::queue::Fault;

/// `VIRTIO_F_IOMMU_PLATFORM` (a.k.a. VIRTIO_F_ACCESS_PLATFORM).
pub const VIRTIO_F_IOMMU_PLATFORM: u32 = 33;

/// The environment variable that turns the IOMMU feature off for every device of the process.
pub const NO_IOMMU_ENV: &str = "LIBVHOST_USER_NO_IOMMU";

fn env_disables_iommu() -> bool {
    static OFF: OnceLock<bool> = OnceLock::new();
    *OFF.get_or_init(|| std::env::var_os(NO_IOMMU_ENV).is_some_and(|v| !v.is_empty() && v != "0"))
}

/// A bit per queue (queues past 62 share the last one, which wakes them all).
const ALL_QUEUES_BIT: usize = 63;

/// Per-device IOMMU state (in `DeviceExt`).
#[derive(Default)]
pub struct IommuState {
    /// `vu_set_iommu_platform_enabled(dev, false)`.
    disabled: AtomicBool,
    /// The backend's `process_msg` answered an IOTLB_MSG itself: it keeps the IOTLB, and the
    /// library uses guest addresses untranslated, as before it knew the feature.
    backend_owned: AtomicBool,
    /// Queues that missed and wait for an update (see `ALL_QUEUES_BIT`).
    waiting: AtomicU64,
    /// Queues whose rings SET_VRING_ADDR could not translate yet and whose backend processes
    /// them in order: when the ring is mapped, the next avail index starts at the used one
    /// (what SET_VRING_ADDR does for them when it can map the ring).
    in_order_deferred: Mutex<Vec<usize>>,
    /// Queues started (SET_VRING_KICK) before their ring could be translated, with inflight
    /// tracking: the inflight area is checked against the ring when it is mapped.
    inflight_deferred: Mutex<Vec<usize>>,
    /// Misses asked for since the last update (page, permission, when), at most
    /// `MAX_PENDING_MISSES`: a queue polled while its buffer has no entry asks once per
    /// `MISS_RETRY`, not at every poll (as DPDK's pending list). They expire, so a miss the
    /// frontend could not answer then (the guest had not mapped the page yet) is asked again.
    pending: Mutex<Vec<(u64, u8, Instant)>>,
}

const MAX_PENDING_MISSES: usize = 64;
const MISS_PAGE: u64 = 4096;
const MISS_RETRY: Duration = Duration::from_millis(20);

impl IommuState {
    pub fn set_disabled(&self, disabled: bool) {
        self.disabled.store(disabled, Ordering::Relaxed);
    }

    /// Called when the backend's `process_msg` handled an IOTLB_MSG; true the first time.
    pub fn set_backend_owned(&self) -> bool {
        !self.backend_owned.swap(true, Ordering::Relaxed)
    }

    /// RESET_DEVICE: no queue waits any more.
    pub fn reset(&self) {
        self.waiting.store(0, Ordering::Relaxed);
        self.pending.lock().clear();
        self.in_order_deferred.lock().clear();
        self.inflight_deferred.lock().clear();
    }

    /// Queue `qidx` started before its ring could be translated (see `inflight_deferred`).
    pub fn defer_inflight_check(&self, qidx: usize) {
        let mut list = self.inflight_deferred.lock();
        if !list.contains(&qidx) {
            list.push(qidx);
        }
    }

    /// SET_VRING_ADDR could not translate queue `qidx`'s ring yet (`in_order`: the backend
    /// processes it in order).
    pub fn defer_ring(&self, qidx: usize, in_order: bool) {
        let mut list = self.in_order_deferred.lock();
        list.retain(|q| *q != qidx);
        if in_order {
            list.push(qidx);
        }
    }

    /// Whether a miss for `iova` with `perm` is to be sent (not asked for since the last
    /// update); records it.
    fn first_miss(&self, iova: u64, perm: u8) -> bool {
        let (page, now) = (iova / MISS_PAGE, Instant::now());
        let mut pending = self.pending.lock();
        pending.retain(|&(_, _, at)| now.duration_since(at) < MISS_RETRY);
        if pending.iter().any(|&(p, q, _)| p == page && q == perm) {
            return false;
        }
        if pending.len() < MAX_PENDING_MISSES {
            pending.push((page, perm, now));
        }
        true
    }

    /// A miss that could not be sent is not pending.
    fn unsent(&self, iova: u64, perm: u8) {
        let page = iova / MISS_PAGE;
        self.pending.lock().retain(|&(p, q, _)| p != page || q != perm);
    }

    fn mark_waiting(&self, qidx: usize) {
        let bit = qidx.min(ALL_QUEUES_BIT);
        self.waiting.fetch_or(1 << bit, Ordering::AcqRel);
    }

    /// Takes the set of waiting queues (an update arrived: misses may be asked again).
    fn take_waiting(&self) -> u64 {
        self.pending.lock().clear();
        self.waiting.swap(0, Ordering::AcqRel)
    }
}

/// Whether the library offers `VIRTIO_F_IOMMU_PLATFORM` for `dev`.
pub fn offered(dev: Dev) -> bool {
    !env_disables_iommu()
        && !dev.ext_if_any().is_some_and(|e| e.iommu.disabled.load(Ordering::Relaxed))
}

/// The features the library adds to (or, turned off, masks from) the backend's.
pub fn offer(dev: Dev, features: u64) -> u64 {
    let bit = 1u64 << VIRTIO_F_IOMMU_PLATFORM;
    if offered(dev) {
        features | bit
    } else {
        features & !bit
    }
}

/// Whether `dev`'s guest addresses are IOVAs that the library translates: the frontend acked
/// the feature and the backend did not take the IOTLB messages for itself. Read under the
/// memory lock (features change under the write lock).
#[inline]
pub fn translating(dev: Dev) -> bool {
    dev.has_feature(VIRTIO_F_IOMMU_PLATFORM)
        && !dev.ext_if_any().is_some_and(|e| e.iommu.backend_owned.load(Ordering::Relaxed))
}

/// The guest address ranges of queue `vq`'s ring parts (IOVAs with the IOMMU), for the
/// negotiated layout; empty ranges for a ring without addresses.
pub fn ring_ranges(dev: Dev, vq: &VuVirtq) -> [(u64, u64); 3] {
    let n = u64::from(vq.vring.num);
    let a = &vq.vra;
    if a.desc_user_addr == 0 || n == 0 {
        return [(0, 0); 3];
    }
    if crate::queue::is_packed(dev) {
        use crate::queue::packed_ring::{desc_ring_size, EVENT_AREA_SIZE};
        [
            (a.desc_user_addr, desc_ring_size(n)),
            (a.avail_user_addr, EVENT_AREA_SIZE),
            (a.used_user_addr, EVENT_AREA_SIZE),
        ]
    } else {
        use crate::queue::ring::{avail_ring_size, desc_table_size, used_ring_size};
        [
            (a.desc_user_addr, desc_table_size(n)),
            (a.avail_user_addr, avail_ring_size(n)),
            (a.used_user_addr, used_ring_size(n)),
        ]
    }
}

/// Whether any of `ranges` intersects `[addr, addr + len)`.
pub fn ranges_intersect(ranges: &[(u64, u64)], addr: u64, len: u64) -> bool {
    ranges.iter().any(|&(a, l)| crate::iotlb::intersects(a, l, addr, len))
}

/// A queue operation just mapped queue `qidx`'s ring through the IOTLB (it was not mapped:
/// SET_VRING_ADDR could not translate it, or an invalidation or memory change unmapped it).
/// What SET_VRING_ADDR and SET_VRING_KICK do with a mapped ring happens now if they could not
/// do it then: a split ring's used index is read from the ring (equal to ours otherwise),
/// an in-order backend's next avail index starts there, and the inflight area is checked.
#[cold]
pub fn ring_mapped(dev: Dev, vq: &mut VuVirtq, qidx: usize) -> Result<(), Fault> {
    let state = &dev.ext().iommu;
    if !crate::queue::is_packed(dev) {
        // SAFETY: the caller (a queue operation) holds the memory lock and just mapped it.
        if let Some(used) = (unsafe { SplitRing::of(vq) }).map(|r| r.used_idx()) {
            vq.used_idx = used;
            let mut list = state.in_order_deferred.lock();
            if let Some(i) = list.iter().position(|q| *q == qidx) {
                list.swap_remove(i);
                vq.last_avail_idx = used;
                vq.shadow_avail_idx = used;
            }
        }
    }
    let deferred = {
        let mut list = state.inflight_deferred.lock();
        list.iter().position(|q| *q == qidx).map(|i| list.swap_remove(i)).is_some()
    };
    if deferred {
        let checked = if crate::queue::is_packed(dev) {
            crate::inflight::check_packed_queue(dev, vq, qidx)
        } else {
            // SAFETY: as above.
            let used = unsafe { SplitRing::of(vq) }.map(|r| r.used_idx());
            crate::inflight::check_queue(dev, vq, qidx, used)
        };
        if let Err(why) = checked {
            log::error!("inflight check of queue {qidx} once its ring was mapped: {why}");
            return Err(Fault::InflightArea);
        }
    }
    Ok(())
}

/// After a queue operation of queue `qidx` missed at `iova` (the memory lock released):
/// marks the queue waiting, then asks the frontend for the translation. Marking first: the
/// update may be handled before the send returns.
pub fn report_miss(dev: Dev, qidx: usize, iova: u64, perm: u8) {
    dev.ext().iommu.mark_waiting(qidx);
    ask(dev, iova, perm);
}

/// Asks the frontend for the entry of `iova` (unless that was asked since the last update);
/// on its own, a miss outside a queue operation (`vu_gpa_to_va`), which wakes nobody.
pub fn ask(dev: Dev, iova: u64, perm: u8) {
    let state = &dev.ext().iommu;
    if state.first_miss(iova, perm)
        && !crate::backend_channel::iotlb_msg(dev, crate::iotlb::IOTLB_MISS, iova, perm)
    {
        state.unsent(iova, perm);
    }
}

/// After a denied access (the memory lock released): tells the frontend, as the spec says.
pub fn report_access_fail(dev: Dev, iova: u64, perm: u8) {
    let _ = crate::backend_channel::iotlb_msg(dev, crate::iotlb::IOTLB_ACCESS_FAIL, iova, perm);
}

/// After an update (the memory lock released): wakes every queue that missed. The kick
/// eventfd runs the backend's handler through its own event loop; a queue without one has
/// its handler run here, as an in-band kick would.
pub fn wake_waiting(dev: Dev) {
    let Some(ext) = dev.ext_if_any() else { return };
    let waiting = ext.iommu.take_waiting();
    if waiting == 0 {
        return;
    }
    for vq in dev.queues() {
        let bit = vq.index().min(ALL_QUEUES_BIT);
        if waiting & (1 << bit) == 0 || !vq.started() {
            continue;
        }
        let kick = vq.kick_fd();
        if kick >= 0 {
            // A kick fd that is not an eventfd could be full: never block the dispatch thread
            // on it (a full one has a kick pending anyway).
            if crate::fd::writable_now(kick) {
                let _ = crate::fd::eventfd_write(kick, dev.flags().guard_sigpipe());
            }
        } else {
            vq.run_handler();
        }
    }
}
