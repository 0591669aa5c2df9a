//! The library's private state behind a C `VuDev`, and checked access to the C struct.
//!
//! C code embeds `VuDev` by value and reads its fields, so it can hold no Rust state. Ours
//! lives in one allocation whose first field is the C-visible `regions` array: `dev->regions`
//! points at it, and that pointer leads back to the whole `DeviceState`.

use std::cell::UnsafeCell;
use std::ffi::CString;
use std::sync::atomic::{AtomicU16, Ordering};

use parking_lot::RwLock;

use crate::abi::*;
use crate::dirty_log::DirtyLog;
use crate::memory::MemoryTable;

/// Everything the library keeps per device besides the C-visible fields.
#[repr(C)]
pub struct DeviceState {
    /// Must stay first: `VuDev.regions` points here (see the module docs).
    c_regions: UnsafeCell<[VuDevRegion; VHOST_USER_MAX_RAM_SLOTS]>,
    /// Guest memory. Queue operations hold the read lock while they touch guest memory; the
    /// control plane takes the write lock to change the table.
    pub mem: RwLock<MemoryTable>,
    /// The dirty log, when the frontend has set one.
    pub log: RwLock<Option<DirtyLog>>,
    /// Per queue: how many descriptor states its inflight area holds (0 = none).
    pub inflight_capacity: Box<[AtomicU16]>,
    /// The inflight area we own (mapped by GET/SET_INFLIGHT_FD).
    pub inflight_mapping: parking_lot::Mutex<Option<crate::mmap::Mapping>>,
}

// SAFETY: `c_regions` is written only by the control plane while it holds `mem`'s write lock;
// everything else is behind locks or atomics.
unsafe impl Sync for DeviceState {}

impl DeviceState {
    pub fn new(max_queues: u16) -> Box<DeviceState> {
        Box::new(DeviceState {
            c_regions: UnsafeCell::new([VuDevRegion::default(); VHOST_USER_MAX_RAM_SLOTS]),
            mem: RwLock::new(MemoryTable::default()),
            log: RwLock::new(None),
            inflight_capacity: (0..max_queues).map(|_| AtomicU16::new(0)).collect(),
            inflight_mapping: parking_lot::Mutex::new(None),
        })
    }

    pub fn c_regions_ptr(&self) -> *mut VuDevRegion {
        self.c_regions.get().cast()
    }

    /// Mirrors `table` into the C-visible array and count. The caller holds `mem`'s write lock
    /// (it passes the guarded table), so no reader sees a half-written array.
    pub fn export_regions(&self, dev: Dev, table: &MemoryTable) {
        // SAFETY: only the control plane writes the array, under the write lock it holds.
        let n = table.export(unsafe { &mut *self.c_regions.get() });
        dev.set_nregions(n);
    }

    pub fn inflight_capacity(&self, qidx: usize) -> u16 {
        self.inflight_capacity.get(qidx).map_or(0, |c| c.load(Ordering::Acquire))
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
        if raw.is_null() || std::ptr::addr_of!((*raw).regions).read().is_null() || std::ptr::addr_of!((*raw).vq).read().is_null() {
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
    pub fn state<'a>(self) -> &'a DeviceState {
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

    pub fn backend_mutex(self) -> *mut libc::pthread_mutex_t {
        // SAFETY: field address only.
        unsafe { std::ptr::addr_of_mut!((*self.raw).backend_mutex) }
    }

    /// The device callbacks (a copy: C may not change them under us mid-call).
    #[inline]
    pub fn iface(self) -> VuDevIface {
        let p = self.iface_ptr();
        // SAFETY: vu_init refused a NULL iface; C keeps it alive for the device's life.
        if p.is_null() { VuDevIface::default() } else { unsafe { p.read() } }
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
        let base = self.vq_ptr() as usize;
        let off = (vq as usize).checked_sub(base)?;
        let size = std::mem::size_of::<VuVirtq>();
        (off % size == 0 && off / size < usize::from(self.max_queues())).then(|| off / size)
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

    pub fn set_watch(self, fd: libc::c_int, condition: libc::c_int, cb: vu_watch_cb, data: *mut libc::c_void) {
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

/// Closes an fd we own, ignoring -1.
pub fn close_fd(fd: libc::c_int) {
    if fd >= 0 {
        // SAFETY: the caller owns fd and forgets it.
        unsafe { libc::close(fd) };
    }
}
