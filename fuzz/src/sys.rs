// SPDX-License-Identifier: GPL-2.0-or-later
//! The syscalls the harness needs as a frontend: memfds, eventfds, socketpairs, sendmsg and
//! recvmsg with SCM_RIGHTS, and counting this process's fds and memfd mappings.

use std::os::unix::io::RawFd;

pub fn check(rc: libc::c_int, what: &str) -> libc::c_int {
    assert!(rc >= 0, "{what}: {}", std::io::Error::last_os_error());
    rc
}

pub fn close(fd: RawFd) {
    if fd >= 0 {
        // SAFETY: the harness owns fd and forgets it.
        unsafe { libc::close(fd) };
    }
}

/// A memfd of `size` bytes whose pages are all present (written), so that nothing the device
/// does with it (userfaultfd registration included) can wait for a page.
pub fn memfd(name: &str, size: usize, fill: u8) -> RawFd {
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: plain syscalls on a fresh fd.
    unsafe {
        let fd = check(libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC), "memfd_create");
        check(libc::ftruncate(fd, size as libc::off_t), "ftruncate");
        let buf = vec![fill; size];
        let mut off = 0;
        while off < size {
            let n = libc::pwrite(fd, buf[off..].as_ptr().cast(), size - off, off as libc::off_t);
            assert!(n > 0, "pwrite memfd: {}", std::io::Error::last_os_error());
            off += n as usize;
        }
        fd
    }
}

/// A shared read/write mapping of the whole of `fd`.
pub fn map(fd: RawFd, size: usize) -> *mut u8 {
    // SAFETY: mapping an fd we own with its size.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd,
            0,
        )
    };
    assert!(p != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
    p.cast()
}

pub fn unmap(p: *mut u8, size: usize) {
    // SAFETY: a mapping made by `map` with this size.
    unsafe { libc::munmap(p.cast(), size) };
}

pub fn eventfd(nonblocking: bool) -> RawFd {
    let flags = libc::EFD_CLOEXEC | if nonblocking { libc::EFD_NONBLOCK } else { 0 };
    // SAFETY: plain syscall.
    check(unsafe { libc::eventfd(0, flags) }, "eventfd")
}

pub fn eventfd_add(fd: RawFd, v: u64) {
    // SAFETY: 8 bytes from a local; a full counter just fails (EAGAIN), which is fine.
    unsafe { libc::write(fd, (&v as *const u64).cast(), 8) };
}

/// A non-blocking eventfd's count, read (so reset to 0); 0 if nothing was signalled.
pub fn eventfd_take(fd: RawFd) -> u64 {
    let mut v = 0u64;
    // SAFETY: 8 bytes into a local; a zero counter fails (EAGAIN) and leaves it 0.
    unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    v
}

pub fn socketpair() -> (RawFd, RawFd) {
    let mut sv = [-1; 2];
    // SAFETY: plain syscall with a 2-int array.
    check(
        unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        },
        "socketpair",
    );
    (sv[0], sv[1])
}

/// The read end of a pipe whose write end is closed (reads give EOF at once).
pub fn dead_pipe() -> RawFd {
    let mut p = [-1; 2];
    // SAFETY: plain syscall with a 2-int array.
    check(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, "pipe2");
    close(p[1]);
    p[0]
}

/// A pipe: (read end, write end).
pub fn pipe() -> (RawFd, RawFd) {
    let mut p = [-1; 2];
    // SAFETY: plain syscall with a 2-int array.
    check(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, "pipe2");
    (p[0], p[1])
}

/// Waits up to `timeout_ms` for `fd` to be readable and reads what is there; false at end of
/// file, on an error or when nothing came in time.
pub fn read_some(fd: RawFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one pollfd.
    if unsafe { libc::poll(&mut pfd, 1, timeout_ms) } <= 0 {
        return false;
    }
    let mut buf = [0u8; 65536];
    // SAFETY: reading into a local buffer of that size.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    n > 0
}

/// One sendmsg of `bytes` with `fds` attached, without blocking. False if it did not go out
/// whole (the socket buffer is full, or the peer is gone).
pub fn send_with_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> bool {
    let mut iov =
        libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    let mut cbuf = [0u64; 16];
    // SAFETY: buffers outlive the call; the control buffer (128 bytes) holds
    // CMSG_SPACE(16 fds * 4) = 80 bytes.
    unsafe {
        let mut mh: libc::msghdr = std::mem::zeroed();
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        let fds = &fds[..fds.len().min(16)];
        if !fds.is_empty() {
            let bytes = std::mem::size_of_val(fds) as u32;
            mh.msg_control = cbuf.as_mut_ptr().cast();
            mh.msg_controllen = libc::CMSG_SPACE(bytes) as usize;
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN(bytes) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c) as *mut RawFd,
                fds.len(),
            );
        }
        let n = libc::sendmsg(sock, &mh, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT);
        n >= 0 && n as usize == bytes.len()
    }
}

/// Reads whatever is waiting (non-blocking): the bytes and every fd that came with them.
pub fn recv_all(sock: RawFd, out: &mut Vec<u8>, fds: &mut Vec<RawFd>) {
    loop {
        let mut buf = [0u8; 4096];
        let mut cbuf = [0u64; 32];
        let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
        // SAFETY: buffers outlive the call; the control buffer is walked with the CMSG macros.
        unsafe {
            let mut mh: libc::msghdr = std::mem::zeroed();
            mh.msg_iov = &mut iov;
            mh.msg_iovlen = 1;
            mh.msg_control = cbuf.as_mut_ptr().cast();
            mh.msg_controllen = std::mem::size_of_val(&cbuf);
            let n = libc::recvmsg(sock, &mut mh, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC);
            if n <= 0 {
                return;
            }
            let mut c = libc::CMSG_FIRSTHDR(&mh);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let count = ((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
                    let data = libc::CMSG_DATA(c) as *const RawFd;
                    for k in 0..count {
                        fds.push(data.add(k).read_unaligned());
                    }
                }
                c = libc::CMSG_NXTHDR(&mh, c);
            }
            out.extend_from_slice(&buf[..n as usize]);
        }
    }
}

/// How many fds this process has open.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// How many memfd mappings this process has (guest memory, logs and inflight areas).
pub fn memfd_mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().filter(|l| l.contains("/memfd:")).count())
        .unwrap_or(0)
}

/// How many of this process's threads are named `name` (the kernel keeps 15 bytes of it).
pub fn threads_named(name: &str) -> usize {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .count()
}
