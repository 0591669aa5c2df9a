//! Device state transfer (VHOST_USER_PROTOCOL_F_DEVICE_STATE): the backend's state as a byte
//! stream over an fd the frontend provides (a pipe in QEMU), ended by EOF.
//!
//! The backend registers a save and a load handler (`vu_set_device_state_handlers`). Both run
//! on the thread that calls `vu_dispatch`, like every other device callback; the bytes move on
//! a transfer thread of ours, so the dispatch thread answers SET_DEVICE_STATE_FD before the
//! pipe fills and a state of any size gets through.
//!
//! - Save: at SET_DEVICE_STATE_FD the backend hands over its state (a malloc'd buffer); the
//!   thread writes it and closes the fd, which is the frontend's EOF. At CHECK_DEVICE_STATE the
//!   thread must be done: the frontend can only have seen EOF after it was.
//! - Load: the thread reads to EOF, at most the registered maximum (bounded memory); at
//!   CHECK_DEVICE_STATE (sent once the frontend closed its end) the dispatch thread waits for
//!   that end, briefly, and hands all bytes to the load handler, whose answer CHECK reports.
//!
//! The thread blocks only in poll() on the data fd and a cancel eventfd: a new transfer, CHECK
//! or the device's teardown (`vu_deinit`) cancels and joins it, whatever the frontend does.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::abi::VuDev;
use crate::device::Dev;

/// The largest state a load accepts when the backend registers no maximum of its own.
pub const DEFAULT_MAX_STATE: usize = 16 << 20;
/// Bytes moved per read/write call.
const CHUNK: usize = 1 << 16;
/// How long CHECK_DEVICE_STATE waits for a load to reach EOF. The frontend sends CHECK only
/// after closing its end, so what is left is reading at most a pipe buffer; a frontend that
/// sends CHECK with its end still open gets a failure after this, not a hung device.
const LOAD_DRAIN_WAIT: Duration = Duration::from_secs(3);

type SaveFn = unsafe extern "C" fn(*mut VuDev, *mut libc::c_void, *mut *mut u8, *mut usize) -> bool;
type LoadFn = unsafe extern "C" fn(*mut VuDev, *mut libc::c_void, *const u8, usize) -> bool;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Direction {
    Save,
    Load,
}

#[derive(Clone, Copy)]
struct Handlers {
    save: SaveFn,
    load: LoadFn,
    opaque: *mut libc::c_void,
    max_size: usize,
}

// SAFETY: `opaque` is never dereferenced by us; it is passed back to the backend's callbacks,
// which run on the thread calling vu_dispatch (as all device callbacks do).
unsafe impl Send for Handlers {}

/// The registered handlers and the transfer in progress, if any.
#[derive(Default)]
pub struct StateTransfer {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    handlers: Option<Handlers>,
    transfer: Option<Transfer>,
}

/// What the transfer thread hands back: the bytes read (load) or nothing (save).
type Outcome = Result<Vec<u8>, String>;

struct Transfer {
    direction: Direction,
    /// Set by the thread once all of the stream moved, before it closes the data fd.
    finished: Arc<AtomicBool>,
    result: mpsc::Receiver<Outcome>,
    thread: Option<JoinHandle<()>>,
    /// An eventfd the thread polls besides the data fd; written to stop it.
    cancel: OwnedFd,
}

