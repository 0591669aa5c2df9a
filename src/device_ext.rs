//! Library state that has no place in the C-visible `VuDev` (whose layout is fixed).
//!
//! Every device has [`DeviceFlags`] (the virtio device status of VHOST_USER_PROTOCOL_F_STATUS,
//! the SIGPIPE guard, and where its [`DeviceExt`] is): four bytes in the memory gate's room
//! beside its word, so that the device state (`device::DeviceState`) stays within the 16 bytes
//! beyond the 509-slot region array that the original's allocation of that array rounds up to
//! anyway. Everything else only some devices need (the device-state transfer, the IOMMU and its
//! IOTLB, packed queues, guest mappings retired while elements point into them): `DeviceExt`,
//! allocated the first time the device needs it and freed with the device. A split-ring device
//! served without an IOMMU, migration or a memory change under in-flight requests never
//! allocates one.
//!
//! The flags hold the index of one slot of a process-wide table ([`SLOTS`] of them, one per
//! initialised device, taken at `vu_init`); the slot holds the device's `DeviceExt` pointer,
//! or NULL before it needs one.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU8, Ordering};

use parking_lot::Mutex;

use crate::iotlb::Iotlb;
use crate::queue::ids::PackedQueues;
use crate::retired::Retired;
use crate::state_transfer::StateTransfer;

/// The state every device has (see the module docs).
#[derive(Default)]
pub struct DeviceFlags {
    /// The device status byte as the frontend last set it (SET_STATUS), 0 after a reset.
    status: AtomicU8,
    /// Whether the frontend ever handed this device a kick, call, err or log fd that is a pipe
    /// or a socket: from then on signal writes block SIGPIPE around the write (sticky, so a
    /// queue thread never races the decision; eventfd-only devices never pay for it).
    sigpipe_prone_fd: AtomicBool,
    /// The device's slot (set before the device is shared, never changed).
    slot: u16,
}

const _: () = assert!(std::mem::size_of::<DeviceFlags>() == 4);

impl DeviceFlags {
    pub fn new(slot: u16) -> DeviceFlags {
        DeviceFlags { slot, ..Default::default() }
    }

    /// The device's slot (for `release_slot`).
    pub fn slot(&self) -> u16 {
        self.slot
    }

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

    /// The device's `DeviceExt`, if it has needed one yet.
    #[inline(always)]
    pub fn ext_if_any(&self) -> Option<&DeviceExt> {
        // SAFETY: a non-NULL slot pointer came from `Box::into_raw` in `ext` and stays valid
        // until `release_slot`, which runs when the device state is dropped (`vu_deinit`, with
        // no queue or control call in progress: the C API's contract); the flags are part of
        // that state, so `&self` does not outlive it.
        unsafe { EXTS[usize::from(self.slot)].load(Ordering::Acquire).as_ref() }
    }

    /// The device's `DeviceExt`, allocated now if it has none (by whichever thread gets there
    /// first).
    pub fn ext(&self) -> &DeviceExt {
        if let Some(ext) = self.ext_if_any() {
            return ext;
        }
        let new = Box::into_raw(Box::default());
        let slot = &EXTS[usize::from(self.slot)];
        let ext = match slot.compare_exchange(
            std::ptr::null_mut(),
            new,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => new,
            Err(theirs) => {
                // SAFETY: `new` was leaked above and never shared.
                drop(unsafe { Box::from_raw(new) });
                theirs
            }
        };
        // SAFETY: as in `ext_if_any`.
        unsafe { &*ext }
    }
}

/// What only some devices need (see the module docs).
#[derive(Default)]
pub struct DeviceExt {
    /// The backend's save/load handlers and the transfer in progress, if any.
    pub state: StateTransfer,
    /// VIRTIO_F_IOMMU_PLATFORM: offered or not, queues waiting for an IOTLB update.
    pub iommu: crate::iommu::IommuState,
    /// Removed guest mappings that popped elements may still point into.
    pub retired: Retired,
    /// The device IOTLB (`VIRTIO_F_IOMMU_PLATFORM`): read under the memory read lock, changed
    /// under the write lock (`device::MemWrite::iotlb_mut`).
    pub iotlb: UnsafeCell<Iotlb>,
    /// Private state of packed queues (`queue::ids`), once a frontend acks packed rings.
    pub packed: UnsafeCell<PackedQueues>,
}

// SAFETY: `iotlb` and `packed` are changed only under the memory write lock and read under
// the read lock (or by a queue's own thread, as `queue::ids` explains); the rest is Sync.
unsafe impl Sync for DeviceExt {}

/// How many devices a process can have initialised at once.
pub const SLOTS: usize = 1 << 16;

/// Each slot's `DeviceExt`, NULL until its device needs one.
static EXTS: [AtomicPtr<DeviceExt>; SLOTS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS];

/// Which slots belong to an initialised device (a bit each).
static TAKEN: Mutex<[u64; SLOTS / 64]> = parking_lot::const_mutex([0; SLOTS / 64]);

/// Takes a free slot for a device being initialised; `None` when all are taken.
pub fn take_slot() -> Option<u16> {
    let mut taken = TAKEN.lock();
    let (word, bits) = taken.iter_mut().enumerate().find(|(_, bits)| **bits != u64::MAX)?;
    let bit = bits.trailing_ones() as usize;
    *bits |= 1 << bit;
    u16::try_from(word * 64 + bit).ok()
}

/// Frees `slot` with the `DeviceExt` it holds (its device is gone).
pub fn release_slot(slot: u16) {
    let ext = EXTS[usize::from(slot)].swap(std::ptr::null_mut(), Ordering::AcqRel);
    if !ext.is_null() {
        // SAFETY: leaked by `DeviceFlags::ext`; its device, the only way to it, is gone.
        drop(unsafe { Box::from_raw(ext) });
    }
    let i = usize::from(slot);
    TAKEN.lock()[i / 64] &= !(1 << (i % 64));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_once_and_their_state_goes_with_them() {
        let a = take_slot().expect("a free slot");
        let b = take_slot().expect("another free slot");
        assert_ne!(a, b);
        let (fa, fb) = (DeviceFlags::new(a), DeviceFlags::new(b));
        assert!(fa.ext_if_any().is_none(), "nothing allocated until needed");
        let ext = fa.ext() as *const DeviceExt;
        assert_eq!(fa.ext() as *const DeviceExt, ext, "one DeviceExt per device");
        assert!(fb.ext_if_any().is_none(), "the other device's slot is its own");
        release_slot(a);
        assert!(fa.ext_if_any().is_none(), "released with its slot");
        release_slot(b);
    }
}
