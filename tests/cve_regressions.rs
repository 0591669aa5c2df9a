// SPDX-License-Identifier: GPL-2.0-or-later
//! The known vulnerability classes of vhost-user backends (DPDK's advisories), one test each,
//! against a real device in this process driven through the C API (the fuzz harness's live
//! session: tests/fuzz_inputs.rs explains the inclusion by path).
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

use std::sync::Mutex;

use engine::{FdSpec, Msg};
use live::Live;
use proto::*;
use ring::{Desc, DriverRing, SplitDriver, F_INDIRECT, F_NEXT, F_WRITE};

/// Tests count this process's fds and mappings: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn session() -> Session {
    Session {
        features: F_VERSION_1 | F_PROTOCOL_FEATURES | F_INDIRECT_DESC,
        protocol: PF_MQ | PF_REPLY_ACK | PF_CONFIG | PF_MEM_SLOTS | PF_LOG_SHMFD,
        queue_size: 16,
        base: 0,
        region1: 2 * GUEST_SIZE as u64,
    }
}

fn live_with_rings(s: &Session) -> Live {
    let mut l = Live::standard();
    l.steps(&s.setup());
    assert!(!l.dev.broken(), "setup refused: {}", l.dev.ctx.last_panic.lock().unwrap());
    l
}

/// Writes a chain of descriptors at slots 0.. and publishes slot 0.
fn submit(l: &mut Live, s: &Session, descs: &[Desc]) {
    let mut r = SplitDriver::new(s);
    let mut steps: Vec<_> = descs.iter().enumerate().map(|(i, d)| r.desc(i as u16, *d)).collect();
    steps.extend(r.publish(0));
    l.steps(&steps);
}

fn last_panic(l: &Live) -> String {
    l.dev.ctx.last_panic.lock().unwrap().clone()
}

/// Refused: no element, and the device reported it (panic callback, device broken).
#[track_caller]
fn assert_pop_refused(l: &Live, what: &str) {
    let before = l.dev.panics();
    assert!(l.pop(0).is_none(), "{what}: an element was returned");
    assert!(l.dev.panics() > before, "{what}: refused silently");
    assert!(l.dev.broken(), "{what}: device not marked broken");
}

/// CVE-2018-1059: guest-supplied buffer addresses and lengths not bounded (host memory
/// disclosure). Every buffer outside guest memory, crossing a region's end into a gap, or
/// whose end overflows is refused; buffers of an accepted chain lie inside the regions.
#[test]
fn cve_2018_1059_guest_addresses_and_lengths_bounded() {
    let _g = serial();
    let s = session();
    let end0 = GUEST_SIZE as u64;
    let bad: [(&str, Desc); 6] = [
        (
            "outside guest memory",
            Desc { addr: 0x7000_0000_0000, len: 512, flags: F_WRITE, next: 0 },
        ),
        ("in the gap between regions", Desc { addr: end0 + 0x100, len: 16, flags: 0, next: 0 }),
        (
            "crossing region 0's end into the gap",
            Desc { addr: end0 - 16, len: 64, flags: 0, next: 0 },
        ),
        (
            "crossing the end of guest memory",
            Desc { addr: s.region1 + end0 - 8, len: 4096, flags: F_WRITE, next: 0 },
        ),
        ("addr + len overflows", Desc { addr: u64::MAX - 15, len: 4096, flags: F_WRITE, next: 0 }),
        (
            "indirect table outside memory",
            Desc { addr: 0xdead_0000_0000, len: 48, flags: F_INDIRECT, next: 0 },
        ),
    ];
    for (what, d) in bad {
        let mut l = live_with_rings(&s);
        submit(&mut l, &s, &[d]);
        assert_pop_refused(&l, what);
    }
    // An accepted chain's buffers are within the device's mappings (pop_checked asserts it)
    // and vu_gpa_to_va never extends a range past its region.
    let mut l = live_with_rings(&s);
    submit(
        &mut l,
        &s,
        &[
            Desc { addr: BUF_OFF, len: 16, flags: F_NEXT, next: 1 },
            Desc { addr: end0 - 512, len: 512, flags: F_WRITE, next: 0 },
        ],
    );
    let p = l.pop(0).expect("valid chain refused");
    assert_eq!((p.out.len(), p.inb.len()), (1, 1));
    let (_, n) = l.gpa_to_va(end0 - 512, 1 << 20).expect("in region 0");
    assert_eq!(n, 512, "vu_gpa_to_va ran past region 0's end");
    assert!(l.gpa_to_va(end0 + 1, 1).is_none(), "vu_gpa_to_va translated a gap address");
}

