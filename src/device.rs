//! Typed views of the C-shared state behind a `VuDev`, and the memory lock as a proof token.
//!
//! C code embeds `VuDev` by value and reads its fields, so it can hold no Rust state. The
//! C-visible fields are the state (regions, dirty log, inflight area: nothing is kept twice);
//! the one thing the library adds is a lock with the device's flags (16 bytes), placed after
//! the `regions` array in the same allocation the original makes for that array:
//! `dev->regions` leads back to it. What only some devices need is allocated when one does
//! (`crate::device_ext`).
//!
//! # The views
//! - [`Dev<'call>`](Dev): a checked `VuDev` pointer, made by `ffi::with_dev` from the C
//!   caller's pointer and bounded by that C call (the closure gets a `Dev` of a lifetime it
//!   cannot name, so nothing made from it outlives the call). Plain fields through
//!   getters/setters; the device's C callbacks (`device_*`, `panic`, `set_watch`, ...) as safe
//!   methods. Signatures can keep writing `dev: Dev` (the lifetime is elided).
//! - [`Vq`]: one of its queues (`Dev::queue(i)`, `Dev::queues()`), with the compound
//!   operations the control plane needs: `replace_kick` (unwatch, close, store),
//!   `watch_kick`, `set_started` (field and callback),
//!   `run_handler`, `set_avail_base`.
//!
//! # The memory lock as a proof token
//! Guest memory, the ring pointers into it, the dirty log and the inflight area change only
//! while no queue operation runs. The guards prove which side of that you are on:
//! - [`MemRead`] (`Dev::mem()`, the queue operations' lock): derefs to the [`MemoryTable`];
//!   `MemRead::with_queue(vq, |q, table| ..)` gives a queue with the table, for what a queue
//!   operation does (the C API gives a queue to one thread at a time).
//! - [`MemWrite`] (`Dev::mem_mut()`, the control plane's): `table()` / `table_mut()` for the
//!   regions, `with_queue(vq, ..)` to change a queue's ring or inflight pointers,
//!   `forget_ring(vq)` (null the three ring pointers), `replace_log`, `replace_inflight_area`,
//!   `replace_call`/`replace_err` (queue threads signal the call fd under the read lock),
//!   `can_retire`/`retire` (removed guest mappings wait for the popped elements that may
//!   point into them: `crate::retired`).
//!   These exist only on the write guard, and take `&mut self`: holding the guard is the proof
//!   that no queue thread is looking, and no two closures get the same queue.
//!
//! Closures given to `with_queue` must not call into C (a callback could reach the queue
//! through the device); C callbacks are made through `Dev`/`Vq` outside them.

use std::cell::UnsafeCell;
use std::ffi::CString;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::{IntoRawFd, OwnedFd};

use crate::abi::*;
use crate::fd::close_fd;
use crate::iotlb::Iotlb;
use crate::memory::{MemoryTable, MemoryTableMut};
use crate::memory_gate::MemoryGate;
use crate::mmap::Mapping;

/// What `VuDev.regions` points to.
#[repr(C)]
pub struct DeviceState {
    /// Must stay first: `VuDev.regions` points here (see the module docs).
    c_regions: UnsafeCell<[VuDevRegion; VHOST_USER_MAX_RAM_SLOTS]>,
    /// Guards everything the frontend's shared memory consists of: the regions (and the ring
    /// pointers into them), the dirty log and the inflight area. Queue operations hold it for
    /// reading while they touch that memory; the control plane writes to change any of it.
    /// (`crate::memory_gate`: one atomic add to enter and one to leave.) It carries the
    /// device's flags, and through them the state only some devices need
    /// (`crate::device_ext`): nothing else is added to the original's allocation.
    lock: MemoryGate,
}

// 16 bytes beyond the original's 509-slot array, which malloc rounds up to them anyway.
#[cfg(target_pointer_width = "64")]
const _: () = assert!(
    std::mem::size_of::<DeviceState>()
        == std::mem::size_of::<[VuDevRegion; VHOST_USER_MAX_RAM_SLOTS]>() + 16
);

// SAFETY: `c_regions` is written only under the write lock and read under the read lock.
unsafe impl Sync for DeviceState {}

impl Drop for DeviceState {
    fn drop(&mut self) {
        crate::device_ext::release_slot(self.lock.flags.slot());
    }
}

/// Shared memory, read-locked: guest memory stays mapped while this lives.
pub struct MemRead<'a> {
    table: MemoryTable<'a>,
    state: &'a DeviceState,
    dev: Dev<'a>,
}

impl Drop for MemRead<'_> {
    #[inline]
    fn drop(&mut self) {
        // The data path's whole cost of deferred unmapping: a bit of the word it leaves.
        if self.state.lock.leave_read() {
            self.state.release_retired_if_unused(self.dev);
        }
    }
}

