//! The library's private state of a packed queue: what it must remember about each buffer id
//! between `pop` and `push` that neither the ring nor the C element can hold.
//!
//! A packed ring's used index advances by the number of ring slots a buffer took, which the
//! driver also remembers per buffer id; the C `VuVirtqElement` has no field for it. So per
//! packed queue the library keeps one 16-byte entry per ring slot (16 KiB for a 1024-entry
//! ring, 2 KiB for QEMU's default 128), allocated when the ring is mapped. Split queues keep
//! nothing: the tables live in the device's `DeviceExt` (`crate::device_ext`), which a device
//! never allocates for split rings alone, and have no queues until a frontend acks packed
//! rings.

use std::cell::UnsafeCell;

use crate::device::Dev;

/// No buffer: the end of the pop-order list.
pub const NO_ID: u16 = u16::MAX;

/// One buffer id's state while the driver has it in flight on the device.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdState {
    /// Ring slots the buffer took (0: the id is not in flight).
    pub ndescs: u16,
    /// Head entry of the buffer in the inflight area (packed inflight layout).
    pub entry: u16,
    /// The id popped before this one (`NO_ID` if none): `rewind` walks back this list.
    pub prev: u16,
    /// The ring position of the buffer's first descriptor.
    pub head: u16,
    /// Not per id but per batch position: the id `fill` put at position i of the next flush.
    pub batch: u16,
    /// The length `fill` reported for this id.
    pub len: u32,
}

/// The private state of one packed queue.
#[derive(Default)]
pub struct QueueIds {
    /// The most recently popped id still in flight, or `NO_ID`.
    pub last_popped: u16,
    pub ids: Vec<IdState>,
}

impl QueueIds {
    /// Clears every id (a ring start): nothing in flight.
    pub fn reset(&mut self, num: u16) {
        self.last_popped = NO_ID;
        self.ids.clear();
        self.ids.resize(usize::from(num), IdState::default());
    }

    /// The state of `id`, if the ring has such an id.
    #[inline]
    pub fn get(&mut self, id: u16) -> Option<&mut IdState> {
        self.ids.get_mut(usize::from(id))
    }
}

/// The tables of a device's packed queues, one per queue (none until a frontend acks packed
/// rings), and whether the backend turned packed rings off (part of its `DeviceExt`).
#[derive(Default)]
pub struct PackedQueues {
    disabled: bool,
    queues: Box<[UnsafeCell<QueueIds>]>,
}

/// The device's tables (its `DeviceExt` allocated if need be).
fn tables<'a>(dev: Dev) -> &'a mut PackedQueues {
    // SAFETY: the device's table pointer. Callers of the functions below hold the memory
    // write lock, which excludes every queue operation (the only other users), or run on the
    // dispatch thread before any queue exists (`vu_set_packed_ring_enabled`).
    unsafe { &mut *dev.packed_queues_or_new() }
}

/// The device's tables, if it has its `DeviceExt` (as `tables`, without allocating it).
fn tables_if_any<'a>(dev: Dev) -> Option<&'a PackedQueues> {
    // SAFETY: as in `tables`.
    Some(unsafe { &*dev.packed_queues()? })
}

/// Makes sure the device has packed-queue tables (after a frontend acked packed rings).
/// The caller holds the memory write lock.
pub fn ensure_tables(dev: Dev) {
    let t = tables(dev);
    if t.queues.is_empty() {
        t.queues = (0..usize::from(dev.max_queues()))
            .map(|_| UnsafeCell::new(QueueIds { last_popped: NO_ID, ids: Vec::new() }))
            .collect();
    }
}

/// Whether the backend turned packed rings off (`vu_set_packed_ring_enabled`).
pub fn packed_disabled(dev: Dev) -> bool {
    tables_if_any(dev).is_some_and(|t| t.disabled)
}

/// Turns packed rings off (or back on) for `dev`. The caller holds the memory write lock.
pub fn set_packed_disabled(dev: Dev, disabled: bool) {
    // On by default: a device that never turned them off needs no state to say so.
    if disabled || tables_if_any(dev).is_some() {
        tables(dev).disabled = disabled;
    }
}

/// The private state of packed queue `qidx`, if the device has packed-queue tables.
///
/// The returned reference must be used only by the thread working queue `qidx` under the
/// memory read lock (the C API's one-thread-per-queue rule, as for `VuVirtq` itself), or under
/// the write lock; the tables are only created and dropped under the write lock.
#[inline]
pub fn queue_ids<'a>(dev: Dev, qidx: usize) -> Option<&'a mut QueueIds> {
    let tables = dev.packed_queues()?;
    // SAFETY: see the function docs: the queues' table is replaced only under the write lock,
    // which the caller's read (or write) lock excludes; each queue's entry is used by one
    // thread at a time, like the queue's `VuVirtq`.
    unsafe {
        let tables = &*tables;
        tables.queues.get(qidx).map(|c| &mut *c.get())
    }
}