/// CVE-2019-14818: fds and memory leaked by malformed messages. Each malformed message
/// carrying fds is refused and every fd it carried is closed; after many, nothing grew.
#[test]
fn cve_2019_14818_malformed_messages_leak_nothing() {
    let _g = serial();
    let s = session();
    let fds_before = sys::open_fds();
    let maps_before = sys::memfd_mappings();
    let ev = |n: u8| (0..n).map(FdSpec::Event).collect::<Vec<_>>();
    let r0 = s.regions()[0];
    let malformed: Vec<Msg> = vec![
        Msg::new(SET_VRING_KICK, u64_payload(0)).with_fds(ev(3)),
        Msg::new(SET_VRING_CALL, u64_payload(0x55)).with_fds(ev(1)),
        Msg::new(SET_VRING_ERR, u64_payload(VRING_NOFD)).with_fds(ev(2)),
        Msg::new(SET_OWNER, vec![]).with_fds(ev(4)),
        Msg::new(0x1234, vec![1, 2, 3]).with_fds(ev(2)),
        Msg::new(SET_MEM_TABLE, mem_table(1, &[proto::Region { size: 1 << 30, ..r0 }]))
            .with_fds(vec![FdSpec::Guest(0)]),
        Msg::new(SET_MEM_TABLE, mem_table(2, &[r0])).with_fds(vec![
            FdSpec::Guest(0),
            FdSpec::Guest(1),
            FdSpec::Guest(0),
        ]),
        Msg::new(ADD_MEM_REG, mem_reg(&proto::Region { gpa: 0, ..r0 }))
            .with_fds(vec![FdSpec::Guest(0), FdSpec::Guest(1)]),
        Msg::new(SET_LOG_BASE, log_base(u64::MAX, 0))
            .with_fds(vec![FdSpec::Scratch { size: 4096, fill: 0 }, FdSpec::Event(0)]),
        Msg::new(SET_INFLIGHT_FD, inflight(4096, 0, 0, 0))
            .with_fds(vec![FdSpec::Scratch { size: 4096, fill: 0 }]),
        Msg::new(SET_BACKEND_REQ_FD, vec![]).with_fds(vec![FdSpec::Pipe, FdSpec::Pipe]),
        Msg { size: Some(4), ..Msg::new(SET_VRING_KICK, u64_payload(0)).with_fds(ev(1)) },
        Msg::new(SET_MEM_TABLE, mem_table(1, &[r0]))
            .with_fds((0..8).map(|i| FdSpec::Event(i % 4)).collect()),
    ];
    for round in 0..20 {
        for m in &malformed {
            let mut l = live_with_rings(&s);
            l.send(m);
            drop(l);
        }
        if round == 0 {
            assert_eq!(sys::open_fds(), fds_before, "fds leaked after one round");
        }
    }
    assert_eq!(sys::open_fds(), fds_before, "fds leaked");
    assert_eq!(sys::memfd_mappings(), maps_before, "mappings leaked");
}

/// CVE-2020-10722: integer overflow in SET_LOG_BASE size checks. Sizes and offsets whose sum
/// overflows, or that run past the log fd, are refused and map nothing.
#[test]
fn cve_2020_10722_log_base_size_overflow_refused() {
    let _g = serial();
    let s = session();
    let maps_before = sys::memfd_mappings();
    for (size, offset) in
        [(u64::MAX, 0), (4096, u64::MAX - 100), (u64::MAX - 4095, 4096), (1 << 40, 0), (8192, 4096)]
    {
        let mut l = live_with_rings(&s);
        let m = Msg::new(SET_LOG_BASE, log_base(size, offset))
            .with_fds(vec![FdSpec::Scratch { size: 8192, fill: 0 }, FdSpec::Event(3)]);
        let p0 = l.dev.panics();
        let (_, reply) = l.send(&m);
        let ok = reply.as_ref().and_then(|r| r.u64()) == Some(0);
        assert!(
            !ok || l.dev.panics() > p0,
            "SET_LOG_BASE size {size:#x} offset {offset:#x} accepted"
        );
        // SAFETY: C-visible fields of our device.
        let (table, lsize) = unsafe { ((*l.dev.raw()).log_table, (*l.dev.raw()).log_size) };
        assert!(table.is_null() && lsize == 0, "a log of {lsize} bytes is installed");
        drop(l);
        assert_eq!(sys::memfd_mappings(), maps_before, "log mapping left behind");
    }
}

