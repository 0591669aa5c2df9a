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

/// Whether a write to `fd` would not block right now (poll for POLLOUT, no wait).
pub fn writable_now(fd: libc::c_int) -> bool {
    let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
    // SAFETY: poll on one pollfd of ours, timeout 0.
    let rc = unsafe { libc::poll(&mut p, 1, 0) };
    rc == 1 && p.revents & libc::POLLOUT != 0 && p.revents & (libc::POLLERR | libc::POLLHUP) == 0
}

/// Whether a write to `fd` can raise SIGPIPE: a pipe or a socket (whose reader may be gone)
/// rather than the eventfd the protocol expects. Asked once, when the frontend hands the fd
/// over; an fd that cannot be inspected counts as one that can.
pub fn may_raise_sigpipe(fd: libc::c_int) -> bool {
    // SAFETY: fstat into a local on an fd we own.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return true;
    }
    matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFSOCK)
}

/// Adds 1 to an eventfd (a kick or a call); retries on EINTR.
///
/// The fd comes from the frontend and may be a pipe or a socket whose reader is gone: a plain
/// write() would then raise SIGPIPE and kill the backend process. With `guard_sigpipe` (the
/// device was handed such an fd, see `may_raise_sigpipe`) SIGPIPE is blocked in this thread for
/// the write, and one it raised is taken back before the mask is restored, so such an fd fails
/// with EPIPE like any other unwritable fd. Without it the write is the one syscall the
/// original makes: sandboxed backends (virtiofsd's seccomp list) allow no more.
pub fn eventfd_write(fd: libc::c_int, guard_sigpipe: bool) -> std::io::Result<()> {
    let _guard = guard_sigpipe.then(SigpipeBlocked::new);
    eventfd_add_one(fd).map_err(std::io::Error::from_raw_os_error)
}

/// Adds 1 to an eventfd without a SIGPIPE guard (the write of `eventfd_write`, on the data
/// path's terms: the errno on failure, nothing to drop); retries on EINTR. The first write is
/// inline and the retries out of line, so that a caller keeps only the fd live across the call.
#[inline]
pub fn eventfd_add_one(fd: libc::c_int) -> Result<(), i32> {
    match write_one(fd) {
        8 => Ok(()),
        rc => eventfd_add_one_again(fd, rc),
    }
}

/// `eventfd_add_one` after a first write that returned `rc` (not 8).
#[cold]
#[inline(never)]
fn eventfd_add_one_again(fd: libc::c_int, mut rc: isize) -> Result<(), i32> {
    loop {
        match write_error(rc) {
            libc::EINTR => {}
            errno => return Err(errno),
        }
        rc = write_one(fd);
        if rc == 8 {
            return Ok(());
        }
    }
}

/// One `write` of the value 1 (8 bytes) to an eventfd.
#[inline(always)]
fn write_one(fd: libc::c_int) -> isize {
    let one: u64 = 1;
    // SAFETY: writing 8 bytes from a local to an fd.
    unsafe { libc::write(fd, (&one as *const u64).cast(), 8) }
}

/// The errno of a failed or short eventfd write (EIO for a short one).
#[cold]
fn write_error(rc: isize) -> i32 {
    if rc >= 0 {
        return libc::EIO;
    }
    std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)
}

/// SIGPIPE blocked in the calling thread while it lives; on drop, a SIGPIPE that became
/// pending meanwhile (and was not pending before) is consumed, then the old mask restored.
struct SigpipeBlocked {
    old: libc::sigset_t,
    was_pending: bool,
}

impl SigpipeBlocked {
    fn new() -> SigpipeBlocked {
        // SAFETY: local signal sets filled by sigemptyset/sigaddset/pthread_sigmask/sigpending.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, libc::SIGPIPE);
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::pthread_sigmask(libc::SIG_BLOCK, &set, &mut old);
            let mut pending: libc::sigset_t = std::mem::zeroed();
            libc::sigpending(&mut pending);
            SigpipeBlocked { old, was_pending: libc::sigismember(&pending, libc::SIGPIPE) == 1 }
        }
    }
}

impl Drop for SigpipeBlocked {
    fn drop(&mut self) {
        // SAFETY: local signal sets; sigtimedwait with a zero timeout only takes a SIGPIPE
        // that is already pending (ours); pthread_sigmask restores the caller's mask.
        unsafe {
            if !self.was_pending {
                let mut pending: libc::sigset_t = std::mem::zeroed();
                libc::sigpending(&mut pending);
                if libc::sigismember(&pending, libc::SIGPIPE) == 1 {
                    let mut set: libc::sigset_t = std::mem::zeroed();
                    libc::sigemptyset(&mut set);
                    libc::sigaddset(&mut set, libc::SIGPIPE);
                    let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                    libc::sigtimedwait(&set, std::ptr::null_mut(), &zero);
                }
            }
            libc::pthread_sigmask(libc::SIG_SETMASK, &self.old, std::ptr::null_mut());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An eventfd of ours, closed on drop.
    struct EventFd(libc::c_int);

    impl EventFd {
        fn new(initial: u32, flags: libc::c_int) -> EventFd {
            // SAFETY: creating an fd.
            let fd = unsafe { libc::eventfd(initial, flags) };
            assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
            EventFd(fd)
        }

        fn read(&self) -> u64 {
            let mut v = 0u64;
            // SAFETY: reading 8 bytes into a local from our fd.
            let rc = unsafe { libc::read(self.0, (&mut v as *mut u64).cast(), 8) };
            assert_eq!(rc, 8);
            v
        }
    }

    impl Drop for EventFd {
        fn drop(&mut self) {
            // SAFETY: closing our fd once.
            unsafe { libc::close(self.0) };
        }
    }

    #[test]
    fn add_one_adds_one_per_call() {
        let e = EventFd::new(0, 0);
        for _ in 0..3 {
            assert_eq!(eventfd_add_one(e.0), Ok(()));
        }
        assert_eq!(e.read(), 3);
    }

    #[test]
    fn add_one_reports_the_errno_of_a_failed_write() {
        assert_eq!(eventfd_add_one(-1), Err(libc::EBADF));
        // A non-blocking eventfd at its maximum (2^64 - 2) cannot take 1 more.
        let e = EventFd::new(0, libc::EFD_NONBLOCK);
        let max = u64::MAX - 1;
        // SAFETY: writing 8 bytes from a local to our fd.
        let rc = unsafe { libc::write(e.0, (&max as *const u64).cast(), 8) };
        assert_eq!(rc, 8);
        assert_eq!(eventfd_add_one(e.0), Err(libc::EAGAIN));
        assert_eq!(e.read(), max, "the failed write changed nothing");
    }

    #[test]
    fn a_short_write_is_eio() {
        assert_eq!(write_error(4), libc::EIO);
        assert_eq!(write_error(0), libc::EIO);
    }
}
