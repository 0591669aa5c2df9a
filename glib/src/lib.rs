//! libvhost-user-glib in Rust: runs a libvhost-user device from a glib main loop.
//!
//! `vug_init()` initialises the embedded `VuDev` with watch callbacks that turn every fd the
//! library wants watched into a `GSource` on the thread-default main context, and watches the
//! vhost-user socket itself, dispatching one message each time it becomes readable.
//!
//! This library also carries the whole core (`vu_*`), so C programs link it alone.
//!
//! Every function here is called from C: none may unwind. Each body runs under
//! `catch_unwind`; a panic (a bug in this crate, never an expected outcome) follows the core's
//! policy: where a device is at hand (watch callbacks, socket dispatch) it is marked broken and
//! its `panic` callback called; elsewhere (source setup, init, deinit) the process aborts after
//! printing where it happened, as an assertion failure in C would.

#![allow(clippy::missing_safety_doc)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

mod sys;

use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::ptr;

use libc::{c_int, c_uint, c_void};
use vhost_user::abi::{vu_panic_cb, vu_watch_cb, VuDev, VuDevIface, VuWatchCondtion};

use sys::*;
pub use sys::{gpointer, GHashTable, GIOCondition, GSource};

// The core's entry points, called directly (the core is linked into this library).
use vhost_user::ffi::{report_caught_panic, vu_dispatch, vu_init};

/// A libvhost-user device driven by a glib main loop. Embed it by value; `parent` is the
/// `VuDev` to pass to the `vu_*` functions.
#[repr(C)]
pub struct VugDev {
    pub parent: VuDev,
    /// fd -> GSource
    pub fdmap: *mut GHashTable,
    pub src: *mut GSource,
}

/// The GSource of one watched fd: glib's header, then our data.
#[repr(C)]
struct VugSrc {
    parent: GSource,
    dev: *mut VuDev,
    gfd: GPollFD,
}

const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<VugDev>() == 208 && align_of::<VugDev>() == 8);
    assert!(offset_of!(VugDev, parent) == 0);
    assert!(offset_of!(VugDev, fdmap) == 192);
    assert!(offset_of!(VugDev, src) == 200);
    assert!(size_of::<GSource>() == 96);
    assert!(offset_of!(VugSrc, gfd) == 104);
    // Watch conditions go to glib unchanged.
    assert!(VuWatchCondtion::VU_WATCH_IN as c_uint == G_IO_IN);
    assert!(VuWatchCondtion::VU_WATCH_OUT as c_uint == G_IO_OUT);
    assert!(VuWatchCondtion::VU_WATCH_PRI as c_uint == G_IO_PRI);
    assert!(VuWatchCondtion::VU_WATCH_ERR as c_uint == G_IO_ERR);
    assert!(VuWatchCondtion::VU_WATCH_HUP as c_uint == G_IO_HUP);
};

/// `g_assert()`: on failure, glib prints the location and expression and aborts.
macro_rules! g_assert {
    ($func:literal, $e:expr) => {
        if !$e {
            assertion_failed(
                concat!(file!(), "\0"),
                line!(),
                concat!($func, "\0"),
                concat!(stringify!($e), "\0"),
            );
        }
    };
}

/// Reports a failed `g_assert` through glib, which aborts. Every string ends in NUL.
fn assertion_failed(file: &'static str, line: u32, func: &'static str, expr: &'static str) {
    debug_assert!(file.ends_with('\0') && func.ends_with('\0') && expr.ends_with('\0'));
    // SAFETY: glib's assertion reporter, with NUL-terminated static strings.
    unsafe {
        g_assertion_message_expr(
            ptr::null(),
            file.as_ptr().cast(),
            line as c_int,
            func.as_ptr().cast(),
            expr.as_ptr().cast(),
        )
    };
}

/// Runs `f` where no device is usable yet (or any more); a panic in it (a bug in this crate)
/// aborts the process after printing where it happened, as an assertion failure in C would.
fn no_unwind<R>(func: &str, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            eprintln!("libvhost-user-glib: internal error in {func}, aborting");
            std::process::abort()
        }
    }
}

