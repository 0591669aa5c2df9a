// SPDX-License-Identifier: GPL-2.0-or-later
//! The backend channel (SET_BACKEND_REQ_FD): config-change messages, host
//! notifiers (acked by the front-end), shared objects (add, remove, lookup),
//! GET_SHARED_OBJECT through the device's callback, and in-band
//! notifications (VRING_CALL over the channel, VHOST_USER_VRING_KICK).
//! The backend's calls are triggered through device commands on the queue.

mod common;
#[path = "proto/mod.rs"]
mod proto;

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use proto::*;

const PF_CHANNEL: u64 =
    PF_REPLY_ACK | PF_BACKEND_REQ | PF_BACKEND_SEND_FD | PF_HOST_NOTIFIER | PF_SHARED_OBJECT;

struct Setup {
    be: ProtoBackend,
    fe: Front,
    ch: Conn,
    _dir: TempDir,
}

fn setup(args: &[&str], pf: u64, call: bool, kick: bool) -> Setup {
    let (dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, args);
    let mem = GuestMemory::simple(4 << 20);
    let mut fe = Front::new(be.connect(), mem, F_VERSION_1 | F_PROTOCOL_FEATURES, pf);
    let (ours, theirs) = UnixStream::pair().unwrap();
    fe.req(SET_BACKEND_REQ_FD, &[], &[theirs.as_raw_fd()]);
    drop(theirs);
    fe.add_queue(64, 0);
    fe.start_queue_with(0, 0, None, call, kick);
    Setup { be, fe, ch: Conn::new(ours), _dir: dir }
}

/// Submit a device command; returns its prepared request and head.
fn command_submit(fe: &mut Front, cmd: u32, arg: &[u8], in_len: u32) -> (Prepared, u16) {
    let p = command(&fe.mem, cmd, arg, in_len);
    let h = fe.submit(0, &p);
    (p, h)
}

fn finish_command(fe: &mut Front, p: &Prepared, head: u16) -> u8 {
    let (id, _) = fe.qs[0].wait_used(TIMEOUT);
    assert_eq!(id, head);
    fe.mem.read(p.status_gpa, 1)[0]
}

fn uuid(seed: u8) -> [u8; 16] {
    std::array::from_fn(|i| seed.wrapping_mul(17).wrapping_add(i as u8))
}

#[test]
fn config_change_message() {
    let mut s = setup(&[], PF_CHANNEL | PF_CONFIG, true, true);
    for _ in 0..3 {
        let (p, h) = command_submit(&mut s.fe, CMD_CONFIG_CHANGE, &[], 0);
        let m = s.ch.recv();
        assert_eq!(m.request, B_CONFIG_CHANGE_MSG, "backend channel request");
        assert_eq!(m.flags, FLAG_VERSION, "CONFIG_CHANGE_MSG flags (no reply wanted)");
        assert!(m.payload.is_empty() && m.fds.is_empty());
        assert_eq!(finish_command(&mut s.fe, &p, h), 0);
    }
    assert!(!s.ch.readable(Duration::from_millis(50)), "unexpected extra channel message");
    s.be.assert_alive();
}

#[test]
fn host_notifier_acked_by_frontend() {
    let mut s = setup(&[], PF_CHANNEL, true, true);
    for (ack, want_status) in [(0u64, 0u8), (1, 1)] {
        let (p, h) = command_submit(&mut s.fe, CMD_HOST_NOTIFIER, &[0, 0, 0, 0, 0, 0, 0, 0], 0);
        let m = s.ch.recv();
        assert_eq!(m.request, B_VRING_HOST_NOTIFIER_MSG);
        assert!(m.flags & FLAG_NEED_REPLY != 0, "host notifier message must ask for a reply");
        assert_eq!(m.payload.len(), 24, "VhostUserVringArea size");
        assert_eq!(m.u64_at(0), 0, "queue index / flags");
        assert_eq!(m.u64_at(8), 4096, "area size");
        assert_eq!(m.u64_at(16), 0, "area offset");
        assert_eq!(m.fds.len(), 1, "host notifier fd");
        let f = std::fs::File::from(m.fds.into_iter().next().unwrap());
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(&b, b"notifier", "the fd is not the backend's notifier area");
        // The backend waits for our answer before completing the command.
        assert!(s.fe.qs[0].poll_used().is_none(), "command completed before the front-end acked");
        s.ch.reply_u64(
            &Msg { request: m.request, flags: 0, payload: vec![], fds: vec![] },
            ack,
            &[],
        );
        assert_eq!(
            finish_command(&mut s.fe, &p, h),
            want_status,
            "vu_set_queue_host_notifier result for ack {ack}"
        );
    }
    // Removal: NOFD flag, no fd.
    let (p, h) = command_submit(&mut s.fe, CMD_HOST_NOTIFIER, &[0, 0, 0, 0, 1, 0, 0, 0], 0);
    let m = s.ch.recv();
    assert_eq!(m.request, B_VRING_HOST_NOTIFIER_MSG);
    assert_eq!(m.u64_at(0), NOFD, "removal carries the NOFD flag");
    assert!(m.fds.is_empty());
    s.ch.reply_u64(&m, 0, &[]);
    assert_eq!(finish_command(&mut s.fe, &p, h), 0);
    s.be.assert_alive();
}

