// SPDX-License-Identifier: GPL-2.0-or-later
//! Migration of the example blk backend's device state (its request counters and write-cache
//! mode) from one backend process to a fresh one, through a real frontend (the `vhost`
//! crate): SET_DEVICE_STATE_FD save into a pipe read to EOF, CHECK; then load into the new
//! process, CHECK; the new process reports the old one's write-cache mode in GET_CONFIG and
//! continues its counters.

mod common;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use common::*;
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserConfigFlags,
    VhostUserProtocolFeatures,
};

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: plain syscall into a local array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: two fresh fds we own.
    unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) }
}

/// A session that negotiated DEVICE_STATE on top of the usual protocol features.
fn session(b: &mut Backend, start_queues: bool) -> Session {
    let mut s = Session::connect(b, SessionOpts { start_queues, ..Default::default() });
    let pf = s.ctl("GET_PROTOCOL_FEATURES", |fe| fe.get_protocol_features());
    assert!(pf.contains(VhostUserProtocolFeatures::DEVICE_STATE), "not offered: {pf:?}");
    let pf = s.protocol | VhostUserProtocolFeatures::DEVICE_STATE;
    s.ctl("SET_PROTOCOL_FEATURES", |fe| fe.set_protocol_features(pf));
    s.protocol = pf;
    s
}

fn wce(s: &mut Session) -> u8 {
    s.get_config(CFG_LEN)[CFG_WCE]
}

#[test]
fn blk_state_migrates_to_a_fresh_backend() {
    // Source: some I/O, then the guest switches to writethrough.
    let mut src = Backend::start(BackendOpts::default());
    let mut s = session(&mut src, true);
    let data = pattern(0xabc, 8192);
    s.write(0, 0, &data, Layout::default());
    for i in 0..5 {
        assert!(s.read(0, 0, 8192, Layout::default()) == data, "read {i}");
    }
    assert_eq!(wce(&mut s), 1);
    s.ctl("SET_CONFIG", |fe| fe.set_config(CFG_WCE as u32, VhostUserConfigFlags::empty(), &[0]));
    assert_eq!(wce(&mut s), 0);
    s.stop_queue(0);
    let (r, w) = pipe();
    let own = s.ctl("SET_DEVICE_STATE_FD", |fe| {
        fe.set_device_state_fd(
            VhostTransferStateDirection::SAVE,
            VhostTransferStatePhase::STOPPED,
            OwnedFd::from(w),
        )
    });
    assert!(own.is_none(), "the backend returned a channel of its own");
    let mut saved = Vec::new();
    (&r).read_to_end(&mut saved).unwrap();
    s.ctl("CHECK_DEVICE_STATE", |fe| fe.check_device_state());
    assert_eq!(&saved[..8], b"VUBLKST1", "not the example's state format");
    drop(s);
    let st = src.terminate();
    assert!(st.success(), "{}", describe(st));
    let before = parse_summary(&src.stdout()).expect("source summary");
    assert_eq!(before.0, 6, "source request count");

    // Destination: a fresh process, started in writeback mode; the state is loaded before
    // its queue starts, as QEMU does.
    let mut dst = Backend::start(BackendOpts::default());
    let mut d = session(&mut dst, false);
    assert_eq!(wce(&mut d), 1);
    let (r, mut w) = pipe();
    let own = d.ctl("SET_DEVICE_STATE_FD", |fe| {
        fe.set_device_state_fd(
            VhostTransferStateDirection::LOAD,
            VhostTransferStatePhase::STOPPED,
            OwnedFd::from(r),
        )
    });
    assert!(own.is_none());
    w.write_all(&saved).unwrap();
    drop(w);
    d.ctl("CHECK_DEVICE_STATE", |fe| fe.check_device_state());
    assert!(dst.wait_stderr("state loaded", CTRL_TIMEOUT), "{}", dst.stderr());
    assert_eq!(wce(&mut d), 0, "write-cache mode not migrated");
    d.start_queue(0);
    // (Its own image: the state is the device's, the disk is not part of it.)
    assert!(d.read(0, 0, 8192, Layout::default()) == initial_image(8192));
    drop(d);
    let st = dst.terminate();
    assert!(st.success(), "{}", describe(st));
    let after = parse_summary(&dst.stdout()).expect("destination summary");
    assert_eq!(after.0, before.0 + 1, "request counter not migrated");
    assert_eq!(after.1, before.1 + 8192, "bytes-read counter not migrated");
    assert_eq!(after.2, before.2, "bytes-written counter not migrated");
}

#[test]
fn blk_refuses_a_foreign_or_oversized_state() {
    let mut b = Backend::start(BackendOpts::default());
    let mut s = session(&mut b, true);
    for bad in [vec![0u8; 48], vec![7u8; 10], b"VUBLKST1".repeat(100)] {
        let (r, mut w) = pipe();
        s.ctl("SET_DEVICE_STATE_FD", |fe| {
            fe.set_device_state_fd(
                VhostTransferStateDirection::LOAD,
                VhostTransferStatePhase::STOPPED,
                OwnedFd::from(r),
            )
        });
        // The oversized one is cut off by the library (the device registered its size).
        let _ = w.write_all(&bad);
        drop(w);
        assert!(s.try_ctl(|fe| fe.check_device_state()).is_err(), "{} bytes accepted", bad.len());
    }
    assert_eq!(wce(&mut s), 1, "a refused state changed the device");
    b.assert_alive();
    assert!(!b.stderr().contains("panic"), "{}", b.stderr());
}
