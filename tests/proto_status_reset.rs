// SPDX-License-Identifier: GPL-2.0-or-later
//! STATUS (protocol feature 16) and RESET_DEVICE (13), which the library offers beyond the
//! original: GET/SET_STATUS and the status as C sees it (vu_get_status), FEATURES_OK for
//! unacceptable features, SET_STATUS with bits a driver may not set, SET_STATUS(0) as a stop;
//! RESET_DEVICE forgetting every ring (indices, addresses, fds, inflight area) while the
//! memory table and ownership stay, and the next start working; a device that intercepts the
//! new requests in process_msg keeping them.

mod common;
#[path = "proto/mod.rs"]
mod proto;

use std::os::fd::AsRawFd;

use common::*;
use proto::*;

const RESET_DEVICE: u32 = 34;
const SET_STATUS: u32 = 39;
const GET_STATUS: u32 = 40;
const PF_RESET_DEVICE: u64 = 1 << 13;
const PF_STATUS: u64 = 1 << 16;
const PF_DEVICE_STATE: u64 = 1 << 19;
const CMD_GET_STATUS: u32 = 0x1006;

const S_ACKNOWLEDGE: u64 = 1;
const S_DRIVER: u64 = 2;
const S_DRIVER_OK: u64 = 4;
const S_FEATURES_OK: u64 = 8;
const S_FAILED: u64 = 128;

fn start(args: &[&str]) -> (TempDir, ProtoBackend, Front) {
    let (dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, args);
    let mem = GuestMemory::simple(4 << 20);
    let pf = PF_REPLY_ACK | PF_STATUS | PF_RESET_DEVICE;
    let mut fe = Front::new(be.connect(), mem, F_VERSION_1 | F_PROTOCOL_FEATURES, pf);
    fe.add_queue(64, 0);
    fe.start_queue(0, 0, None);
    (dir, be, fe)
}

fn get_status(fe: &Front) -> u64 {
    fe.c.call(GET_STATUS, &[], &[]).u64()
}

/// The status as the device's C code reads it (vu_get_status), through a device command.
fn c_status(fe: &mut Front) -> u8 {
    let p = command(&fe.mem, CMD_GET_STATUS, &[], 1);
    let (st, len) = fe.io(0, &p);
    assert_eq!((st, len), (0, 2), "CMD_GET_STATUS failed");
    fe.mem.read(p.data_gpa, 1)[0]
}

/// One read of sector 0 on queue 0; checks the data.
fn read_ok(fe: &mut Front) {
    let mem = fe.mem.clone();
    let (hdr, data, st) = (mem.alloc(16, 16), mem.alloc(512, 8), mem.alloc(1, 1));
    let (s, _) = fe.io(0, &prepare_at(&mem, VIRTIO_BLK_T_IN, 0, &[], 512, hdr, data, st, 512));
    assert_eq!(s, 0, "read failed");
    assert!(mem.read(data, 512) == initial_image(512), "read returned wrong data");
}

fn assert_no_panic(be: &ProtoBackend) {
    assert!(!be.stderr().contains("PANIC"), "{}", be.stderr());
}

#[test]
fn offers_status_and_reset_device_not_device_state_without_handlers() {
    let (_d, mut be, fe) = start(&[]);
    let pf = fe.c.call(GET_PROTOCOL_FEATURES, &[], &[]).u64();
    assert_eq!(pf & (PF_STATUS | PF_RESET_DEVICE), PF_STATUS | PF_RESET_DEVICE, "{pf:#x}");
    assert_eq!(pf & PF_DEVICE_STATE, 0, "DEVICE_STATE offered without handlers: {pf:#x}");
    assert_eq!(pf & (1 << 17), 0, "XEN_MMAP offered: {pf:#x}");
    be.assert_alive();
}

#[test]
fn status_set_get_and_visible_from_c() {
    let (_d, mut be, mut fe) = start(&[]);
    assert_eq!(get_status(&fe), 0);
    assert_eq!(c_status(&mut fe), 0);
    // QEMU's sequence: after SET_FEATURES, GET then SET with FEATURES_OK added; at start
    // GET then SET(ACK|DRIVER|DRIVER_OK|FEATURES_OK).
    fe.req(SET_STATUS, &u64p(S_ACKNOWLEDGE | S_DRIVER), &[]);
    assert_eq!(get_status(&fe), 3);
    fe.req(SET_STATUS, &u64p(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK), &[]);
    assert_eq!(get_status(&fe), 0xb, "FEATURES_OK dropped for acceptable features");
    fe.req(SET_STATUS, &u64p(S_ACKNOWLEDGE | S_DRIVER | S_DRIVER_OK | S_FEATURES_OK), &[]);
    assert_eq!(get_status(&fe), 0xf);
    assert_eq!(c_status(&mut fe), 0xf);
    fe.req(SET_STATUS, &u64p(0xf | S_FAILED), &[]);
    assert_eq!(get_status(&fe), 0x8f);
    // Without NEED_REPLY, as QEMU sends it.
    fe.c.send(SET_STATUS, FLAG_VERSION, &u64p(0x7), &[]);
    assert_eq!(get_status(&fe), 0x7);
    assert_no_panic(&be);
    be.assert_alive();
}