impl<'a> Deref for MemRead<'a> {
    type Target = MemoryTable<'a>;
    fn deref(&self) -> &MemoryTable<'a> {
        &self.table
    }
}

/// Shared memory, write-locked: no queue operation runs while this lives.
pub struct MemWrite<'a> {
    state: &'a DeviceState,
    dev: Dev<'a>,
}

impl Drop for MemWrite<'_> {
    fn drop(&mut self) {
        // Still under the write lock: elements may have been handed back (or RESET_DEVICE
        // forgot them) since the mappings were retired.
        if self.state.lock.retired() && !elements_in_use(self.dev) {
            self.state.release_retired();
        }
        self.state.lock.leave_write();
    }
}

/// Whether any queue has popped elements not handed back yet (call under the memory lock,
/// for writing: queue operations change `inuse` under the read lock).
fn elements_in_use(dev: Dev<'_>) -> bool {
    dev.queues().any(|vq| vq.inuse() > 0)
}

impl MemWrite<'_> {
    /// Whether `n` mappings may leave the memory table now: always when no element is in use
    /// (they are unmapped at once), else while the retired list has room for them.
    pub fn can_retire(&self, n: usize) -> bool {
        !elements_in_use(self.dev) || self.state.ext().retired.has_room(n)
    }

    /// Disposes of mappings that left the memory table: unmapped now if no popped element
    /// can point into them, else kept until none can (see `crate::retired`). The caller
    /// checked `can_retire` first; nothing here fails.
    pub fn retire(&mut self, mappings: impl IntoIterator<Item = Mapping>) {
        if elements_in_use(self.dev) {
            let retired = &self.state.ext().retired;
            retired.keep(mappings);
            self.state.lock.set_retired(retired.len() > 0);
        } else {
            drop(mappings.into_iter().collect::<Vec<_>>());
            self.state.release_retired();
        }
    }

    /// Unmaps every removed mapping, in use or not (`vu_deinit`: the backend gives its
    /// elements up with the device).
    pub fn release_all_retired(&mut self) {
        self.state.release_retired();
    }

    /// Replaces the call fd, closing the old one. Under the write lock because queue threads
    /// signal the call fd under the read lock (`vu_queue_notify`): the fd is never closed,
    /// and its number never reused by another file, while a signal may still be written to it.
    pub fn replace_call(&mut self, vq: Vq<'_>, fd: Option<OwnedFd>) {
        close_fd(vq.call_fd());
        vq.set_call_fd(fd.map_or(-1, IntoRawFd::into_raw_fd));
    }

    /// Replaces the error fd, closing the old one (under the write lock, as `replace_call`).
    pub fn replace_err(&mut self, vq: Vq<'_>, fd: Option<OwnedFd>) {
        close_fd(vq.err_fd());
        vq.set_err_fd(fd.map_or(-1, IntoRawFd::into_raw_fd));
    }

    pub fn table(&self) -> MemoryTable<'_> {
        // SAFETY: we hold the write lock; nregions <= 509 (only MemoryTableMut changes it).
        let regions = unsafe { &*self.state.c_regions.get() };
        MemoryTable::of_device(regions, self.dev.nregions() as usize)
            .with_iotlb(self.state.iotlb_if_translating(self.dev))
    }

    /// Drops the IOTLB entries whose frontend addresses the memory table no longer maps
    /// (after it changed): they are stale, and the frontend's new entries must not meet them.
    pub fn prune_iotlb(&mut self) {
        let stale: Vec<(u64, u64)> = {
            let table = self.table();
            let Some(iotlb) = table.iotlb() else { return };
            iotlb
                .entries()
                .filter(|e| !table.qva_range_mapped(e.uaddr, e.size))
                .map(|e| (e.iova, e.size))
                .collect()
        };
        for (iova, size) in stale {
            self.iotlb_mut().invalidate(iova, size);
        }
    }

    /// The device IOTLB, to change (IOTLB_MSG, resets).
    pub fn iotlb_mut(&mut self) -> &mut Iotlb {
        // SAFETY: we hold the write lock, so no reader looks at it; `&mut self` keeps a
        // second `iotlb_mut` or `table` borrow out while this one lives.
        unsafe { &mut *self.state.ext().iotlb.get() }
    }

    /// Empties the device IOTLB (a device that never had one keeps having none).
    pub fn clear_iotlb(&mut self) {
        if let Some(ext) = self.state.ext_if_any() {
            // SAFETY: as in `iotlb_mut`.
            unsafe { &mut *ext.iotlb.get() }.clear();
        }
    }

    pub fn table_mut(&mut self) -> MemoryTableMut<'_> {
        // SAFETY: we hold the write lock, so nobody else reads or writes the array or count;
        // both live as long as the device (and so this guard).
        let (slots, count) = unsafe {
            (
                &mut *self.state.c_regions.get(),
                &mut *std::ptr::addr_of_mut!((*self.dev.raw()).nregions),
            )
        };
        MemoryTableMut::new(slots, count)
    }
}

