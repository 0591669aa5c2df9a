// SPDX-License-Identifier: GPL-2.0-or-later
//! Runs a scenario: the harness is the frontend (a socketpair to a real in-process device,
//! guest memory in memfds it maps too, eventfds, backend-channel sockets) and the device's
//! event loop and worker. Every target decodes its input into a [`Scenario`].
//!
//! Each session's messages are all written to the socket before the first dispatch and the
//! frontend's end is then shut for writing, so a device that reads more than one message per
//! dispatch (the postcopy ack) or a message that lies about its size can never wait: it reads
//! the next message or end of file. The one exception: a message carrying the fd of a
//! GET_INFLIGHT_FD reply goes out once that reply came, if every message before it reads
//! only itself (see [`barriers`]). After a session the harness checks that no fd, no memfd
//! mapping and no device-state transfer thread outlives the device, and that no Rust panic
//! happened inside the library (one caught at the C boundary would otherwise go unnoticed).

use std::cell::Cell;
use std::os::unix::io::RawFd;
use std::sync::Once;

use crate::capi::*;
use crate::device::Device;
use crate::sys;

pub const GET_INFLIGHT_FD: u32 = 31;
pub const POSTCOPY_LISTEN: u32 = 29;
pub const SET_DEVICE_STATE_FD: u32 = 42;
pub const CHECK_DEVICE_STATE: u32 = 43;
/// The name of the library's device-state transfer thread.
const DEVICE_STATE_THREAD: &str = "vu-device-state";
pub const VERSION: u32 = 1;
pub const NEED_REPLY: u32 = 1 << 3;
pub const HDR: usize = 12;

/// An fd a message carries, made fresh for the message unless it names a pool fd.
#[derive(Clone, Debug)]
pub enum FdSpec {
    /// Guest memory memfd `i` (modulo the pool).
    Guest(u8),
    /// Eventfd `i` of the pool (kick, call, err, log call).
    Event(u8),
    /// A unix socket whose peer wrote these bytes and closed (backend channel).
    Socket(Vec<u8>),
    /// A fresh memfd of `size` bytes filled with `fill` (log and inflight areas).
    Scratch { size: u32, fill: u8 },
    /// The fd of the latest GET_INFLIGHT_FD reply (nothing if there was none).
    LastInflight,
    /// A pipe's read end, its write end closed.
    Pipe,
    /// A pipe's write end; the harness keeps the read end (never reading it) until the
    /// session ends (a device-state save's destination).
    PipeWriter,
}

#[derive(Clone, Debug)]
pub struct Msg {
    pub req: u32,
    pub flags: u32,
    /// The header's size field; `None`: the payload's length.
    pub size: Option<u32>,
    pub payload: Vec<u8>,
    pub fds: Vec<FdSpec>,
}

impl Msg {
    pub fn new(req: u32, payload: Vec<u8>) -> Self {
        Msg { req, flags: VERSION | NEED_REPLY, size: None, payload, fds: Vec::new() }
    }
    pub fn with_fds(mut self, fds: Vec<FdSpec>) -> Self {
        self.fds = fds;
        self
    }
    pub fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HDR + self.payload.len());
        b.extend_from_slice(&self.req.to_le_bytes());
        b.extend_from_slice(&self.flags.to_le_bytes());
        b.extend_from_slice(&self.size.unwrap_or(self.payload.len() as u32).to_le_bytes());
        b.extend_from_slice(&self.payload);
        b
    }
}