#[test]
fn host_notifier_needs_backend_send_fd() {
    let mut s = setup(&[], PF_REPLY_ACK | PF_BACKEND_REQ | PF_HOST_NOTIFIER, true, true);
    let (p, h) = command_submit(&mut s.fe, CMD_HOST_NOTIFIER, &[0; 8], 0);
    assert_eq!(
        finish_command(&mut s.fe, &p, h),
        1,
        "host notifier without BACKEND_SEND_FD must fail"
    );
    assert!(!s.ch.readable(Duration::from_millis(50)), "message sent without BACKEND_SEND_FD");
}

#[test]
fn shared_objects_add_remove_lookup() {
    let mut s = setup(&[], PF_CHANNEL, true, true);
    for (cmd, req) in [(CMD_SHOBJ_ADD, B_SHARED_OBJECT_ADD), (CMD_SHOBJ_RM, B_SHARED_OBJECT_REMOVE)]
    {
        let u = uuid(cmd as u8);
        let (p, h) = command_submit(&mut s.fe, cmd, &u, 0);
        let m = s.ch.recv();
        assert_eq!(m.request, req);
        assert_eq!(
            m.flags & FLAG_NEED_REPLY,
            0,
            "shared object add/remove do not wait for a reply"
        );
        assert_eq!(m.payload, u.to_vec(), "uuid");
        assert_eq!(finish_command(&mut s.fe, &p, h), 0);
    }
    // Lookup: answered with an fd and status 0 -> the device reads it.
    let obj = memfd("object", 4096);
    obj.write_all_at(b"0123456789abcdef", 0).unwrap();
    let u = uuid(7);
    let (p, h) = command_submit(&mut s.fe, CMD_SHOBJ_LOOKUP, &u, 16);
    let m = s.ch.recv();
    assert_eq!(m.request, B_SHARED_OBJECT_LOOKUP);
    assert!(m.flags & FLAG_NEED_REPLY != 0);
    assert_eq!(m.payload, u.to_vec());
    s.ch.reply_u64(&m, 0, &[obj.as_raw_fd()]);
    assert_eq!(finish_command(&mut s.fe, &p, h), 0, "lookup with an fd failed");
    assert_eq!(
        s.fe.mem.read(p.data_gpa, 16),
        b"0123456789abcdef".to_vec(),
        "device read the wrong object"
    );
    // Failed lookups: nonzero status, or no fd.
    for (status, with_fd) in [(1u64, true), (0, false)] {
        let (p, h) = command_submit(&mut s.fe, CMD_SHOBJ_LOOKUP, &u, 16);
        let m = s.ch.recv();
        assert_eq!(m.request, B_SHARED_OBJECT_LOOKUP);
        let fds = if with_fd { vec![obj.as_raw_fd()] } else { vec![] };
        s.ch.reply_u64(&m, status, &fds);
        assert_eq!(
            finish_command(&mut s.fe, &p, h),
            1,
            "lookup answered with status {status}, fd {with_fd} must fail"
        );
    }
    s.be.assert_alive();
}

#[test]
fn shared_objects_need_the_feature() {
    let mut s = setup(&[], PF_REPLY_ACK | PF_BACKEND_REQ, true, true);
    for cmd in [CMD_SHOBJ_ADD, CMD_SHOBJ_RM, CMD_SHOBJ_LOOKUP] {
        let (p, h) =
            command_submit(&mut s.fe, cmd, &uuid(1), if cmd == CMD_SHOBJ_LOOKUP { 16 } else { 0 });
        assert_eq!(
            finish_command(&mut s.fe, &p, h),
            1,
            "command {cmd:#x} must fail without SHARED_OBJECT"
        );
    }
    assert!(!s.ch.readable(Duration::from_millis(50)), "message sent without SHARED_OBJECT");
}