impl MemWrite<'_> {
    /// Runs `f` on queue `vq` with the memory table: the write lock keeps every queue
    /// operation out, and `&mut self` any other `with_queue`, so `f` has the queue to itself.
    /// `f` must not call into C (a callback could reach the queue through the device).
    pub fn with_queue<R>(
        &mut self,
        vq: Vq<'_>,
        f: impl FnOnce(&mut VuVirtq, &MemoryTable) -> R,
    ) -> R {
        debug_assert!(vq.dev.raw == self.dev.raw);
        let table = self.table();
        // SAFETY: vq is one of this device's queues (`Dev::queue` made it); see above.
        f(unsafe { &mut *vq.raw }, &table)
    }

    /// Forgets the queue's ring pointers: the mappings they point into are about to change
    /// (or its geometry did); they are mapped again (and checked) on use.
    pub fn forget_ring(&mut self, vq: Vq<'_>) {
        self.with_queue(vq, |q, _| crate::queue::unmap_ring(q))
    }
}

impl MemWrite<'_> {
    /// Replaces the dirty log table (`VuDev.log_table`/`log_size`) with `new` (or none),
    /// unmapping the old one: no queue operation is logging into it under this lock.
    pub fn replace_log(&mut self, new: Option<Mapping>) {
        let dev = self.dev;
        let (old, old_size) = (dev.log_table(), dev.log_size());
        let (table, size) = new.map_or((std::ptr::null_mut(), 0), |m| {
            let (p, len) = m.into_raw();
            (p, len as u64)
        });
        dev.set_log_table(table);
        dev.set_log_size(size);
        // SAFETY: the old table was installed here, handed over with into_raw.
        drop(unsafe { Mapping::from_raw(old, old_size as usize) });
    }

    /// Replaces the inflight area (`VuDev.inflight_info`: fd, address, size) with `new` (or
    /// none), unmapping and closing the old one. The queues' pointers into it are set by the
    /// caller under the same guard (`with_queue`).
    pub fn replace_inflight_area(&mut self, new: Option<(Mapping, OwnedFd)>) {
        let dev = self.dev;
        let old = dev.inflight_info();
        let info = match new {
            Some((m, fd)) => {
                let (addr, len) = m.into_raw();
                VuDevInflightInfo { fd: fd.into_raw_fd(), addr: addr.cast(), size: len as u64 }
            }
            None => VuDevInflightInfo { fd: -1, addr: std::ptr::null_mut(), size: 0 },
        };
        dev.set_inflight_info(info);
        // SAFETY: the old area was installed here, handed over with into_raw.
        drop(unsafe { Mapping::from_raw(old.addr.cast(), old.size as usize) });
        close_fd(old.fd);
    }
}

impl MemRead<'_> {
    /// Runs `f` on queue `vq` under the read lock, as a queue operation does: the C API gives
    /// a queue to one thread at a time, which for control requests is the dispatch thread.
    pub fn with_queue<R>(
        &mut self,
        vq: Vq<'_>,
        f: impl FnOnce(&mut VuVirtq, &MemoryTable) -> R,
    ) -> R {
        // SAFETY: vq is one of this device's queues (`Dev::queue` made it); see above.
        f(unsafe { &mut *vq.raw }, &self.table)
    }
}

impl DeviceState {
    /// A new device's state; `None` when the process has `device_ext::SLOTS` devices.
    pub fn new() -> Option<Box<DeviceState>> {
        let slot = crate::device_ext::take_slot()?;
        Some(Box::new(DeviceState {
            c_regions: UnsafeCell::new([VuDevRegion::default(); VHOST_USER_MAX_RAM_SLOTS]),
            lock: MemoryGate::new(crate::device_ext::DeviceFlags::new(slot)),
        }))
    }

    #[inline(always)]
    fn flags(&self) -> &crate::device_ext::DeviceFlags {
        &self.lock.flags
    }

    /// The state only some devices need, allocated now if this one has none yet.
    fn ext(&self) -> &crate::device_ext::DeviceExt {
        self.flags().ext()
    }

    #[inline(always)]
    fn ext_if_any(&self) -> Option<&crate::device_ext::DeviceExt> {
        self.flags().ext_if_any()
    }