#[test]
fn features_ok_not_kept_for_unacceptable_features() {
    let (_d, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, &[]);
    let c = be.connect();
    let offered = c.call(GET_FEATURES, &[], &[]).u64();
    let unoffered = (40..64).map(|b| 1u64 << b).find(|b| offered & b == 0).expect("a free bit");
    c.send(SET_FEATURES, FLAG_VERSION, &u64p(F_VERSION_1 | F_PROTOCOL_FEATURES | unoffered), &[]);
    c.call(GET_PROTOCOL_FEATURES, &[], &[]);
    c.send(SET_PROTOCOL_FEATURES, FLAG_VERSION, &u64p(PF_REPLY_ACK | PF_STATUS), &[]);
    c.ok(SET_STATUS, &u64p(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK), &[]);
    assert_eq!(c.call(GET_STATUS, &[], &[]).u64(), 3, "FEATURES_OK kept for unoffered features");
    // Acceptable features again: FEATURES_OK sticks.
    c.send(SET_FEATURES, FLAG_VERSION, &u64p(F_VERSION_1 | F_PROTOCOL_FEATURES), &[]);
    c.ok(SET_STATUS, &u64p(S_ACKNOWLEDGE | S_DRIVER | S_FEATURES_OK), &[]);
    assert_eq!(c.call(GET_STATUS, &[], &[]).u64(), 0xb);
    assert_no_panic(&be);
    be.assert_alive();
}

#[test]
fn set_status_with_bits_a_driver_may_not_set_is_refused() {
    let (_d, mut be, fe) = start(&[]);
    fe.req(SET_STATUS, &u64p(0x3), &[]);
    // Undefined bits 4 and 5, DEVICE_NEEDS_RESET (the device's), bits beyond the byte.
    for bad in [0x10u64, 0x20, 0x40, 0x100, 0x3 | 1 << 40, u64::MAX] {
        assert_eq!(fe.c.ack(SET_STATUS, &u64p(bad), &[]), 1, "SET_STATUS {bad:#x} acked");
        assert_eq!(get_status(&fe), 0x3, "SET_STATUS {bad:#x} changed the status");
    }
    // Without NEED_REPLY: nothing to answer, nothing changes either.
    fe.c.send(SET_STATUS, FLAG_VERSION, &u64p(0x43), &[]);
    assert_eq!(get_status(&fe), 0x3);
    // A wrong payload size is a broken message, as for every request.
    fe.c.send(SET_STATUS, FLAG_VERSION, &[1, 2, 3, 4], &[]);
    assert!(be.wait_stderr("PANIC: Invalid message size 4", TIMEOUT), "{}", be.stderr());
    be.assert_alive();
}

#[test]
fn set_status_zero_is_a_stop_not_a_reset() {
    let (_d, mut be, mut fe) = start(&[]);
    fe.req(SET_STATUS, &u64p(0xf), &[]);
    read_ok(&mut fe);
    read_ok(&mut fe);
    fe.req(SET_STATUS, &u64p(0), &[]);
    assert_eq!(get_status(&fe), 0);
    // The ring is untouched: it keeps serving, with its indices.
    read_ok(&mut fe);
    assert!(!be.stderr().contains("queue 0 stopped"), "{}", be.stderr());
    let base = fe.c.call(GET_VRING_BASE, &state(0, 0), &[]);
    assert_eq!(base.u32_at(4), 3, "the avail index moved");
    assert_no_panic(&be);
    be.assert_alive();
}