/// Runs `f` on behalf of device `dev` (one `vug_init` set up); a panic in it follows the
/// core's policy (`vhost_user::ffi::caught_panic`): the device is marked broken and its
/// `panic` callback told, and `fallback` is returned; without a device, the process aborts.
/// Every caller (all in this file) passes NULL or the `VuDev` of a `VugDev` that `vug_init`
/// set up: the C callers of the watch callbacks get no other.
fn no_unwind_dev<R>(dev: *mut VuDev, fallback: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload) => {
            // SAFETY: `dev` is NULL or an initialised device (see above).
            unsafe { report_caught_panic(dev, payload.as_ref()) };
            fallback
        }
    }
}

static mut VUG_SRC_FUNCS: GSourceFuncs = GSourceFuncs {
    prepare: Some(vug_src_prepare),
    check: Some(vug_src_check),
    dispatch: Some(vug_src_dispatch),
    finalize: None,
    closure_callback: None,
    closure_marshal: None,
};

unsafe extern "C" fn vug_src_prepare(_gsrc: *mut GSource, timeout: *mut c_int) -> gboolean {
    // SAFETY: glib calls this with its GSource and a timeout output pointer (checked).
    no_unwind("vug_src_prepare", || unsafe {
        g_assert!("vug_src_prepare", !timeout.is_null());
        *timeout = -1;
        FALSE
    })
}

unsafe extern "C" fn vug_src_check(gsrc: *mut GSource) -> gboolean {
    // SAFETY: glib calls this with a GSource made by source_new, so a VugSrc.
    no_unwind("vug_src_check", || unsafe {
        g_assert!("vug_src_check", !gsrc.is_null());
        let src = gsrc.cast::<VugSrc>();
        let gfd = ptr::addr_of!((*src).gfd).read();
        (gfd.revents & gfd.events) as gboolean
    })
}

unsafe extern "C" fn vug_src_dispatch(
    gsrc: *mut GSource,
    cb: GSourceFunc,
    data: gpointer,
) -> gboolean {
    g_assert!("vug_src_dispatch", !gsrc.is_null());
    // SAFETY: glib calls this with a GSource made by source_new, so a VugSrc.
    let dev = unsafe { ptr::addr_of!((*gsrc.cast::<VugSrc>()).dev).read() };
    // SAFETY: glib calls this with a GSource made by source_new (a VugSrc, its device set up
    // by vug_init) and the callback source_new stored, a vu_watch_cb of the same
    // representation.
    no_unwind_dev(dev, G_SOURCE_CONTINUE, || unsafe {
        let src = gsrc.cast::<VugSrc>();
        // The callback was stored by vug_source_new() as a vu_watch_cb.
        let cb: vu_watch_cb = std::mem::transmute::<GSourceFunc, vu_watch_cb>(cb);
        if let Some(cb) = cb {
            let revents = ptr::addr_of!((*src).gfd.revents).read();
            cb((*src).dev, c_int::from(revents), data);
        }
        G_SOURCE_CONTINUE
    })
}

/// Creates a `GSource` that calls `vu_cb(&dev->parent, revents, data)` whenever `fd` meets
/// `cond`, and attaches it to the thread-default main context. Release it with
/// `vug_source_destroy()`.
#[no_mangle]
pub unsafe extern "C" fn vug_source_new(
    gdev: *mut VugDev,
    fd: c_int,
    cond: GIOCondition,
    vu_cb: vu_watch_cb,
    data: gpointer,
) -> *mut GSource {
    // SAFETY: the caller's VugDev (this function's contract).
    no_unwind("vug_source_new", || unsafe { source_new(gdev, fd, cond, vu_cb, data) })
}

