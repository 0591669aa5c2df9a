//! The C boundary of the express lane (`queue::express`): how `vu_queue_pop`, `vu_queue_push`
//! and `vu_queue_notify` enter it and leave it.
//!
//! A device whose calls are traced (LIBVHOST_USER_LOG=trace: the general path logs them), or
//! whose process has LIBVHOST_USER_NO_EXPRESS set (to rule the lane out, or to compare the
//! two paths) is closed to the lane when `vu_init` sets it up (`close_to_lane`): its calls
//! find the gate closed and take the general path, at no cost to anyone else's.
//!
//! The lane's path through each of those calls makes no call of its own (`pop`'s `malloc`
//! aside, made from its second half): the memory lock is entered and left inline, and every
//! way off the path — pointers that are not ours, tracing, a writer at the lock, a call the
//! lane hands over, the slow half of leaving — is one call in tail position. So the compiler
//! keeps the path in scratch registers, with no frame to build and tear down.
//!
//! The functions it tail-calls are `extern "C"` (private ones): a Rust-ABI callee may unwind,
//! and an `extern "C"` caller must then catch that to abort, which makes the call non-tail.
//! None of them unwinds (each runs its work under `with_dev`).
//!
//! The lane runs outside `with_dev`'s panic guard, which would make those calls non-tail:
//! nothing on it can panic (no indexing, no unwrapping, wrapping or checked arithmetic only,
//! no allocation but `malloc`). What can panic runs through `with_dev`: the general path, and
//! the slow half of leaving (`left_slow`).

use std::ffi::c_void;

use crate::abi::{VuDev, VuVirtq};
use crate::device::Dev;
use crate::diagnostics;
use crate::memory::MemoryTable;

use super::with_dev;

/// A queue call on the lane: inside the memory lock until `exit`.
pub(super) struct Lane<'a> {
    pub dev: Dev<'a>,
    pub mem: MemoryTable<'a>,
    pub vq: &'a mut VuVirtq,
    pub qidx: usize,
    /// Whether the entry was counted (a call off the home thread): `exit` takes it back, so it
    /// does not ask again (the home never changes under a call: `memory_gate`).
    pub counted: bool,
}

/// How a call enters the lane.
pub(super) enum Entry<'a> {
    In(Lane<'a>),
    /// The general path takes the call (pointers not ours).
    General,
    /// The gate is closed to the lane: a writer holds the memory lock, or the device takes the
    /// general path only (`close_to_lane`). The entry was counted: the caller leaves again
    /// (`leave_in_full`, as for a call handed over) before the general path takes the call
    /// (and waits for the writer).
    Closed,
}

/// Enters the lane for one of `dev`'s queues.
///
/// # Safety
/// The C caller's pointers (the C API's contract for every queue call).
#[inline(always)]
pub(super) unsafe fn enter<'a>(dev: *mut VuDev, vq: *mut VuVirtq) -> Entry<'a> {
    // SAFETY: this function's contract.
    let Some(d) = (unsafe { Dev::from_raw(dev) }) else { return Entry::General };
    let Some(qidx) = d.queue_index(vq) else { return Entry::General };
    // A call on the home thread is not counted (see `memory_gate`): no writer can be at work.
    let gate = d.mem_gate();
    let counted = !gate.at_home();
    if counted && !gate.enter_read_counted() {
        return Entry::Closed;
    }
    // SAFETY: just entered the lock (counted, or on the home thread, where no writer can be at
    // work); the lane leaves it (`exit`) before it returns.
    let mem = unsafe { d.mem_entered() };
    // SAFETY: vq is one of d's queues (checked); one thread works a queue at a time, as the C
    // API requires.
    Entry::In(Lane { dev: d, mem, vq: unsafe { &mut *vq }, qidx, counted })
}

