//! Queue-level C entry points (`vu_queue_*`). Each checks its pointers once, takes the memory
//! read lock for the call (guest memory cannot be unmapped under it), runs the operation on
//! one `Queue` context and reports guest faults through `panic` after the lock is released.

use libc::{c_int, c_uint, c_void};

use super::{lane, with_dev};
use crate::abi::*;
use crate::backend_channel;
use crate::device::{Dev, Vq};
use crate::diagnostics;
use crate::memory::MemoryTable;
use crate::queue::express::{packed, split, Head, Pushed};
use crate::queue::is_packed;
use crate::queue::{Completed, Fault, Notify, Queue};
use lane::{Entry, Lane};

/// Runs a queue operation for one of `dev`'s queues under the memory read lock, on one
/// `Queue` context; `fallback` if `vq` is not one of them (`dev`: what `Dev::from_raw` made of
/// the C caller's pointer).
#[inline(always)]
fn with_queue<R: Copy>(
    dev: Option<Dev<'_>>,
    vq: *mut VuVirtq,
    fallback: R,
    f: impl FnOnce(&mut Queue) -> Result<R, Fault>,
) -> R {
    with_dev(dev, fallback, |d| {
        let Some(qidx) = d.queue_index(vq) else { return fallback };
        let mem = d.mem();
        // SAFETY: vq is one of d's queues (checked); one thread works a queue at a time,
        // as the C API requires.
        let mut q = Queue { dev: d, mem: *mem, vq: unsafe { &mut *vq }, qidx };
        let result = f(&mut q);
        drop(mem);
        match result {
            Ok(r) => r,
            Err(fault) => {
                queue_fault(d, qidx, fault);
                fallback
            }
        }
    })
}

