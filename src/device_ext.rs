//! Library state that has no place in the C-visible `VuDev` (whose layout is fixed): the
//! virtio device status of VHOST_USER_PROTOCOL_F_STATUS and the device-state transfer of
//! VHOST_USER_PROTOCOL_F_DEVICE_STATE, the IOMMU's flags. It lives in the private `DeviceState` allocation.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use crate::state_transfer::StateTransfer;

#[derive(Default)]
pub struct DeviceExt {
    /// The device status byte as the frontend last set it (SET_STATUS), 0 after a reset.
    status: AtomicU8,
    /// The backend's save/load handlers and the transfer in progress, if any.
    pub state: StateTransfer,
    /// VIRTIO_F_IOMMU_PLATFORM: offered or not, queues waiting for an IOTLB update.
    pub iommu: crate::iommu::IommuState,
    /// Whether the frontend ever handed this device a kick, call, err or log fd that is a pipe
    /// or a socket: from then on signal writes block SIGPIPE around the write (sticky, so a
    /// queue thread never races the decision; eventfd-only devices never pay for it).
    sigpipe_prone_fd: AtomicBool,
}

impl DeviceExt {
    pub fn status(&self) -> u8 {
        self.status.load(Ordering::Acquire)
    }

    pub fn set_status(&self, status: u8) {
        self.status.store(status, Ordering::Release);
    }

    /// Looks at a notification fd the frontend handed over (before queue threads can see it).
    pub fn note_notify_fd(&self, fd: libc::c_int) {
        if crate::fd::may_raise_sigpipe(fd) {
            self.sigpipe_prone_fd.store(true, Ordering::Release);
        }
    }

    /// Whether signal writes must guard against SIGPIPE (see `note_notify_fd`).
    #[inline]
    pub fn guard_sigpipe(&self) -> bool {
        self.sigpipe_prone_fd.load(Ordering::Relaxed)
    }
}
