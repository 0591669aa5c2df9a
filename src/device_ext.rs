//! Library state that has no place in the C-visible `VuDev` (whose layout is fixed): the
//! virtio device status of VHOST_USER_PROTOCOL_F_STATUS and the device-state transfer of
//! VHOST_USER_PROTOCOL_F_DEVICE_STATE, the IOMMU's flags. It lives in the private `DeviceState` allocation.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::state_transfer::StateTransfer;

#[derive(Default)]
pub struct DeviceExt {
    /// The device status byte as the frontend last set it (SET_STATUS), 0 after a reset.
    status: AtomicU8,
    /// The backend's save/load handlers and the transfer in progress, if any.
    pub state: StateTransfer,
    /// VIRTIO_F_IOMMU_PLATFORM: offered or not, queues waiting for an IOTLB update.
    pub iommu: crate::iommu::IommuState,
}

impl DeviceExt {
    pub fn status(&self) -> u8 {
        self.status.load(Ordering::Acquire)
    }

    pub fn set_status(&self, status: u8) {
        self.status.store(status, Ordering::Release);
    }
}