    /// The IOTLB when the device's guest addresses are IOVAs (see `crate::iommu`); the
    /// caller holds the memory lock.
    #[inline]
    fn iotlb_if_translating(&self, dev: Dev<'_>) -> Option<&Iotlb> {
        if crate::iommu::translating(dev) {
            // SAFETY: the caller holds the memory lock, under which only writers (holding
            // it for writing) change the IOTLB.
            Some(unsafe { &*self.ext().iotlb.get() })
        } else {
            None
        }
    }

    pub fn c_regions_ptr(&self) -> *mut VuDevRegion {
        self.c_regions.get().cast()
    }

    #[inline]
    pub fn read<'a>(&'a self, dev: Dev<'a>) -> MemRead<'a> {
        self.lock.enter_read();
        self.read_entered(dev)
    }

    /// The guard of a read lock just entered.
    #[inline(always)]
    fn read_entered<'a>(&'a self, dev: Dev<'a>) -> MemRead<'a> {
        // SAFETY: just entered; the guard leaves when dropped.
        MemRead { table: unsafe { self.table_entered(dev) }, state: self, dev }
    }

    /// The memory table.
    ///
    /// # Safety
    /// The caller is inside the memory lock (read or write) while it uses the table.
    #[inline(always)]
    unsafe fn table_entered<'a>(&'a self, dev: Dev<'a>) -> MemoryTable<'a> {
        // SAFETY: this function's contract.
        unsafe { self.regions_entered(dev) }.with_iotlb(self.iotlb_if_translating(dev))
    }

    /// `table_entered` without the IOTLB (`Dev::mem_entered`, the express lane's).
    ///
    /// # Safety
    /// As for `table_entered`.
    #[inline(always)]
    unsafe fn regions_entered<'a>(&'a self, dev: Dev<'a>) -> MemoryTable<'a> {
        // SAFETY: under the lock writers are excluded, so the array and count are stable;
        // MemoryTableMut keeps nregions <= 509.
        let regions = unsafe { &*self.c_regions.get() };
        MemoryTable::of_device(regions, dev.nregions() as usize)
    }

    /// Sends every queue call of the device to the general path (see `ffi::lane`).
    pub fn close_to_lane(&self) {
        self.lock.close_to_lane();
    }

    pub fn write<'a>(&'a self, dev: Dev<'a>) -> MemWrite<'a> {
        self.lock.enter_write();
        MemWrite { state: self, dev }
    }

    /// Unmaps every retired mapping (under the write lock).
    fn release_retired(&self) {
        if let Some(ext) = self.ext_if_any() {
            ext.retired.release();
        }
        self.lock.set_retired(false);
    }

    /// Unmaps the retired mappings if no queue has elements in use, when the write lock is
    /// free right now (a queue thread calls this after its operation: it must not wait here;
    /// whoever releases the lock next tries again).
    #[cold]
    #[inline(never)]
    fn release_retired_if_unused(&self, dev: Dev<'_>) {
        if self.lock.may_release_retired() && self.lock.try_enter_write() {
            // Under the write lock no queue operation runs, so every `inuse` is stable.
            if !elements_in_use(dev) {
                self.release_retired();
            }
            self.lock.leave_write();
        }
    }
}

/// The inverse of odd `x` modulo 2^(word bits) (Newton's iteration: each step doubles the good bits).
const fn inverse_mod_word(x: usize) -> usize {
    let mut inv = x; // right to 3 bits for any odd x
    let mut i = 0;
    while i < 5 {
        inv = inv.wrapping_mul(2usize.wrapping_sub(x.wrapping_mul(inv)));
        i += 1;
    }
    inv
}

/// A handle on a C `VuDev` that the library initialised, valid for `'a`: the C call that
/// handed us the pointer (`ffi::with_dev` gives the closure a `Dev` of a lifetime it cannot
/// name, so no handle, guard or view made from it outlives the call). Field access goes
/// through raw pointers, never long-lived references: C callbacks we invoke receive the same
/// pointer and may change the struct, and queue threads read it concurrently as they do in C.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Dev<'a> {
    raw: *mut VuDev,
    _call: PhantomData<&'a VuDev>,
}

macro_rules! field {
    ($get:ident, $set:ident, $f:ident, $t:ty) => {
        #[inline]
        pub fn $get(self) -> $t {
            // SAFETY: `raw` points to an initialised VuDev (checked in `Dev::from_raw`).
            unsafe { std::ptr::addr_of!((*self.raw).$f).read() }
        }
        #[inline]
        #[allow(dead_code)]
        pub fn $set(self, v: $t) {
            // SAFETY: as above.
            unsafe { std::ptr::addr_of_mut!((*self.raw).$f).write(v) }
        }
    };
}

