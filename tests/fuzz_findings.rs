// SPDX-License-Identifier: GPL-2.0-or-later
//! Reproducers of what fuzzing found, one test each, named after the finding (the root cause
//! of each is in the fuzz findings notes and the report of the campaign that found it). A test
//! marked #[ignore] fails today: it documents an open finding until the library is fixed.
//! The minimised crash inputs are in fuzz/regressions/<target>/ (tests/fuzz_inputs.rs
//! replays them).
#![allow(dead_code)]

#[path = "../fuzz/src/capi.rs"]
mod capi;
#[path = "../fuzz/src/device.rs"]
mod device;
#[path = "../fuzz/src/engine.rs"]
mod engine;
#[path = "../fuzz/src/input.rs"]
mod input;
#[path = "../fuzz/src/live.rs"]
mod live;
#[path = "../fuzz/src/proto.rs"]
mod proto;
#[path = "../fuzz/src/ring.rs"]
mod ring;
#[path = "../fuzz/src/sys.rs"]
mod sys;
#[path = "../fuzz/src/targets/mod.rs"]
mod targets;

use engine::{FdSpec, Msg};
use live::Live;
use proto::*;
use ring::{Desc, DriverRing, SplitDriver, F_NEXT, F_WRITE};

/// Whether [addr, addr+len) is mapped in this process (mincore fails with ENOMEM otherwise).
fn mapped(addr: u64, len: u64) -> bool {
    let page = 4096u64;
    let start = addr & !(page - 1);
    let pages = (addr + len - start).div_ceil(page) as usize;
    let mut vec = vec![0u8; pages];
    // SAFETY: mincore only reports on the range; the vector holds one byte per page.
    unsafe {
        libc::mincore(start as *mut libc::c_void, pages * page as usize, vec.as_mut_ptr()) == 0
    }
}

/// Found by the mem_table target (seed remove_region_holding_buffers): a frontend removes a
/// region (REM_MEM_REG; SET_MEM_TABLE likewise) while the backend holds a popped element whose
/// buffers are in it. The library unmaps the region at once, so the element's iovecs point at
/// unmapped memory and the backend's next write to them (completing the request) faults.
/// Fixed by keeping removed mappings while elements are in use (src/retired.rs); once the
/// element is pushed back, the mapping goes.
#[test]
fn popped_element_buffers_stay_mapped_after_rem_mem_reg() {
    let s = Session {
        features: F_VERSION_1 | F_PROTOCOL_FEATURES,
        protocol: PF_MQ | PF_REPLY_ACK | PF_MEM_SLOTS,
        queue_size: 16,
        base: 0,
        region1: GUEST_SIZE as u64,
    };
    let mut l = Live::standard();
    l.steps(&s.setup());
    let mut r = SplitDriver::new(&s);
    let mut steps = vec![
        r.desc(0, Desc { addr: BUF_OFF, len: 16, flags: F_NEXT, next: 1 }),
        r.desc(1, Desc { addr: s.region1 + 0x100, len: 512, flags: F_WRITE, next: 0 }),
    ];
    steps.extend(r.publish(0));
    l.steps(&steps);
    let p = l.pop(0).expect("valid request");
    let (buf, len) = p.inb[0];
    assert!(mapped(buf, len));
    let (_, reply) =
        l.send(&Msg::new(REM_MEM_REG, mem_reg(&s.regions()[1])).with_fds(vec![FdSpec::Guest(1)]));
    assert_eq!(reply.and_then(|r| r.u64()), Some(0), "REM_MEM_REG refused");
    assert!(mapped(buf, len), "the in-flight element's buffer was unmapped under the backend");
    l.push(0, p, 0);
    assert!(!mapped(buf, len), "the removed region stayed mapped after its last element went");
}

/// A session holding one popped element whose buffer is in region 1 (ring in region 0).
fn holding_an_element_in_region1(l: &mut Live, s: &Session) -> live::Popped {
    l.steps(&s.setup());
    let mut r = SplitDriver::new(s);
    let mut steps = vec![
        r.desc(0, Desc { addr: BUF_OFF, len: 16, flags: F_NEXT, next: 1 }),
        r.desc(1, Desc { addr: s.region1 + 0x100, len: 512, flags: F_WRITE, next: 0 }),
    ];
    steps.extend(r.publish(0));
    l.steps(&steps);
    l.pop(0).expect("valid request")
}

fn mem_slots_session() -> Session {
    Session {
        features: F_VERSION_1 | F_PROTOCOL_FEATURES,
        protocol: PF_MQ | PF_REPLY_ACK | PF_MEM_SLOTS,
        queue_size: 16,
        base: 0,
        region1: GUEST_SIZE as u64,
    }
}

