// SPDX-License-Identifier: GPL-2.0-or-later
//! LIBVHOST_USER_LOG: the example backend (vhost-user-proto-test, built against the library)
//! run with the variable set logs one stderr line per frontend request and backend-channel
//! message at `debug`, queue events too at `trace`, and nothing when it is unset.

mod common;
#[path = "proto/mod.rs"]
mod proto;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use common::*;
use proto::*;

const PF: u64 = PF_REPLY_ACK | PF_BACKEND_REQ | PF_CONFIG;

/// Runs one session against a backend started with LIBVHOST_USER_LOG=`log`: negotiation, a
/// memory table, the backend channel, one queue, a device command that makes the backend send
/// CONFIG_CHANGE_MSG over the channel, and last a request refused for its size. Returns the
/// backend's stderr, complete (the backend is killed and reaped once its stderr holds every
/// pattern of `settle`: lines it may write after the command completed).
fn session(log: Option<&str>, settle: &[&str]) -> String {
    let (_dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn_logging(&sock, &image, &[], log);
    let mem = GuestMemory::simple(4 << 20);
    let mut fe = Front::new(be.connect(), mem, F_VERSION_1 | F_PROTOCOL_FEATURES, PF);
    let (ours, theirs) = UnixStream::pair().unwrap();
    fe.req(SET_BACKEND_REQ_FD, &[], &[theirs.as_raw_fd()]);
    drop(theirs);
    let ch = Conn::new(ours);
    fe.add_queue(64, 0);
    fe.start_queue(0, 0, None);
    let p = command(&fe.mem, CMD_CONFIG_CHANGE, &[], 0);
    let head = fe.submit(0, &p);
    assert_eq!(ch.recv().request, B_CONFIG_CHANGE_MSG);
    let (id, _) = fe.qs[0].wait_used(TIMEOUT);
    assert_eq!(id, head);
    // Last (a refusal breaks the device): SET_FEATURES with a 4-byte payload, refused, and
    // the ack says so.
    assert_ne!(fe.c.ack(SET_FEATURES, &[0u8; 4], &[]), 0, "a short SET_FEATURES is refused");
    for pat in settle {
        assert!(be.wait_stderr(pat, TIMEOUT), "no {pat:?} in:\n{}", be.stderr());
    }
    be.assert_alive();
    be.sigkill();
    be.stderr()
}

/// The library's lines in `stderr` (the backend prints its own lines too).
fn library_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("libvhost-user[")).collect()
}

fn assert_has(lines: &[&str], want: &str) {
    assert!(
        lines.iter().any(|l| l.contains(want)),
        "no line with {want:?} in:\n{}",
        lines.join("\n")
    );
}

#[test]
fn debug_logs_every_request_and_backend_message() {
    let stderr = session(Some("debug"), &[]);
    let lines = library_lines(&stderr);
    for want in [
        "debug: frontend request VHOST_USER_SET_OWNER (3): 0 bytes, 0 fds: done",
        "debug: frontend request VHOST_USER_GET_FEATURES (1): 0 bytes, 0 fds: replied",
        "debug: frontend request VHOST_USER_SET_FEATURES (2): 8 bytes, 0 fds: done",
        "debug: frontend request VHOST_USER_SET_MEM_TABLE (5): 40 bytes, 1 fd: done, acked",
        "debug: frontend request VHOST_USER_SET_BACKEND_REQ_FD (21): 0 bytes, 1 fd: done, acked",
        "debug: frontend request VHOST_USER_SET_VRING_KICK (12): 8 bytes, 1 fd: done, acked",
        "debug: frontend request VHOST_USER_SET_FEATURES (2): 4 bytes, 0 fds: refused, acked as failed",
        "debug: backend message VHOST_USER_BACKEND_CONFIG_CHANGE_MSG (2): 0 bytes, 0 fds: sent",
        // The refusal itself, at error level.
        "error: vhost-user device panic: Invalid message size 4",
    ] {
        assert_has(&lines, want);
    }
    // One line per request: the handshake sends SET_OWNER once.
    assert_eq!(lines.iter().filter(|l| l.contains("VHOST_USER_SET_OWNER")).count(), 1);
    assert!(!lines.iter().any(|l| l.contains("trace:")), "trace lines at debug:\n{stderr}");
}

#[test]
fn trace_logs_queue_events() {
    let stderr = session(Some("trace"), &["notify: call eventfd", "pop: empty"]);
    let lines = library_lines(&stderr);
    assert_has(&lines, "debug: frontend request VHOST_USER_SET_VRING_ADDR (9): 40 bytes, 0 fds");
    assert_has(&lines, "trace: queue 0: pop: head 0, 1 out + 1 in buffers");
    assert_has(&lines, "trace: queue 0: pop: empty");
    assert_has(&lines, "trace: queue 0: push: head 0,");
    assert_has(&lines, "trace: queue 0: notify: call eventfd");
}

#[test]
fn unset_is_silent() {
    let stderr = session(None, &[]);
    let lines = library_lines(&stderr);
    assert!(lines.is_empty(), "library lines without LIBVHOST_USER_LOG:\n{stderr}");
    // The backend did report the refusal through its panic callback, so it ran the session.
    assert!(stderr.contains("PANIC: Invalid message size 4"), "{stderr}");
}

#[test]
fn off_is_silent_and_a_bad_value_says_so_once() {
    let lines_off = session(Some("off"), &[]);
    assert!(library_lines(&lines_off).is_empty(), "{lines_off}");
    let stderr = session(Some("loud"), &[]);
    let lines = library_lines(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("LIBVHOST_USER_LOG=\"loud\" is not one of"), "{stderr}");
}
