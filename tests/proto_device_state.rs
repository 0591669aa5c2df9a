// SPDX-License-Identifier: GPL-2.0-or-later
//! Device state transfer (protocol feature 19) with raw messages against the proto-test
//! backend's handlers (-M: a state of a given size with a fixed pattern): states larger than a
//! pipe buffer both ways while the dispatch thread keeps serving, CHECK results, and every bad
//! input: wrong fd counts, unknown direction or phase, no handlers, CHECK without a transfer,
//! a frontend that never reads, reads a little and closes, disconnects mid-transfer, or never
//! closes its end of a load; a load beyond the maximum. No fd or thread outlives a transfer.

mod common;
#[path = "proto/mod.rs"]
mod proto;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::time::{Duration, Instant};

use common::*;
use proto::*;

const SET_DEVICE_STATE_FD: u32 = 42;
const CHECK_DEVICE_STATE: u32 = 43;
const PF_DEVICE_STATE: u64 = 1 << 19;
const SAVE: u32 = 0;
const LOAD: u32 = 1;
/// SET_DEVICE_STATE_FD replies: no fd of the backend's own (bit 8), plus error code 1.
const OK_NO_FD: u64 = 0x100;
const FAILED_NO_FD: u64 = 0x101;
const MIB: usize = 1 << 20;

fn state_byte(i: usize) -> u8 {
    i.wrapping_mul(31).wrapping_add(i >> 9).wrapping_add(7) as u8
}

fn state(len: usize) -> Vec<u8> {
    (0..len).map(state_byte).collect()
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf29ce484222325u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100000001b3))
}

fn params(direction: u32, phase: u32) -> Vec<u8> {
    let mut v = direction.to_le_bytes().to_vec();
    v.extend_from_slice(&phase.to_le_bytes());
    v
}

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: plain syscall into a local array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: two fresh fds we own.
    unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) }
}

fn threads(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task")).map(|d| d.count()).unwrap_or(0)
}

