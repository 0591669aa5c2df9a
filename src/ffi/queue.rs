//! Queue-level C entry points (`vu_queue_*`). Each takes the memory read lock for the call, so
//! guest memory cannot be unmapped under it, and reports guest faults through `panic` only
//! after the lock is released.

use libc::{c_int, c_uint, c_void};

use super::with_dev;
use crate::abi::*;
use crate::backend_channel;
use crate::device::{Dev, Vq};
use crate::diagnostics;
use crate::memory::MemoryTable;
use crate::queue::split::{self, Notify};
use crate::queue::Fault;

/// Runs a queue operation for one of `dev`'s queues under the memory read lock; `fallback` if
/// `vq` is not one of them (`dev`: what `Dev::from_raw` made of the C caller's pointer).
#[inline]
fn with_queue<R: Copy>(
    dev: Option<Dev<'_>>,
    vq: *mut VuVirtq,
    fallback: R,
    f: impl FnOnce(Dev, &MemoryTable, &mut VuVirtq, usize) -> Result<R, Fault>,
) -> R {
    with_dev(dev, fallback, |d| {
        let Some(qidx) = d.queue_index(vq) else { return fallback };
        let mem = d.mem();
        // SAFETY: vq is one of d's queues (checked); one thread works a queue at a time,
        // as the C API requires.
        let result = f(d, &mem, unsafe { &mut *vq }, qidx);
        drop(mem);
        match result {
            Ok(r) => r,
            Err(fault) => {
                d.panic(&fault.to_string());
                fallback
            }
        }
    })
}

/// Runs `f` on the queue handle of one of `dev`'s queues, without the memory lock (for
/// fields the control plane sets without it); `fallback` if the pointers are not ours.
#[inline]
fn with_vq<R: Copy>(
    dev: Option<Dev<'_>>,
    vq: *const VuVirtq,
    fallback: R,
    f: impl FnOnce(Vq<'_>) -> R,
) -> R {
    with_dev(dev, fallback, |d| match d.queue_index(vq).and_then(|i| d.queue(i)) {
        Some(q) => f(q),
        None => fallback,
    })
}

/// Sets whether the queue notifies (via event index or interrupt).
#[no_mangle]
pub unsafe extern "C" fn vu_queue_set_notification(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    enable: c_int,
) {
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    with_queue(unsafe { Dev::from_raw(dev) }, vq, (), |d, mem, q, _| {
        split::set_notification(d, mem, q, enable != 0)
    })
}

/// Returns whether the queue is enabled.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_enabled(dev: *mut VuDev, vq: *mut VuVirtq) -> bool {
    // SAFETY: the caller's device (the C API's contract); vq is checked against it.
    with_vq(unsafe { Dev::from_raw(dev) }, vq, false, |vq| vq.enable() != 0)
}

/// Returns whether the queue is started.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_started(dev: *const VuDev, vq: *const VuVirtq) -> bool {
    // SAFETY: as in vu_queue_enabled; only read through these pointers.
    with_vq(unsafe { Dev::from_raw(dev.cast_mut()) }, vq, false, |q| q.started())
}

/// Returns true if the queue is empty or not ready.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_empty(dev: *mut VuDev, vq: *mut VuVirtq) -> bool {
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    with_queue(unsafe { Dev::from_raw(dev) }, vq, true, |d, mem, q, _| split::empty(d, mem, q))
}

unsafe fn notify(dev: *mut VuDev, vq: *mut VuVirtq, sync: bool) {
    // Decide under the memory lock and write the call eventfd under it too: call fds are
    // closed only under the write lock (MemWrite::replace_call), so the fd cannot be closed
    // and its number given to another file before this write. The write does not block (the
    // fd is non-blocking). An in-band call may wait on the frontend: it is made after.
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    let action = with_queue(unsafe { Dev::from_raw(dev) }, vq, Notify::None, |d, mem, q, _| {
        let action = split::notify_decision(d, mem, q, sync)?;
        if let Notify::Eventfd(fd) = action {
            split::signal_eventfd(fd)?;
        }
        Ok(action)
    });
    if diagnostics::tracing() {
        // SAFETY: the C caller's pointers, as above.
        unsafe { trace_notify(dev, vq, action) };
    }
    if matches!(action, Notify::None) {
        return;
    }
    // SAFETY: with_queue just accepted these pointers.
    with_dev(unsafe { Dev::from_raw(dev) }, (), |d| match action {
        // Signalled above, under the lock.
        Notify::Eventfd(_) => {}
        Notify::InBand { ack } => {
            if let Some(qidx) = d.queue_index(vq) {
                backend_channel::vring_call(d, qidx, ack);
            }
        }
        Notify::None => {}
    })
}