/// What a queue operation's fault does, after the memory lock is released: an IOTLB miss
/// asks the frontend and waits for its update (not a fault: the operation did nothing and
/// runs again); anything else breaks the device through `panic`, an IOTLB access the entry
/// does not allow after telling the frontend, as the spec says.
#[cold]
#[inline(never)]
fn queue_fault(d: Dev<'_>, qidx: usize, fault: Fault) {
    match fault {
        Fault::IotlbMiss { iova, perm } => crate::iommu::report_miss(d, qidx, iova, perm),
        Fault::IotlbDenied { iova, perm } => {
            crate::iommu::report_access_fail(d, iova, perm);
            d.panic(&fault.to_string());
        }
        _ => d.panic(&fault.to_string()),
    }
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

/// The caller's completed element: its index and its device-writable iovecs.
///
/// # Safety
/// `elem` is NULL or an element from `vu_queue_pop` that the caller still owns.
#[inline]
unsafe fn completed<'e>(elem: *const VuVirtqElement) -> Option<Completed<'e>> {
    if elem.is_null() {
        return None;
    }
    // SAFETY: a caller's element (see above): its header, and `in_num` iovecs at `in_sg`.
    Some(unsafe { Completed::new(&*elem) })
}

/// Sets whether the queue notifies (via event index or interrupt).
#[no_mangle]
pub unsafe extern "C" fn vu_queue_set_notification(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    enable: c_int,
) {
    with_queue(
        // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
        unsafe { Dev::from_raw(dev) },
        vq,
        (),
        |q| q.set_notification(enable != 0),
    )
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
    with_queue(
        // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
        unsafe { Dev::from_raw(dev) },
        vq,
        true,
        |q| q.empty(),
    )
}

/// `vu_queue_notify(_sync)`: the common case (a working device's mapped ring) decided on the
/// express lane (`lane`, `queue::quick_notify_open`); anything else goes to `notify_general`.
/// A packed ring's decision is out of line (`notify_packed`): each layout's path gets the
/// registers to itself.
#[inline(always)]
unsafe fn notify(dev: *mut VuDev, vq: *mut VuVirtq, sync: bool) {
    // SAFETY: the C caller's pointers (this function's contract); `lane::enter` checks them,
    // and every way out of the lane below leaves the lock it entered.
    let lane = match unsafe { lane::enter(dev, vq) } {
        Entry::In(lane) => lane,
        // SAFETY: the pointers `lane::enter` checked.
        Entry::General => return unsafe { notify_general(dev, vq, sync) },
        // SAFETY: the pointers `lane::enter` checked.
        Entry::Closed => return unsafe { notify_handed_over(dev, vq, true, sync) },
    };
    if !crate::queue::quick_notify_open(lane.dev) {
        // SAFETY: the pointers `lane::enter` checked, still inside the lock.
        return unsafe { notify_handed_over(dev, vq, lane.counted, sync) };
    }
    if is_packed(lane.dev) {
        // SAFETY: as above.
        return unsafe { notify_packed(dev, vq, lane.qidx, lane.counted, sync) };
    }
    let decision = crate::queue::split::quick_should_notify(lane.dev, lane.vq);
    // SAFETY: as above.
    unsafe { notify_decided(lane, decision, sync) }
}

/// `notify` on a packed ring (see `notify`).
///
/// # Safety
/// As for `pop_chain`.
#[inline(never)]
unsafe extern "C" fn notify_packed(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    qidx: usize,
    counted: bool,
    sync: bool,
) {
    // SAFETY: this function's contract (as in pop_chain).
    let lane = unsafe { lane::entered(dev, vq, qidx, counted) };
    let decision = crate::queue::packed::quick_should_notify(lane.dev, lane.vq);
    // SAFETY: as above.
    unsafe { notify_decided(lane, decision, sync) }
}

/// Carries out the lane's notify decision and leaves the lock: nothing, a signal, or (`None`)
/// the general path.
///
/// # Safety
/// `lane` came from `lane::enter` (or `lane::entered`) and is still inside the lock.
#[inline(always)]
unsafe fn notify_decided(lane: Lane, decision: Option<bool>, sync: bool) {
    match decision {
        Some(false) => lane::exit(lane.dev, lane.counted),
        Some(true) => signal_and_leave(lane.dev, lane.vq, lane.qidx, lane.counted, sync),
        // SAFETY: this function's contract.
        None => unsafe { notify_handed_over(lane.dev.raw(), lane.vq, lane.counted, sync) },
    }
}

/// # Safety
/// As for `lane::leave_in_full`.
#[cold]
#[inline(never)]
unsafe extern "C" fn notify_handed_over(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    counted: bool,
    sync: bool,
) {
    // SAFETY: this function's contract.
    unsafe {
        lane::leave_in_full(dev, counted);
        notify_general(dev, vq, sync)
    }
}

/// Signals the driver once the ring's rule said it wants a notification, still inside the
/// memory lock `notify` entered (it leaves it). Not cold: a backend whose driver waits for
/// interrupts comes here for every request. The common case, a call eventfd written without
/// a SIGPIPE guard, is one `write` and nothing that can panic (so no panic guard either);
/// the rest is `signal_and_leave_general`.
#[inline(never)]
extern "C" fn signal_and_leave(d: Dev, vq: &VuVirtq, qidx: usize, counted: bool, sync: bool) {
    if vq.call_fd < 0 || d.flags().guard_sigpipe() {
        return signal_and_leave_general(d, vq, qidx, counted, sync);
    }
    // Under the lock, as `notify_general` explains: the fd cannot be closed meanwhile.
    let written = crate::fd::eventfd_add_one(vq.call_fd);
    lane::exit(d, counted);
    if let Err(errno) = written {
        signal_failed(d, errno);
    }
}

/// The driver could not be signalled: the device is broken (`panic`), as in the original.
#[cold]
#[inline(never)]
extern "C" fn signal_failed(d: Dev, errno: i32) {
    with_dev(Some(d), (), |d| d.panic(&Fault::EventfdWrite(errno).to_string()))
}

/// `signal_and_leave` for an in-band call, a SIGPIPE-guarded write or no call fd: the call
/// eventfd under the lock (see `notify_general`), an in-band call after it.
#[cold]
#[inline(never)]
extern "C" fn signal_and_leave_general(
    d: Dev,
    vq: &VuVirtq,
    qidx: usize,
    counted: bool,
    sync: bool,
) {
    /// Leaves the lock when dropped, on unwinding too (a writer would wait forever).
    struct Entered<'a>(Dev<'a>, bool);
    impl Drop for Entered<'_> {
        fn drop(&mut self) {
            lane::exit(self.0, self.1)
        }
    }
    with_dev(Some(d), (), |d| {
        let entered = Entered(d, counted);
        let action = crate::queue::split::delivery(d, vq, sync);
        let result = match action {
            Notify::Eventfd(fd) => crate::queue::signal_eventfd(d, fd),
            _ => Ok(()),
        };
        drop(entered);
        match (result, action) {
            (Err(fault), _) => d.panic(&fault.to_string()),
            (Ok(()), Notify::InBand { ack }) => backend_channel::vring_call(d, qidx, ack),
            (Ok(()), _) => {}
        }
    })
}