/// Polls (bounded) until `f` holds.
fn eventually(what: &str, f: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < TIMEOUT, "{what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A backend with state handlers, negotiated up to DEVICE_STATE, with a running queue.
fn start(args: &[&str]) -> (TempDir, ProtoBackend, Front) {
    let (dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, args);
    let mem = GuestMemory::simple(4 << 20);
    let mut pf = PF_REPLY_ACK;
    if args.contains(&"-M") {
        pf |= PF_DEVICE_STATE;
    }
    let mut fe = Front::new(be.connect(), mem, F_VERSION_1 | F_PROTOCOL_FEATURES, pf);
    fe.add_queue(64, 0);
    fe.start_queue(0, 0, None);
    (dir, be, fe)
}

/// SET_DEVICE_STATE_FD (with NEED_REPLY, as REPLY_ACK is on: one reply either way).
fn set_fd(fe: &Front, payload: &[u8], fds: &[i32]) -> u64 {
    let r = fe.c.call(SET_DEVICE_STATE_FD, payload, fds);
    assert!(r.fds.is_empty(), "the backend returned an fd");
    r.u64()
}

fn check(fe: &Front) -> u64 {
    fe.c.call(CHECK_DEVICE_STATE, &[], &[]).u64()
}

/// The dispatch thread still answers.
fn responsive(fe: &Front) {
    assert_eq!(fe.c.call(GET_QUEUE_NUM, &[], &[]).u64(), 1);
}

fn assert_no_panic(be: &ProtoBackend) {
    assert!(!be.stderr().contains("PANIC"), "{}", be.stderr());
}

#[test]
fn offered_only_with_handlers() {
    let (_d, mut be, fe) = start(&["-M", "16"]);
    let pf = fe.c.call(GET_PROTOCOL_FEATURES, &[], &[]).u64();
    assert!(pf & PF_DEVICE_STATE != 0, "DEVICE_STATE not offered with handlers: {pf:#x}");
    be.assert_alive();
    let (_d2, mut be2, fe2) = start(&[]);
    let pf = fe2.c.call(GET_PROTOCOL_FEATURES, &[], &[]).u64();
    assert_eq!(pf & PF_DEVICE_STATE, 0, "DEVICE_STATE offered without handlers: {pf:#x}");
    // Asked anyway: refused cleanly, the fd closed.
    let base = fd_count(be2.pid());
    let (r, w) = pipe();
    assert_eq!(set_fd(&fe2, &params(SAVE, 0), &[w.as_raw_fd()]), FAILED_NO_FD);
    drop(w);
    assert_eq!(fd_count(be2.pid()), base, "fd of a refused SET_DEVICE_STATE_FD kept");
    let mut rest = Vec::new();
    (&r).read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    assert_eq!(check(&fe2), 1, "CHECK without handlers succeeded");
    assert_no_panic(&be2);
    be2.assert_alive();
}

#[test]
fn save_larger_than_a_pipe_buffer() {
    let (_d, mut be, fe) = start(&["-M", "3145728"]);
    let (fds0, threads0) = (fd_count(be.pid()), threads(be.pid()));
    let (r, w) = pipe();
    // The reply comes while the pipe is full and nobody reads: the dispatch thread is free.
    assert_eq!(set_fd(&fe, &params(SAVE, 0), &[w.as_raw_fd()]), OK_NO_FD);
    drop(w);
    assert!(be.wait_stderr("state saved: 3145728 bytes", TIMEOUT), "{}", be.stderr());
    responsive(&fe);
    let mut got = Vec::new();
    (&r).read_to_end(&mut got).unwrap();
    assert_eq!(got.len(), 3 * MIB);
    assert!(got == state(3 * MIB), "saved state differs");
    assert_eq!(check(&fe), 0, "CHECK after a complete save");
    eventually("transfer thread still there", || threads(be.pid()) == threads0);
    assert_eq!(fd_count(be.pid()), fds0, "fds left after the transfer");
    // A transfer is checked once.
    assert_eq!(check(&fe), 1, "second CHECK succeeded");
    assert_no_panic(&be);
    be.assert_alive();
}

#[test]
fn load_larger_than_a_pipe_buffer() {
    let (_d, mut be, fe) = start(&["-M", "0", "-X", "4194304"]);
    let (fds0, threads0) = (fd_count(be.pid()), threads(be.pid()));
    let data = state(3 * MIB + 17);
    let (r, mut w) = pipe();
    assert_eq!(set_fd(&fe, &params(LOAD, 0), &[r.as_raw_fd()]), OK_NO_FD);
    drop(r);
    responsive(&fe);
    // Blocks until the backend's thread has read all but the last pipe buffer.
    w.write_all(&data).unwrap();
    drop(w);
    assert_eq!(check(&fe), 0, "CHECK after a complete load");
    let line = format!("state loaded: {} bytes fnv {:016x}", data.len(), fnv(&data));
    // The backend prints before it replies, but its stderr reaches us through a reader thread.
    eventually(&format!("want {line}"), || be.stderr().contains(&line));
    eventually("transfer thread still there", || threads(be.pid()) == threads0);
    assert_eq!(fd_count(be.pid()), fds0, "fds left after the transfer");
    // An empty state is a state too.
    let (r, w) = pipe();
    assert_eq!(set_fd(&fe, &params(LOAD, 0), &[r.as_raw_fd()]), OK_NO_FD);
    drop((r, w));
    assert_eq!(check(&fe), 0);
    eventually("state loaded: 0 bytes", || be.stderr().contains("state loaded: 0 bytes"));
    assert_no_panic(&be);
    be.assert_alive();
}

#[test]
fn load_beyond_the_maximum_and_refused_loads() {
    let (_d, mut be, fe) = start(&["-M", "0", "-X", "65536"]);
    let fds0 = fd_count(be.pid());
    let (r, w) = pipe();
    assert_eq!(set_fd(&fe, &params(LOAD, 0), &[r.as_raw_fd()]), OK_NO_FD);
    drop(r);
    // The backend stops reading past 64 KiB and closes its end: our write fails.
    let writer = std::thread::spawn(move || (&w).write_all(&state(MIB)).is_err());
    assert!(writer.join().unwrap(), "1 MiB went into a load limited to 64 KiB");
    assert_eq!(check(&fe), 1, "CHECK after an oversized load succeeded");
    assert!(!be.stderr().contains("state loaded"), "oversized state handed to the device");
    assert_eq!(fd_count(be.pid()), fds0);
    // An endless stream (not a pipe at all): memory stays bounded by the maximum.
    let zero = std::fs::File::open("/dev/zero").unwrap();
    assert_eq!(set_fd(&fe, &params(LOAD, 0), &[zero.as_raw_fd()]), OK_NO_FD);
    drop(zero);
    assert_eq!(check(&fe), 1, "CHECK after an endless load succeeded");
    assert_eq!(fd_count(be.pid()), fds0);
    // Exactly the maximum is fine.
    let (r, w) = pipe();
    assert_eq!(set_fd(&fe, &params(LOAD, 0), &[r.as_raw_fd()]), OK_NO_FD);
    drop(r);
    let writer = std::thread::spawn(move || (&w).write_all(&state(65536)).is_ok());
    assert!(writer.join().unwrap());
    assert_eq!(check(&fe), 0);
    // The device refuses a state (its own check: a first byte of 0xEE): CHECK reports it.
    let (r, mut w) = pipe();
    assert_eq!(set_fd(&fe, &params(LOAD, 0), &[r.as_raw_fd()]), OK_NO_FD);
    drop(r);
    w.write_all(&[0xee; 100]).unwrap();
    drop(w);
    assert_eq!(check(&fe), 1, "a refused state reported as loaded");
    eventually("state loaded: 100 bytes", || be.stderr().contains("state loaded: 100 bytes"));
    assert_no_panic(&be);
    be.assert_alive();
}

#[test]
fn bad_set_device_state_fd_requests() {
    let (_d, mut be, fe) = start(&["-M", "100"]);
    let base = fd_count(be.pid());
    let (r1, w1) = pipe();
    let (_r2, w2) = pipe();
    // Wrong fd counts.
    assert_eq!(set_fd(&fe, &params(SAVE, 0), &[]), FAILED_NO_FD);
    assert_eq!(set_fd(&fe, &params(SAVE, 0), &[w1.as_raw_fd(), w2.as_raw_fd()]), FAILED_NO_FD);
    // Unknown direction, unknown phase.
    assert_eq!(set_fd(&fe, &params(2, 0), &[w1.as_raw_fd()]), FAILED_NO_FD);
    assert_eq!(set_fd(&fe, &params(u32::MAX, 0), &[w1.as_raw_fd()]), FAILED_NO_FD);
    assert_eq!(set_fd(&fe, &params(SAVE, 1), &[w1.as_raw_fd()]), FAILED_NO_FD);
    assert_eq!(set_fd(&fe, &params(LOAD, 7), &[w1.as_raw_fd()]), FAILED_NO_FD);
    assert_eq!(fd_count(be.pid()), base, "fds of refused requests kept");
    assert!(!be.stderr().contains("state saved"), "a refused save ran the handler");
    // Nothing was started: CHECK has nothing to report but failure.
    assert_eq!(check(&fe), 1, "CHECK without a transfer succeeded");
    assert_no_panic(&be);
    // The refusals did not disturb a real transfer afterwards.
    assert_eq!(set_fd(&fe, &params(SAVE, 0), &[w1.as_raw_fd()]), OK_NO_FD);
    drop((w1, w2));
    let mut got = Vec::new();
    (&r1).read_to_end(&mut got).unwrap();
    assert!(got == state(100));
    assert_eq!(check(&fe), 0);
    // A payload of the wrong size is a broken message, as for every request; still a reply.
    let (_r3, w3) = pipe();
    assert_eq!(set_fd(&fe, &[0u8; 4], &[w3.as_raw_fd()]), FAILED_NO_FD);
    assert!(be.wait_stderr("PANIC: Invalid message size 4", TIMEOUT), "{}", be.stderr());
    be.assert_alive();
}

#[test]
fn frontend_that_never_reads() {
    let (_d, mut be, fe) = start(&["-M", "2097152"]);
    let (fds0, threads0) = (fd_count(be.pid()), threads(be.pid()));
    let (r, w) = pipe();
    assert_eq!(set_fd(&fe, &params(SAVE, 0), &[w.as_raw_fd()]), OK_NO_FD);
    drop(w);
    // The transfer thread is stuck on the full pipe; dispatch is not.
    for _ in 0..10 {
        responsive(&fe);
    }
    // CHECK before EOF was possible: a failure, at once, and the thread is stopped.
    let t0 = Instant::now();
    assert_eq!(check(&fe), 1, "CHECK before the state was read succeeded");
    assert!(t0.elapsed() < Duration::from_secs(2), "CHECK waited for a save nobody reads");
    eventually("transfer thread still there", || threads(be.pid()) == threads0);
    assert_eq!(fd_count(be.pid()), fds0);
    // Our end now sees what fit in the pipe, then EOF.
    let mut got = Vec::new();
    (&r).read_to_end(&mut got).unwrap();
    assert!(got.len() < 2 * MIB, "the whole state got through a pipe nobody read");
    // A new transfer replaces one in progress.
    let (_r1, w1) = pipe();
    assert_eq!(set_fd(&fe, &params(SAVE, 0), &[w1.as_raw_fd()]), OK_NO_FD);
    drop(w1);
    let (r2, w2) = pipe();
    assert_eq!(set_fd(&fe, &params(SAVE, 0), &[w2.as_raw_fd()]), OK_NO_FD);
    drop(w2);
    let mut got = Vec::new();
    (&r2).read_to_end(&mut got).unwrap();
    assert!(got == state(2 * MIB));
    assert_eq!(check(&fe), 0);
    eventually("transfer thread still there", || threads(be.pid()) == threads0);
    assert_no_panic(&be);
    be.assert_alive();
}

#[test]
fn frontend_that_closes_early() {
    let (_d, mut be, fe) = start(&["-M", "2097152"]);
    let (fds0, threads0) = (fd_count(be.pid()), threads(be.pid()));
    let (r, w) = pipe();
    assert_eq!(set_fd(&fe, &params(SAVE, 0), &[w.as_raw_fd()]), OK_NO_FD);
    drop(w);
    let mut some = vec![0u8; 4096];
    (&r).read_exact(&mut some).unwrap();
    drop(r);
    // The writer gets EPIPE (no SIGPIPE kills the backend) and ends by itself.
    eventually("transfer thread did not end", || threads(be.pid()) == threads0);
    assert_eq!(check(&fe), 1, "CHECK after an aborted save succeeded");
    assert_eq!(fd_count(be.pid()), fds0);
    responsive(&fe);
    assert_no_panic(&be);
    be.assert_alive();
}

#[test]
fn load_whose_frontend_never_closes_its_end() {
    let (_d, mut be, fe) = start(&["-M", "0"]);
    let threads0 = threads(be.pid());
    let (r, mut w) = pipe();
    assert_eq!(set_fd(&fe, &params(LOAD, 0), &[r.as_raw_fd()]), OK_NO_FD);
    drop(r);
    w.write_all(&[1, 2, 3]).unwrap();
    responsive(&fe);
    // No EOF ever comes: CHECK gives up after a bounded wait and stops the thread.
    assert_eq!(check(&fe), 1, "CHECK succeeded without EOF");
    eventually("transfer thread still there", || threads(be.pid()) == threads0);
    assert!(!be.stderr().contains("state loaded"), "{}", be.stderr());
    drop(w);
    responsive(&fe);
    assert_no_panic(&be);
    be.assert_alive();
}

#[test]
fn disconnect_mid_transfer_ends_the_thread() {
    let (_d, mut be, fe) = start(&["-M", "2097152"]);
    let (r, w) = pipe();
    assert_eq!(set_fd(&fe, &params(SAVE, 0), &[w.as_raw_fd()]), OK_NO_FD);
    drop(w);
    responsive(&fe);
    // The frontend goes away with the pipe still full: the backend tears the device down
    // (vu_deinit) and exits, which it cannot if the transfer thread hangs.
    drop(fe);
    let st = be.wait_exit(TIMEOUT).expect("backend hung at teardown with a transfer running");
    assert!(st.success(), "{}", common::describe(st));
    eventually("exiting", || be.stderr().contains("exiting"));
    let mut got = Vec::new();
    (&r).read_to_end(&mut got).unwrap();
    assert!(got.len() < 2 * MIB);
}
