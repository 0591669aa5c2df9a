// SPDX-License-Identifier: GPL-2.0-or-later
//! Postcopy: PAGEFAULT is offered exactly when the kernel lets this process
//! create a userfaultfd; POSTCOPY_ADVISE returns one, LISTEN is acked (and
//! refused once regions exist), SET_MEM_TABLE in postcopy answers with the
//! backend's mapping addresses and waits for the front-end's ack, I/O on
//! populated pages works, END is acked. Skipped (with the reason printed)
//! only when the kernel refuses userfaultfd.

mod common;
#[path = "proto/mod.rs"]
mod proto;

use std::os::fd::AsRawFd;

use common::*;
use proto::*;

const UFFD_API: u64 = 0xaa;
const UFFD_FEATURE_MISSING_HUGETLBFS: u64 = 1 << 4;
const UFFD_FEATURE_MISSING_SHMEM: u64 = 1 << 5;
const UFFDIO_API: libc::c_ulong = 0xc018aa3f;

/// Can this process create a userfaultfd with the features libvhost-user needs?
fn kernel_userfault() -> Result<(), String> {
    // SAFETY: plain syscall.
    let fd =
        unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) } as i32;
    if fd < 0 {
        return Err(format!("userfaultfd: {}", std::io::Error::last_os_error()));
    }
    let mut api = [UFFD_API, UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MISSING_HUGETLBFS, 0];
    // SAFETY: struct uffdio_api is three u64s.
    let r = unsafe { libc::ioctl(fd, UFFDIO_API, api.as_mut_ptr()) };
    let e = std::io::Error::last_os_error();
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    if r != 0 {
        return Err(format!("UFFDIO_API: {e}"));
    }
    Ok(())
}

#[test]
fn postcopy_advise_listen_end() {
    let (_dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, &[]);
    let c = be.connect();
    let (_, offered) = Front::handshake(&c, F_VERSION_1 | F_PROTOCOL_FEATURES, 0);
    if let Err(reason) = kernel_userfault() {
        assert_eq!(
            offered & PF_PAGEFAULT,
            0,
            "PAGEFAULT offered although userfaultfd fails here ({reason})"
        );
        println!("skipped: kernel refuses userfaultfd ({reason})");
        return;
    }
    assert_ne!(
        offered & PF_PAGEFAULT,
        0,
        "PAGEFAULT not offered although the kernel allows userfaultfd"
    );
    drop(c);
    drop(be);

    let mut be = ProtoBackend::spawn(&sock, &image, &[]);
    let mem = GuestMemory::new(&[(0, 1 << 20), (1 << 20, 1 << 20)]);
    let mut fe = Front::without_table(
        be.connect(),
        mem.clone(),
        F_VERSION_1 | F_PROTOCOL_FEATURES,
        PF_PAGEFAULT,
    );

    let r = fe.c.call(POSTCOPY_ADVISE, &[], &[]);
    assert_eq!(r.fds.len(), 1, "POSTCOPY_ADVISE reply without an fd");
    let link = std::fs::read_link(format!("/proc/self/fd/{}", r.fds[0].as_raw_fd())).unwrap();
    assert!(
        link.to_string_lossy().contains("userfaultfd"),
        "POSTCOPY_ADVISE returned {link:?}, not a userfaultfd"
    );

    assert_eq!(fe.c.call(POSTCOPY_LISTEN, &[], &[]).u64(), 0, "POSTCOPY_LISTEN");

    // SET_MEM_TABLE while listening: the reply carries the backend's addresses.
    let mut p = (mem.regions.len() as u32).to_le_bytes().to_vec();
    p.extend_from_slice(&[0u8; 4]);
    let fds: Vec<i32> = mem.regions.iter().map(|r| r.file.as_raw_fd()).collect();
    for r in &mem.regions {
        p.extend_from_slice(&region_bytes(r.gpa, r.size, r.host as u64, 0));
    }
    let reply = fe.c.call(SET_MEM_TABLE, &p, &fds);
    assert_eq!(reply.payload.len(), p.len(), "postcopy SET_MEM_TABLE reply size");
    assert_eq!(reply.u32_at(0), 2);
    for (i, r) in mem.regions.iter().enumerate() {
        let off = 8 + 32 * i;
        assert_eq!(reply.u64_at(off), r.gpa, "region {i} gpa in the reply");
        assert_eq!(reply.u64_at(off + 8), r.size, "region {i} size in the reply");
        let backend_addr = reply.u64_at(off + 16);
        assert!(
            backend_addr != 0 && backend_addr != r.host as u64,
            "region {i}: reply holds {backend_addr:#x}, not the backend's mapping"
        );
    }
    // The front-end's go-ahead.
    fe.c.send(SET_MEM_TABLE, FLAG_VERSION, &u64p(0), &[]);
    assert_eq!(fe.c.call(GET_QUEUE_NUM, &[], &[]).u64(), 1);
    assert!(!be.stderr().contains("PANIC"), "backend panicked:\n{}", be.stderr());

    // Pages the front-end populated are there: I/O works.
    fe.add_queue(64, 0);
    fe.start_queue(0, 0, None);
    let d = pattern(9, 8192);
    let hdr = mem.alloc(16, 16);
    let data = (1 << 20) - 4096; // spans both regions
    let st = mem.alloc(1, 1);
    let (s, _) = fe.io(0, &prepare_at(&mem, VIRTIO_BLK_T_OUT, 16, &d, 0, hdr, data, st, 8192));
    assert_eq!(s, 0);
    let back = mem.alloc(8192, 8);
    let (s, _) = fe.io(0, &prepare_at(&mem, VIRTIO_BLK_T_IN, 16, &[], 8192, hdr, back, st, 4096));
    assert_eq!(s, 0);
    assert!(mem.read(back, 8192) == d, "data read back in postcopy mode differs");

    assert_eq!(fe.c.call(POSTCOPY_END, &[], &[]).u64(), 0, "POSTCOPY_END");
    // LISTEN with regions registered is refused (-1) with a panic.
    assert_eq!(
        fe.c.call(POSTCOPY_LISTEN, &[], &[]).u64(),
        u64::MAX,
        "POSTCOPY_LISTEN with regions"
    );
    assert!(be.wait_stderr("PANIC: Regions already registered", TIMEOUT), "{}", be.stderr());
    be.assert_alive();
}
