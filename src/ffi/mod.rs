//! The C boundary: every `vu_*` symbol, each a thin shell that checks its pointers, catches
//! any Rust panic (none may unwind into C) and calls the safe core.
//!
//! Safety contract of every function here: the C API's. Pointers are NULL or what the C
//! caller got from this library (`dev` initialised by `vu_init`, `vq` one of its queues,
//! elements from `vu_queue_pop`) or owns (output pointers, buffers of the documented size).
#![allow(clippy::missing_safety_doc)]

mod device;
mod extensions;
mod lane;
mod queue;
mod watch;

use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::abi::VuDev;
use crate::device::Dev;

pub use device::*;
pub use extensions::*;
pub use queue::*;
pub(crate) use watch::kick_watch_cb;

/// Runs `f` on `dev` (what `Dev::from_raw` made of the C pointer); `fallback` if it is not a
/// device `vu_init` set up. A panic in `f` (a bug in this library) never unwinds into C: the
/// device is marked broken and its `panic` callback told, as for any other fatal error (see
/// [`caught_panic`]), and `fallback` is returned.
#[inline(always)]
pub(crate) fn with_dev<R>(dev: Option<Dev<'_>>, fallback: R, f: impl FnOnce(Dev<'_>) -> R) -> R {
    let Some(d) = dev else { return fallback };
    match catch_unwind(AssertUnwindSafe(|| f(d))) {
        Ok(r) => r,
        Err(payload) => {
            caught_panic(Some(d), payload.as_ref());
            fallback
        }
    }
}

/// Runs `f` where no device is at hand; a panic in it aborts the process (see
/// [`caught_panic`]).
pub(crate) fn guard<R>(f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            caught_panic(None, payload.as_ref());
            unreachable!("caught_panic without a device aborts")
        }
    }
}

/// The panic policy of both crates: a panic caught at the C boundary is a bug in the library.
/// With a device it is that device's fatal error: `dev->broken` is set and the `panic`
/// callback gets "internal error: <what>", as for a frontend's protocol violation, so the C
/// program learns of it and the device stops. Without one (or if reporting panics too) there
/// is no one to tell: the process aborts, as a failed assertion in C does.
#[cold]
pub(crate) fn caught_panic(dev: Option<Dev<'_>>, payload: &(dyn std::any::Any + Send)) {
    let what = payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("panic");
    let msg = format!("libvhost-user: internal error: {what}");
    if let Some(d) = dev {
        if catch_unwind(AssertUnwindSafe(|| d.panic(&msg))).is_ok() {
            return;
        }
    }
    eprintln!("{msg}; aborting");
    std::process::abort();
}

/// [`caught_panic`] for the glib crate, which has the device as a C pointer.
///
/// # Safety
/// `dev` is NULL or points to a `VuDev` valid for reads and writes.
pub unsafe fn report_caught_panic(dev: *mut VuDev, payload: &(dyn std::any::Any + Send)) {
    // SAFETY: this function's contract.
    caught_panic(unsafe { Dev::from_raw(dev) }, payload)
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;

    use libc::{c_char, c_int, c_void};

    use super::*;
    use crate::abi::{vu_watch_cb, VuDevIface};

    static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    unsafe extern "C" fn on_panic(_dev: *mut VuDev, msg: *const c_char) {
        // SAFETY: the library passes a NUL-terminated message.
        let msg = unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned();
        PANICS.lock().unwrap().push(msg);
    }
    unsafe extern "C" fn set_watch(
        _: *mut VuDev,
        _: c_int,
        _: c_int,
        _: vu_watch_cb,
        _: *mut c_void,
    ) {
    }
    unsafe extern "C" fn remove_watch(_: *mut VuDev, _: c_int) {}

    /// A panic inside the library during `vu_dispatch` (an extern "C" function: unwinding out
    /// of it would abort this test process) marks the device broken, tells the panic callback
    /// and makes the call fail; the device can still be torn down.
    #[test]
    fn a_caught_panic_breaks_the_device_and_calls_panic() {
        let (_frontend, backend) = UnixStream::pair().unwrap();
        let iface = VuDevIface::default();
        // SAFETY: all-zero is a valid VuDev (vu_init zeroes it anyway).
        let mut dev: VuDev = unsafe { std::mem::zeroed() };
        // SAFETY: a writable VuDev, valid callbacks and iface that outlive the device.
        let ok = unsafe {
            crate::ffi::vu_init(
                &mut dev,
                1,
                backend.into_raw_fd(),
                Some(on_panic),
                None,
                Some(set_watch),
                Some(remove_watch),
                &iface,
            )
        };
        assert!(ok);
        assert!(!dev.broken);
        crate::fault_injection::arm();
        // SAFETY: the device vu_init set up.
        let dispatched = unsafe { crate::ffi::vu_dispatch(&mut dev) };
        assert!(!dispatched, "a dispatch that panicked reports failure");
        assert!(dev.broken, "the device is marked broken");
        let panics = PANICS.lock().unwrap().clone();
        assert_eq!(panics.len(), 1, "the panic callback is called once: {panics:?}");
        assert!(panics[0].contains("internal error: injected fault"), "{panics:?}");
        // SAFETY: as above.
        unsafe { crate::ffi::vu_deinit(&mut dev) };
    }
}