#[derive(Clone, Copy, Debug)]
pub enum QueueOp {
    /// Pop one element (checked against the memory table) and keep it.
    Pop,
    /// Push the oldest kept element with this length (`None`: its writable bytes).
    Push(Option<u32>),
    /// Fill the oldest kept element at offset `idx`, then forget it.
    Fill {
        len: u32,
        idx: u32,
    },
    Flush(u32),
    Notify,
    NotifySync,
    /// `vu_queue_rewind(n)`; the harness then frees the newest `n` kept elements.
    Rewind(u32),
    /// `vu_queue_unpop` of the newest kept element (then freed).
    Unpop,
    Empty,
    AvailBytes {
        in_bytes: u32,
        out_bytes: u32,
    },
    GetAvailBytes {
        max_in: u32,
        max_out: u32,
    },
    SetNotification(bool),
    /// What the device's queue handler does on a kick: serve everything.
    Serve,
    Enabled,
}

#[derive(Clone, Debug)]
pub enum Step {
    /// One `vu_dispatch` (of the next message in the socket).
    Dispatch(Msg),
    /// The last message of the session, cut after `keep` bytes.
    Truncated {
        msg: Msg,
        keep: usize,
    },
    /// One event-loop iteration over the device's watches.
    Loop,
    /// Add 1 to eventfd `i` of the pool (a kick, from the driver's side).
    Signal(u8),
    /// Write into guest memory memfd `mem` (modulo the pool) at `off` (modulo its size).
    GuestWrite {
        mem: u8,
        off: u32,
        bytes: Vec<u8>,
    },
    /// Write into the latest inflight area the device handed out.
    InflightWrite {
        off: u32,
        bytes: Vec<u8>,
    },
    Queue {
        q: u8,
        op: QueueOp,
    },
    InOrder(bool),
    ServeKicks(bool),
    /// The frontend goes away (vu_deinit) and a new one connects to a new device.
    Reconnect,
}

#[derive(Clone, Debug, Default)]
pub struct Scenario {
    pub max_queues: u16,
    /// Guest memory memfd sizes, bytes (multiples of 4096).
    pub guest: Vec<usize>,
    /// Number of eventfds in the pool, and which of them block (bit i).
    pub eventfds: u8,
    pub blocking_eventfds: u8,
    pub steps: Vec<Step>,
}

thread_local! {
    static PANICKED: Cell<bool> = const { Cell::new(false) };
}

/// SIGPIPE kills a C backend (its default action); libFuzzer would lose the input that
/// raised it, so it becomes an abort, which libFuzzer reports like any crash.
extern "C" fn on_sigpipe(_: libc::c_int) {
    const MSG: &[u8] = b"SIGPIPE raised inside the library: a C backend would die here\n";
    // SAFETY: async-signal-safe calls only.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::abort();
    }
}

pub fn install_panic_hook() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        // SAFETY: installing a handler that only calls async-signal-safe functions.
        unsafe { libc::signal(libc::SIGPIPE, on_sigpipe as *const () as libc::sighandler_t) };
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICKED.with(|p| p.set(true));
            prev(info);
        }));
    });
}

pub struct Guest {
    pub fds: Vec<RawFd>,
    pub maps: Vec<(*mut u8, usize)>,
}

impl Guest {
    pub fn new(sizes: &[usize]) -> Guest {
        let mut g = Guest { fds: Vec::new(), maps: Vec::new() };
        for (i, &s) in sizes.iter().enumerate() {
            let fd = sys::memfd(&format!("vufuzz-guest-{i}"), s, 0);
            g.maps.push((sys::map(fd, s), s));
            g.fds.push(fd);
        }
        g
    }
    pub fn write(&self, mem: u8, off: u32, bytes: &[u8]) {
        if self.maps.is_empty() {
            return;
        }
        let (p, size) = self.maps[mem as usize % self.maps.len()];
        let off = off as usize % size;
        let n = bytes.len().min(size - off);
        // SAFETY: inside our own mapping of the memfd.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), p.add(off), n) };
    }
}

