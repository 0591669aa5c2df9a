// SPDX-License-Identifier: GPL-2.0-or-later
//! A real device in this process: a `VuDev` set up with `vu_init` and C-ABI callbacks written in
//! Rust, as a C backend would. The harness is its event loop (`set_watch`/`remove_watch` fill a
//! table that [`Device::run_ready_watches`] polls) and its queue handler serves every kicked
//! queue: pop everything, check each element against the memory table, write to its device-
//! writable buffers, push, notify. It registers device-state save/load handlers, so the
//! library offers VHOST_USER_PROTOCOL_F_DEVICE_STATE.

use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use libc::{c_char, c_int, c_void};

use crate::capi::*;

/// What the callbacks record and how the device behaves.
pub struct Ctx {
    pub panics: AtomicU32,
    pub last_panic: Mutex<String>,
    watches: Mutex<Vec<Watch>>,
    /// The queue handler pops and pushes everything (off: kicks only count).
    pub serve_kicks: AtomicBool,
    /// The answer of `queue_is_processed_in_order`.
    pub in_order: AtomicBool,
    pub kicks_served: AtomicU32,
    config: Mutex<[u8; 256]>,
    /// Device states saved and loaded (SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE).
    pub states_saved: AtomicU32,
    pub states_loaded: AtomicU32,
}

#[derive(Clone, Copy)]
struct Watch {
    fd: c_int,
    cb: vu_watch_cb,
    data: *mut c_void,
}

/// `dev` first: the library's callbacks get `*mut VuDev`, which is also `*mut Device`
/// (the way C backends embed `VuDev` at the start of their own struct).
#[repr(C)]
pub struct Device {
    dev: VuDev,
    iface: VuDevIface,
    pub ctx: Ctx,
    pub max_queues: u16,
}

// SAFETY: the C API lets one thread per queue call `vu_queue_*` while another dispatches;
// the Rust-side state (Ctx) is atomics and mutexes.
unsafe impl Send for Device {}
unsafe impl Sync for Device {}

/// Element allocation size passed to `vu_queue_pop` (the C backends' usual sizeof(element)).
pub const ELEM_SIZE: usize = std::mem::size_of::<VuVirtqElement>();

/// The largest device state a load accepts (a frontend memfd can be larger).
pub const MAX_STATE: usize = 256 << 10;
/// The largest state the save handler makes (more than a pipe holds: the transfer thread
/// then waits for a reader).
const MAX_SAVED: usize = 1 << 20;

/// VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD | INBAND_NOTIFICATIONS | SHARED_OBJECT: what a C
/// device adds to the library's own protocol features when it supports them.
const DEVICE_PROTOCOL_FEATURES: u64 = 1 << 12 | 1 << 14 | 1 << 18;

fn ctx<'a>(dev: *mut VuDev) -> &'a Device {
    // SAFETY: every VuDev the library calls us with is the first field of a live Device.
    unsafe { &*(dev as *const Device) }
}

unsafe extern "C" fn panic_cb(dev: *mut VuDev, err: *const c_char) {
    let d = ctx(dev);
    d.ctx.panics.fetch_add(1, Ordering::Relaxed);
    // SAFETY: the library passes a NUL-terminated message.
    let msg = unsafe { std::ffi::CStr::from_ptr(err) }.to_string_lossy();
    if std::env::var_os("VUFUZZ_VERBOSE").is_some() {
        eprintln!("vhost-user panic: {msg}");
    }
    let mut last = d.ctx.last_panic.lock().unwrap();
    last.clear();
    last.extend(msg.chars().take(200));
}

unsafe extern "C" fn set_watch_cb(
    dev: *mut VuDev,
    fd: c_int,
    _condition: c_int,
    cb: vu_watch_cb,
    data: *mut c_void,
) {
    let mut w = ctx(dev).ctx.watches.lock().unwrap();
    w.retain(|x| x.fd != fd);
    w.push(Watch { fd, cb, data });
}

unsafe extern "C" fn remove_watch_cb(dev: *mut VuDev, fd: c_int) {
    ctx(dev).ctx.watches.lock().unwrap().retain(|x| x.fd != fd);
}

unsafe extern "C" fn process_msg_cb(
    _dev: *mut VuDev,
    vmsg: *mut VhostUserMsg,
    do_reply: *mut c_int,
) -> c_int {
    // VHOST_USER_NONE (also what a closed connection reads as) makes the library exit the
    // process, as the original does; a device that outlives its frontend intercepts it.
    // A handled message's fds belong to the callback: close them, as a C device must.
    // SAFETY: the library passes its message and reply flag.
    unsafe {
        if (*vmsg).request == 0 {
            let n = usize::try_from((*vmsg).fd_num).unwrap_or(0).min(8);
            let fds = (*vmsg).fds;
            for &fd in &fds[..n] {
                libc::close(fd);
            }
            (*vmsg).fd_num = 0;
            *do_reply = 0;
            return 1;
        }
    }
    0
}