/// `notify` for everything but the common case: packed rings, rings to remap, broken
/// devices, NOTIFY_ON_EMPTY, tracing.
#[cold]
#[inline(never)]
unsafe extern "C" fn notify_general(dev: *mut VuDev, vq: *mut VuVirtq, sync: bool) {
    // Decide under the memory lock and write the call eventfd under it too: call fds are
    // closed only under the write lock (MemWrite::replace_call), so the fd cannot be closed
    // and its number given to another file before this write. The write does not block (the
    // fd is non-blocking). An in-band call may wait on the frontend: it is made after.
    let action = with_queue(
        // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
        unsafe { Dev::from_raw(dev) },
        vq,
        Notify::None,
        |q| {
            let action = q.notify_decision(sync)?;
            if let Notify::Eventfd(fd) = action {
                crate::queue::signal_eventfd(q.dev, fd)?;
            }
            Ok(action)
        },
    );
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

/// # Safety
/// The C caller's pointers (as for `notify`).
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
    // SAFETY: the C caller's pointers (this function's contract); `lane::enter` checks them,
    // and every way out of the lane below leaves the lock it entered.
    let lane = match unsafe { lane::enter(dev, vq) } {
        Entry::In(lane) => lane,
        // SAFETY: the pointers `lane::enter` checked.
        Entry::General => return unsafe { pop_general(dev, vq, sz) },
        // SAFETY: the pointers `lane::enter` checked.
        Entry::Closed => return unsafe { pop_handed_over(dev, vq, true, sz) },
    };
    if is_packed(lane.dev) {
        // SAFETY: the pointers `lane::enter` checked, still inside the lock.
        return unsafe { pop_packed(dev, vq, lane.qidx, lane.counted, sz) };
    }
    match split::pop_head(lane.dev, &lane.mem, lane.vq) {
        // SAFETY: as above.
        Head::At(head) => unsafe { pop_chain(dev, vq, lane.qidx, lane.counted, head, sz) },
        Head::Empty => lane::exit_null(lane.dev, lane.counted),
        // SAFETY: as above.
        Head::General => unsafe { pop_handed_over(dev, vq, lane.counted, sz) },
    }
}

/// `vu_queue_pop` on the lane for a packed ring (out of line: each layout's path gets the
/// registers to itself), a queue with an inflight area in a function of its own. (Not through
/// a shared generic continuation as the pushes are: that costs this path 13 instructions a
/// request, the table kept in memory.)
///
/// # Safety
/// As for `pop_chain`.
#[inline(never)]
unsafe extern "C" fn pop_packed(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    qidx: usize,
    counted: bool,
    sz: usize,
) -> *mut c_void {
    // SAFETY: vq is the caller's checked queue (this function's contract).
    if unsafe { !(*vq).inflight.is_null() } {
        // SAFETY: as above.
        return unsafe { pop_packed_tracked(dev, vq, qidx, counted, sz) };
    }
    // SAFETY: this function's contract (as in pop_chain).
    let lane = unsafe { lane::entered(dev, vq, qidx, counted) };
    let Some(elem) = packed::pop_untracked(lane.dev, &lane.mem, lane.vq, qidx, sz) else {
        // SAFETY: this function's contract.
        return unsafe { pop_handed_over(dev, vq, counted, sz) };
    };
    lane::exit(lane.dev, counted);
    elem.map_or(std::ptr::null_mut(), |e| e.as_ptr().cast())
}

