//! Device-level C entry points: init, deinit, dispatch, translation, queue lookup, backend
//! channel helpers.

use libc::{c_char, c_int, c_uchar, c_uint, c_void};

use super::{guard, with_dev};
use crate::abi::*;
use crate::backend_channel;
use crate::control;
use crate::device::{Dev, DeviceState};
use crate::fd::close_fd;
use crate::message::read_message;

/// The built-in message reader used when `vu_init` gets a NULL `read_msg`.
unsafe extern "C" fn default_read_msg(
    dev: *mut VuDev,
    sock: c_int,
    vmsg: *mut VhostUserMsg,
) -> bool {
    guard(|| {
        if vmsg.is_null() {
            return false;
        }
        // SAFETY: called by the library (or C code) with a valid message buffer.
        let vmsg = unsafe { &mut *vmsg };
        match read_message(sock, vmsg) {
            Ok(()) => true,
            Err(e) => {
                // SAFETY: dev is the device this reader was installed on.
                if let Some(d) = unsafe { Dev::from_raw(dev) } {
                    d.panic(&e.to_string());
                }
                false
            }
        }
    })
}

/// Initializes a VuDev vhost-user context.
///
/// @dev: a VuDev context; @max_queues: maximum number of virtqueues; @socket: the socket
/// connected to the vhost-user frontend; @panic: a panic callback; @read_msg: a custom
/// message reader, or NULL for the built-in one; @set_watch / @remove_watch: callbacks to
/// (un)watch fds in the caller's event loop; @iface: the device callbacks.
///
/// Returns: true on success, false on failure (including invalid arguments).
///
/// Diagnostics: the first vu_init() of a process reads the environment variable
/// LIBVHOST_USER_LOG (error, warn, info, debug or trace); when it is set, the library writes
/// its log to stderr from then on, one line per event: at debug, every frontend request (name,
/// payload size, fd count, outcome) and every backend-channel message; at trace, also queue
/// events (pop, fill, flush, push, notify). Unset: silent.
#[no_mangle]
pub unsafe extern "C" fn vu_init(
    dev: *mut VuDev,
    max_queues: u16,
    socket: c_int,
    panic: vu_panic_cb,
    read_msg: vu_read_msg_cb,
    set_watch: vu_set_watch_cb,
    remove_watch: vu_remove_watch_cb,
    iface: *const VuDevIface,
) -> bool {
    guard(|| {
        crate::diagnostics::init_from_env();
        if dev.is_null()
            || max_queues == 0
            || socket < 0
            || panic.is_none()
            || set_watch.is_none()
            || remove_watch.is_none()
            || iface.is_null()
        {
            log::error!("vu_init: invalid arguments");
            return false;
        }
        // SAFETY: the caller passes a VuDev-sized, writable struct; all-zero is a valid VuDev.
        unsafe { std::ptr::write_bytes(dev, 0, 1) };
        // SAFETY: checked non-NULL; the caller passes a VuDev (zeroed just above).
        let d = unsafe { Dev::new_unchecked(dev) };
        d.set_sock(socket);
        d.set_panic_cb(panic);
        d.set_read_msg(if read_msg.is_some() { read_msg } else { Some(default_read_msg) });
        d.set_set_watch_cb(set_watch);
        d.set_remove_watch_cb(remove_watch);
        d.set_iface_ptr(iface);
        d.set_log_call_fd(-1);
        d.set_backend_fd(-1);
        d.set_postcopy_ufd(-1);
        d.set_inflight_info(VuDevInflightInfo { fd: -1, addr: std::ptr::null_mut(), size: 0 });
        d.set_max_queues(max_queues);
        // SAFETY: initialising the mutex in the zeroed struct.
        unsafe { libc::pthread_mutex_init(d.backend_mutex(), std::ptr::null()) };

        let Some(state) = DeviceState::new() else {
            log::error!("vu_init: {} devices are initialised already", crate::device_ext::SLOTS);
            return false;
        };
        // The queues before the private state, which marks the device set up (`Dev::from_raw`).
        let queues: Box<[VuVirtq]> = (0..max_queues).map(|_| new_queue()).collect();
        d.set_vq_ptr(Box::into_raw(queues) as *mut VuVirtq);
        if super::lane::general_only() {
            state.close_to_lane();
        }
        let state = Box::into_raw(state);
        // SAFETY: `state` was just leaked; its first field is the regions array (repr(C)).
        d.set_regions(unsafe { (*state).c_regions_ptr() });
        true
    })
}