unsafe extern "C" fn get_protocol_features_cb(_dev: *mut VuDev) -> u64 {
    DEVICE_PROTOCOL_FEATURES
}

unsafe extern "C" fn queue_set_started_cb(dev: *mut VuDev, qidx: c_int, started: bool) {
    // SAFETY: the library's device and one of its queue indexes.
    unsafe {
        let vq = vu_get_queue(dev, qidx);
        vu_set_queue_handler(dev, vq, if started { Some(queue_handler) } else { None });
    }
}

unsafe extern "C" fn in_order_cb(dev: *mut VuDev, _qidx: c_int) -> bool {
    ctx(dev).ctx.in_order.load(Ordering::Relaxed)
}

unsafe extern "C" fn get_config_cb(dev: *mut VuDev, config: *mut u8, len: u32) -> c_int {
    let c = ctx(dev).ctx.config.lock().unwrap();
    let n = (len as usize).min(c.len());
    // SAFETY: the library passes a buffer of `len` bytes.
    unsafe { std::ptr::copy_nonoverlapping(c.as_ptr(), config, n) };
    0
}

unsafe extern "C" fn set_config_cb(
    dev: *mut VuDev,
    data: *const u8,
    offset: u32,
    size: u32,
    _flags: u32,
) -> c_int {
    let mut c = ctx(dev).ctx.config.lock().unwrap();
    let (off, n) = (offset as usize, size as usize);
    if off.checked_add(n).is_none_or(|e| e > c.len()) {
        return -1;
    }
    // SAFETY: the library passes `size` bytes of config data.
    unsafe { std::ptr::copy_nonoverlapping(data, c[off..].as_mut_ptr(), n) };
    0
}

/// Saves the device state: as many bytes as config bytes 0-3 say (little endian, at most
/// 1 MiB), so a frontend's SET_CONFIG chooses the size; config byte 4 = 0xff makes it fail.
unsafe extern "C" fn save_state_cb(
    dev: *mut VuDev,
    _opaque: *mut c_void,
    data: *mut *mut u8,
    size: *mut usize,
) -> bool {
    let d = ctx(dev);
    let c = *d.ctx.config.lock().unwrap();
    if c[4] == 0xff {
        return false;
    }
    let n = (u32::from_le_bytes([c[0], c[1], c[2], c[3]]) as usize).min(MAX_SAVED);
    d.ctx.states_saved.fetch_add(1, Ordering::Relaxed);
    if std::env::var_os("VUFUZZ_VERBOSE").is_some() {
        eprintln!("device state saved: {n} bytes");
    }
    // SAFETY: the library takes the buffer and frees it with free(); NULL is allowed for 0.
    unsafe {
        if n == 0 {
            *data = std::ptr::null_mut();
            *size = 0;
            return true;
        }
        let p = libc::malloc(n) as *mut u8;
        if p.is_null() {
            return false;
        }
        for k in 0..n {
            p.add(k).write(c[k % c.len()]);
        }
        *data = p;
        *size = n;
    }
    true
}

/// Loads a device state: reads every byte (what ASan checks), refuses one that starts with
/// 0xff.
unsafe extern "C" fn load_state_cb(
    dev: *mut VuDev,
    _opaque: *mut c_void,
    data: *const u8,
    size: usize,
) -> bool {
    assert!(size <= MAX_STATE, "load handler given {size} bytes, more than registered");
    if std::env::var_os("VUFUZZ_VERBOSE").is_some() {
        eprintln!("device state loaded: {size} bytes");
    }
    if size == 0 {
        ctx(dev).ctx.states_loaded.fetch_add(1, Ordering::Relaxed);
        return true;
    }
    // SAFETY: the library passes `size` readable bytes.
    let bytes = unsafe { std::slice::from_raw_parts(data, size) };
    let sum = bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b));
    std::hint::black_box(sum);
    ctx(dev).ctx.states_loaded.fetch_add(1, Ordering::Relaxed);
    bytes[0] != 0xff
}

/// The queue handler: serve everything that is available, as a real device would.
unsafe extern "C" fn queue_handler(dev: *mut VuDev, qidx: c_int) {
    let d = ctx(dev);
    d.ctx.kicks_served.fetch_add(1, Ordering::Relaxed);
    if d.ctx.serve_kicks.load(Ordering::Relaxed) {
        d.serve_queue(qidx as usize);
    }
}