#[test]
fn get_shared_object_callback() {
    let s = setup(&[], PF_CHANNEL, true, true);
    let u = uuid(3);
    let r = s.fe.c.call(GET_SHARED_OBJECT, &u, &[]);
    assert_eq!(r.fds.len(), 1, "GET_SHARED_OBJECT reply without the object's fd");
    let f = std::fs::File::from(r.fds.into_iter().next().unwrap());
    let mut b = [0u8; 16];
    f.read_exact_at(&mut b, 0).unwrap();
    assert_eq!(b, u, "the fd is not the device's object for this uuid");
    assert!(s.be.wait_stderr("get_shared_object", TIMEOUT), "callback not called");
    // Unknown object: a reply without fd.
    let mut unknown = uuid(4);
    unknown[0] = 0xff;
    let r = s.fe.c.call(GET_SHARED_OBJECT, &unknown, &[]);
    assert!(r.fds.is_empty(), "reply for an unknown object carries an fd");
}

fn inband(sync: bool) {
    let args: &[&str] = if sync { &["-N"] } else { &[] };
    let mut s = setup(args, PF_CHANNEL | PF_INBAND_NOTIFICATIONS, false, false);
    let mem = s.fe.mem.clone();
    for k in 0..5u64 {
        let d = pattern(k, 4096);
        let hdr = mem.alloc(16, 16);
        let data = mem.alloc(4096, 8);
        let st = mem.alloc(1, 1);
        let p = prepare_at(&mem, VIRTIO_BLK_T_OUT, k * 8, &d, 0, hdr, data, st, 4096);
        let head = s.fe.submit_nokick(0, &p, false);
        // Nothing happens without a kick.
        std::thread::sleep(Duration::from_millis(10));
        assert!(s.fe.qs[0].poll_used().is_none(), "request processed without a kick");
        // In-band kick: the device processes the queue.
        s.fe.c.send(VRING_KICK, FLAG_VERSION | FLAG_NEED_REPLY, &state(0, 0), &[]);
        let m = s.ch.recv();
        assert_eq!(m.request, B_VRING_CALL, "in-band call expected on the channel");
        assert_eq!(m.payload, state(0, 0), "VRING_CALL payload (queue 0)");
        assert_eq!(m.flags & FLAG_NEED_REPLY != 0, sync, "VRING_CALL NEED_REPLY (sync = {sync})");
        if sync {
            s.ch.reply_u64(&m, 0, &[]);
        }
        let ack = s.fe.c.recv();
        assert_eq!(ack.request, VRING_KICK);
        assert_eq!(ack.u64(), 0);
        let (id, _) = s.fe.qs[0].wait_used(TIMEOUT);
        assert_eq!(id, head);
        assert_eq!(mem.read(st, 1)[0], 0);
    }
    let img = s.be.stderr();
    assert!(!img.contains("PANIC"), "{img}");
}

#[test]
fn inband_notifications() {
    inband(false);
}

#[test]
fn inband_notifications_sync() {
    inband(true);
}

#[test]
fn inband_needs_backend_req_and_reply_ack() {
    let (_dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, &[]);
    let c = be.connect();
    Front::handshake(&c, F_VERSION_1 | F_PROTOCOL_FEATURES, PF_INBAND_NOTIFICATIONS | PF_REPLY_ACK);
    assert!(
        be.wait_stderr(
            "PANIC: F_IN_BAND_NOTIFICATIONS requires F_BACKEND_REQ && F_REPLY_ACK",
            TIMEOUT
        ),
        "{}",
        be.stderr()
    );
    be.assert_alive();
}

#[test]
fn call_fd_wins_over_inband() {
    // With a call eventfd, notifications use it even when in-band is negotiated.
    let mut s = setup(&[], PF_CHANNEL | PF_INBAND_NOTIFICATIONS, true, true);
    let mem = s.fe.mem.clone();
    let hdr = mem.alloc(16, 16);
    let data = mem.alloc(512, 8);
    let st = mem.alloc(1, 1);
    let p = prepare_at(&mem, VIRTIO_BLK_T_IN, 0, &[], 512, hdr, data, st, 512);
    s.fe.io(0, &p);
    assert!(s.fe.qs[0].wait_call(TIMEOUT).is_some(), "no call eventfd signal");
    assert!(!s.ch.readable(Duration::from_millis(50)), "in-band call although a call fd is set");
}