impl Guest {
    /// `len` bytes of guest memory `mem` from `off` (clipped to the memory).
    pub fn read(&self, mem: u8, off: usize, len: usize) -> Vec<u8> {
        let Some(&(p, size)) = self.maps.get(mem as usize % self.maps.len().max(1)) else {
            return Vec::new();
        };
        let off = off.min(size);
        let n = len.min(size - off);
        // SAFETY: inside our own mapping of the memfd.
        unsafe { std::slice::from_raw_parts(p.add(off), n) }.to_vec()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        for &(p, s) in &self.maps {
            sys::unmap(p, s);
        }
        for &fd in &self.fds {
            sys::close(fd);
        }
    }
}

/// The inflight area of the latest GET_INFLIGHT_FD reply, as the frontend keeps it.
struct Inflight {
    fd: RawFd,
    map: *mut u8,
    size: usize,
}

impl Drop for Inflight {
    fn drop(&mut self) {
        if !self.map.is_null() {
            sys::unmap(self.map, self.size);
        }
        sys::close(self.fd);
    }
}

struct Frontend {
    guest: Guest,
    events: Vec<RawFd>,
    inflight: Option<Inflight>,
    replies: Vec<u8>,
    /// Our ends of pipes whose other end went to the device, closed when the session ends.
    held: Vec<HeldPipe>,
}

/// The read end of a [`FdSpec::PipeWriter`] pipe.
struct HeldPipe {
    fd: RawFd,
    /// Sent with SET_DEVICE_STATE_FD: the frontend reads the saved state before CHECK.
    state: bool,
    /// Read to its end (or given up on) already.
    drained: bool,
}

/// How long the frontend reads a device-state pipe before CHECK_DEVICE_STATE at most (the
/// transfer thread closes its end once done; this only bounds a device that never does).
const STATE_READ_WAIT_MS: i32 = 100;

impl Frontend {
    fn fd_for(&mut self, spec: &FdSpec, temp: &mut Vec<RawFd>) -> Option<RawFd> {
        match spec {
            FdSpec::Guest(i) if !self.guest.fds.is_empty() => {
                Some(self.guest.fds[*i as usize % self.guest.fds.len()])
            }
            FdSpec::Event(i) if !self.events.is_empty() => {
                Some(self.events[*i as usize % self.events.len()])
            }
            FdSpec::Guest(_) | FdSpec::Event(_) => None,
            FdSpec::Socket(bytes) => {
                let (ours, theirs) = sys::socketpair();
                sys::send_with_fds(ours, bytes, &[]);
                sys::close(ours);
                temp.push(theirs);
                Some(theirs)
            }
            FdSpec::Scratch { size, fill } => {
                let fd = sys::memfd("vufuzz-scratch", (*size as usize).min(1 << 20), *fill);
                temp.push(fd);
                Some(fd)
            }
            FdSpec::LastInflight => self.inflight.as_ref().map(|i| i.fd),
            FdSpec::Pipe => {
                let fd = sys::dead_pipe();
                temp.push(fd);
                Some(fd)
            }
            FdSpec::PipeWriter => {
                let (r, w) = sys::pipe();
                self.held.push(HeldPipe { fd: r, state: false, drained: false });
                temp.push(w);
                Some(w)
            }
        }
    }

    /// Writes a message to the socket; false if it could not go out whole.
    fn send(&mut self, sock: RawFd, msg: &Msg, keep: Option<usize>) -> bool {
        let mut temp = Vec::new();
        let first_pipe = self.held.len();
        let fds: Vec<RawFd> = msg.fds.iter().filter_map(|s| self.fd_for(s, &mut temp)).collect();
        if msg.req == SET_DEVICE_STATE_FD {
            for h in &mut self.held[first_pipe..] {
                h.state = true;
            }
        }
        let mut bytes = msg.bytes();
        if let Some(k) = keep {
            bytes.truncate(k.max(1));
        }
        let ok = sys::send_with_fds(sock, &bytes, &fds);
        for fd in temp {
            sys::close(fd);
        }
        ok
    }