/// SET_MEM_TABLE replacing the table while an element is held keeps the old mappings too.
#[test]
fn popped_element_buffers_stay_mapped_after_set_mem_table() {
    let s = mem_slots_session();
    let mut l = Live::standard();
    let p = holding_an_element_in_region1(&mut l, &s);
    let (buf, len) = p.inb[0];
    let table = Msg::new(SET_MEM_TABLE, mem_table(2, &s.regions()))
        .with_fds(vec![FdSpec::Guest(0), FdSpec::Guest(1)]);
    for _ in 0..3 {
        let (_, reply) = l.send(&table);
        assert_eq!(reply.and_then(|r| r.u64()), Some(0), "SET_MEM_TABLE refused");
        assert!(mapped(buf, len), "the element's buffer was unmapped by SET_MEM_TABLE");
    }
    l.push(0, p, 0);
    assert!(!mapped(buf, len), "the replaced mappings stayed after the last element went");
}

/// The kept mappings are bounded: with an element held, a frontend that removes and re-adds
/// a region in a loop gets its REM_MEM_REG refused (error reply, `broken`) once
/// MAX_RETIRED_MAPPINGS (509) removed mappings wait, and the table is left as it was.
#[test]
fn retired_mappings_are_bounded() {
    let s = mem_slots_session();
    let mut l = Live::standard();
    let p = holding_an_element_in_region1(&mut l, &s);
    let (buf, len) = p.inb[0];
    let region = s.regions()[1];
    let rem = Msg::new(REM_MEM_REG, mem_reg(&region)).with_fds(vec![FdSpec::Guest(1)]);
    let add = Msg::new(ADD_MEM_REG, mem_reg(&region)).with_fds(vec![FdSpec::Guest(1)]);
    const BOUND: usize = vhost_user::abi::VHOST_USER_MAX_RAM_SLOTS;
    for i in 0..BOUND {
        let (_, reply) = l.send(&rem);
        assert_eq!(reply.and_then(|r| r.u64()), Some(0), "REM_MEM_REG {i} refused");
        let (_, reply) = l.send(&add);
        assert_eq!(reply.and_then(|r| r.u64()), Some(0), "ADD_MEM_REG {i} refused");
    }
    // SAFETY: our device, read on the dispatch thread.
    assert!(!unsafe { (*l.dev.raw()).broken });
    let (_, reply) = l.send(&rem);
    assert_ne!(reply.and_then(|r| r.u64()), Some(0), "REM_MEM_REG past the bound accepted");
    // SAFETY: as above.
    assert!(unsafe { (*l.dev.raw()).broken }, "the refusal did not set broken");
    assert!(l.gpa_to_va(region.gpa, 16).is_some(), "the refused REM_MEM_REG removed the region");
    assert!(mapped(buf, len));
    drop(p);
}

/// A raw pointer handed to the notifying thread (the C API lets a queue thread use its queue
/// while the dispatch thread handles requests).
#[derive(Clone, Copy)]
struct Shared<T>(*mut T);
// SAFETY: the pointees are the device and its queue, used as the C API allows.
unsafe impl<T> Send for Shared<T> {}

fn file_size(fd: i32) -> i64 {
    // SAFETY: fstat into a zeroed local for our own fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    assert_eq!(unsafe { libc::fstat(fd, &mut st) }, 0);
    st.st_size
}

/// Reported by review (not fuzzing): SET_VRING_CALL closes the old call fd while a queue
/// thread's vu_queue_notify may be about to write it; its number, reused by another file in
/// between, would get the 8-byte eventfd write. The library closes call fds only under the
/// memory write lock and notify writes under the read lock, so no write lands in a file that
/// took a freed number: each replacement here gives the freed number to a fresh memfd, which
/// must stay empty.
#[test]
fn call_fd_replaced_while_a_queue_thread_notifies() {
    let s = mem_slots_session();
    let mut l = Live::standard();
    l.steps(&s.setup());
    let (dev, vq) = (Shared(l.dev.raw()), Shared(l.vq(0)));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let notifier = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (dev, vq) = (dev, vq);
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // SAFETY: the live device and its queue 0; only this thread works the queue.
                unsafe { capi::vu_queue_notify(dev.0, vq.0) };
                n += 1;
            }
            n
        })
    };
    let mut decoys = Vec::new();
    let mut last_call = -1;
    for _ in 0..2000 {
        let call = sys::eventfd(true);
        l.send_raw_fds(&Msg::new(SET_VRING_CALL, u64_payload(0)), &[call]);
        // The library closed the previous call fd: a new file takes the lowest free number.
        // SAFETY: plain syscall.
        let decoy = unsafe { libc::memfd_create(c"decoy".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(decoy >= 0);
        decoys.push(decoy);
        if last_call >= 0 {
            sys::close(last_call);
        }
        last_call = call;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let notifies = notifier.join().expect("notifier thread");
    assert!(notifies > 0);
    let mut count = 0u64;
    // SAFETY: reading our (non-blocking) eventfd's counter into a local.
    let rc = unsafe { libc::read(last_call, (&mut count as *mut u64).cast(), 8) };
    assert!(rc == 8 && count > 0, "the notifier never signalled the current call fd");
    for fd in decoys {
        assert_eq!(file_size(fd), 0, "an eventfd write landed in an unrelated file (fd {fd})");
        sys::close(fd);
    }
    sys::close(last_call);
}
