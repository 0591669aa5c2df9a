//! The library's private state behind a C `VuDev`, and checked access to the C struct.
//!
//! C code embeds `VuDev` by value and reads its fields, so it can hold no Rust state. The
//! C-visible fields are the state (regions, dirty log, inflight area: nothing is kept twice);
//! the one thing the library adds is a lock, placed after the `regions` array in the same
//! allocation the original makes for that array: `dev->regions` leads back to it.

use std::cell::UnsafeCell;
use std::ffi::CString;
use std::ops::Deref;

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::abi::*;
use crate::memory::{MemoryTable, MemoryTableMut};

/// What `VuDev.regions` points to.
#[repr(C)]
pub struct DeviceState {
    /// Must stay first: `VuDev.regions` points here (see the module docs).
    c_regions: UnsafeCell<[VuDevRegion; VHOST_USER_MAX_RAM_SLOTS]>,
    /// Guards everything the frontend's shared memory consists of: the regions (and the ring
    /// pointers into them), the dirty log and the inflight area. Queue operations hold it for
    /// reading while they touch that memory; the control plane writes to change any of it.
    lock: RwLock<()>,
    /// Private state of packed queues (`queue::ids`), allocated only when a frontend acks
    /// packed rings; one pointer, so a split-only device costs what it did.
    packed: UnsafeCell<Option<Box<crate::queue::ids::PackedQueues>>>,
}

// SAFETY: `c_regions` is written only under the write lock and read under the read lock.
unsafe impl Sync for DeviceState {}

/// Shared memory, read-locked: guest memory stays mapped while this lives.
pub struct MemRead<'a> {
    _guard: RwLockReadGuard<'a, ()>,
    table: MemoryTable<'a>,
}

impl<'a> Deref for MemRead<'a> {
    type Target = MemoryTable<'a>;
    fn deref(&self) -> &MemoryTable<'a> {
        &self.table
    }
}

/// Shared memory, write-locked: no queue operation runs while this lives.
pub struct MemWrite<'a> {
    _guard: RwLockWriteGuard<'a, ()>,
    state: &'a DeviceState,
    dev: Dev,
}

impl MemWrite<'_> {
    pub fn table(&self) -> MemoryTable<'_> {
        // SAFETY: we hold the write lock; nregions <= 509 (only MemoryTableMut changes it).
        let regions = unsafe { &*self.state.c_regions.get() };
        MemoryTable::new(&regions[..(self.dev.nregions() as usize).min(VHOST_USER_MAX_RAM_SLOTS)])
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

impl DeviceState {
    pub fn new() -> Box<DeviceState> {
        Box::new(DeviceState {
            c_regions: UnsafeCell::new([VuDevRegion::default(); VHOST_USER_MAX_RAM_SLOTS]),
            lock: RwLock::new(()),
            packed: UnsafeCell::new(None),
        })
    }

    pub fn c_regions_ptr(&self) -> *mut VuDevRegion {
        self.c_regions.get().cast()
    }

    #[inline]
    pub fn read(&self, dev: Dev) -> MemRead<'_> {
        let guard = self.lock.read();
        // SAFETY: under the read lock writers are excluded, so the array and count are stable;
        // MemoryTableMut keeps nregions <= 509.
        let regions = unsafe { &*self.c_regions.get() };
        let table =
            MemoryTable::new(&regions[..(dev.nregions() as usize).min(VHOST_USER_MAX_RAM_SLOTS)]);
        MemRead { _guard: guard, table }
    }

    pub fn write(&self, dev: Dev) -> MemWrite<'_> {
        MemWrite { _guard: self.lock.write(), state: self, dev }
    }
}

/// A handle on a C `VuDev` that the library initialised. Field access goes through raw
/// pointers, never long-lived references: C callbacks we invoke receive the same pointer and
/// may change the struct, and queue threads read it concurrently as they do in C.
#[derive(Clone, Copy)]
pub struct Dev {
    raw: *mut VuDev,
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
impl Dev {
    /// # Safety
    /// `raw` must be NULL or point to a `VuDev` that is valid for reads and writes.
    /// Returns `None` unless `vu_init` set it up (its private state is attached).
    #[inline]
    pub unsafe fn from_raw(raw: *mut VuDev) -> Option<Dev> {
        if raw.is_null()
            || std::ptr::addr_of!((*raw).regions).read().is_null()
            || std::ptr::addr_of!((*raw).vq).read().is_null()
        {
            return None;
        }
        Some(Dev { raw })
    }

    /// Wraps a pointer without checks, for `vu_init` before the private state exists.
    ///
    /// # Safety
    /// `raw` must point to a `VuDev` valid for reads and writes; `state()` must not be called
    /// before the private state is attached.
    pub unsafe fn new_unchecked(raw: *mut VuDev) -> Dev {
        Dev { raw }
    }

    #[inline]
    pub fn raw(self) -> *mut VuDev {
        self.raw
    }

    /// The private state attached by `vu_init`.
    #[inline]
    fn state<'a>(self) -> &'a DeviceState {
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
    pub fn mem<'a>(self) -> MemRead<'a> {
        self.state().read(self)
    }

    /// Where the device's packed-queue tables live (see `queue::ids` for who may use them).
    #[inline]
    pub fn packed_queues(self) -> *mut Option<Box<crate::queue::ids::PackedQueues>> {
        self.state().packed.get()
    }

    /// Write-locks the frontend's shared memory.
    pub fn mem_mut<'a>(self) -> MemWrite<'a> {
        self.state().write(self)
    }

    pub fn backend_mutex(self) -> *mut libc::pthread_mutex_t {
        // SAFETY: field address only.
        unsafe { std::ptr::addr_of_mut!((*self.raw).backend_mutex) }
    }

    /// The device callbacks (a copy: C may not change them under us mid-call).
    #[inline]
    pub fn iface(self) -> VuDevIface {
        let p = self.iface_ptr();
        // SAFETY: vu_init refused a NULL iface; C keeps it alive for the device's life.
        if p.is_null() {
            VuDevIface::default()
        } else {
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

    /// The index of `vq` in this device's queue array, if it is one of ours.
    #[inline]
    pub fn queue_index(self, vq: *const VuVirtq) -> Option<usize> {
        const SIZE: usize = std::mem::size_of::<VuVirtq>();
        let off = (vq as usize).wrapping_sub(self.vq_ptr() as usize);
        // A constant divisor: the compiler multiplies instead of dividing.
        let idx = off / SIZE;
        (idx < usize::from(self.max_queues()) && idx * SIZE == off).then_some(idx)
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

    pub fn queue_set_started(self, idx: usize, started: bool) {
        if let Some(f) = self.iface().queue_set_started {
            // SAFETY: C callback from the device's iface.
            unsafe { f(self.raw, idx as libc::c_int, started) };
        }
    }
}
