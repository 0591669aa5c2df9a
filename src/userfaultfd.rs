//! userfaultfd for postcopy live migration: opening one, and registering guest memory with it
//! so the frontend serves missing pages (the requests are in `control::postcopy`).

use crate::device::Dev;
use crate::fd::close_fd;

const UFFD_API: u64 = 0xAA;
const UFFDIO_API: libc::c_ulong = 0xC018_AA3F;
const UFFDIO_REGISTER: libc::c_ulong = 0xC020_AA00;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
const UFFDIO_COPY_BIT: u64 = 1 << 0x03;
const UFFD_FEATURE_MISSING_HUGETLBFS: u64 = 1 << 4;
const UFFD_FEATURE_MISSING_SHMEM: u64 = 1 << 5;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRegister {
    start: u64,
    len: u64,
    mode: u64,
    ioctls: u64,
}

pub(crate) fn open_userfaultfd() -> Option<libc::c_int> {
    // SAFETY: the userfaultfd syscall takes flags only; the result is checked.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    (fd >= 0).then_some(fd as libc::c_int)
}

pub(crate) fn uffd_api(fd: libc::c_int, features: u64) -> bool {
    let mut api = UffdioApi { api: UFFD_API, features, ioctls: 0 };
    // SAFETY: UFFDIO_API on a userfaultfd with a properly sized struct.
    unsafe { libc::ioctl(fd, UFFDIO_API, &mut api) == 0 }
}

/// Whether this kernel lets us use userfaultfd on shared memory (then we offer PAGEFAULT).
pub fn userfault_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let Some(fd) = open_userfaultfd() else { return false };
        let ok = uffd_api(fd, UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MISSING_HUGETLBFS);
        close_fd(fd);
        ok
    })
}

/// Registers every region with the userfaultfd so the frontend can serve missing pages.
pub fn generate_faults(dev: Dev) -> bool {
    let ufd = dev.postcopy_ufd();
    let mem = dev.mem();
    for (i, r) in mem.regions().iter().enumerate() {
        let Some(m) = crate::memory::region_mapping(r) else { continue };
        // Drop what we have so every access faults; no transparent huge pages so faults are
        // per page.
        let _ = m.advise(libc::MADV_DONTNEED);
        let _ = m.advise(libc::MADV_NOHUGEPAGE);
        let mut reg = UffdioRegister {
            start: m.as_ptr() as u64,
            len: m.len() as u64,
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER on our ufd for our own mapping.
        if unsafe { libc::ioctl(ufd, UFFDIO_REGISTER, &mut reg) } != 0 {
            let e = std::io::Error::last_os_error();
            drop(mem);
            dev.panic(&format!("generate_faults: Failed to userfault region {i} (ufd={ufd}): {e}"));
            return false;
        }
        if reg.ioctls & UFFDIO_COPY_BIT == 0 {
            drop(mem);
            dev.panic(&format!("generate_faults Region ({i}) doesn't support COPY"));
            return false;
        }
    }
    true
}
