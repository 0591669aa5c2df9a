//! C entry points beyond QEMU 10.0's libvhost-user (additive): the device status and the
//! device-state handlers for migration.

use libc::c_void;

use super::with_dev;
use crate::abi::*;
use crate::device::Dev;

/// Returns the virtio device status byte the frontend last set with VHOST_USER_SET_STATUS
/// (VHOST_USER_PROTOCOL_F_STATUS, which the library offers): a combination of the
/// ACKNOWLEDGE (1), DRIVER (2), DRIVER_OK (4), FEATURES_OK (8) and FAILED (128) bits; 0 after
/// vu_init(), a SET_STATUS(0) (a stop) and VHOST_USER_RESET_DEVICE. FEATURES_OK is not kept
/// when the negotiated features are not acceptable (features the device did not offer, or no
/// VIRTIO_F_VERSION_1); a SET_STATUS with other bits is refused and changes nothing.
/// Returns 0 for an uninitialised @dev.
#[no_mangle]
pub unsafe extern "C" fn vu_get_status(dev: *mut VuDev) -> u8 {
    // SAFETY: the caller passes its initialised device (the C API's contract).
    with_dev(unsafe { Dev::from_raw(dev) }, 0, |d| d.flags().status())
}

/// Registers the device's state handlers for migration; with them the library offers
/// VHOST_USER_PROTOCOL_F_DEVICE_STATE and answers VHOST_USER_SET_DEVICE_STATE_FD and
/// VHOST_USER_CHECK_DEVICE_STATE. Call it after vu_init() (which, like vu_deinit(), forgets
/// the handlers) and before the frontend asks for the protocol features.
///
/// The state is an opaque byte stream of the device's own format. Both handlers run on the
/// thread that calls vu_dispatch(), while the device is stopped; the library moves the bytes
/// on a thread of its own, so states of any size never block the dispatch thread.
/// - @save is called at SET_DEVICE_STATE_FD (direction save): it returns the whole state in a
///   malloc()'d buffer, which the library writes to the frontend and then frees.
/// - @load is called at CHECK_DEVICE_STATE after a load: with every byte the frontend sent
///   (at most @max_size; a longer state fails the transfer without being kept); its result is
///   what CHECK_DEVICE_STATE reports.
///
/// @dev: the device; @save, @load: the handlers, both NULL to unregister; @max_size: the
/// largest state a load accepts, 0 for 16 MiB; @opaque: passed to both handlers.
///
/// Returns: true on success, false for an uninitialised @dev or exactly one NULL handler.
#[no_mangle]
pub unsafe extern "C" fn vu_set_device_state_handlers(
    dev: *mut VuDev,
    save: vu_save_state_cb,
    load: vu_load_state_cb,
    max_size: usize,
    opaque: *mut c_void,
) -> bool {
    // SAFETY: the caller passes its initialised device (the C API's contract).
    with_dev(unsafe { Dev::from_raw(dev) }, false, |d| {
        d.ext().state.register(save, load, max_size, opaque)
    })
}