/// Logs a notification decision (only when tracing: off the data path).
///
/// # Safety
/// The C caller's pointers, as for `notify`.
#[cold]
unsafe fn trace_notify(dev: *mut VuDev, vq: *mut VuVirtq, action: Notify) {
    // SAFETY: this function's contract; with_dev and queue_index check the pointers.
    with_dev(unsafe { Dev::from_raw(dev) }, (), |d| {
        if let Some(qidx) = d.queue_index(vq) {
            diagnostics::trace_notify(qidx, action);
        }
    })
}

/// Notifies the driver via the call fd (skipped if unnecessary).
#[no_mangle]
pub unsafe extern "C" fn vu_queue_notify(dev: *mut VuDev, vq: *mut VuVirtq) {
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    unsafe { notify(dev, vq, false) }
}

/// Notifies via the call fd (skipped if unnecessary) or a synchronous in-band message.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_notify_sync(dev: *mut VuDev, vq: *mut VuVirtq) {
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    unsafe { notify(dev, vq, true) }
}

/// Returns a VuVirtqElement (in a block of @sz bytes) filled from the queue, or NULL.
/// The caller frees it with free().
#[no_mangle]
pub unsafe extern "C" fn vu_queue_pop(dev: *mut VuDev, vq: *mut VuVirtq, sz: usize) -> *mut c_void {
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    with_queue(unsafe { Dev::from_raw(dev) }, vq, std::ptr::null_mut(), |d, mem, q, qidx| {
        let elem = split::pop(d, mem, q, qidx, sz)?;
        if diagnostics::tracing() {
            // SAFETY: pop's result is NULL or the element it just allocated and filled.
            unsafe { diagnostics::trace_pop(qidx, elem) };
        }
        Ok(elem.cast())
    })
}

/// Pretends the most recent element wasn't popped; the next pop refetches it.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_unpop(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    _elem: *mut VuVirtqElement,
    _len: usize,
) {
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    with_queue(unsafe { Dev::from_raw(dev) }, vq, (), |_, _, q, _| {
        split::unpop(q);
        Ok(())
    })
}

/// Pretends that @num elements weren't popped. False if @num exceeds the elements in use.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_rewind(dev: *mut VuDev, vq: *mut VuVirtq, num: c_uint) -> bool {
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    with_queue(unsafe { Dev::from_raw(dev) }, vq, false, |_, _, q, _| Ok(split::rewind(q, num)))
}

/// Fills the used ring with @elem (at offset @idx from the used index), @len bytes written.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_fill(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    elem: *const VuVirtqElement,
    len: c_uint,
    idx: c_uint,
) {
    if elem.is_null() {
        return;
    }
    // SAFETY: a caller's element (from vu_queue_pop).
    let index = unsafe { (*elem).index };
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    with_queue(unsafe { Dev::from_raw(dev) }, vq, (), |d, mem, q, qidx| {
        if diagnostics::tracing() {
            diagnostics::trace_used(qidx, "fill", index, len);
        }
        split::fill(d, mem, q, index, len, idx)
    })
}

/// fill + flush of one element.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_push(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    elem: *const VuVirtqElement,
    len: c_uint,
) {
    if elem.is_null() {
        return;
    }
    // SAFETY: a caller's element (from vu_queue_pop).
    let index = unsafe { (*elem).index };
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    with_queue(unsafe { Dev::from_raw(dev) }, vq, (), |d, mem, q, qidx| {
        if diagnostics::tracing() {
            diagnostics::trace_used(qidx, "push", index, len);
        }
        split::push(d, mem, q, qidx, index, len)
    })
}

/// Marks the last @num filled elements as used (used.idx += num).
#[no_mangle]
pub unsafe extern "C" fn vu_queue_flush(dev: *mut VuDev, vq: *mut VuVirtq, num: c_uint) {
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    with_queue(unsafe { Dev::from_raw(dev) }, vq, (), |d, mem, q, qidx| {
        if diagnostics::tracing() {
            diagnostics::trace_flush(qidx, num);
        }
        split::flush(d, mem, q, num)
    })
}

/// Counts the bytes available in waiting requests, up to the given maxima.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_get_avail_bytes(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    in_bytes: *mut c_uint,
    out_bytes: *mut c_uint,
    max_in_bytes: c_uint,
    max_out_bytes: c_uint,
) {
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    let (i, o) = with_queue(unsafe { Dev::from_raw(dev) }, vq, (0, 0), |d, mem, q, _| {
        split::avail_bytes(d, mem, q, max_in_bytes, max_out_bytes)
    });
    // SAFETY: optional output pointers from the caller.
    unsafe {
        if !in_bytes.is_null() {
            *in_bytes = i;
        }
        if !out_bytes.is_null() {
            *out_bytes = o;
        }
    }
}

/// True if at least @in_bytes / @out_bytes are available.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_avail_bytes(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    in_bytes: c_uint,
    out_bytes: c_uint,
) -> bool {
    // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
    let (i, o) = with_queue(unsafe { Dev::from_raw(dev) }, vq, (0, 0), |d, mem, q, _| {
        split::avail_bytes(d, mem, q, in_bytes, out_bytes)
    });
    in_bytes <= i && out_bytes <= o
}
