//! Small operations on file descriptors the library owns or signals.

/// Makes writes to a notification fd non-blocking, so a frontend that hands us a pipe or a
/// socket instead of an eventfd gets an error (and a `panic`) rather than a hung device.
pub fn set_nonblocking(fd: libc::c_int) {
    // SAFETY: fcntl on an fd we own; failures leave the fd as it was.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 && flags & libc::O_NONBLOCK == 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// Closes an fd we own, ignoring -1.
pub fn close_fd(fd: libc::c_int) {
    if fd >= 0 {
        // SAFETY: the caller owns fd and forgets it.
        unsafe { libc::close(fd) };
    }
}

/// Adds 1 to an eventfd (a kick or a call); retries on EINTR.
pub fn eventfd_write(fd: libc::c_int) -> std::io::Result<()> {
    let one: u64 = 1;
    loop {
        // SAFETY: writing 8 bytes from a local to an fd.
        let rc = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
        if rc == 8 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if rc < 0 && err.raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        return Err(if rc < 0 { err } else { std::io::Error::from_raw_os_error(libc::EIO) });
    }
}