impl Transfer {
    fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            let _ = crate::fd::eventfd_write(self.cancel.as_raw_fd(), false);
            let _ = t.join();
        }
    }

    /// Waits up to `wait` for the thread's result, then stops it.
    fn finish(mut self, wait: Duration) -> Outcome {
        let result = self.result.recv_timeout(wait);
        self.stop();
        match result {
            Ok(r) => r,
            Err(_) => Err("the transfer did not reach its end".into()),
        }
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The backend's saved state: a malloc'd buffer we free.
struct SavedState {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is owned exclusively by this value (the backend gave it up).
unsafe impl Send for SavedState {}

impl SavedState {
    fn bytes(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: the backend's contract: `ptr` holds `len` bytes (checked non-NULL on creation).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl Drop for SavedState {
    fn drop(&mut self) {
        // SAFETY: malloc'd by the backend and handed to us (free(NULL) is a no-op).
        unsafe { libc::free(self.ptr.cast()) };
    }
}

impl StateTransfer {
    /// Registers (or, with both NULL, removes) the handlers. Refuses exactly one NULL.
    pub fn register(
        &self,
        save: Option<SaveFn>,
        load: Option<LoadFn>,
        max_size: usize,
        opaque: *mut libc::c_void,
    ) -> bool {
        let handlers = match (save, load) {
            (Some(save), Some(load)) => Some(Handlers {
                save,
                load,
                opaque,
                max_size: if max_size == 0 { DEFAULT_MAX_STATE } else { max_size },
            }),
            (None, None) => None,
            _ => return false,
        };
        let old = {
            let mut inner = self.inner.lock();
            inner.handlers = handlers;
            if handlers.is_none() {
                inner.transfer.take()
            } else {
                None
            }
        };
        drop(old);
        true
    }

    /// Whether a backend registered handlers (the feature is offered only then).
    pub fn available(&self) -> bool {
        self.inner.lock().handlers.is_some()
    }

    /// SET_DEVICE_STATE_FD: starts moving the state through `fd`, replacing (cancelling) any
    /// transfer still in progress.
    pub fn start(&self, dev: Dev, direction: Direction, fd: OwnedFd) -> Result<(), String> {
        // Neither the old thread's join nor the backend's callback runs under our lock.
        let (handlers, old) = {
            let mut inner = self.inner.lock();
            (inner.handlers, inner.transfer.take())
        };
        drop(old);
        let h = handlers.ok_or("no device state handlers registered")?;
        let saved = match direction {
            Direction::Save => Some(save_state(dev, &h)?),
            Direction::Load => None,
        };
        let transfer = spawn(direction, fd, saved, h.max_size)?;
        let replaced = self.inner.lock().transfer.replace(transfer);
        drop(replaced);
        Ok(())
    }

    /// CHECK_DEVICE_STATE: whether the last transfer (and, for a load, the backend's load
    /// handler) succeeded. The transfer is over afterwards.
    pub fn check(&self, dev: Dev) -> Result<(), String> {
        let (handlers, transfer) = {
            let mut inner = self.inner.lock();
            (inner.handlers, inner.transfer.take())
        };
        let t = transfer.ok_or("no device state transfer")?;
        match t.direction {
            Direction::Save => {
                if !t.finished.load(Ordering::Acquire) {
                    // The frontend cannot have seen EOF: we close only after the last byte.
                    drop(t);
                    return Err("CHECK before the saved state was read to its end".into());
                }
                t.finish(LOAD_DRAIN_WAIT).map(drop)
            }
            Direction::Load => {
                let bytes = t.finish(LOAD_DRAIN_WAIT)?;
                let h = handlers.ok_or("device state handlers removed")?;
                // SAFETY: the backend's callback with its device and opaque pointer, and a
                // buffer that lives for the call.
                if unsafe { (h.load)(dev.raw(), h.opaque, bytes.as_ptr(), bytes.len()) } {
                    Ok(())
                } else {
                    Err(format!("the device refused the loaded state ({} bytes)", bytes.len()))
                }
            }
        }
    }
}

/// Asks the backend for its state.
fn save_state(dev: Dev, h: &Handlers) -> Result<SavedState, String> {
    let mut ptr: *mut u8 = std::ptr::null_mut();
    let mut len: usize = 0;
    // SAFETY: the backend's callback with its device, its opaque pointer and two outputs.
    let ok = unsafe { (h.save)(dev.raw(), h.opaque, &mut ptr, &mut len) };
    let saved = SavedState { ptr, len };
    if !ok {
        return Err("the device could not save its state".into());
    }
    if saved.ptr.is_null() && saved.len != 0 {
        return Err(format!("the device saved {} bytes at NULL", saved.len));
    }
    Ok(saved)
}

fn spawn(
    direction: Direction,
    fd: OwnedFd,
    saved: Option<SavedState>,
    max_size: usize,
) -> Result<Transfer, String> {
    // SAFETY: plain syscall; the result is checked.
    let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    if raw < 0 {
        return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh fd we own.
    let cancel = unsafe { OwnedFd::from_raw_fd(raw) };
    let cancel_fd = cancel.as_raw_fd();
    let finished = Arc::new(AtomicBool::new(false));
    let (tx, result) = mpsc::channel();
    let done = finished.clone();
    let thread = std::thread::Builder::new()
        .name("vu-device-state".into())
        .spawn(move || {
            block_signals();
            crate::fd::set_nonblocking(fd.as_raw_fd());
            let outcome = match &saved {
                Some(s) => write_all(fd.as_raw_fd(), s.bytes(), cancel_fd).map(|()| Vec::new()),
                None => read_to_end(fd.as_raw_fd(), max_size, cancel_fd),
            };
            done.store(outcome.is_ok(), Ordering::Release);
            // Closing is the end of the stream for a save; `finished` is visible before it.
            drop(fd);
            drop(saved);
            let _ = tx.send(outcome);
        })
        .map_err(|e| format!("cannot start the transfer thread: {e}"))?;
    Ok(Transfer { direction, finished, result, thread: Some(thread), cancel })
}

/// The transfer thread takes no signals: a write to a pipe whose reader is gone fails with
/// EPIPE instead of raising SIGPIPE in the process, and signals meant for the application go
/// to its own threads.
fn block_signals() {
    // SAFETY: a local signal set; pthread_sigmask changes only this thread's mask.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits until `fd` has `events` (or an error/hangup to report), or the transfer is cancelled.
fn wait_for(fd: RawFd, events: libc::c_short, cancel: RawFd) -> Result<(), String> {
    loop {
        let mut fds = [
            libc::pollfd { fd, events, revents: 0 },
            libc::pollfd { fd: cancel, events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: poll on a local array of two entries.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(format!("poll: {err}"));
        }
        if fds[1].revents != 0 {
            return Err("transfer cancelled".into());
        }
        if fds[0].revents & libc::POLLNVAL != 0 {
            return Err("invalid transfer fd".into());
        }
        if fds[0].revents != 0 {
            return Ok(());
        }
    }
}

fn would_retry(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EINTR))
}

fn write_all(fd: RawFd, mut data: &[u8], cancel: RawFd) -> Result<(), String> {
    while !data.is_empty() {
        wait_for(fd, libc::POLLOUT, cancel)?;
        let n = data.len().min(CHUNK);
        // SAFETY: writing `n` bytes from a live slice.
        let rc = unsafe { libc::write(fd, data.as_ptr().cast(), n) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if would_retry(&err) {
                continue;
            }
            return Err(format!("writing the device state: {err}"));
        }
        if rc == 0 {
            return Err("writing the device state: no progress".into());
        }
        data = &data[rc as usize..];
    }
    Ok(())
}

fn read_to_end(fd: RawFd, max_size: usize, cancel: RawFd) -> Result<Vec<u8>, String> {
    let mut state = Vec::new();
    let mut chunk = vec![0u8; CHUNK];
    loop {
        wait_for(fd, libc::POLLIN, cancel)?;
        // SAFETY: reading at most CHUNK bytes into a live buffer of that size.
        let rc = unsafe { libc::read(fd, chunk.as_mut_ptr().cast(), CHUNK) };
        if rc < 0 {
            let err = std::io::Error::last_os_error();
            if would_retry(&err) {
                continue;
            }
            return Err(format!("reading the device state: {err}"));
        }
        let n = rc as usize;
        if n == 0 {
            return Ok(state);
        }
        if state.len() + n > max_size {
            return Err(format!("device state larger than {max_size} bytes"));
        }
        state.try_reserve(n).map_err(|_| "out of memory for the device state".to_string())?;
        state.extend_from_slice(&chunk[..n]);
    }
}
