// SPDX-License-Identifier: GPL-2.0-or-later
//! A frontend that hands the backend a full pipe instead of an eventfd for its call fd must
//! get a refusal (the panic callback), not a backend blocked forever in write().

mod common;
use common::*;
use std::os::unix::io::FromRawFd;
use std::time::Duration;
use vmm_sys_util::eventfd::EventFd;

/// A pipe whose buffer is full; returns (read end, write end).
fn full_pipe() -> (std::fs::File, EventFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) }, 0);
    let chunk = [0u8; 4096];
    // SAFETY: writing from a local buffer to our pipe until it is full.
    while unsafe { libc::write(fds[1], chunk.as_ptr().cast(), chunk.len()) } > 0 {}
    // Give the backend a blocking write end, as a careless or hostile frontend would.
    // SAFETY: fcntl on our own fd.
    unsafe { libc::fcntl(fds[1], libc::F_SETFL, 0) };
    // SAFETY: both fds are ours and wrapped exactly once.
    unsafe { (std::fs::File::from_raw_fd(fds[0]), EventFd::from_raw_fd(fds[1])) }
}

#[test]
fn full_pipe_as_call_fd_is_refused_without_hanging() {
    let mut b = Backend::start(BackendOpts::default());
    let mut s = Session::connect(&mut b, SessionOpts::default());
    let (_read_end, call) = full_pipe();
    s.ctl("SET_VRING_CALL (full pipe)", |fe| fe.set_vring_call(0, &call));
    // The backend is still responsive after taking the fd.
    let n = s.ctl("GET_QUEUE_NUM", |fe| fe.get_queue_num());
    assert!(n >= 1);
    // A request completes and the backend must signal it: the write fails instead of blocking.
    let p = prepare(&s.mem, VIRTIO_BLK_T_IN, 0, &[], 4096, Layout::default());
    s.submit(0, &p);
    assert!(
        b.wait_stderr("Error writing eventfd", Duration::from_secs(10)),
        "no panic for a call fd that cannot be written; stderr:\n{}",
        b.stderr()
    );
    b.assert_alive();
    // The backend goes on serving the next frontend.
    drop(s);
    let mut s2 = Session::connect(&mut b, SessionOpts::default());
    let data = s2.read(0, 0, 4096, Layout::default());
    assert_eq!(data, initial_image(4096));
}

/// An eventfd whose counter is one short of its limit: the backend's non-blocking write of
/// 1 fails (EAGAIN). That is the data path's own signal write (an eventfd, no SIGPIPE guard),
/// not the guarded one pipes and sockets take: its failure must reach the panic callback too.
#[test]
fn saturated_eventfd_as_call_fd_is_refused_without_hanging() {
    let mut b = Backend::start(BackendOpts::default());
    let mut s = Session::connect(&mut b, SessionOpts::default());
    let call = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    call.write(u64::MAX - 1).unwrap();
    s.ctl("SET_VRING_CALL (saturated eventfd)", |fe| fe.set_vring_call(0, &call));
    let p = prepare(&s.mem, VIRTIO_BLK_T_IN, 0, &[], 4096, Layout::default());
    s.submit(0, &p);
    assert!(
        b.wait_stderr("Error writing eventfd", Duration::from_secs(10)),
        "no panic for a call eventfd that cannot be written; stderr:\n{}",
        b.stderr()
    );
    b.assert_alive();
    drop(s);
    let mut s2 = Session::connect(&mut b, SessionOpts::default());
    let data = s2.read(0, 0, 4096, Layout::default());
    assert_eq!(data, initial_image(4096));
}