/// # Safety
/// As for `pop_chain`.
#[inline(never)]
unsafe extern "C" fn pop_packed_tracked(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    qidx: usize,
    counted: bool,
    sz: usize,
) -> *mut c_void {
    // SAFETY: this function's contract (as in pop_chain).
    let lane = unsafe { lane::entered(dev, vq, qidx, counted) };
    let Some(elem) = packed::pop_tracked(lane.dev, &lane.mem, lane.vq, qidx, sz) else {
        // SAFETY: this function's contract.
        return unsafe { pop_handed_over(dev, vq, counted, sz) };
    };
    lane::exit(lane.dev, counted);
    elem.map_or(std::ptr::null_mut(), |e| e.as_ptr().cast())
}

/// `vu_queue_pop`'s second half on the lane: the chain at `head` (see
/// `express::split::pop_chain`), leaving the lock. Out of line, on the C caller's pointers
/// again (so the first half ends in a tail call and builds no frame).
///
/// # Safety
/// `lane::enter(dev, vq)` accepted these pointers, found queue `qidx` and `counted`, and
/// the lock it entered is still entered; `split::pop_head` found `head` in it.
#[inline(never)]
unsafe extern "C" fn pop_chain(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    qidx: usize,
    counted: bool,
    head: u16,
    sz: usize,
) -> *mut c_void {
    // SAFETY: this function's contract.
    let lane = unsafe { lane::entered(dev, vq, qidx, counted) };
    let d = lane.dev;
    // SAFETY: this function's contract.
    let Some(elem) = (unsafe { split::pop_chain(d, &lane.mem, lane.vq, qidx, head, sz) }) else {
        // SAFETY: this function's contract.
        return unsafe { pop_handed_over(dev, vq, counted, sz) };
    };
    lane::exit(d, counted);
    elem.as_ptr().cast()
}

/// # Safety
/// As for `lane::leave_in_full`.
#[cold]
#[inline(never)]
unsafe extern "C" fn pop_handed_over(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    counted: bool,
    sz: usize,
) -> *mut c_void {
    // SAFETY: this function's contract.
    unsafe {
        lane::leave_in_full(dev, counted);
        pop_general(dev, vq, sz)
    }
}

/// `vu_queue_pop` on the general path.
#[inline(never)]
unsafe extern "C" fn pop_general(dev: *mut VuDev, vq: *mut VuVirtq, sz: usize) -> *mut c_void {
    with_queue(
        // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
        unsafe { Dev::from_raw(dev) },
        vq,
        std::ptr::null_mut(),
        |q| {
            let elem = q.pop(sz)?;
            if diagnostics::tracing() {
                // SAFETY: pop's result is NULL or the element it just allocated and filled.
                unsafe { diagnostics::trace_pop(q.qidx, elem) };
            }
            Ok(elem.cast())
        },
    )
}

/// Pretends the most recent element wasn't popped; the next pop refetches it.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_unpop(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    _elem: *mut VuVirtqElement,
    _len: usize,
) {
    with_queue(
        // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
        unsafe { Dev::from_raw(dev) },
        vq,
        (),
        |q| q.unpop(),
    )
}

/// Pretends that @num elements weren't popped. False if @num exceeds the elements in use.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_rewind(dev: *mut VuDev, vq: *mut VuVirtq, num: c_uint) -> bool {
    with_queue(
        // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
        unsafe { Dev::from_raw(dev) },
        vq,
        false,
        |q| q.rewind(num),
    )
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
    // SAFETY: a caller's element (from vu_queue_pop) or NULL.
    let Some(e) = (unsafe { completed(elem) }) else { return };
    with_queue(
        // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
        unsafe { Dev::from_raw(dev) },
        vq,
        (),
        |q| {
            if diagnostics::tracing() {
                diagnostics::trace_used(q.qidx, "fill", e.index, len);
            }
            q.fill(e, len, idx)
        },
    )
}