#[test]
fn reset_device_forgets_rings_and_keeps_memory_and_ownership() {
    let (_d, mut be, mut fe) = start(&[]);
    fe.req(SET_STATUS, &u64p(0xf), &[]);
    read_ok(&mut fe);
    read_ok(&mut fe);
    let err = eventfd();
    fe.req(SET_VRING_ERR, &u64p(0), &[err.as_raw_fd()]);
    let before = fd_count(be.pid());
    // No GET_VRING_BASE first: the reset itself stops the started queue.
    fe.req(RESET_DEVICE, &[], &[]);
    assert!(be.wait_stderr("queue 0 stopped", TIMEOUT), "{}", be.stderr());
    assert_eq!(get_status(&fe), 0, "status survives the reset");
    // kick, call and err fds closed.
    assert_eq!(fd_count(be.pid()), before - 3, "ring fds not closed by RESET_DEVICE");
    // The next start, on a new ring at other addresses, from index 0; no new memory table,
    // no SET_OWNER: both survive the reset.
    fe.c.send(SET_FEATURES, FLAG_VERSION, &u64p(F_VERSION_1 | F_PROTOCOL_FEATURES), &[]);
    fe.qs.clear();
    fe.add_queue(32, 0);
    fe.start_queue(0, 0, None);
    read_ok(&mut fe);
    assert_eq!(fe.qs[0].used_idx(), 1, "the new ring did not start from 0");
    let base = fe.c.call(GET_VRING_BASE, &state(0, 0), &[]);
    assert_eq!(base.u32_at(4), 1, "indices of the old ring survived the reset");
    // The backend's stderr reaches us through a reader thread: wait for the second line.
    let t0 = std::time::Instant::now();
    while be.stderr().matches("queue 0 started").count() < 2 && t0.elapsed() < TIMEOUT {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(be.stderr().matches("queue 0 started").count(), 2, "{}", be.stderr());
    assert_no_panic(&be);
    be.assert_alive();
}

#[test]
fn reset_device_of_a_stopped_device_and_repeated() {
    let (_d, mut be, mut fe) = start(&[]);
    fe.c.call(GET_VRING_BASE, &state(0, 0), &[]);
    // The backend's stderr reaches us through a reader thread: wait for the stop's line before
    // counting, or a late line looks like a stop reported by the resets below.
    assert!(be.wait_stderr("queue 0 stopped", TIMEOUT), "{}", be.stderr());
    let stops = be.stderr().matches("queue 0 stopped").count();
    fe.req(RESET_DEVICE, &[], &[]);
    fe.req(RESET_DEVICE, &[], &[]);
    // Nothing was started: no further stop reported.
    assert_eq!(be.stderr().matches("queue 0 stopped").count(), stops, "{}", be.stderr());
    // RESET_DEVICE with a payload or fds: the fds are closed, nothing else happens.
    let base = fd_count(be.pid());
    let e = eventfd();
    fe.c.ok(RESET_DEVICE, &[], &[e.as_raw_fd()]);
    assert_eq!(fd_count(be.pid()), base, "fd sent with RESET_DEVICE kept");
    fe.c.send(SET_FEATURES, FLAG_VERSION, &u64p(F_VERSION_1 | F_PROTOCOL_FEATURES), &[]);
    fe.qs.clear();
    fe.add_queue(64, 0);
    fe.start_queue(0, 0, None);
    read_ok(&mut fe);
    assert_no_panic(&be);
    be.assert_alive();
}

#[test]
fn reset_device_releases_the_inflight_area() {
    let (_d, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, &[]);
    let mem = GuestMemory::simple(4 << 20);
    let pf = PF_REPLY_ACK | PF_RESET_DEVICE | PF_INFLIGHT_SHMFD;
    let mut fe = Front::new(be.connect(), mem, F_VERSION_1 | F_PROTOCOL_FEATURES, pf);
    let setup_inflight = |fe: &Front| {
        let r = fe.c.call(GET_INFLIGHT_FD, &inflight(0, 0, 1, 64), &[]);
        assert_eq!(r.fds.len(), 1, "no inflight fd");
        fe.req(SET_INFLIGHT_FD, &r.payload, &[r.fds[0].as_raw_fd()]);
    };
    setup_inflight(&fe);
    fe.add_queue(64, 0);
    fe.start_queue(0, 0, None);
    read_ok(&mut fe);
    let before = fd_count(be.pid());
    fe.req(RESET_DEVICE, &[], &[]);
    // kick, call and the inflight memfd.
    assert_eq!(fd_count(be.pid()), before - 3, "inflight area kept after RESET_DEVICE");
    // As QEMU does after a reset: a fresh inflight area, then the start.
    fe.c.send(SET_FEATURES, FLAG_VERSION, &u64p(F_VERSION_1 | F_PROTOCOL_FEATURES), &[]);
    setup_inflight(&fe);
    fe.qs.clear();
    fe.add_queue(64, 0);
    fe.start_queue(0, 0, None);
    read_ok(&mut fe);
    assert_no_panic(&be);
    be.assert_alive();
}

#[test]
fn a_device_that_intercepts_the_new_requests_keeps_them() {
    let (_d, mut be, mut fe) = start(&["-I"]);
    assert_eq!(get_status(&fe), 0x77, "GET_STATUS did not reach process_msg");
    fe.req(SET_STATUS, &u64p(0xf), &[]);
    assert!(be.wait_stderr("intercepted 39", TIMEOUT), "{}", be.stderr());
    fe.req(RESET_DEVICE, &[], &[]);
    assert!(be.wait_stderr("intercepted 34", TIMEOUT), "{}", be.stderr());
    // The library did not reset anything: the queue still runs, and its status is untouched.
    read_ok(&mut fe);
    assert_eq!(c_status(&mut fe), 0);
    assert!(!be.stderr().contains("queue 0 stopped"), "{}", be.stderr());
    let (r, w) = pipe();
    let reply = fe.c.call(42, &[0u8; 8], &[w.as_raw_fd()]);
    assert_eq!(reply.u64(), 0x101);
    assert_eq!(fe.c.call(43, &[], &[]).u64(), 7);
    drop((r, w));
    assert_no_panic(&be);
    be.assert_alive();
}

fn pipe() -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: plain syscall into a local array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: two fresh fds we own.
    unsafe {
        (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1]))
    }
}
