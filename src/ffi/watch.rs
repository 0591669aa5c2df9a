//! The watch callbacks the library registers with the caller's event loop (`set_watch`).

use super::with_dev;
use crate::abi::VuDev;
use crate::device::Dev;

/// The watch callback for kick eventfds: drains the kick and runs the queue handler.
///
/// # Safety
/// Called by the C event loop with the device that registered the watch and, as `data`,
/// the queue index it was registered with.
pub unsafe extern "C" fn kick_watch_cb(
    raw: *mut VuDev,
    _condition: libc::c_int,
    data: *mut libc::c_void,
) {
    // SAFETY: the event loop passes the device the watch was registered for.
    with_dev(unsafe { Dev::from_raw(raw) }, (), |dev| {
        let Some(vq) = dev.queue(data as usize) else { return };
        let kick_fd = vq.kick_fd();
        let mut value: u64 = 0;
        // SAFETY: reading 8 bytes from the kick eventfd into a local.
        let rc = unsafe { libc::read(kick_fd, (&mut value as *mut u64).cast(), 8) };
        if rc != 8 {
            let err = std::io::Error::last_os_error();
            if matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR)) {
                return; // a spurious wakeup: nothing to do
            }
            dev.panic(&format!("kick eventfd_read(): {err}"));
            dev.remove_watch(kick_fd);
            return;
        }
        vq.run_handler();
    })
}