impl Device {
    /// `vu_init` on `sock` (which the device then owns). None if `vu_init` refuses.
    pub fn new(sock: RawFd, max_queues: u16) -> Option<Box<Device>> {
        let mut d = Box::new(Device {
            // SAFETY: all-zero is a valid VuDev (integers, pointers, Option<fn>, a mutex
            // that vu_init initialises); vu_init overwrites it anyway.
            dev: unsafe { std::mem::zeroed() },
            iface: VuDevIface {
                get_protocol_features: Some(get_protocol_features_cb),
                process_msg: Some(process_msg_cb),
                queue_set_started: Some(queue_set_started_cb),
                queue_is_processed_in_order: Some(in_order_cb),
                get_config: Some(get_config_cb),
                set_config: Some(set_config_cb),
                ..VuDevIface::default()
            },
            ctx: Ctx {
                panics: AtomicU32::new(0),
                last_panic: Mutex::new(String::new()),
                watches: Mutex::new(Vec::new()),
                serve_kicks: AtomicBool::new(true),
                in_order: AtomicBool::new(false),
                kicks_served: AtomicU32::new(0),
                config: Mutex::new([0; 256]),
                states_saved: AtomicU32::new(0),
                states_loaded: AtomicU32::new(0),
            },
            max_queues,
        });
        let iface: *const VuDevIface = &d.iface;
        // SAFETY: a VuDev-sized struct we own, valid callbacks, an iface that lives as long.
        let ok = unsafe {
            vu_init(
                &mut d.dev,
                max_queues,
                sock,
                Some(panic_cb),
                None,
                Some(set_watch_cb),
                Some(remove_watch_cb),
                iface,
            )
        };
        if ok {
            // SAFETY: our initialised device; handlers that live as long as the process.
            let registered = unsafe {
                vu_set_device_state_handlers(
                    &mut d.dev,
                    Some(save_state_cb),
                    Some(load_state_cb),
                    MAX_STATE,
                    std::ptr::null_mut(),
                )
            };
            assert!(registered, "vu_set_device_state_handlers refused");
            Some(d)
        } else {
            // SAFETY: vu_init refused; the socket is still ours.
            unsafe { libc::close(sock) };
            None
        }
    }

    pub fn raw(&self) -> *mut VuDev {
        &self.dev as *const VuDev as *mut VuDev
    }

    pub fn panics(&self) -> u32 {
        self.ctx.panics.load(Ordering::Relaxed)
    }

    pub fn broken(&self) -> bool {
        // SAFETY: a C-visible field of our initialised device.
        unsafe { std::ptr::addr_of!((*self.raw()).broken).read_volatile() }
    }

    pub fn queue(&self, i: usize) -> *mut VuVirtq {
        // SAFETY: our device; out-of-range indexes give NULL.
        unsafe { vu_get_queue(self.raw(), i as c_int) }
    }

    pub fn dispatch(&self) -> bool {
        // SAFETY: our initialised device.
        unsafe { vu_dispatch(self.raw()) }
    }

    /// One event-loop iteration: runs the callback of every watched fd that is readable.
    pub fn run_ready_watches(&self) {
        let snapshot: Vec<Watch> = self.ctx.watches.lock().unwrap().clone();
        for w in snapshot {
            let still = self.ctx.watches.lock().unwrap().iter().any(|x| x.fd == w.fd);
            if !still {
                continue;
            }
            let mut pfd = libc::pollfd { fd: w.fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one pollfd, no wait.
            let n = unsafe { libc::poll(&mut pfd, 1, 0) };
            if n > 0 && pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                if let Some(cb) = w.cb {
                    // SAFETY: the callback and data the library registered for this device.
                    unsafe { cb(self.raw(), libc::POLLIN as c_int, w.data) };
                }
            }
        }
    }

    /// The memory table as the C struct shows it.
    pub fn regions(&self) -> Vec<VuDevRegion> {
        // SAFETY: the C-visible table of our device (read on the thread that changes it, or
        // by queue threads while the dispatch thread may replace it: then only as a copy).
        unsafe {
            let n = (*self.raw()).nregions as usize;
            let r = (*self.raw()).regions;
            if r.is_null() {
                return Vec::new();
            }
            (0..n.min(vhost_user::abi::VHOST_USER_MAX_RAM_SLOTS)).map(|i| *r.add(i)).collect()
        }
    }