/// CVE-2020-10723: integer truncation of a queue index. Indexes that would alias queue 0 when
/// truncated (0x10000, 0x100000000 as u64 in the fd requests) are refused and leave queue 0
/// as it was.
#[test]
fn cve_2020_10723_queue_index_truncation_refused() {
    let _g = serial();
    let s = session();
    let mut l = live_with_rings(&s);
    // SAFETY (reads below): C-visible fields of our device's queue 0.
    let num_before = unsafe { (*l.vq(0)).vring.num };
    let base_before = unsafe { (*l.vq(0)).last_avail_idx };
    for idx in [0x1_0000u32, 0x8000_0000, 0xffff_0000, 2] {
        l.send(&Msg::new(SET_VRING_NUM, state(idx, 1)));
        l.send(&Msg::new(SET_VRING_BASE, state(idx, 7)));
        l.send(&Msg::new(SET_VRING_ENABLE, state(idx, 0)));
        l.send(&Msg::new(GET_VRING_BASE, state(idx, 0)));
    }
    // u64 payload of the fd requests: the index is the low byte; bits above are refused.
    l.send(&Msg::new(SET_VRING_CALL, u64_payload(0x1_0000_0000)).with_fds(vec![FdSpec::Event(0)]));
    let vq0 = l.vq(0);
    // SAFETY: as above.
    unsafe {
        assert_eq!((*vq0).vring.num, num_before, "queue 0's size changed");
        assert_eq!((*vq0).last_avail_idx, base_before, "queue 0's base changed");
        assert!((*vq0).enable != 0, "queue 0 disabled");
        assert!((*vq0).started, "queue 0 stopped");
    }
    assert!(
        last_panic(&l).contains("queue index") || l.dev.panics() >= 16,
        "not refused as an index"
    );
}

/// CVE-2020-10725: a malformed message crashes the backend. Every request code with payloads
/// of every interesting size and random contents: the device refuses or handles each, never
/// crashes, never panics inside (the harness turns a caught Rust panic into a failure).
#[test]
fn cve_2020_10725_malformed_messages_do_not_crash() {
    let _g = serial();
    let s = session();
    let mut seed = 0x5eed_u64;
    let mut rnd = move || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (seed >> 33) as u8
    };
    for req in (0..=45u32).chain([0xff, 0x7fff_ffff, u32::MAX]) {
        if matches!(req, POSTCOPY_ADVISE | POSTCOPY_LISTEN) {
            continue; // these change what the next SET_MEM_TABLE waits for (an ack)
        }
        for size in [0usize, 1, 4, 7, 8, 9, 12, 16, 24, 28, 40, 268, 272] {
            let mut l = live_with_rings(&s);
            let payload: Vec<u8> = (0..size).map(|_| rnd()).collect();
            l.send(&Msg::new(req, payload));
            // The device keeps working or has reported why it gave up.
            assert!(!l.dev.broken() || l.dev.panics() > 0);
        }
    }
}

/// CVE-2020-10726: GET_INFLIGHT_FD sizes exhaust memory. Geometry beyond the device (more
/// queues than it has, rings above 1024) is refused without allocating; the largest valid
/// area is bounded by max_queues * 1024 descriptors.
#[test]
fn cve_2020_10726_inflight_size_bounded() {
    let _g = serial();
    let s = Session { protocol: session().protocol | PF_INFLIGHT, ..session() };
    for (nq, qs) in [(0xffffu16, 0xffffu16), (3, 16), (2, 1025), (0, 16), (2, 0)] {
        let mut l = Live::standard();
        l.steps(&s.negotiate());
        let (_, r) = l.send(&Msg::new(GET_INFLIGHT_FD, inflight(0, 0, nq, qs)));
        let r = r.expect("GET_INFLIGHT_FD reply");
        assert_eq!(r.u64(), Some(0), "{nq} queues of {qs}: an area was sized");
        assert!(r.fds.is_empty(), "{nq} queues of {qs}: an fd came back");
    }
    let mut l = Live::standard();
    l.steps(&s.negotiate());
    let (_, r) = l.send(&Msg::new(GET_INFLIGHT_FD, inflight(0, 0, 2, 1024)));
    let r = r.expect("reply");
    let size = r.u64().unwrap();
    assert!(
        size > 0 && size <= 2 * targets::inflight::queue_region_size(1024),
        "area of {size} bytes"
    );
    assert_eq!(r.fds.len(), 1);
}

