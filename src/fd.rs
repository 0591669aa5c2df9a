//! Small operations on file descriptors the library owns or signals.

use std::sync::atomic::{AtomicU64, Ordering};

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
        forget_eventfd(fd);
        // SAFETY: the caller owns fd and forgets it.
        unsafe { libc::close(fd) };
    }
}

/// Fd numbers below this can be remembered as eventfds (one bit each: 8 KiB of static memory,
/// nothing per device); larger ones are always written with SIGPIPE blocked.
const KNOWN_FDS: usize = 65536;

/// The fds the library stored as a queue's call or error fd after finding them to be eventfds
/// (`note_signal_fd`), until it closes them (`close_fd`). A write to an eventfd cannot raise
/// SIGPIPE, so `eventfd_write` skips the signal mask for these.
static EVENTFDS: [AtomicU64; KNOWN_FDS / 64] = [const { AtomicU64::new(0) }; KNOWN_FDS / 64];

fn eventfd_bit(fd: libc::c_int) -> Option<(&'static AtomicU64, u64)> {
    let i = usize::try_from(fd).ok().filter(|i| *i < KNOWN_FDS)?;
    Some((&EVENTFDS[i / 64], 1u64 << (i % 64)))
}

/// Decides once, as `fd` becomes a call or error fd, whether it is an eventfd (its
/// /proc/self/fd link names `anon_inode:[eventfd]`); without /proc it counts as not one.
pub fn note_signal_fd(fd: libc::c_int) {
    let Some((word, bit)) = eventfd_bit(fd) else { return };
    if is_eventfd(fd) {
        word.fetch_or(bit, Ordering::Relaxed);
    } else {
        word.fetch_and(!bit, Ordering::Relaxed);
    }
}

fn forget_eventfd(fd: libc::c_int) {
    if let Some((word, bit)) = eventfd_bit(fd) {
        word.fetch_and(!bit, Ordering::Relaxed);
    }
}

fn known_eventfd(fd: libc::c_int) -> bool {
    eventfd_bit(fd).is_some_and(|(word, bit)| word.load(Ordering::Relaxed) & bit != 0)
}

fn is_eventfd(fd: libc::c_int) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}"))
        .is_ok_and(|target| target.as_os_str() == "anon_inode:[eventfd]")
}

/// Adds 1 to an eventfd (a kick or a call); retries on EINTR.
///
/// The fd comes from the frontend and may be a pipe or a socket whose reader is gone: a plain
/// write() would then raise SIGPIPE and kill the backend process. Unless the fd was found to
/// be an eventfd when it was stored (`note_signal_fd`), SIGPIPE is blocked in this thread for
/// the write, and one it raised is taken back before the mask is restored, so such an fd fails
/// with EPIPE like any other unwritable fd.
pub fn eventfd_write(fd: libc::c_int) -> std::io::Result<()> {
    if known_eventfd(fd) {
        return write_one(fd);
    }
    let _guard = SigpipeBlocked::new();
    write_one(fd)
}

fn write_one(fd: libc::c_int) -> std::io::Result<()> {
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

    #[test]
    fn eventfds_are_told_from_pipes_and_forgotten_on_close() {
        // SAFETY: plain syscalls creating fds we own.
        let (efd, pipe) = unsafe {
            let mut p = [0; 2];
            assert_eq!(libc::pipe(p.as_mut_ptr()), 0);
            (libc::eventfd(0, libc::EFD_NONBLOCK), p)
        };
        assert!(efd >= 0);
        note_signal_fd(efd);
        note_signal_fd(pipe[1]);
        assert!(known_eventfd(efd));
        assert!(!known_eventfd(pipe[1]));
        eventfd_write(efd).unwrap();
        close_fd(pipe[0]);
        // The reader is gone: EPIPE, not SIGPIPE (the masked path).
        assert_eq!(eventfd_write(pipe[1]).unwrap_err().raw_os_error(), Some(libc::EPIPE));
        close_fd(pipe[1]);
        close_fd(efd);
        assert!(!known_eventfd(efd), "closing forgets it");
        note_signal_fd(-1);
        assert!(!known_eventfd(-1));
    }
}