/// fill + flush of one element.
#[no_mangle]
pub unsafe extern "C" fn vu_queue_push(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    elem: *const VuVirtqElement,
    len: c_uint,
) {
    // SAFETY: a caller's element (from vu_queue_pop) or NULL.
    let Some(e) = (unsafe { completed(elem) }) else { return };
    // SAFETY: the C caller's pointers (this function's contract); `lane::enter` checks them,
    // and every way out of the lane below leaves the lock it entered.
    let lane = match unsafe { lane::enter(dev, vq) } {
        Entry::In(lane) => lane,
        // SAFETY: the pointers `lane::enter` checked.
        Entry::General => return unsafe { push_general(dev, vq, e, len) },
        // SAFETY: the pointers `lane::enter` checked.
        Entry::Closed => return unsafe { push_handed_over(dev, vq, true, e, len) },
    };
    if is_packed(lane.dev) {
        // SAFETY: the pointers `lane::enter` checked, still inside the lock it entered.
        return unsafe { push_packed(dev, vq, lane.qidx, lane.counted, e.element(), len) };
    }
    match split::push(lane.dev, &lane.mem, lane.vq, e, len) {
        Pushed::Done => {}
        Pushed::Tracked => {
            // SAFETY: as above.
            return unsafe { push_tracked(dev, vq, lane.counted, e, len) };
        }
        // SAFETY: as above.
        Pushed::General => return unsafe { push_handed_over(dev, vq, lane.counted, e, len) },
    }
    lane::exit(lane.dev, lane.counted);
}

/// `vu_queue_push` on the lane for a packed ring (out of line, as `pop_packed`).
///
/// # Safety
/// As for `pop_chain`; `elem` is the element `vu_queue_push` was given.
#[inline(never)]
unsafe extern "C" fn push_packed(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    qidx: usize,
    counted: bool,
    elem: &VuVirtqElement,
    len: c_uint,
) {
    // SAFETY: vq is the caller's checked queue (this function's contract).
    if unsafe { !(*vq).inflight.is_null() } {
        // SAFETY: as above.
        return unsafe { push_packed_tracked(dev, vq, qidx, counted, elem, len) };
    }
    // SAFETY: this function's contract.
    unsafe { push_continued(dev, vq, qidx, counted, elem, len, packed::push_untracked) }
}

/// # Safety
/// As for `push_packed`.
#[inline(never)]
unsafe extern "C" fn push_packed_tracked(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    qidx: usize,
    counted: bool,
    elem: &VuVirtqElement,
    len: c_uint,
) {
    // SAFETY: this function's contract.
    unsafe { push_continued(dev, vq, qidx, counted, elem, len, packed::push_tracked) }
}

/// `vu_queue_push` on the lane for a split queue that tracks inflight elements (see
/// `express::split::push_tracked`), leaving the lock. The element comes as the pair
/// `vu_queue_push` already holds in registers (its index loaded, then the pointer: the
/// general path's arguments too) and no queue index (that push needs none): five arguments,
/// none moved on the way in or out.
///
/// # Safety
/// As for `push_packed`.
#[inline(never)]
unsafe extern "C" fn push_tracked(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    counted: bool,
    elem: Completed,
    len: c_uint,
) {
    // SAFETY: this function's contract (as in pop_chain).
    let (d, mem, q) = unsafe { lane::entered_queue(dev, vq) };
    if !split::push_tracked(d, &mem, q, elem, len) {
        // SAFETY: this function's contract.
        return unsafe { push_handed_over(dev, vq, counted, elem, len) };
    }
    lane::exit(d, counted);
}

/// The lane again in a function `vu_queue_push` tail-called (the element rebuilt from the
/// caller's pointer: six arguments, in registers), `push` on it, then out of the lock (or the
/// general path, for false).
///
/// # Safety
/// As for `push_packed`.
#[inline(always)]
unsafe fn push_continued(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    qidx: usize,
    counted: bool,
    elem: &VuVirtqElement,
    len: c_uint,
    push: impl FnOnce(Dev, &MemoryTable, &mut VuVirtq, usize, Completed, u32) -> bool,
) {
    // SAFETY: the caller's element, as `vu_queue_push` took it.
    let e = unsafe { Completed::new(elem) };
    // SAFETY: this function's contract (as in pop_chain).
    let lane = unsafe { lane::entered(dev, vq, qidx, counted) };
    if !push(lane.dev, &lane.mem, lane.vq, qidx, e, len) {
        // SAFETY: this function's contract.
        return unsafe { push_handed_over(dev, vq, counted, e, len) };
    }
    lane::exit(lane.dev, counted);
}

/// # Safety
/// As for `lane::leave_in_full`.
#[cold]
#[inline(never)]
unsafe extern "C" fn push_handed_over(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    counted: bool,
    e: Completed,
    len: c_uint,
) {
    // SAFETY: this function's contract.
    unsafe {
        lane::leave_in_full(dev, counted);
        push_general(dev, vq, e, len)
    }
}

