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

/// Adds 1 to an eventfd without a SIGPIPE guard (`eventfd_write(fd, false)` on the data
/// path's terms: the errno on failure, nothing to drop); retries on EINTR.
#[inline]
pub fn eventfd_add_one(fd: libc::c_int) -> Result<(), i32> {
    let one: u64 = 1;
    loop {
        // SAFETY: writing 8 bytes from a local to an fd.
        let rc = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
        if rc == 8 {
            return Ok(());
        }
        match write_error(rc) {
            libc::EINTR => continue,
            errno => return Err(errno),
        }
    }
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