/// The lane of a call that `enter` let in, again, in a function it tail-called (which gets
/// the C caller's pointers, not the `Lane`: see `ffi::queue::pop_chain`).
///
/// # Safety
/// `enter(dev, vq)` returned `Entry::In` with queue index `qidx` and `counted`, and the lock
/// it entered is still entered.
#[inline(always)]
pub(super) unsafe fn entered<'a>(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
    qidx: usize,
    counted: bool,
) -> Lane<'a> {
    // SAFETY: this function's contract.
    let (dev, mem, vq) = unsafe { entered_queue(dev, vq) };
    Lane { dev, mem, vq, qidx, counted }
}

/// `entered` for a continuation that needs neither the queue's index nor `counted` from the
/// `Lane` (it leaves with the `counted` it was given): the device, its memory and the queue.
///
/// # Safety
/// As for `entered`.
#[inline(always)]
pub(super) unsafe fn entered_queue<'a>(
    dev: *mut VuDev,
    vq: *mut VuVirtq,
) -> (Dev<'a>, MemoryTable<'a>, &'a mut VuVirtq) {
    // SAFETY: this function's contract: a device `vu_init` set up, inside its memory lock; vq
    // is one of its queues, worked by this thread alone.
    let (d, vq) = unsafe { (Dev::new_unchecked(dev), &mut *vq) };
    // SAFETY: as above.
    let mem = unsafe { d.mem_entered() };
    (d, mem, vq)
}

/// The environment variable that closes every device `vu_init` sets up afterwards to the
/// lane (read at each `vu_init`).
pub const NO_EXPRESS_ENV: &str = "LIBVHOST_USER_NO_EXPRESS";

/// Whether a device being set up now takes the general path only: its calls are traced, or
/// the environment asks for it.
pub(super) fn general_only() -> bool {
    diagnostics::tracing()
        || std::env::var_os(NO_EXPRESS_ENV).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Leaves the memory lock, the slow half (`left_slow`) out of line when it must follow. A
/// home call (`counted` false, as `enter` found it) was not counted, so it is not uncounted
/// either.
#[inline(always)]
pub(super) fn exit(d: Dev, counted: bool) {
    if let Some(was) = leave_quick(d, counted) {
        left_slow(d, was);
    }
}

/// The inline half of leaving: `Some(word)` when the slow half must follow.
#[inline(always)]
fn leave_quick(d: Dev, counted: bool) -> Option<u32> {
    let gate = d.mem_gate();
    if counted {
        gate.leave_read_quick()
    } else {
        gate.leave_home()
    }
}

/// `exit` for a call that returns NULL after it (a pop that found nothing): the slow half,
/// when it must follow, is a tail call too, so the caller builds no frame for it.
#[inline(always)]
pub(super) fn exit_null(d: Dev, counted: bool) -> *mut c_void {
    match leave_quick(d, counted) {
        Some(was) => left_slow_null(d, was),
        None => std::ptr::null_mut(),
    }
}

/// `left_slow`, then NULL (see `exit_null`).
#[cold]
#[inline(never)]
extern "C" fn left_slow_null(d: Dev, was: u32) -> *mut c_void {
    left_slow(d, was);
    // Opaque to the optimizer: a result it knows is returned as a constant after a call that
    // is then no tail call (and the caller builds a frame for it).
    std::hint::black_box(std::ptr::null_mut())
}

/// The slow half of leaving: wakes a writer waiting for the readers, unmaps retired mappings
/// if they wait and nothing uses them.
#[cold]
#[inline(never)]
pub(super) extern "C" fn left_slow(d: Dev, was: u32) {
    with_dev(Some(d), (), |d| {
        if d.mem_gate().left_slow(was) {
            d.release_retired_if_unused();
        }
    })
}

/// Leaves the lock entered for `dev` (before the general path takes a call the lane did not
/// take: `Entry::Closed`, or handed over after entering).
///
/// # Safety
/// `dev` is the pointer `enter` accepted, and the lock is still entered for it (`counted`
/// as `enter` found it: true for `Entry::Closed`).
#[inline(always)]
pub(super) unsafe fn leave_in_full(dev: *mut VuDev, counted: bool) {
    // SAFETY: this function's contract.
    if let Some(d) = unsafe { Dev::from_raw(dev) } {
        exit(d, counted);
    }
}