    /// What a frontend does before CHECK_DEVICE_STATE after a save: reads the state to its end
    /// (end of file: the transfer thread is done and closed its end).
    fn read_saved_states(&mut self) {
        for h in self.held.iter_mut().filter(|h| h.state && !h.drained) {
            h.drained = true;
            let deadline = std::time::Instant::now()
                + std::time::Duration::from_millis(STATE_READ_WAIT_MS as u64);
            while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
                if !sys::read_some(h.fd, left.as_millis() as i32 + 1) {
                    break;
                }
            }
        }
    }

    /// Reads the device's replies; keeps the area of a GET_INFLIGHT_FD reply, closes other fds.
    fn drain(&mut self, sock: RawFd) {
        let mut fds = Vec::new();
        sys::recv_all(sock, &mut self.replies, &mut fds);
        // Walk complete replies; fds travel with the first byte of their message.
        let mut fds = fds.into_iter();
        while self.replies.len() >= HDR {
            let req = u32::from_le_bytes(self.replies[0..4].try_into().unwrap());
            let size = u32::from_le_bytes(self.replies[8..12].try_into().unwrap()) as usize;
            if self.replies.len() < HDR + size {
                break;
            }
            if req == GET_INFLIGHT_FD && size >= 8 {
                if let Some(fd) = fds.next() {
                    let mmap_size =
                        u64::from_le_bytes(self.replies[HDR..HDR + 8].try_into().unwrap()) as usize;
                    let map = if mmap_size > 0 && mmap_size <= 1 << 24 {
                        sys::map(fd, mmap_size)
                    } else {
                        std::ptr::null_mut()
                    };
                    self.inflight = Some(Inflight { fd, map, size: mmap_size });
                }
            }
            self.replies.drain(..HDR + size);
        }
        for fd in fds {
            sys::close(fd);
        }
    }
}

/// Kept elements of one queue, oldest first.
type Kept = Vec<Vec<*mut VuVirtqElement>>;

fn free_elem(e: *mut VuVirtqElement) {
    // SAFETY: elements come from vu_queue_pop (malloc'd) and are freed once.
    unsafe { libc::free(e.cast()) };
}

fn queue_op(dev: &Device, kept: &mut Kept, q: u8, op: QueueOp) {
    let qi = q as usize % (dev.max_queues as usize + 1);
    let vq = dev.queue(qi);
    let raw = dev.raw();
    let list = &mut kept[qi.min(dev.max_queues as usize)];
    // SAFETY (every call below): our device and one of its queues (or NULL for an
    // out-of-range index, which the API accepts); elements are ones it popped.
    unsafe {
        match op {
            QueueOp::Pop => {
                let e = dev.pop_checked(qi);
                if !e.is_null() {
                    list.push(e);
                }
            }
            QueueOp::Push(len) => {
                if !list.is_empty() {
                    let e = list.remove(0);
                    // Write the buffers only if they are still mapped (see element_mapped).
                    let n = match len {
                        Some(n) => n,
                        None if dev.element_mapped(e) => Device::write_in_buffers(e),
                        None => 0,
                    };
                    vu_queue_push(raw, vq, e, n);
                    free_elem(e);
                }
            }
            QueueOp::Fill { len, idx } => {
                if !list.is_empty() {
                    let e = list.remove(0);
                    vu_queue_fill(raw, vq, e, len, idx);
                    free_elem(e);
                }
            }
            QueueOp::Flush(n) => vu_queue_flush(raw, vq, n),
            QueueOp::Notify => vu_queue_notify(raw, vq),
            QueueOp::NotifySync => vu_queue_notify_sync(raw, vq),
            QueueOp::Rewind(n) => {
                if vu_queue_rewind(raw, vq, n) {
                    for _ in 0..(n as usize).min(list.len()) {
                        free_elem(list.pop().unwrap());
                    }
                }
            }
            QueueOp::Unpop => {
                if let Some(e) = list.pop() {
                    vu_queue_unpop(raw, vq, e, 0);
                    free_elem(e);
                }
            }
            QueueOp::Empty => {
                vu_queue_empty(raw, vq);
            }
            QueueOp::AvailBytes { in_bytes, out_bytes } => {
                vu_queue_avail_bytes(raw, vq, in_bytes, out_bytes);
            }
            QueueOp::GetAvailBytes { max_in, max_out } => {
                let (mut i, mut o) = (0, 0);
                vu_queue_get_avail_bytes(raw, vq, &mut i, &mut o, max_in, max_out);
            }
            QueueOp::SetNotification(on) => vu_queue_set_notification(raw, vq, on as i32),
            QueueOp::Serve => dev.serve_queue(qi),
            QueueOp::Enabled => {
                vu_queue_enabled(raw, vq);
                vu_queue_started(raw, vq);
            }
        }
    }
}

