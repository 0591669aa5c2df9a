// SPDX-License-Identifier: GPL-2.0-or-later
//! examples-c/vhost-user-net-sink's device state (its transmit counters), through a frontend
//! (the `vhost` crate): DEVICE_STATE offered because the example registered handlers; a save
//! from a fresh process is the example's format with zero counters; a load of counters into a
//! fresh process is reported and continued; a foreign state fails CHECK_DEVICE_STATE. The
//! same example migrates under QEMU 10.0's virtio-net in the consumer tier (netstate row).

mod common;

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;

const VIRTIO_F_VERSION_1: u64 = 1 << 32;
const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
const STATE_LEN: usize = 32;

fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: plain syscall into a local array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: two fresh fds we own.
    unsafe { (std::fs::File::from_raw_fd(fds[0]), std::fs::File::from_raw_fd(fds[1])) }
}

/// The example on a socket in `dir`, and a frontend that negotiated DEVICE_STATE with it.
fn start(dir: &Path) -> (Child, Frontend) {
    let sock = dir.join("net.sock");
    let child = Command::new(common::example("vhost-user-net-sink"))
        .arg("-s")
        .arg(&sock)
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vhost-user-net-sink");
    let t0 = Instant::now();
    let stream = loop {
        if let Ok(s) = UnixStream::connect(&sock) {
            break s;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "the example did not listen");
        std::thread::sleep(Duration::from_millis(10));
    };
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut fe = Frontend::from_stream(stream, 2);
    fe.set_owner().unwrap();
    let features = fe.get_features().unwrap();
    assert!(features & VHOST_USER_F_PROTOCOL_FEATURES != 0, "{features:#x}");
    fe.set_features(VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES).unwrap();
    let pf = fe.get_protocol_features().unwrap();
    assert!(pf.contains(VhostUserProtocolFeatures::DEVICE_STATE), "not offered: {pf:?}");
    fe.set_protocol_features(VhostUserProtocolFeatures::DEVICE_STATE).unwrap();
    (child, fe)
}

/// Ends the session and returns the example's stderr (its summary is the last line).
fn finish(mut child: Child, fe: Frontend) -> String {
    drop(fe);
    let mut err = String::new();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    let st = child.wait().unwrap();
    assert!(st.success(), "{}: {err}", common::describe(st));
    err
}

fn load(fe: &mut Frontend, state: &[u8]) -> vhost::Result<()> {
    let (r, mut w) = pipe();
    let own = fe
        .set_device_state_fd(
            VhostTransferStateDirection::LOAD,
            VhostTransferStatePhase::STOPPED,
            OwnedFd::from(r),
        )
        .unwrap();
    assert!(own.is_none());
    let _ = w.write_all(state);
    drop(w);
    fe.check_device_state()
}

fn state(frames: u64, bytes: u64, migrations: u64) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&0x6e65_7473u32.to_ne_bytes());
    v.extend_from_slice(&1u32.to_ne_bytes());
    for x in [frames, bytes, migrations] {
        v.extend_from_slice(&x.to_ne_bytes());
    }
    v
}

#[test]
fn net_sink_saves_and_loads_its_counters() {
    let dir = common::TempDir::new();
    let (child, fe) = start(&dir.0);
    let (r, w) = pipe();
    let own = fe
        .set_device_state_fd(
            VhostTransferStateDirection::SAVE,
            VhostTransferStatePhase::STOPPED,
            OwnedFd::from(w),
        )
        .unwrap();
    assert!(own.is_none(), "the example returned a channel of its own");
    let mut saved = Vec::new();
    (&r).read_to_end(&mut saved).unwrap();
    fe.check_device_state().unwrap();
    assert_eq!(saved, state(0, 0, 0), "not the example's state of a fresh device");
    let err = finish(child, fe);
    assert!(err.contains("state saved: tx 0 frames 0 bytes"), "{err}");

    let (child, mut fe) = start(&dir.0);
    load(&mut fe, &state(41, 4321, 2)).expect("CHECK after a load of the example's format");
    let err = finish(child, fe);
    assert!(err.contains("state loaded: tx 41 frames 4321 bytes"), "{err}");
    assert!(err.contains("tx 41 frames 4321 bytes; loaded 41 frames; migrations 3"), "{err}");
}

#[test]
fn net_sink_refuses_a_foreign_state() {
    let dir = common::TempDir::new();
    let (child, mut fe) = start(&dir.0);
    let mut wrong_version = state(1, 2, 0);
    wrong_version[4] = 9;
    for bad in [vec![0u8; STATE_LEN], wrong_version, vec![7u8; 10], state(1, 1, 1).repeat(3)] {
        assert!(load(&mut fe, &bad).is_err(), "{} bytes accepted", bad.len());
    }
    let err = finish(child, fe);
    assert!(err.contains("tx 0 frames 0 bytes; loaded 0 frames; migrations 0"), "{err}");
    assert!(!err.contains("PANIC"), "{err}");
}
