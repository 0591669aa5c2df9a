// SPDX-License-Identifier: GPL-2.0-or-later
//! A live session for tests: the in-process device and the frontend's end of its socket,
//! one message at a time (send, dispatch, read the reply), with the guest memory pool and
//! eventfds of the scenarios. Tests that assert what the device answered or refused use this;
//! the fuzz targets use [`crate::engine`].

use std::os::unix::io::RawFd;

use crate::capi::*;
use crate::device::Device;
use crate::engine::{self, FdSpec, Guest, Msg, Step};
use crate::sys;

/// A reply: request, flags, payload, fds (the test owns them).
#[derive(Debug)]
pub struct Reply {
    pub req: u32,
    pub flags: u32,
    pub payload: Vec<u8>,
    pub fds: Vec<RawFd>,
}

impl Reply {
    pub fn u64(&self) -> Option<u64> {
        self.payload.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        for &fd in &self.fds {
            sys::close(fd);
        }
    }
}

pub struct Live {
    pub dev: Box<Device>,
    pub sock: RawFd,
    pub guest: Guest,
    pub events: Vec<RawFd>,
    buf: Vec<u8>,
    fds: Vec<RawFd>,
}

impl Live {
    pub fn new(max_queues: u16, guest: &[usize]) -> Live {
        engine::install_panic_hook();
        let (ours, theirs) = sys::socketpair();
        let dev = Device::new(theirs, max_queues).expect("vu_init");
        Live {
            dev,
            sock: ours,
            guest: Guest::new(guest),
            events: (0..4).map(|_| sys::eventfd(true)).collect(),
            buf: Vec::new(),
            fds: Vec::new(),
        }
    }

    /// The standard session's memory pool (two 64 KiB memfds) and two queues.
    pub fn standard() -> Live {
        Live::new(2, &[crate::proto::GUEST_SIZE, crate::proto::GUEST_SIZE])
    }

    fn fd(&self, spec: &FdSpec, temp: &mut Vec<RawFd>) -> RawFd {
        match spec {
            FdSpec::Guest(i) => self.guest.fds[*i as usize % self.guest.fds.len()],
            FdSpec::Event(i) => self.events[*i as usize % self.events.len()],
            FdSpec::Socket(b) => {
                let (a, z) = sys::socketpair();
                sys::send_with_fds(a, b, &[]);
                sys::close(a);
                temp.push(z);
                z
            }
            FdSpec::Scratch { size, fill } => {
                let fd = sys::memfd("vufuzz-scratch", *size as usize, *fill);
                temp.push(fd);
                fd
            }
            FdSpec::LastInflight => panic!("Live: pass the inflight fd explicitly (send_raw_fds)"),
            FdSpec::PipeWriter => panic!("Live: pass the pipe explicitly (send_raw_fds)"),
            FdSpec::Pipe => {
                let fd = sys::dead_pipe();
                temp.push(fd);
                fd
            }
        }
    }

    /// Sends a message with explicit fds, dispatches it, returns the reply if there is one.
    pub fn send_raw_fds(&mut self, msg: &Msg, fds: &[RawFd]) -> (bool, Option<Reply>) {
        assert!(sys::send_with_fds(self.sock, &msg.bytes(), fds), "send");
        let ok = self.dev.dispatch();
        engine::assert_no_library_panic("vu_dispatch");
        (ok, self.reply())
    }

    /// Sends a message (fds as its specs say), dispatches it, returns the reply if any.
    pub fn send(&mut self, msg: &Msg) -> (bool, Option<Reply>) {
        let mut temp = Vec::new();
        let fds: Vec<RawFd> = msg.fds.iter().map(|s| self.fd(s, &mut temp)).collect();
        let r = self.send_raw_fds(msg, &fds);
        for fd in temp {
            sys::close(fd);
        }
        r
    }

    /// Runs steps the way scenarios do (messages one at a time; no Reconnect or Truncated).
    pub fn steps(&mut self, steps: &[Step]) {
        for st in steps {
            match st {
                Step::Dispatch(m) => {
                    self.send(m);
                }
                Step::GuestWrite { mem, off, bytes } => self.guest.write(*mem, *off, bytes),
                Step::Signal(i) => sys::eventfd_add(self.events[*i as usize % 4], 1),
                Step::Loop => self.dev.run_ready_watches(),
                other => panic!("Live::steps: {other:?} not supported"),
            }
        }
    }

    /// The next complete reply waiting on the socket (None if there is none).
    pub fn reply(&mut self) -> Option<Reply> {
        sys::recv_all(self.sock, &mut self.buf, &mut self.fds);
        if self.buf.len() < engine::HDR {
            return None;
        }
        let size = u32::from_le_bytes(self.buf[8..12].try_into().unwrap()) as usize;
        if self.buf.len() < engine::HDR + size {
            return None;
        }
        let r = Reply {
            req: u32::from_le_bytes(self.buf[0..4].try_into().unwrap()),
            flags: u32::from_le_bytes(self.buf[4..8].try_into().unwrap()),
            payload: self.buf[engine::HDR..engine::HDR + size].to_vec(),
            fds: std::mem::take(&mut self.fds),
        };
        self.buf.drain(..engine::HDR + size);
        Some(r)
    }

    pub fn vq(&self, q: usize) -> *mut VuVirtq {
        self.dev.queue(q)
    }

    /// Pops one element of queue `q`: its buffers (address, length) out then in, and its head.
    pub fn pop(&self, q: usize) -> Option<Popped> {
        let e = self.dev.pop_checked(q);
        engine::assert_no_library_panic("vu_queue_pop");
        if e.is_null() {
            return None;
        }
        // SAFETY: a checked element just popped; freed here after copying its lists.
        unsafe {
            let el = &*e;
            let list = |sg: *mut libc::iovec, n: u32| -> Vec<(u64, u64)> {
                (0..n as usize)
                    .map(|k| ((*sg.add(k)).iov_base as u64, (*sg.add(k)).iov_len as u64))
                    .collect()
            };
            let p = Popped {
                index: el.index,
                out: list(el.out_sg, el.out_num),
                inb: list(el.in_sg, el.in_num),
                raw: e,
            };
            Some(p)
        }
    }

    /// Pushes an element popped from queue `q` with `len` bytes written (and frees it).
    pub fn push(&self, q: usize, p: Popped, len: u32) {
        // SAFETY: an element of this device's queue, freed once.
        unsafe {
            vu_queue_push(self.dev.raw(), self.vq(q), p.raw, len);
            libc::free(p.raw.cast());
        }
        std::mem::forget(p);
    }

    /// The device's address of a guest address (vu_gpa_to_va), with the contiguous length.
    pub fn gpa_to_va(&self, gpa: u64, len: u64) -> Option<(u64, u64)> {
        let mut l = len;
        // SAFETY: our device.
        let p = unsafe { vu_gpa_to_va(self.dev.raw(), &mut l, gpa) };
        (!p.is_null()).then_some((p as u64, l))
    }
}

/// A popped element (freed on drop unless pushed).
pub struct Popped {
    pub index: u32,
    pub out: Vec<(u64, u64)>,
    pub inb: Vec<(u64, u64)>,
    raw: *mut VuVirtqElement,
}

impl Drop for Popped {
    fn drop(&mut self) {
        // SAFETY: malloc'd by vu_queue_pop, not freed elsewhere (push forgets it).
        unsafe { libc::free(self.raw.cast()) };
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        sys::close(self.sock);
        for &fd in &self.events {
            sys::close(fd);
        }
        for &fd in &self.fds {
            sys::close(fd);
        }
    }
}