fn new_queue() -> VuVirtq {
    VuVirtq {
        vring: VuRing {
            num: 0,
            desc: std::ptr::null_mut(),
            avail: std::ptr::null_mut(),
            used: std::ptr::null_mut(),
            log_guest_addr: 0,
            flags: 0,
        },
        inflight: std::ptr::null_mut(),
        resubmit_list: std::ptr::null_mut(),
        resubmit_num: 0,
        counter: 0,
        last_avail_idx: 0,
        shadow_avail_idx: 0,
        used_idx: 0,
        signalled_used: 0,
        signalled_used_valid: false,
        notification: true,
        inuse: 0,
        handler: None,
        call_fd: -1,
        kick_fd: -1,
        err_fd: -1,
        enable: 0,
        started: false,
        vra: vhost_vring_addr::default(),
    }
}

/// Cleans up the VuDev context: unmaps all memory, closes every fd it owns (the socket
/// included) and frees its queues. The struct may be passed to `vu_init` again.
#[no_mangle]
pub unsafe extern "C" fn vu_deinit(dev: *mut VuDev) {
    // SAFETY: the caller passes its initialised device (the C API's contract).
    with_dev(unsafe { Dev::from_raw(dev) }, (), |d| {
        // Stop watching kick fds first: remove_watch is the caller's code, which must not
        // run under our locks.
        for vq in d.queues() {
            vq.replace_kick(None);
        }
        {
            let mut mem = d.mem_mut();
            for vq in d.queues() {
                mem.forget_ring(vq);
                mem.replace_call(vq, None);
                mem.replace_err(vq, None);
                mem.with_queue(vq, |q, _| crate::inflight::free_resubmit_list(q));
            }
            drop(mem.table_mut().clear());
            mem.release_all_retired();
        }
        control::release_inflight(d);
        control::close_log(d);
        backend_channel::replace_channel(d, None);
        close_fd(d.postcopy_ufd());
        d.set_postcopy_ufd(-1);
        // SAFETY: no one holds the channel lock any more; the mutex was initialised by vu_init.
        unsafe { libc::pthread_mutex_destroy(d.backend_mutex()) };
        close_fd(d.sock());
        d.set_sock(-1);
        let vqs = d.vq_ptr();
        let n = usize::from(d.max_queues());
        let state = d.regions() as *mut DeviceState;
        // The private state first: no call finds the device set up any more (`Dev::from_raw`).
        d.set_regions(std::ptr::null_mut());
        d.set_vq_ptr(std::ptr::null_mut());
        d.set_nregions(0);
        // SAFETY: both were leaked by vu_init with these sizes and are no longer reachable.
        unsafe {
            drop(Box::from_raw(std::ptr::slice_from_raw_parts_mut(vqs, n)));
            drop(Box::from_raw(state));
        }
    })
}

/// Returns a const string naming a vhost-user request; do not free.
#[no_mangle]
pub extern "C" fn vu_request_to_string(req: c_uint) -> *const c_char {
    crate::request::request_name(req).as_ptr()
}

/// Processes one vhost-user message. Returns true on success, false on failure.
#[no_mangle]
pub unsafe extern "C" fn vu_dispatch(dev: *mut VuDev) -> bool {
    // SAFETY: the caller passes its initialised device (the C API's contract).
    with_dev(unsafe { Dev::from_raw(dev) }, false, |d| {
        // The thread that changes guest memory: the express lane's home (`memory_gate`).
        d.mem_gate().settle_home();
        control::dispatch(d)
    })
}

/// Translates a guest address to a pointer; `*plen` is shortened to the contiguous length.
/// Returns NULL on failure. With VIRTIO_F_IOMMU_PLATFORM negotiated @guest_addr is an I/O
/// virtual address, translated through the device IOTLB (any permission the entry has); on a
/// miss the library asks the frontend for the entry and returns NULL (ask again later).
#[no_mangle]
pub unsafe extern "C" fn vu_gpa_to_va(
    dev: *mut VuDev,
    plen: *mut u64,
    guest_addr: u64,
) -> *mut c_void {
    // SAFETY: the caller passes its initialised device (the C API's contract).
    with_dev(unsafe { Dev::from_raw(dev) }, std::ptr::null_mut(), |d| {
        if plen.is_null() {
            return std::ptr::null_mut();
        }
        // SAFETY: plen is a valid u64 pointer from the caller.
        let len = unsafe { *plen };
        let mem = d.mem();
        // An IOVA with the IOMMU (any permission: the caller does not say what it does).
        let result =
            mem.translate_dma(guest_addr, len, 0, &mut crate::memory::RegionHint::default());
        drop(mem);
        match result {
            Ok((p, n)) => {
                // SAFETY: as above.
                unsafe { *plen = n };
                p.cast()
            }
            Err(crate::queue::Fault::IotlbMiss { iova, perm }) => {
                crate::iommu::ask(d, iova, perm);
                std::ptr::null_mut()
            }
            Err(_) => std::ptr::null_mut(),
        }
    })
}