// Raw pointer arguments below are stored into or passed through the C struct, never
// dereferenced; the device pointer itself was validated when the `Dev` was made.
#[allow(clippy::not_unsafe_ptr_arg_deref)]
impl<'a> Dev<'a> {
    /// # Safety
    /// `raw` must be NULL or point to a `VuDev` that is valid for reads and writes.
    /// Returns `None` unless `vu_init` set it up (its private state is attached).
    ///
    /// `regions` (the private state) is the mark: `vu_init` sets it after the queue array
    /// `vq`, `vu_deinit` clears it before freeing either, so a device with it has both.
    #[inline]
    pub unsafe fn from_raw(raw: *mut VuDev) -> Option<Dev<'a>> {
        if raw.is_null()
            // SAFETY: non-NULL, and the caller promises a valid VuDev.
            || unsafe { std::ptr::addr_of!((*raw).regions).read() }.is_null()
        {
            return None;
        }
        Some(Dev { raw, _call: PhantomData })
    }

    /// Wraps a pointer without checks, for `vu_init` before the private state exists.
    ///
    /// # Safety
    /// `raw` must point to a `VuDev` valid for reads and writes; `state()` must not be called
    /// before the private state is attached.
    pub unsafe fn new_unchecked(raw: *mut VuDev) -> Dev<'a> {
        Dev { raw, _call: PhantomData }
    }

    #[inline]
    pub fn raw(self) -> *mut VuDev {
        self.raw
    }

    /// The private state attached by `vu_init`.
    #[inline]
    fn state(self) -> &'a DeviceState {
        // SAFETY: `regions` points to the first field of a live, leaked `DeviceState` until
        // `vu_deinit` clears it; `from_raw` refused devices without it.
        unsafe { &*(self.regions().cast::<DeviceState>()) }
    }

    field!(sock, set_sock, sock, libc::c_int);
    field!(nregions, set_nregions, nregions, u32);
    field!(regions, set_regions, regions, *mut VuDevRegion);
    field!(vq_ptr, set_vq_ptr, vq, *mut VuVirtq);
    field!(inflight_info, set_inflight_info, inflight_info, VuDevInflightInfo);
    field!(log_call_fd, set_log_call_fd, log_call_fd, libc::c_int);
    field!(backend_fd, set_backend_fd, backend_fd, libc::c_int);
    field!(log_size, set_log_size, log_size, u64);
    field!(log_table, set_log_table, log_table, *mut u8);
    field!(features, set_features, features, u64);
    field!(protocol_features, set_protocol_features, protocol_features, u64);
    field!(broken, set_broken, broken, bool);
    field!(max_queues, set_max_queues, max_queues, u16);
    field!(read_msg, set_read_msg, read_msg, vu_read_msg_cb);
    field!(set_watch_cb, set_set_watch_cb, set_watch, vu_set_watch_cb);
    field!(remove_watch_cb, set_remove_watch_cb, remove_watch, vu_remove_watch_cb);
    field!(panic_cb, set_panic_cb, panic, vu_panic_cb);
    field!(iface_ptr, set_iface_ptr, iface, *const VuDevIface);
    field!(postcopy_ufd, set_postcopy_ufd, postcopy_ufd, libc::c_int);
    field!(postcopy_listening, set_postcopy_listening, postcopy_listening, bool);

    /// Read-locks the frontend's shared memory (see `DeviceState::read`).
    #[inline]
    pub fn mem(self) -> MemRead<'a> {
        self.state().read(self)
    }

    /// The memory lock itself, for the express lane (`ffi::lane`), which enters and leaves it
    /// without a guard so that its path makes no call.
    #[inline(always)]
    pub fn mem_gate(self) -> &'a crate::memory_gate::MemoryGate {
        &self.state().lock
    }

    /// The memory table for the express lane, inside the memory lock: guest addresses are
    /// guest physical ones, never IOVAs. The lane is closed to a device that acked
    /// VIRTIO_F_IOMMU_PLATFORM (`queue::express::lane_open` checks the feature before the
    /// lane translates anything), so the table does not ask whether the IOTLB applies.
    ///
    /// # Safety
    /// The caller entered the lock (`mem_gate`) and stays inside while it uses the table.
    #[inline(always)]
    pub unsafe fn mem_entered(self) -> MemoryTable<'a> {
        // SAFETY: this function's contract.
        unsafe { self.state().regions_entered(self) }
    }

    /// Unmaps the retired mappings if no element uses them and no writer is in (never waits).
    #[inline]
    pub fn release_retired_if_unused(self) {
        self.state().release_retired_if_unused(self)
    }

    /// Where the device's packed-queue tables live (see `queue::ids` for who may use them):
    /// `None` for a device that never needed its `DeviceExt`, which holds them.
    #[inline(always)]
    pub fn packed_queues(self) -> Option<*mut crate::queue::ids::PackedQueues> {
        self.state().ext_if_any().map(|e| e.packed.get())
    }

    /// As `packed_queues`, allocating the device's `DeviceExt` if it has none.
    pub fn packed_queues_or_new(self) -> *mut crate::queue::ids::PackedQueues {
        self.state().ext().packed.get()
    }

    /// Write-locks the frontend's shared memory.
    pub fn mem_mut(self) -> MemWrite<'a> {
        self.state().write(self)
    }

    /// The library's state beyond the C struct that every device has: status, SIGPIPE guard.
    #[inline(always)]
    pub fn flags(self) -> &'a crate::device_ext::DeviceFlags {
        self.state().flags()
    }

    /// The state only some devices need (device-state transfer, IOMMU), allocated now if this
    /// device has none yet: for what uses or configures those parts.
    #[inline]
    pub fn ext(self) -> &'a crate::device_ext::DeviceExt {
        self.state().ext()
    }

    /// The state only some devices need, if this one has it: for what only asks.
    #[inline(always)]
    pub fn ext_if_any(self) -> Option<&'a crate::device_ext::DeviceExt> {
        self.state().ext_if_any()
    }

    pub fn backend_mutex(self) -> *mut libc::pthread_mutex_t {
        // SAFETY: field address only.
        unsafe { std::ptr::addr_of_mut!((*self.raw).backend_mutex) }
    }

    /// The device callbacks (a copy: C may not change them under us mid-call).
    #[inline]
    pub fn iface(self) -> VuDevIface {
        let p = self.iface_ptr();
        if p.is_null() {
            VuDevIface::default()
        } else {
            // SAFETY: vu_init refused a NULL iface; C keeps it alive for the device's life.
            unsafe { p.read() }
        }
    }

    #[inline]
    pub fn has_feature(self, bit: u32) -> bool {
        bit < 64 && self.features() & (1u64 << bit) != 0
    }

    #[inline]
    pub fn has_protocol_feature(self, f: VhostUserProtocolFeature) -> bool {
        self.protocol_features() & (1u64 << (f as u32)) != 0
    }

    /// Pointer to queue `idx`, or `None` when out of range.
    #[inline]
    pub fn vq(self, idx: usize) -> Option<*mut VuVirtq> {
        (idx < usize::from(self.max_queues())).then(|| self.vq_ptr().wrapping_add(idx))
    }

    /// Queue `idx`, or `None` when out of range.
    #[inline]
    pub fn queue(self, idx: usize) -> Option<Vq<'a>> {
        self.vq(idx).map(|raw| Vq { dev: self, idx, raw })
    }

    /// Every queue of the device.
    pub fn queues(self) -> impl Iterator<Item = Vq<'a>> {
        (0..usize::from(self.max_queues())).filter_map(move |i| self.queue(i))
    }

    /// The index of `vq` in this device's queue array, if it is one of ours.
    #[inline]
    pub fn queue_index(self, vq: *const VuVirtq) -> Option<usize> {
        // SIZE = 2^K * ODD. Times the inverse of ODD (mod the word), a multiple of SIZE
        // becomes 2^K times its quotient, which the rotation by K turns into the quotient;
        // any other offset comes out above usize::MAX / SIZE, beyond every queue count (exact
        // division and the divisibility test in one multiply and one rotate).
        const SIZE: usize = std::mem::size_of::<VuVirtq>();
        const K: u32 = SIZE.trailing_zeros();
        const INV: usize = inverse_mod_word(SIZE >> K);
        const _: () = assert!(u16::MAX as usize <= usize::MAX / SIZE);
        let off = (vq as usize).wrapping_sub(self.vq_ptr() as usize);
        let idx = off.wrapping_mul(INV).rotate_right(K);
        (idx < usize::from(self.max_queues())).then_some(idx)
    }

    /// The device's `get_features` callback (0 without one).
    pub fn device_features(self) -> u64 {
        match self.iface().get_features {
            // SAFETY: the device's C callback, with its device.
            Some(f) => unsafe { f(self.raw) },
            None => 0,
        }
    }

    /// The device's `get_protocol_features` callback (0 without one).
    pub fn device_protocol_features(self) -> u64 {
        match self.iface().get_protocol_features {
            // SAFETY: the device's C callback, with its device.
            Some(f) => unsafe { f(self.raw) },
            None => 0,
        }
    }

    /// Tells the device the features the frontend acked (`set_features`).
    pub fn device_set_features(self, features: u64) {
        if let Some(f) = self.iface().set_features {
            // SAFETY: the device's C callback, with its device.
            unsafe { f(self.raw, features) };
        }
    }

    /// Tells the device the protocol features the frontend acked (`set_protocol_features`).
    pub fn device_set_protocol_features(self, features: u64) {
        if let Some(f) = self.iface().set_protocol_features {
            // SAFETY: the device's C callback, with its device.
            unsafe { f(self.raw, features) };
        }
    }

    /// Offers the message to the device's `process_msg` callback first: `Some(reply)` when it
    /// handled it (`reply`: send `vmsg` back), `None` when the library is to handle it.
    pub fn device_process_msg(self, vmsg: &mut VhostUserMsg) -> Option<bool> {
        let f = self.iface().process_msg?;
        let mut do_reply: libc::c_int = 0;
        // SAFETY: the device's C callback, with our message; it may take the message's fds.
        (unsafe { f(self.raw, vmsg, &mut do_reply) } != 0).then_some(do_reply != 0)
    }

    /// The device's `get_config`: fills `buf`; `false` on failure or without the callback.
    pub fn device_get_config(self, buf: &mut [u8]) -> bool {
        match self.iface().get_config {
            // SAFETY: the device's C callback writes at most `buf.len()` bytes into `buf`.
            Some(f) => unsafe { f(self.raw, buf.as_mut_ptr(), buf.len() as u32) == 0 },
            None => false,
        }
    }

    /// The device's `set_config` (`true` without the callback, as the original).
    pub fn device_set_config(self, data: &[u8], offset: u32, flags: u32) -> bool {
        match self.iface().set_config {
            // SAFETY: the device's C callback reads `data.len()` bytes of `data`.
            Some(f) => unsafe { f(self.raw, data.as_ptr(), offset, data.len() as u32, flags) == 0 },
            None => true,
        }
    }

    /// The device's `get_shared_object`: the dma-buf fd of the object, -1 without one.
    pub fn device_shared_object(self, uuid: &[u8; UUID_LEN]) -> libc::c_int {
        match self.iface().get_shared_object {
            // SAFETY: the device's C callback reads the 16-byte UUID.
            Some(f) => unsafe { f(self.raw, uuid.as_ptr()) },
            None => -1,
        }
    }

    /// The device's `queue_is_processed_in_order` callback (false without one).
    pub fn queue_is_processed_in_order(self, idx: usize) -> bool {
        match self.iface().queue_is_processed_in_order {
            // SAFETY: the device's C callback, with its device and a queue index.
            Some(f) => unsafe { f(self.raw, idx as libc::c_int) },
            None => false,
        }
    }

    /// Reads one message with the device's reader (ours or the caller's); false on failure.
    pub fn read_message(self, vmsg: &mut VhostUserMsg) -> bool {
        match self.read_msg() {
            // SAFETY: the reader given to vu_init, with our device, socket and message.
            Some(read) => unsafe { read(self.raw, self.sock(), vmsg) },
            None => false,
        }
    }

    /// Marks the device broken and tells the C code why, as the original's `vu_panic` does.
    pub fn panic(self, msg: &str) {
        log::error!("vhost-user device panic: {msg}");
        self.set_broken(true);
        let text = CString::new(msg.replace('\0', " ")).unwrap_or_default();
        if let Some(cb) = self.panic_cb() {
            // SAFETY: a C callback given to vu_init, called with our device and a valid string.
            unsafe { cb(self.raw, text.as_ptr()) };
        }
    }

    pub fn set_watch(
        self,
        fd: libc::c_int,
        condition: libc::c_int,
        cb: vu_watch_cb,
        data: *mut libc::c_void,
    ) {
        if let Some(f) = self.set_watch_cb() {
            // SAFETY: C callback from vu_init.
            unsafe { f(self.raw, fd, condition, cb, data) };
        }
    }

    pub fn remove_watch(self, fd: libc::c_int) {
        if let Some(f) = self.remove_watch_cb() {
            // SAFETY: C callback from vu_init.
            unsafe { f(self.raw, fd) };
        }
    }
}