unsafe fn source_new(
    gdev: *mut VugDev,
    fd: c_int,
    cond: GIOCondition,
    vu_cb: vu_watch_cb,
    data: gpointer,
) -> *mut GSource {
    g_assert!("vug_source_new", !gdev.is_null());
    g_assert!("vug_source_new", fd >= 0);
    g_assert!("vug_source_new", vu_cb.is_some());

    // SAFETY: glib calls with a GSource of VugSrc size, whose fields we initialise before it
    // is attached; the callback types have the same representation (an optional C fn).
    unsafe {
        let gsrc =
            g_source_new(ptr::addr_of_mut!(VUG_SRC_FUNCS), std::mem::size_of::<VugSrc>() as c_uint);
        let cb = std::mem::transmute::<vu_watch_cb, GSourceFunc>(vu_cb);
        g_source_set_callback(gsrc, cb, data, None);
        let src = gsrc.cast::<VugSrc>();
        ptr::addr_of_mut!((*src).dev).write(ptr::addr_of_mut!((*gdev).parent));
        // GIOCondition values all fit the 16-bit poll events.
        ptr::addr_of_mut!((*src).gfd).write(GPollFD { fd, events: cond as u16, revents: 0 });
        g_source_add_poll(gsrc, ptr::addr_of_mut!((*src).gfd));
        let id = g_source_attach(gsrc, g_main_context_get_thread_default());
        g_assert!("vug_source_new", id != 0);
        gsrc
    }
}

/// Detaches `src` from its main context and drops the reference `vug_source_new()` returned.
/// Does nothing when `src` is NULL.
#[no_mangle]
pub unsafe extern "C" fn vug_source_destroy(src: *mut GSource) {
    // SAFETY: the caller's source, from vug_source_new (or NULL).
    no_unwind("vug_source_destroy", || unsafe { source_destroy(src) })
}

unsafe fn source_destroy(src: *mut GSource) {
    if src.is_null() {
        return;
    }
    // SAFETY: a live source from source_new; we drop the reference it returned.
    unsafe {
        g_source_destroy(src);
        g_source_unref(src);
    }
}

/// The fd map's value destructor.
unsafe extern "C" fn fdmap_value_destroy(value: gpointer) {
    // SAFETY: the fd map's values are sources from source_new.
    no_unwind("vug_source_destroy", || unsafe { source_destroy(value.cast()) })
}

fn fd_key(fd: c_int) -> gpointer {
    // GINT_TO_POINTER
    fd as isize as gpointer
}

/// The `VugDev` around a `VuDev` that vug_init() set up (`parent` is its first member).
fn vug_dev_of(dev: *mut VuDev) -> *mut VugDev {
    dev.cast()
}

unsafe extern "C" fn set_watch(
    vu_dev: *mut VuDev,
    fd: c_int,
    vu_evt: c_int,
    cb: vu_watch_cb,
    pvt: *mut c_void,
) {
    // SAFETY: the core calls this with the VuDev embedded in a VugDev by vug_init.
    no_unwind_dev(vu_dev, (), || unsafe {
        g_assert!("set_watch", !vu_dev.is_null());
        g_assert!("set_watch", fd >= 0);
        g_assert!("set_watch", cb.is_some());
        let dev = vug_dev_of(vu_dev);
        g_assert!("set_watch", !(*dev).fdmap.is_null());
        let src = source_new(dev, fd, vu_evt as GIOCondition, cb, pvt);
        // Replacing destroys the fd's previous source, if any.
        g_hash_table_replace((*dev).fdmap, fd_key(fd), src.cast());
    })
}

unsafe extern "C" fn remove_watch(vu_dev: *mut VuDev, fd: c_int) {
    // SAFETY: as in set_watch.
    no_unwind_dev(vu_dev, (), || unsafe {
        g_assert!("remove_watch", !vu_dev.is_null());
        g_assert!("remove_watch", fd >= 0);
        let dev = vug_dev_of(vu_dev);
        let fdmap = (*dev).fdmap;
        // After vug_deinit() (which consumers may follow with vu_deinit()) there is nothing
        // left to remove.
        if !fdmap.is_null() {
            g_hash_table_remove(fdmap, fd_key(fd));
        }
    })
}

const DISPATCH_ERROR: &CStr = c"Error processing vhost message";

unsafe extern "C" fn vug_watch(dev: *mut VuDev, _condition: c_int, _data: *mut c_void) {
    // SAFETY: the socket's source calls this with the device vug_init registered it for.
    no_unwind_dev(dev, (), || unsafe {
        if !vu_dispatch(dev) {
            if let Some(panic) = (*dev).panic {
                panic(dev, DISPATCH_ERROR.as_ptr());
            }
        }
    })
}