pub fn assert_no_library_panic(what: &str) {
    let p = PANICKED.with(|p| p.replace(false));
    assert!(!p, "a Rust panic happened inside the library ({what})");
}

/// Whether dispatching this step reads exactly its own message off the socket (a size field
/// that matches the payload, not cut short, not POSTCOPY_LISTEN, after which SET_MEM_TABLE
/// reads the frontend's ack too).
fn reads_only_itself(st: &Step) -> bool {
    match st {
        Step::Dispatch(m) => {
            m.size.is_none_or(|s| s as usize == m.payload.len()) && m.req != POSTCOPY_LISTEN
        }
        Step::Truncated { .. } => false,
        _ => true,
    }
}

/// Messages that carry the fd of a GET_INFLIGHT_FD reply, which exists only once the earlier
/// messages were dispatched: the harness sends such a message (and what follows it) only
/// then, as long as every message before it reads only itself (otherwise a dispatch could
/// wait for bytes not yet sent, and everything goes out at once as usual).
fn barriers(steps: &[Step]) -> Vec<bool> {
    let mut safe = true;
    steps
        .iter()
        .map(|st| {
            let wants_reply = matches!(st, Step::Dispatch(m)
                if m.fds.iter().any(|f| matches!(f, FdSpec::LastInflight)));
            let barrier = safe && wants_reply;
            safe &= reads_only_itself(st);
            barrier
        })
        .collect()
}

/// What has gone out on the frontend's socket.
struct Outbox {
    sent: Vec<bool>,
    /// A message could not go out, or the cut last message went: nothing more is sent.
    full: bool,
    /// The first step not sent yet (a barrier), or the number of steps once all went.
    next: usize,
}

impl Outbox {
    /// Sends the messages from step `from` up to the next barrier; after the last one, shuts
    /// the socket for writing (the device then reads end of file, never waits).
    fn send_from(
        &mut self,
        fe: &mut Frontend,
        sock: RawFd,
        steps: &[Step],
        barrier: &[bool],
        from: usize,
    ) {
        for (k, st) in steps.iter().enumerate().skip(from) {
            if k > from && barrier[k] {
                self.next = k;
                return;
            }
            let ok = match st {
                Step::Dispatch(m) if !self.full => fe.send(sock, m, None),
                Step::Truncated { msg, keep } if !self.full => {
                    let ok = fe.send(sock, msg, Some(*keep));
                    self.full = true; // nothing may follow the cut message
                    ok
                }
                _ => false,
            };
            if matches!(st, Step::Dispatch(_)) && !ok {
                self.full = true;
            }
            self.sent[k] = ok;
        }
        self.next = steps.len();
        // SAFETY: our socket end.
        unsafe { libc::shutdown(sock, libc::SHUT_WR) };
    }
}