    /// Checks a popped element: at most 1024 buffers, each non-empty and wholly inside one
    /// region of the memory table (what the library promises); touches each buffer's ends.
    ///
    /// # Safety
    /// `elem` is an element `vu_queue_pop` returned for this device.
    pub unsafe fn check_element(&self, elem: *const VuVirtqElement, regions: &[VuDevRegion]) {
        // SAFETY: per the contract.
        let e = unsafe { &*elem };
        assert!(e.out_num + e.in_num <= 1024, "element with {} buffers", e.out_num + e.in_num);
        for (sg, n) in [(e.out_sg, e.out_num), (e.in_sg, e.in_num)] {
            for k in 0..n as usize {
                // SAFETY: the element's own scatter-gather arrays.
                let iov = unsafe { *sg.add(k) };
                let (base, len) = (iov.iov_base as u64, iov.iov_len as u64);
                assert!(len > 0, "zero-length buffer in a popped element");
                let inside = regions.iter().any(|r| {
                    let start = r.mmap_addr + r.mmap_offset;
                    base >= start && base.checked_add(len).is_some_and(|end| end <= start + r.size)
                });
                assert!(inside, "buffer {base:#x}+{len:#x} outside every region: {regions:x?}");
                // SAFETY: inside a region mapping (checked above).
                unsafe {
                    std::ptr::read_volatile(iov.iov_base as *const u8);
                    std::ptr::read_volatile((iov.iov_base as *const u8).add(len as usize - 1));
                }
            }
        }
    }

    /// Whether every buffer of an element lies inside the current memory table (an element
    /// popped before a memory-table change may point at memory that is gone: see
    /// NOTES-fuzz-findings, "elements outlive their regions").
    ///
    /// # Safety
    /// `elem` is an element `vu_queue_pop` returned for this device.
    pub unsafe fn element_mapped(&self, elem: *const VuVirtqElement) -> bool {
        let regions = self.regions();
        // SAFETY: per the contract.
        let e = unsafe { &*elem };
        [(e.out_sg, e.out_num), (e.in_sg, e.in_num)].iter().all(|&(sg, n)| {
            (0..n as usize).all(|k| {
                // SAFETY: the element's own scatter-gather arrays.
                let iov = unsafe { *sg.add(k) };
                let (base, len) = (iov.iov_base as u64, iov.iov_len as u64);
                regions.iter().any(|r| {
                    let start = r.mmap_addr + r.mmap_offset;
                    base >= start && base + len <= start + r.size
                })
            })
        })
    }

    /// Pops one element and checks it (NULL when the queue has nothing or refused).
    pub fn pop_checked(&self, qidx: usize) -> *mut VuVirtqElement {
        let vq = self.queue(qidx);
        // SAFETY: our device and queue.
        let e = unsafe { vu_queue_pop(self.raw(), vq, ELEM_SIZE) } as *mut VuVirtqElement;
        if !e.is_null() {
            let regions = self.regions();
            // SAFETY: just popped.
            unsafe { self.check_element(e, &regions) };
            if std::env::var_os("VUFUZZ_VERBOSE").is_some() {
                // SAFETY: checked just above.
                let el = unsafe { &*e };
                eprintln!("popped q{qidx}: head {} out {} in {}", el.index, el.out_num, el.in_num);
            }
        }
        e
    }

    /// Total length of an element's device-writable buffers, and a write to each.
    ///
    /// # Safety
    /// `elem` is an element popped from this device and checked.
    pub unsafe fn write_in_buffers(elem: *const VuVirtqElement) -> u32 {
        // SAFETY: per the contract.
        let e = unsafe { &*elem };
        let mut total = 0u32;
        for k in 0..e.in_num as usize {
            // SAFETY: checked buffers of the element.
            unsafe {
                let iov = *e.in_sg.add(k);
                std::ptr::write_volatile(iov.iov_base as *mut u8, 0xa5);
                total = total.saturating_add(iov.iov_len as u32);
            }
        }
        total
    }

    /// Serves a queue: pop, check, write, push each element; then notify.
    pub fn serve_queue(&self, qidx: usize) {
        let vq = self.queue(qidx);
        if vq.is_null() {
            return;
        }
        let mut served = 0;
        for _ in 0..1024 {
            let e = self.pop_checked(qidx);
            if e.is_null() {
                break;
            }
            // SAFETY: a checked element of this queue; freed once pushed.
            unsafe {
                let len = Self::write_in_buffers(e);
                vu_queue_push(self.raw(), vq, e, len);
                libc::free(e.cast());
            }
            served += 1;
        }
        if served > 0 {
            // SAFETY: our device and queue.
            unsafe { vu_queue_notify(self.raw(), vq) };
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        // SAFETY: initialised by vu_init; deinit closes everything it owns.
        unsafe { vu_deinit(self.raw()) };
    }
}
