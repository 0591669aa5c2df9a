// SPDX-License-Identifier: GPL-2.0-or-later
//! The C API of the library under test, declared from the header's signatures (the harness
//! calls exactly what a C backend calls; the symbols come from the linked `vhost_user` rlib).

use libc::{c_int, c_uint, c_void};
pub use vhost_user::abi::{
    vu_load_state_cb, vu_panic_cb, vu_queue_handler_cb, vu_read_msg_cb, vu_remove_watch_cb,
    vu_save_state_cb, vu_set_watch_cb, vu_watch_cb, VhostUserMsg, VuDev, VuDevIface, VuDevRegion,
    VuVirtq, VuVirtqElement,
};

extern "C" {
    pub fn vu_init(
        dev: *mut VuDev,
        max_queues: u16,
        socket: c_int,
        panic: vu_panic_cb,
        read_msg: vu_read_msg_cb,
        set_watch: vu_set_watch_cb,
        remove_watch: vu_remove_watch_cb,
        iface: *const VuDevIface,
    ) -> bool;
    pub fn vu_deinit(dev: *mut VuDev);
    pub fn vu_set_device_state_handlers(
        dev: *mut VuDev,
        save: vu_save_state_cb,
        load: vu_load_state_cb,
        max_size: usize,
        opaque: *mut c_void,
    ) -> bool;
    pub fn vu_dispatch(dev: *mut VuDev) -> bool;
    pub fn vu_gpa_to_va(dev: *mut VuDev, plen: *mut u64, guest_addr: u64) -> *mut c_void;
    pub fn vu_get_queue(dev: *mut VuDev, qidx: c_int) -> *mut VuVirtq;
    pub fn vu_set_queue_handler(dev: *mut VuDev, vq: *mut VuVirtq, handler: vu_queue_handler_cb);
    pub fn vu_queue_set_notification(dev: *mut VuDev, vq: *mut VuVirtq, enable: c_int);
    pub fn vu_queue_enabled(dev: *mut VuDev, vq: *mut VuVirtq) -> bool;
    pub fn vu_queue_started(dev: *const VuDev, vq: *const VuVirtq) -> bool;
    pub fn vu_queue_empty(dev: *mut VuDev, vq: *mut VuVirtq) -> bool;
    pub fn vu_queue_notify(dev: *mut VuDev, vq: *mut VuVirtq);
    pub fn vu_queue_notify_sync(dev: *mut VuDev, vq: *mut VuVirtq);
    pub fn vu_queue_pop(dev: *mut VuDev, vq: *mut VuVirtq, sz: usize) -> *mut c_void;
    pub fn vu_queue_unpop(dev: *mut VuDev, vq: *mut VuVirtq, elem: *mut VuVirtqElement, len: usize);
    pub fn vu_queue_rewind(dev: *mut VuDev, vq: *mut VuVirtq, num: c_uint) -> bool;
    pub fn vu_queue_fill(
        dev: *mut VuDev,
        vq: *mut VuVirtq,
        elem: *const VuVirtqElement,
        len: c_uint,
        idx: c_uint,
    );
    pub fn vu_queue_push(
        dev: *mut VuDev,
        vq: *mut VuVirtq,
        elem: *const VuVirtqElement,
        len: c_uint,
    );
    pub fn vu_queue_flush(dev: *mut VuDev, vq: *mut VuVirtq, num: c_uint);
    pub fn vu_queue_get_avail_bytes(
        dev: *mut VuDev,
        vq: *mut VuVirtq,
        in_bytes: *mut c_uint,
        out_bytes: *mut c_uint,
        max_in_bytes: c_uint,
        max_out_bytes: c_uint,
    );
    pub fn vu_queue_avail_bytes(
        dev: *mut VuDev,
        vq: *mut VuVirtq,
        in_bytes: c_uint,
        out_bytes: c_uint,
    ) -> bool;
}