/// `vu_queue_push` on the general path.
#[inline(never)]
unsafe extern "C" fn push_general(dev: *mut VuDev, vq: *mut VuVirtq, e: Completed, len: c_uint) {
    with_queue(
        // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
        unsafe { Dev::from_raw(dev) },
        vq,
        (),
        |q| {
            if diagnostics::tracing() {
                diagnostics::trace_used(q.qidx, "push", e.index, len);
            }
            q.push(e, len)
        },
    )
}

/// Marks the last @num filled elements as used (used.idx += num).
#[no_mangle]
pub unsafe extern "C" fn vu_queue_flush(dev: *mut VuDev, vq: *mut VuVirtq, num: c_uint) {
    with_queue(
        // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
        unsafe { Dev::from_raw(dev) },
        vq,
        (),
        |q| {
            if diagnostics::tracing() {
                diagnostics::trace_flush(q.qidx, num);
            }
            q.flush(num)
        },
    )
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
    let (i, o) = with_queue(
        // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
        unsafe { Dev::from_raw(dev) },
        vq,
        (0, 0),
        |q| q.avail_bytes(max_in_bytes, max_out_bytes),
    );
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
    let (i, o) = with_queue(
        // SAFETY: the C caller's pointers (this function's contract); with_queue checks them.
        unsafe { Dev::from_raw(dev) },
        vq,
        (0, 0),
        |q| q.avail_bytes(in_bytes, out_bytes),
    );
    in_bytes <= i && out_bytes <= o
}

/// Turns the packed virtqueue layout (VIRTIO_F_RING_PACKED, feature bit 34, virtio 1.1) on or
/// off for @dev. The library offers packed rings on top of the backend's features by default
/// (the backend's queue calls work unchanged on both layouts); a frontend that does not ack
/// the bit gets split rings. Setting the environment variable LIBVHOST_USER_NO_PACKED=1 turns
/// them off for the whole process. Call after vu_init, before the frontend negotiates
/// features (GET_FEATURES). Returns false if @dev is not an initialised device.
#[no_mangle]
pub unsafe extern "C" fn vu_set_packed_ring_enabled(dev: *mut VuDev, enabled: bool) -> bool {
    // SAFETY: the caller passes its device (or NULL); from_raw checks it.
    with_dev(unsafe { Dev::from_raw(dev) }, false, |d| {
        let _mem = d.mem_mut();
        crate::queue::ids::set_packed_disabled(d, !enabled);
        true
    })
}

/// Turns VIRTIO_F_IOMMU_PLATFORM (feature bit 33) on or off for @dev. The library offers it on
/// top of the backend's features by default: when a frontend behind a vIOMMU acks it, every
/// guest address (ring addresses, descriptors, indirect tables, vu_gpa_to_va()) is an I/O
/// virtual address that the library translates through the device IOTLB the frontend keeps
/// with VHOST_USER_IOTLB_MSG, checking each entry's permission. On a miss the library asks
/// the frontend on the backend channel and vu_queue_pop() returns NULL (vu_gpa_to_va(): NULL);
/// when the answer arrives the library kicks the queue (writes its kick eventfd, or runs its
/// handler when it has none), so a backend that processes its queue on kicks needs nothing
/// more. A backend that handles VHOST_USER_IOTLB_MSG in its process_msg callback keeps the
/// IOTLB to itself, and the library then uses guest addresses untranslated. Setting the
/// environment variable LIBVHOST_USER_NO_IOMMU=1 turns the feature off for the whole process
/// (the bit is then masked from the backend's get_features too). Call after vu_init, before
/// the frontend negotiates features (GET_FEATURES). Returns false if @dev is not an
/// initialised device.
#[no_mangle]
pub unsafe extern "C" fn vu_set_iommu_platform_enabled(dev: *mut VuDev, enabled: bool) -> bool {
    // SAFETY: the caller passes its device (or NULL); from_raw checks it.
    with_dev(unsafe { Dev::from_raw(dev) }, false, |d| {
        // On by default: a device that never turned it off needs no state to say so.
        if !enabled || d.ext_if_any().is_some() {
            d.ext().iommu.set_disabled(!enabled);
        }
        true
    })
}