/// Initialises `dev->parent` with `vu_init()` (built-in message reader, glib watches) and
/// starts dispatching vhost-user messages from `socket` on the thread-default main context.
/// `panic` is called with "Error processing vhost message" when a message fails.
/// Returns false if `vu_init()` fails.
#[no_mangle]
pub unsafe extern "C" fn vug_init(
    dev: *mut VugDev,
    max_queues: u16,
    socket: c_int,
    panic: vu_panic_cb,
    iface: *const VuDevIface,
) -> bool {
    // SAFETY: the caller's VugDev and iface (this function's contract, NULL checked).
    no_unwind("vug_init", || unsafe {
        g_assert!("vug_init", !dev.is_null());
        g_assert!("vug_init", !iface.is_null());

        let parent = ptr::addr_of_mut!((*dev).parent);
        if !vu_init(
            parent,
            max_queues,
            socket,
            panic,
            None,
            Some(set_watch),
            Some(remove_watch),
            iface,
        ) {
            return false;
        }
        let fdmap = g_hash_table_new_full(None, None, None, Some(fdmap_value_destroy));
        ptr::addr_of_mut!((*dev).fdmap).write(fdmap);
        let src = source_new(dev, socket, G_IO_IN, Some(vug_watch), ptr::null_mut());
        ptr::addr_of_mut!((*dev).src).write(src);
        true
    })
}

/// Stops watching: destroys every source created for the device and the socket's source.
/// Does not call `vu_deinit()`.
#[no_mangle]
pub unsafe extern "C" fn vug_deinit(dev: *mut VugDev) {
    // SAFETY: the caller's VugDev, set up by vug_init.
    no_unwind("vug_deinit", || unsafe {
        g_assert!("vug_deinit", !dev.is_null());
        let fdmap = ptr::addr_of_mut!((*dev).fdmap).replace(ptr::null_mut());
        g_hash_table_unref(fdmap);
        let src = ptr::addr_of_mut!((*dev).src).replace(ptr::null_mut());
        source_destroy(src);
    })
}

#[cfg(test)]
mod tests {
    use std::ffi::CStr;
    use std::os::fd::IntoRawFd;
    use std::os::unix::net::UnixStream;
    use std::sync::Mutex;

    use libc::c_char;
    use vhost_user::ffi::vu_deinit;

    use super::*;

    static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());

    unsafe extern "C" fn on_panic(_dev: *mut VuDev, msg: *const c_char) {
        // SAFETY: the library passes a NUL-terminated message.
        let msg = unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned();
        PANICS.lock().unwrap().push(msg);
    }
    unsafe extern "C" fn no_watch(_: *mut VuDev, _: c_int, _: c_int, _: vu_watch_cb, _: gpointer) {}
    unsafe extern "C" fn no_unwatch(_: *mut VuDev, _: c_int) {}

    /// The glib callbacks that have a device follow the core's panic policy: a panic marks
    /// the device broken and calls its panic callback, and the callback returns normally.
    #[test]
    fn a_panic_in_a_device_callback_breaks_the_device() {
        let (_frontend, backend) = UnixStream::pair().unwrap();
        let iface = VuDevIface::default();
        // SAFETY: all-zero is a valid VuDev.
        let mut dev: VuDev = unsafe { std::mem::zeroed() };
        // SAFETY: a writable VuDev and callbacks/iface that outlive it.
        let ok = unsafe {
            vu_init(
                &mut dev,
                1,
                backend.into_raw_fd(),
                Some(on_panic),
                None,
                Some(no_watch),
                Some(no_unwatch),
                &iface,
            )
        };
        assert!(ok);
        let r = no_unwind_dev(&mut dev, 7, || -> i32 { panic!("injected fault") });
        assert_eq!(r, 7, "the fallback is returned");
        assert!(dev.broken);
        let panics = PANICS.lock().unwrap().clone();
        assert_eq!(panics.len(), 1, "{panics:?}");
        assert!(panics[0].contains("internal error: injected fault"), "{panics:?}");
        // SAFETY: the device vu_init set up.
        unsafe { vu_deinit(&mut dev) };
    }
}
