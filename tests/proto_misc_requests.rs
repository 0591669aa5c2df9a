// SPDX-License-Identifier: GPL-2.0-or-later
//! Requests libvhost-user leaves to the device or handles minimally, compared
//! with the original's behaviour: GPU_SET_SOCKET reaches process_msg (and is
//! "Unhandled" without it, fd closed, acked 0), SET_VRING_ERR keeps/replaces/
//! drops the err fd, RESET_OWNER disables the rings (I/O still processed, as
//! the original does not check the enable flag when popping).

mod common;
#[path = "proto/mod.rs"]
mod proto;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use proto::*;

fn start(args: &[&str]) -> (TempDir, ProtoBackend, Front) {
    let (dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, args);
    let mem = GuestMemory::simple(4 << 20);
    let mut fe = Front::new(be.connect(), mem, F_VERSION_1 | F_PROTOCOL_FEATURES, PF_REPLY_ACK);
    fe.add_queue(64, 0);
    fe.start_queue(0, 0, None);
    (dir, be, fe)
}

#[test]
fn gpu_set_socket_reaches_process_msg() {
    let (_d, mut be, fe) = start(&["-g"]);
    let (mut ours, theirs) = UnixStream::pair().unwrap();
    assert_eq!(fe.c.ack(GPU_SET_SOCKET, &[], &[theirs.as_raw_fd()]), 0);
    drop(theirs);
    ours.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut b = [0u8; 4];
    ours.read_exact(&mut b).expect("the device did not get the GPU socket");
    assert_eq!(&b, b"gpu!");
    assert!(!be.stderr().contains("PANIC"), "{}", be.stderr());
    be.assert_alive();
}

#[test]
fn gpu_set_socket_unhandled_without_process_msg() {
    let (_d, mut be, fe) = start(&[]);
    let (ours, theirs) = UnixStream::pair().unwrap();
    let before = fd_count(be.pid());
    // Like the original: a panic, and the ack (if asked for) is 0.
    assert_eq!(fe.c.ack(GPU_SET_SOCKET, &[], &[theirs.as_raw_fd()]), 0);
    drop(theirs);
    assert!(be.wait_stderr("PANIC: Unhandled request: 33", TIMEOUT), "{}", be.stderr());
    assert_eq!(fd_count(be.pid()), before, "the unhandled request's fd was not closed");
    // Our end sees EOF: nobody holds the other end any more.
    ours.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut b = [0u8; 1];
    assert_eq!((&ours).read(&mut b).unwrap(), 0);
    be.assert_alive();
}

#[test]
fn set_vring_err_fd_handling() {
    let (_d, mut be, fe) = start(&[]);
    let base = fd_count(be.pid());
    let e1 = eventfd();
    fe.req(SET_VRING_ERR, &u64p(0), &[e1.as_raw_fd()]);
    assert_eq!(fd_count(be.pid()), base + 1, "err fd not kept");
    let e2 = eventfd();
    fe.req(SET_VRING_ERR, &u64p(0), &[e2.as_raw_fd()]);
    assert_eq!(fd_count(be.pid()), base + 1, "old err fd not closed on replacement");
    fe.req(SET_VRING_ERR, &u64p(NOFD), &[]);
    assert_eq!(fd_count(be.pid()), base, "err fd not closed with NOFD");
    assert!(!be.stderr().contains("PANIC"), "{}", be.stderr());
    // Invalid queue index: a panic, the fd is not kept.
    fe.c.send(SET_VRING_ERR, FLAG_VERSION, &u64p(5), &[e1.as_raw_fd()]);
    assert_eq!(fe.c.call(GET_QUEUE_NUM, &[], &[]).u64(), 1);
    assert!(be.wait_stderr("PANIC: Invalid queue index: 5", TIMEOUT), "{}", be.stderr());
    assert_eq!(fd_count(be.pid()), base, "fd of a refused SET_VRING_ERR kept");
    be.assert_alive();
}

fn enabled(fe: &mut Front) -> bool {
    let p = command(&fe.mem, CMD_QUEUE_ENABLED, &[], 0);
    let (st, _) = fe.io(0, &p);
    st == 0
}

#[test]
fn reset_owner_disables_rings() {
    let (_d, mut be, mut fe) = start(&[]);
    assert!(enabled(&mut fe), "queue not enabled after SET_VRING_ENABLE");
    fe.req(RESET_OWNER, &[], &[]);
    assert!(!enabled(&mut fe), "queue still enabled after RESET_OWNER");
    // Requests keep being processed (the original pops regardless of the flag).
    let mem = fe.mem.clone();
    let hdr = mem.alloc(16, 16);
    let data = mem.alloc(512, 8);
    let st = mem.alloc(1, 1);
    let (s, _) = fe.io(0, &prepare_at(&mem, VIRTIO_BLK_T_IN, 0, &[], 512, hdr, data, st, 512));
    assert_eq!(s, 0);
    assert!(mem.read(data, 512) == initial_image(512));
    fe.req(SET_VRING_ENABLE, &state(0, 1), &[]);
    assert!(enabled(&mut fe), "SET_VRING_ENABLE after RESET_OWNER");
    assert!(!be.stderr().contains("PANIC"), "{}", be.stderr());
    std::thread::sleep(Duration::from_millis(1));
    be.assert_alive();
}