/// CVE-2022-0669: malformed inflight messages. SET_INFLIGHT_FD with the wrong fd count, a size
/// below its geometry, an offset past its file, or bad geometry is refused (fd closed);
/// an area whose contents the frontend corrupted resubmits at most a ring's worth of valid
/// heads and nothing out of range.
#[test]
fn cve_2022_0669_malformed_inflight_refused() {
    let _g = serial();
    let fds_before = sys::open_fds();
    let s = Session { protocol: session().protocol | PF_INFLIGHT, ..session() };
    let need = 2 * targets::inflight::queue_region_size(16);
    let scratch = |size| FdSpec::Scratch { size, fill: 0 };
    let bad = [
        Msg::new(SET_INFLIGHT_FD, inflight(need, 0, 2, 16)),
        Msg::new(SET_INFLIGHT_FD, inflight(need, 0, 2, 16))
            .with_fds(vec![scratch(8192), scratch(8192)]),
        Msg::new(SET_INFLIGHT_FD, inflight(need - 64, 0, 2, 16)).with_fds(vec![scratch(8192)]),
        Msg::new(SET_INFLIGHT_FD, inflight(need, 1 << 20, 2, 16)).with_fds(vec![scratch(8192)]),
        Msg::new(SET_INFLIGHT_FD, inflight(need, 0, 9, 16)).with_fds(vec![scratch(1 << 16)]),
        Msg::new(SET_INFLIGHT_FD, inflight(u64::MAX, 4096, 2, 16)).with_fds(vec![scratch(8192)]),
        Msg {
            size: Some(16),
            ..Msg::new(SET_INFLIGHT_FD, inflight(need, 0, 2, 16)).with_fds(vec![scratch(8192)])
        },
    ];
    for m in &bad {
        let mut l = Live::standard();
        l.steps(&s.negotiate());
        let (_, r) = l.send(m);
        assert_ne!(r.and_then(|r| r.u64()), Some(0), "accepted: {m:?}");
        // SAFETY: C-visible field of our device.
        assert!(unsafe { (*l.dev.raw()).inflight_info.addr }.is_null(), "area installed: {m:?}");
    }
    // A corrupted area: every descriptor marked inflight with huge counters, a wild
    // desc_num and used_idx. Resubmission returns only heads below the ring size, at most 16.
    let area = sys::memfd("vufuzz-inflight", need as usize, 0xff);
    let mut l = Live::standard();
    l.steps(&s.negotiate());
    let (_, r) = l.send_raw_fds(&Msg::new(SET_INFLIGHT_FD, inflight(need, 0, 2, 16)), &[area]);
    sys::close(area);
    assert_eq!(r.and_then(|r| r.u64()), Some(0), "a well-formed SET_INFLIGHT_FD refused");
    l.steps(&s.ring_steps(0));
    l.steps(&s.start_steps(0));
    let mut popped = 0;
    while let Some(p) = l.pop(0) {
        assert!(p.index < 16, "resubmitted head {}", p.index);
        popped += 1;
        assert!(popped <= 16, "more resubmissions than descriptors");
    }
    drop(l);
    assert_eq!(sys::open_fds(), fds_before, "fds leaked");
}

/// CVE-2022-2132: request headers spread over many descriptors (denial of service). A chain
/// of more than 1024 descriptors (through an indirect table) is refused; 1024 one-byte buffers
/// are accepted.
#[test]
fn cve_2022_2132_many_descriptor_chains_bounded() {
    let _g = serial();
    let s = Session { queue_size: 1024, ..session() };
    let table_at = s.region1;
    let chain = |n: u16| -> Vec<u8> {
        (0..n)
            .flat_map(|k| {
                let last = k + 1 == n;
                Desc {
                    addr: BUF_OFF + u64::from(k % 0x4000),
                    len: 1,
                    flags: if last { F_WRITE } else { F_WRITE | F_NEXT },
                    next: k + 1,
                }
                .bytes()
            })
            .collect()
    };
    for (n, accepted) in [(1024u16, true), (1025, false), (2048, false)] {
        let mut l = live_with_rings(&s);
        let bytes = chain(n);
        for (i, c) in bytes.chunks(4096).enumerate() {
            l.guest.write(1, (i * 4096) as u32, c);
        }
        submit(
            &mut l,
            &s,
            &[Desc { addr: table_at, len: 16 * u32::from(n), flags: F_INDIRECT, next: 0 }],
        );
        match l.pop(0) {
            Some(p) => {
                assert!(accepted, "{n} descriptors accepted");
                assert_eq!(p.inb.len() + p.out.len(), usize::from(n));
            }
            None => assert!(!accepted, "{n} descriptors refused: {}", last_panic(&l)),
        }
    }
}