/// Runs one session; returns at its end or when a dispatch fails (a real backend then drops
/// the connection).
fn session(fe: &mut Frontend, s: &Scenario, steps: &[Step]) {
    let (ours, theirs) = sys::socketpair();
    let Some(dev) = Device::new(theirs, s.max_queues) else {
        sys::close(ours);
        return;
    };
    let barrier = barriers(steps);
    let mut out = Outbox { sent: vec![false; steps.len()], full: false, next: 0 };
    out.send_from(fe, ours, steps, &barrier, 0);
    let mut kept: Kept = vec![Vec::new(); dev.max_queues as usize + 1];
    for (i, st) in steps.iter().enumerate() {
        if i == out.next && i < steps.len() {
            // A barrier: every step before it has run.
            out.send_from(fe, ours, steps, &barrier, i);
        }
        match st {
            Step::Dispatch(_) | Step::Truncated { .. } => {
                if !out.sent[i] {
                    continue;
                }
                if matches!(st, Step::Dispatch(m) if m.req == CHECK_DEVICE_STATE) {
                    fe.read_saved_states();
                }
                let ok = dev.dispatch();
                fe.drain(ours);
                assert_no_library_panic("vu_dispatch");
                if !ok {
                    break;
                }
            }
            Step::Loop => dev.run_ready_watches(),
            Step::Signal(i) => {
                if !fe.events.is_empty() {
                    sys::eventfd_add(fe.events[*i as usize % fe.events.len()], 1);
                }
            }
            Step::GuestWrite { mem, off, bytes } => fe.guest.write(*mem, *off, bytes),
            Step::InflightWrite { off, bytes } => {
                if let Some(i) = &fe.inflight {
                    if !i.map.is_null() {
                        let off = *off as usize % i.size;
                        let n = bytes.len().min(i.size - off);
                        // SAFETY: inside our mapping of the inflight memfd.
                        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), i.map.add(off), n) };
                    }
                }
            }
            Step::Queue { q, op } => queue_op(&dev, &mut kept, *q, *op),
            Step::InOrder(v) => dev.ctx.in_order.store(*v, std::sync::atomic::Ordering::Relaxed),
            Step::ServeKicks(v) => {
                dev.ctx.serve_kicks.store(*v, std::sync::atomic::Ordering::Relaxed)
            }
            Step::Reconnect => {}
        }
        assert_no_library_panic("a queue operation or the event loop");
    }
    for e in kept.into_iter().flatten() {
        free_elem(e);
    }
    drop(dev);
    assert_no_library_panic("vu_deinit");
    fe.drain(ours);
    sys::close(ours);
    for h in fe.held.drain(..) {
        sys::close(h.fd);
    }
}

/// Runs a scenario and checks that it left nothing behind.
pub fn run(s: &Scenario) {
    install_panic_hook();
    assert_no_library_panic("before the scenario");
    let fds_before = sys::open_fds();
    let maps_before = sys::memfd_mappings();
    {
        let guest = Guest::new(&s.guest);
        let events = (0..s.eventfds.min(8))
            .map(|i| sys::eventfd(s.blocking_eventfds & (1 << i) == 0))
            .collect();
        let mut fe =
            Frontend { guest, events, inflight: None, replies: Vec::new(), held: Vec::new() };
        for steps in s.steps.split(|st| matches!(st, Step::Reconnect)) {
            session(&mut fe, s, steps);
        }
        for &fd in &fe.events {
            sys::close(fd);
        }
    }
    let fds_after = sys::open_fds();
    assert_eq!(fds_before, fds_after, "fds leaked: {fds_before} open before, {fds_after} after");
    let maps_after = sys::memfd_mappings();
    assert_eq!(
        maps_before, maps_after,
        "memfd mappings leaked: {maps_before} before, {maps_after} after"
    );
    // vu_deinit (or CHECK_DEVICE_STATE) joins the device-state transfer thread. A joined
    // thread may still be listed for a moment while the kernel finishes its exit.
    let mut transfers = sys::threads_named(DEVICE_STATE_THREAD);
    for _ in 0..100 {
        if transfers == 0 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        transfers = sys::threads_named(DEVICE_STATE_THREAD);
    }
    assert_eq!(transfers, 0, "{transfers} device-state transfer threads outlive their device");
}