/// A handle on one of a device's queues (a C `VuVirtq`), made by `Dev::queue` (so in range).
/// Like `Dev`, it reaches the fields through raw pointers: the C callbacks that the compound
/// operations below invoke get the device and may read the queue. The ring and inflight
/// pointers are changed only through `MemWrite`, which holds the memory write lock.
#[derive(Clone, Copy)]
pub struct Vq<'a> {
    dev: Dev<'a>,
    idx: usize,
    raw: *mut VuVirtq,
}

macro_rules! vq_field {
    ($get:ident, $set:ident, $f:ident, $t:ty) => {
        #[inline]
        #[allow(dead_code)]
        pub fn $get(self) -> $t {
            // SAFETY: `raw` is one of an initialised device's queues (see `Dev::queue`).
            unsafe { std::ptr::addr_of!((*self.raw).$f).read() }
        }
        #[inline]
        #[allow(dead_code)]
        pub fn $set(self, v: $t) {
            // SAFETY: as above.
            unsafe { std::ptr::addr_of_mut!((*self.raw).$f).write(v) }
        }
    };
}

impl Vq<'_> {
    #[inline]
    pub fn index(self) -> usize {
        self.idx
    }

    vq_field!(enable, set_enable, enable, u32);
    vq_field!(started, set_started_field, started, bool);
    vq_field!(last_avail_idx, set_last_avail_idx, last_avail_idx, u16);
    vq_field!(shadow_avail_idx, set_shadow_avail_idx, shadow_avail_idx, u16);
    vq_field!(handler, set_handler, handler, vu_queue_handler_cb);
    vq_field!(kick_fd, set_kick_fd, kick_fd, libc::c_int);
    vq_field!(call_fd, set_call_fd, call_fd, libc::c_int);
    vq_field!(err_fd, set_err_fd, err_fd, libc::c_int);
    vq_field!(inuse, set_inuse, inuse, u32);

    /// Sets `last_avail_idx` and `shadow_avail_idx` (where the next pop starts).
    pub fn set_avail_base(self, base: u16) {
        self.set_last_avail_idx(base);
        self.set_shadow_avail_idx(base);
    }

    /// Replaces the kick fd (`None`: no kick fd): the old one is unwatched and closed.
    pub fn replace_kick(self, fd: Option<OwnedFd>) {
        let old = self.kick_fd();
        if old != -1 {
            self.dev.remove_watch(old);
            close_fd(old);
        }
        self.set_kick_fd(fd.map_or(-1, IntoRawFd::into_raw_fd));
    }

    /// Watches the kick fd in the caller's event loop if there is one and a handler.
    pub fn watch_kick(self) {
        let kick = self.kick_fd();
        if kick != -1 && self.handler().is_some() {
            self.dev.set_watch(
                kick,
                VuWatchCondtion::VU_WATCH_IN as libc::c_int,
                Some(crate::ffi::kick_watch_cb),
                self.idx as *mut libc::c_void,
            );
        }
    }

    /// Sets `started` and tells the device (`queue_set_started`).
    pub fn set_started(self, started: bool) {
        self.set_started_field(started);
        if let Some(f) = self.dev.iface().queue_set_started {
            // SAFETY: C callback from the device's iface, with its device and queue index.
            unsafe { f(self.dev.raw, self.idx as libc::c_int, started) };
        }
    }

    /// Runs the queue's handler, if it has one.
    pub fn run_handler(self) {
        if let Some(handler) = self.handler() {
            // SAFETY: the device's C callback, with its own device and queue index.
            unsafe { handler(self.dev.raw, self.idx as libc::c_int) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_index_by_exact_division() {
        const SIZE: usize = std::mem::size_of::<VuVirtq>();
        let odd = SIZE >> SIZE.trailing_zeros();
        assert_eq!(odd.wrapping_mul(inverse_mod_word(odd)), 1);
        // SAFETY: all-zero is a valid VuDev; only `vq` and `max_queues` are read below.
        let mut dev: VuDev = unsafe { std::mem::zeroed() };
        let base = 0x10_0000usize;
        dev.vq = base as *mut VuVirtq;
        dev.max_queues = 4;
        // SAFETY: a valid VuDev on the stack; queue_index only reads fields.
        let d = unsafe { Dev::new_unchecked(&mut dev) };
        for off in 0..6 * SIZE {
            let want = (off % SIZE == 0 && off / SIZE < 4).then_some(off / SIZE);
            assert_eq!(d.queue_index((base + off) as *const VuVirtq), want, "offset {off}");
        }
        assert_eq!(d.queue_index((base - SIZE) as *const VuVirtq), None);
        assert_eq!(d.queue_index(std::ptr::null()), None);
        // The most queues a device can have, every 8-byte step over them and past the end,
        // and offsets wrapped below the array.
        dev.max_queues = u16::MAX;
        // SAFETY: as above.
        let d = unsafe { Dev::new_unchecked(&mut dev) };
        let n = usize::from(u16::MAX);
        for off in
            (0..(n + 2) * SIZE).step_by(4).chain((1..1 << 16).map(|k| 0usize.wrapping_sub(k)))
        {
            let want = (off % SIZE == 0 && off / SIZE < n).then_some(off / SIZE);
            let vq = base.wrapping_add(off) as *const VuVirtq;
            assert_eq!(d.queue_index(vq), want, "offset {off}");
        }
    }
}