/// Returns queue number @qidx, or NULL if it is out of range.
#[no_mangle]
pub unsafe extern "C" fn vu_get_queue(dev: *mut VuDev, qidx: c_int) -> *mut VuVirtq {
    // SAFETY: the caller passes its initialised device (the C API's contract).
    with_dev(unsafe { Dev::from_raw(dev) }, std::ptr::null_mut(), |d| {
        usize::try_from(qidx).ok().and_then(|i| d.vq(i)).unwrap_or(std::ptr::null_mut())
    })
}

/// Sets (or, with NULL, removes) the queue handler, watching the kick fd through `set_watch`.
#[no_mangle]
pub unsafe extern "C" fn vu_set_queue_handler(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    handler: vu_queue_handler_cb,
) {
    // SAFETY: the caller passes its initialised device (the C API's contract).
    with_dev(unsafe { Dev::from_raw(dev) }, (), |d| {
        let Some(q) = d.queue_index(vq).and_then(|i| d.queue(i)) else { return };
        q.set_handler(handler);
        if q.kick_fd() >= 0 {
            if handler.is_some() {
                q.watch_kick();
            } else {
                d.remove_watch(q.kick_fd());
            }
        }
    })
}

/// Sets the queue's host notifier through the backend channel (-1 @fd removes it).
#[no_mangle]
pub unsafe extern "C" fn vu_set_queue_host_notifier(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    fd: c_int,
    size: c_int,
    offset: c_int,
) -> bool {
    // SAFETY: the caller passes its initialised device (the C API's contract).
    with_dev(unsafe { Dev::from_raw(dev) }, false, |d| {
        let Some(qidx) = d.queue_index(vq) else { return false };
        backend_channel::set_queue_host_notifier(d, qidx, fd, size, offset)
    })
}

unsafe fn read_uuid(uuid: *const c_uchar) -> Option<[u8; UUID_LEN]> {
    // SAFETY: the caller passes a UUID_LEN array.
    (!uuid.is_null()).then(|| unsafe { std::ptr::read_unaligned(uuid as *const [u8; UUID_LEN]) })
}

/// Looks up the dma-buf fd of a shared object by UUID; stores it in @dmabuf_fd.
/// cbindgen:ptrs-as-arrays=[[uuid; UUID_LEN]]
#[no_mangle]
pub unsafe extern "C" fn vu_lookup_shared_object(
    dev: *mut VuDev,
    uuid: *mut c_uchar,
    dmabuf_fd: *mut c_int,
) -> bool {
    // SAFETY: the caller's device and UUID (the C API's contract).
    with_dev(unsafe { Dev::from_raw(dev) }, false, |d| {
        // SAFETY: as above.
        let Some(u) = (unsafe { read_uuid(uuid) }) else { return false };
        if dmabuf_fd.is_null() {
            return false;
        }
        match backend_channel::lookup_shared_object(d, u) {
            Some(fd) => {
                // SAFETY: checked non-NULL output pointer.
                unsafe { *dmabuf_fd = fd };
                true
            }
            None => false,
        }
    })
}

/// Registers this backend as the exporter of the object with this UUID.
/// cbindgen:ptrs-as-arrays=[[uuid; UUID_LEN]]
#[no_mangle]
pub unsafe extern "C" fn vu_add_shared_object(dev: *mut VuDev, uuid: *mut c_uchar) -> bool {
    // SAFETY: the caller's device and UUID (the C API's contract).
    with_dev(unsafe { Dev::from_raw(dev) }, false, |d| {
        // SAFETY: as above.
        let Some(u) = (unsafe { read_uuid(uuid) }) else { return false };
        backend_channel::add_shared_object(d, u)
    })
}

/// Removes the shared object entry with this UUID.
/// cbindgen:ptrs-as-arrays=[[uuid; UUID_LEN]]
#[no_mangle]
pub unsafe extern "C" fn vu_rm_shared_object(dev: *mut VuDev, uuid: *mut c_uchar) -> bool {
    // SAFETY: the caller's device and UUID (the C API's contract).
    with_dev(unsafe { Dev::from_raw(dev) }, false, |d| {
        // SAFETY: as above.
        let Some(u) = (unsafe { read_uuid(uuid) }) else { return false };
        backend_channel::rm_shared_object(d, u)
    })
}

/// Tells the frontend that the device's config space changed.
#[no_mangle]
pub unsafe extern "C" fn vu_config_change_msg(dev: *mut VuDev) {
    // SAFETY: the caller passes its initialised device (the C API's contract).
    with_dev(unsafe { Dev::from_raw(dev) }, (), backend_channel::config_change)
}
