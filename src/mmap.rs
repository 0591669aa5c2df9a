//! Owned memory mappings of fds the frontend sends: guest RAM, the dirty log, the inflight area.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

/// A shared mapping of (part of) a file, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    addr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; access to its contents is governed by the
// users of `as_ptr`, which treat it as memory another process can change at any time.
unsafe impl Send for Mapping {}
// SAFETY: as above; the struct itself is immutable after creation.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from `offset` (page aligned) with the given protection.
    pub fn map_shared(
        fd: BorrowedFd<'_>,
        len: u64,
        offset: u64,
        prot: libc::c_int,
        noreserve: bool,
    ) -> io::Result<Self> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0 && l <= isize::MAX as usize);
        let len = len.ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let offset = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let flags = libc::MAP_SHARED | if noreserve { libc::MAP_NORESERVE } else { 0 };
        // SAFETY: a fresh mapping chosen by the kernel overlaps nothing we own; the result is checked.
        let addr =
            unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd.as_raw_fd(), offset) };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let addr = NonNull::new(addr.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        Ok(Mapping { addr, len })
    }

    /// Gives up ownership: the caller unmaps (through `from_raw`).
    pub fn into_raw(self) -> (*mut u8, usize) {
        let this = std::mem::ManuallyDrop::new(self);
        (this.addr.as_ptr(), this.len)
    }

    /// Takes back ownership of a mapping made by `map_shared` and released by `into_raw`.
    ///
    /// # Safety
    /// `addr`/`len` must be exactly what `into_raw` returned, not yet taken back.
    pub unsafe fn from_raw(addr: *mut u8, len: usize) -> Option<Mapping> {
        NonNull::new(addr).map(|addr| Mapping { addr, len })
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.addr.as_ptr()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Advises the kernel about the whole mapping; failures are not errors (advice only).
    pub fn advise(&self, advice: libc::c_int) -> io::Result<()> {
        // SAFETY: the range is exactly our own mapping.
        let rc = unsafe { libc::madvise(self.addr.as_ptr().cast(), self.len, advice) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: we own this mapping and nobody uses it after drop.
        unsafe { libc::munmap(self.addr.as_ptr().cast(), self.len) };
    }
}

/// The size of the file behind `fd` when it is one whose size bounds a mapping (regular files,
/// memfd, hugetlbfs); `None` for other kinds (devices), which we cannot check.
pub fn mappable_size(fd: BorrowedFd<'_>) -> Option<u64> {
    // SAFETY: fstat fills the zeroed struct for a valid fd; the result is checked.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let rc = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) };
    if rc != 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFREG {
        return None;
    }
    u64::try_from(st.st_size).ok()
}

/// The huge page size of a hugetlbfs file, or `None` for ordinary memory.
pub fn hugepage_size(fd: BorrowedFd<'_>) -> Option<u64> {
    const HUGETLBFS_MAGIC: libc::c_long = 0x958458f6;
    // SAFETY: fstatfs fills the zeroed struct for a valid fd; the result is checked.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: as above.
        let rc = unsafe { libc::fstatfs(fd.as_raw_fd(), &mut fs) };
        if rc == 0 {
            break;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return None;
        }
    }
    if fs.f_type as libc::c_long == HUGETLBFS_MAGIC {
        u64::try_from(fs.f_bsize).ok()
    } else {
        None
    }
}

pub fn page_size() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let ps = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if ps > 0 {
        ps as u64
    } else {
        4096
    }
}
