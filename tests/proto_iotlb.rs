// SPDX-License-Identifier: GPL-2.0-or-later
//! VIRTIO_F_IOMMU_PLATFORM (bit 33) and VHOST_USER_IOTLB_MSG (22), driven by the raw
//! frontend against examples-c/vhost-user-proto-test: the feature and the protocol features
//! QEMU needs with it are offered; updates and invalidations are acked; every bad entry is
//! refused with a failure ack and leaves the backend working; with the feature acked the
//! rings and buffers are IOVAs translated through the entries (split and packed); a miss is
//! asked for on the backend channel, and the queue progresses once the update arrives; the
//! table is bounded; a backend that handles IOTLB_MSG itself keeps guest addresses as they are.
//!
//! The tests' IOVAs are the guest physical addresses (an identity IOMMU), page by page,
//! except where a test maps a page elsewhere to show the entry is what counts. Guest memory
//! starts at 4 GiB, so no ring is at IOVA 0 (which, as address 0 in the original, means "no
//! ring").

mod common;
#[path = "proto/mod.rs"]
mod proto;

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use proto::*;

const IOTLB_MSG: u32 = 22;
const B_IOTLB_MSG: u32 = 1;
const F_IOMMU: u64 = 1 << 33;

const RO: u8 = 1;
const WO: u8 = 2;
const RW: u8 = 3;
const MISS: u8 = 1;
const UPDATE: u8 = 2;
const INVALIDATE: u8 = 3;
const ACCESS_FAIL: u8 = 4;

const PAGE: u64 = 4096;
const MEM: u64 = 4 << 20;
/// Where guest memory starts.
const GPA0: u64 = 1 << 32;

fn iotlb(iova: u64, size: u64, uaddr: u64, perm: u8, kind: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    for x in [iova, size, uaddr] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&[perm, kind, 0, 0, 0, 0, 0, 0]);
    v
}

struct Setup<Q: Driver> {
    be: ProtoBackend,
    fe: Front<Q>,
    /// Our end of the backend channel.
    ch: Conn,
    _dir: TempDir,
}

/// A backend negotiated with the IOMMU feature, REPLY_ACK and BACKEND_REQ, its memory table
/// set and its backend channel connected; one queue of 64 allocated, not started.
fn setup<Q: Driver>(args: &[&str]) -> Setup<Q> {
    setup_with(args, 0, 0)
}

/// `setup` with more features and protocol features.
fn setup_with<Q: Driver>(args: &[&str], features: u64, pf: u64) -> Setup<Q> {
    let (dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn_logging(
        &sock,
        &image,
        args,
        std::env::var("IOTLB_LOG").ok().as_deref(),
    );
    let mem = GuestMemory::new(&[(GPA0, MEM)]);
    let fe = Front::<Q>::new_as(
        be.connect(),
        mem,
        F_VERSION_1 | F_PROTOCOL_FEATURES | F_IOMMU | features,
        PF_REPLY_ACK | PF_BACKEND_REQ | pf,
    );
    let (ours, theirs) = UnixStream::pair().unwrap();
    fe.req(SET_BACKEND_REQ_FD, &[], &[theirs.as_raw_fd()]);
    drop(theirs);
    let mut s = Setup { be, fe, ch: Conn::new(ours), _dir: dir };
    s.fe.add_queue(64, 0);
    s
}

impl<Q: Driver> Setup<Q> {
    /// The ack of an IOTLB message.
    fn send(&self, iova: u64, size: u64, uaddr: u64, perm: u8, kind: u8) -> u64 {
        self.fe.c.ack(IOTLB_MSG, &iotlb(iova, size, uaddr, perm, kind), &[])
    }

    #[track_caller]
    fn update(&self, iova: u64, size: u64, uaddr: u64, perm: u8) {
        assert_eq!(self.send(iova, size, uaddr, perm, UPDATE), 0, "update of {iova:#x} refused");
    }

    /// Maps guest page `gpa` at IOVA `gpa` (identity), read/write.
    fn map_page(&self, gpa: u64) {
        self.update(gpa, PAGE, self.fe.mem.qva(gpa), RW);
    }

    /// Identity-maps every page of guest memory but those in `except`.
    fn map_all_but(&self, except: &[u64]) {
        for page in (GPA0..GPA0 + MEM).step_by(PAGE as usize) {
            if !except.contains(&page) {
                self.map_page(page);
            }
        }
    }

    /// The next message on the backend channel, which must be an IOTLB message without
    /// NEED_REPLY: (iova, perm, type).
    fn channel_msg(&self) -> (u64, u8, u8) {
        let m = self.ch.recv();
        assert_eq!(m.request, B_IOTLB_MSG, "backend request {}", m.request);
        assert_eq!(m.flags & FLAG_NEED_REPLY, 0, "the miss must not wait for a reply");
        assert_eq!(m.payload.len(), 32);
        (m.u64_at(0), m.payload[24], m.payload[25])
    }

    /// Reads backend channel messages until one is a miss for an IOVA in `page`.
    fn wait_miss_in(&self, page: u64) -> u8 {
        loop {
            let (iova, perm, kind) = self.channel_msg();
            assert_eq!(kind, MISS);
            if iova / PAGE * PAGE == page {
                return perm;
            }
        }
    }

    /// The guest address (our IOVA) of a frontend address of guest memory.
    fn gpa(&self, qva: u64) -> u64 {
        qva - self.fe.mem.regions[0].host as u64 + GPA0
    }

    /// The descriptor ring's IOVA.
    fn desc_iova(&self) -> u64 {
        self.gpa(self.fe.qs[0].config(0).desc_table_addr)
    }

    /// Starts queue 0 as a frontend behind an IOMMU does: ring addresses are IOVAs.
    fn start(&mut self) {
        let cfg = self.fe.qs[0].config(0);
        let ring = [cfg.desc_table_addr, cfg.used_ring_addr, cfg.avail_ring_addr];
        self.start_at(ring.map(|a| self.gpa(a)), None);
    }

    /// `start` with the ring at IOVAs `[desc, used, avail]` and dirty logging of the used
    /// ring at `log` (an IOVA, as QEMU sends it).
    fn start_at(&mut self, ring: [u64; 3], log: Option<u64>) {
        let q = &self.fe.qs[0];
        self.fe.req(SET_VRING_NUM, &state(0, q.size() as u32), &[]);
        self.fe.req(SET_VRING_BASE, &state(0, q.ring_state()), &[]);
        let mut addr = 0u32.to_le_bytes().to_vec();
        addr.extend_from_slice(&u32::from(log.is_some()).to_le_bytes());
        for a in ring {
            addr.extend_from_slice(&a.to_le_bytes());
        }
        addr.extend_from_slice(&log.unwrap_or(0).to_le_bytes());
        self.fe.req(SET_VRING_ADDR, &addr, &[]);
        self.fe.req(SET_VRING_CALL, &u64p(0), &[q.call_fd().as_raw_fd()]);
        self.fe.req(SET_VRING_KICK, &u64p(0), &[q.kick_fd().as_raw_fd()]);
        self.fe.req(SET_VRING_ENABLE, &state(0, 1), &[]);
        self.fe.qs[0].take_calls();
    }

    fn assert_no_panic(&mut self) {
        self.be.assert_alive();
        let err = self.be.stderr();
        assert!(!err.contains("PANIC"), "backend panicked:\n{err}");
    }

    /// A write of `data` at `sector` followed by a read back through fresh buffers: both
    /// complete with OK and the data round-trips.
    fn round_trip(&mut self, seed: u64, sector: u64) {
        let data = pattern(seed, 2048);
        let mem = self.fe.mem.clone();
        let w = prepare_at(
            &mem,
            VIRTIO_BLK_T_OUT,
            sector,
            &data,
            0,
            mem.alloc(16, 16),
            mem.alloc(2048, 512),
            mem.alloc(1, 1),
            1024,
        );
        assert_eq!(self.fe.io(0, &w).0, VIRTIO_BLK_S_OK);
        let r = prepare_at(
            &mem,
            VIRTIO_BLK_T_IN,
            sector,
            &[],
            2048,
            mem.alloc(16, 16),
            mem.alloc(2048, 512),
            mem.alloc(1, 1),
            1024,
        );
        assert_eq!(self.fe.io(0, &r).0, VIRTIO_BLK_S_OK);
        assert_eq!(mem.read(r.data_gpa, 2048), data);
    }
}

#[test]
fn iommu_platform_is_offered_with_reply_ack_and_backend_req() {
    let (_dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, &[]);
    let c = be.connect();
    c.send(SET_OWNER, FLAG_VERSION, &[], &[]);
    let features = c.call(GET_FEATURES, &[], &[]).u64();
    assert_ne!(features & F_IOMMU, 0, "features {features:#x}");
    let pf = c.call(GET_PROTOCOL_FEATURES, &[], &[]).u64();
    assert_eq!(pf & (PF_REPLY_ACK | PF_BACKEND_REQ), PF_REPLY_ACK | PF_BACKEND_REQ);
}

#[test]
fn iommu_platform_can_be_turned_off_by_the_backend() {
    let (_dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, &["-U"]);
    let c = be.connect();
    c.send(SET_OWNER, FLAG_VERSION, &[], &[]);
    let features = c.call(GET_FEATURES, &[], &[]).u64();
    assert_eq!(features & F_IOMMU, 0, "features {features:#x}");
    assert_ne!(c.ack(SET_FEATURES, &u64p(F_VERSION_1 | F_IOMMU), &[]), 0);
    be.assert_alive();
}

#[test]
fn iommu_platform_can_be_turned_off_by_the_environment() {
    let (_dir, sock, image) = workdir(1 << 20);
    // SAFETY-free: the variable only goes to the child's environment.
    let mut cmd = std::process::Command::new(common::example("vhost-user-proto-test"));
    cmd.env("LIBVHOST_USER_NO_IOMMU", "1")
        .arg("-s")
        .arg(&sock)
        .arg("-b")
        .arg(&image)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let t0 = std::time::Instant::now();
    let s = loop {
        match UnixStream::connect(&sock) {
            Ok(s) => break s,
            Err(e) => {
                assert!(t0.elapsed() < TIMEOUT, "connect: {e}");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
    let c = Conn::new(s);
    c.send(SET_OWNER, FLAG_VERSION, &[], &[]);
    let features = c.call(GET_FEATURES, &[], &[]).u64();
    assert_eq!(features & F_IOMMU, 0, "features {features:#x}");
    // Acking it anyway is refused.
    assert_ne!(c.ack(SET_FEATURES, &u64p(F_VERSION_1 | F_IOMMU), &[]), 0);
    drop(c);
    let _ = child.kill();
    let _ = child.wait();
}

fn data_through_translated_rings<Q: Driver>() {
    let mut s = setup::<Q>(&[]);
    s.map_all_but(&[]);
    s.start();
    for i in 0..8 {
        s.round_trip(i, i * 8);
    }
    // Indirect tables are IOVAs too.
    let mem = s.fe.mem.clone();
    let mut w = prepare_at(
        &mem,
        VIRTIO_BLK_T_OUT,
        100,
        &pattern(99, 1024),
        0,
        mem.alloc(16, 16),
        mem.alloc(1024, 512),
        mem.alloc(1, 1),
        512,
    );
    w.indirect = true;
    assert_eq!(s.fe.io(0, &w).0, VIRTIO_BLK_S_OK);
    s.assert_no_panic();
}

#[test]
fn data_through_translated_split_rings() {
    data_through_translated_rings::<SplitQueue>();
}

#[test]
fn data_through_translated_packed_rings() {
    data_through_translated_rings::<PackedQueue>();
}

/// The entry decides where a buffer is: a page mapped at another page's memory is read
/// from there.
fn translation_uses_the_entry<Q: Driver>() {
    let mut s = setup::<Q>(&[]);
    let mem = s.fe.mem.clone();
    // Two pages for the data: the one the descriptor names (iova) and the one its entry
    // points at (real).
    let iova = mem.alloc(PAGE, PAGE);
    let real = mem.alloc(PAGE, PAGE);
    s.map_all_but(&[iova]);
    s.update(iova, PAGE, mem.qva(real), RO);
    s.start();
    let wanted = pattern(7, 1024);
    let w = prepare_at(
        &mem,
        VIRTIO_BLK_T_OUT,
        16,
        &pattern(8, 1024),
        0,
        mem.alloc(16, 16),
        iova,
        mem.alloc(1, 1),
        1024,
    );
    mem.write(real, &wanted);
    assert_eq!(s.fe.io(0, &w).0, VIRTIO_BLK_S_OK);
    let r = prepare_at(
        &mem,
        VIRTIO_BLK_T_IN,
        16,
        &[],
        1024,
        mem.alloc(16, 16),
        mem.alloc(1024, 512),
        mem.alloc(1, 1),
        1024,
    );
    assert_eq!(s.fe.io(0, &r).0, VIRTIO_BLK_S_OK);
    assert_eq!(mem.read(r.data_gpa, 1024), wanted, "the device read the entry's page");
    s.assert_no_panic();
}

#[test]
fn translation_uses_the_entry_split() {
    translation_uses_the_entry::<SplitQueue>();
}

#[test]
fn translation_uses_the_entry_packed() {
    translation_uses_the_entry::<PackedQueue>();
}

/// A buffer without an entry: the pop misses, the miss comes on the backend channel (the
/// main socket keeps answering meanwhile), nothing is used; the update makes the queue
/// progress without another kick.
fn miss_then_update_then_progress<Q: Driver>() {
    let mut s = setup::<Q>(&[]);
    let mem = s.fe.mem.clone();
    let data = mem.alloc(PAGE, PAGE);
    s.map_all_but(&[data]);
    s.start();
    let payload = pattern(3, 512);
    let w = prepare_at(
        &mem,
        VIRTIO_BLK_T_OUT,
        4,
        &payload,
        0,
        mem.alloc(16, 16),
        data,
        mem.alloc(1, 1),
        512,
    );
    let head = s.fe.submit(0, &w);
    // The device reads a write's data: it asks for read access.
    assert_eq!(s.wait_miss_in(data), RO);
    assert!(s.fe.qs[0].poll_used().is_none(), "used before its buffer was translatable");
    // The main socket is served while the miss is outstanding.
    assert_ne!(s.fe.c.call(GET_FEATURES, &[], &[]).u64() & F_IOMMU, 0);
    s.map_page(data);
    let (id, _) = s.fe.qs[0].wait_used(TIMEOUT);
    assert_eq!(id, head);
    assert_eq!(mem.read(w.status_gpa, 1)[0], VIRTIO_BLK_S_OK);
    // A device-writable buffer asks for write access.
    let rdata = mem.alloc(PAGE, PAGE);
    s.send(rdata, PAGE, 0, 0, INVALIDATE);
    let r = prepare_at(
        &mem,
        VIRTIO_BLK_T_IN,
        4,
        &[],
        512,
        mem.alloc(16, 16),
        rdata,
        mem.alloc(1, 1),
        512,
    );
    let head = s.fe.submit(0, &r);
    assert_eq!(s.wait_miss_in(rdata), WO);
    s.map_page(rdata);
    let (id, _) = s.fe.qs[0].wait_used(TIMEOUT);
    assert_eq!(id, head);
    assert_eq!(mem.read(rdata, 512), payload);
    s.assert_no_panic();
}

#[test]
fn miss_then_update_then_progress_split() {
    miss_then_update_then_progress::<SplitQueue>();
}

#[test]
fn miss_then_update_then_progress_packed() {
    miss_then_update_then_progress::<PackedQueue>();
}

/// Rings not translatable at SET_VRING_ADDR (QEMU sends their updates later): the start
/// succeeds, the misses come, and once the pages are mapped the queue works.
fn rings_resolve_when_their_update_arrives<Q: Driver>() {
    let mut s = setup::<Q>(&[]);
    s.start();
    let desc = s.desc_iova();
    let (iova, _, kind) = s.channel_msg();
    assert_eq!(kind, MISS);
    assert_eq!(iova / PAGE, desc / PAGE, "the first miss is the descriptor ring's");
    let mem = s.fe.mem.clone();
    let w = prepare_at(
        &mem,
        VIRTIO_BLK_T_OUT,
        0,
        &pattern(5, 512),
        0,
        mem.alloc(16, 16),
        mem.alloc(512, 512),
        mem.alloc(1, 1),
        512,
    );
    let head = s.fe.submit(0, &w);
    s.map_all_but(&[]);
    let (id, _) = s.fe.qs[0].wait_used(TIMEOUT);
    assert_eq!(id, head);
    s.round_trip(6, 8);
    s.assert_no_panic();
}

#[test]
fn rings_resolve_when_their_update_arrives_split() {
    rings_resolve_when_their_update_arrives::<SplitQueue>();
}

#[test]
fn rings_resolve_when_their_update_arrives_packed() {
    rings_resolve_when_their_update_arrives::<PackedQueue>();
}

/// An invalidation of a ring's pages unmaps the ring: the next request misses on it and
/// goes through once the frontend maps it again.
fn ring_invalidation_misses_then_recovers<Q: Driver>() {
    let mut s = setup::<Q>(&[]);
    s.map_all_but(&[]);
    s.start();
    s.round_trip(1, 0);
    let desc = s.desc_iova() / PAGE * PAGE;
    assert_eq!(s.send(desc, PAGE, 0, 0, INVALIDATE), 0);
    let mem = s.fe.mem.clone();
    let w = prepare_at(
        &mem,
        VIRTIO_BLK_T_OUT,
        0,
        &pattern(2, 512),
        0,
        mem.alloc(16, 16),
        mem.alloc(512, 512),
        mem.alloc(1, 1),
        512,
    );
    let head = s.fe.submit(0, &w);
    s.wait_miss_in(desc);
    s.map_page(desc);
    let (id, _) = s.fe.qs[0].wait_used(TIMEOUT);
    assert_eq!(id, head);
    s.assert_no_panic();
}

#[test]
fn ring_invalidation_misses_then_recovers_split() {
    ring_invalidation_misses_then_recovers::<SplitQueue>();
}

#[test]
fn ring_invalidation_misses_then_recovers_packed() {
    ring_invalidation_misses_then_recovers::<PackedQueue>();
}

#[test]
fn bad_entries_are_refused_and_the_backend_keeps_working() {
    let mut s = setup::<SplitQueue>(&[]);
    let q = |gpa: u64| s.fe.mem.qva(gpa);
    let base = GPA0 + 0x10_0000;
    s.update(base, PAGE, q(base), RW);
    let refused = [
        ("size 0", iotlb(0x20_0000, 0, q(GPA0 + 0x20_0000), RW, UPDATE)),
        ("iova wraps", iotlb(u64::MAX - PAGE + 2, PAGE, q(GPA0 + 0x20_0000), RW, UPDATE)),
        ("uaddr wraps", iotlb(0x20_0000, PAGE, u64::MAX - 10, RW, UPDATE)),
        ("perm 0", iotlb(0x20_0000, PAGE, q(GPA0 + 0x20_0000), 0, UPDATE)),
        ("perm 4", iotlb(0x20_0000, PAGE, q(GPA0 + 0x20_0000), 4, UPDATE)),
        ("perm 0xff", iotlb(0x20_0000, PAGE, q(GPA0 + 0x20_0000), 0xff, UPDATE)),
        ("type 0", iotlb(0x20_0000, PAGE, q(GPA0 + 0x20_0000), RW, 0)),
        ("type miss", iotlb(0x20_0000, PAGE, q(GPA0 + 0x20_0000), RW, MISS)),
        ("type access fail", iotlb(0x20_0000, PAGE, q(GPA0 + 0x20_0000), RW, ACCESS_FAIL)),
        ("type 5", iotlb(0x20_0000, PAGE, q(GPA0 + 0x20_0000), RW, 5)),
        ("uaddr outside memory", iotlb(0x20_0000, PAGE, q(GPA0) + MEM + PAGE, RW, UPDATE)),
        ("uaddr runs past memory", iotlb(0x20_0000, 2 * PAGE, q(GPA0 + MEM - PAGE), RW, UPDATE)),
        ("uaddr 0", iotlb(0x20_0000, PAGE, 0, RW, UPDATE)),
        ("overlap, same start", iotlb(base, PAGE, q(GPA0 + 0x30_0000), RW, UPDATE)),
        ("overlap, other perm", iotlb(base, PAGE, q(base), RO, UPDATE)),
        ("overlap, inside", iotlb(base + 16, 16, q(base + 16), RW, UPDATE)),
        ("overlap, around", iotlb(base - PAGE, 3 * PAGE, q(base - PAGE), RW, UPDATE)),
        ("overlap, the end", iotlb(base + PAGE - 1, PAGE, q(GPA0 + 0x30_0000), RW, UPDATE)),
    ];
    for (what, payload) in &refused {
        let ack = s.fe.c.ack(IOTLB_MSG, payload, &[]);
        assert_ne!(ack, 0, "{what}: acked 0");
    }
    // None of them left an entry behind: a good update of that range is taken.
    s.update(0x20_0000, PAGE, q(GPA0 + 0x20_0000), RW);
    // Not refused: an exact duplicate (two queues missing the same page), invalidations of
    // ranges without entries, of size 0 and of ranges up to the end of the address space.
    s.update(base, PAGE, q(base), RW);
    for (iova, size) in [(0x30_0000, PAGE), (base, 0), (0x8000_0000_0000, u64::MAX), (0, 1)] {
        assert_eq!(s.send(iova, size, 0, 0, INVALIDATE), 0, "invalidate {iova:#x}+{size:#x}");
    }
    // The entry of before still stands (a duplicate and the invalidations left it alone),
    // and the backend works with everything mapped.
    assert_ne!(s.send(base, PAGE, q(GPA0 + 0x30_0000), RW, UPDATE), 0, "the entry is gone");
    s.map_all_but(&[base]);
    s.start();
    s.round_trip(11, 0);
    s.assert_no_panic();
}

#[test]
fn iotlb_msg_wrong_size_or_without_the_feature_is_refused() {
    // Without bit 33 negotiated.
    let (_dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, &[]);
    let mem = GuestMemory::simple(MEM);
    let fe = Front::new(be.connect(), mem, F_VERSION_1 | F_PROTOCOL_FEATURES, PF_REPLY_ACK);
    let qva = fe.mem.qva(0);
    assert_ne!(fe.c.ack(IOTLB_MSG, &iotlb(0, PAGE, qva, RW, UPDATE), &[]), 0);
    be.assert_alive();
    // A payload of the wrong size.
    let s = setup::<SplitQueue>(&[]);
    let mut short = iotlb(GPA0, PAGE, s.fe.mem.qva(GPA0), RW, UPDATE);
    short.truncate(24);
    assert_ne!(s.fe.c.ack(IOTLB_MSG, &short, &[]), 0);
    let mut long = iotlb(GPA0, PAGE, s.fe.mem.qva(GPA0), RW, UPDATE);
    long.extend_from_slice(&[0; 8]);
    assert_ne!(s.fe.c.ack(IOTLB_MSG, &long, &[]), 0);
}

/// A flood of updates keeps the table bounded: every update is acked, the oldest entries
/// are evicted (a buffer on an evicted page misses), the rings' entries stay.
#[test]
fn an_update_flood_evicts_and_stays_bounded() {
    let mut s = setup::<SplitQueue>(&[]);
    let mem = s.fe.mem.clone();
    let data = mem.alloc(PAGE, PAGE);
    s.map_all_but(&[]);
    s.start();
    s.round_trip(1, 0);
    // 4096 more entries (twice the bound) at IOVAs no request uses.
    for i in 0..4096u64 {
        s.update(0x100_0000_0000 + i * PAGE, PAGE, mem.qva(GPA0 + (i * PAGE) % MEM), RO);
    }
    let w = prepare_at(
        &mem,
        VIRTIO_BLK_T_OUT,
        0,
        &pattern(2, 512),
        0,
        mem.alloc(16, 16),
        data,
        mem.alloc(1, 1),
        512,
    );
    let head = s.fe.submit(0, &w);
    // The request's pages were evicted: map them as they are asked for.
    let mut missed = Vec::new();
    loop {
        if let Some((id, _)) = s.fe.qs[0].poll_used() {
            assert_eq!(id, head);
            break;
        }
        if s.ch.readable(Duration::from_millis(20)) {
            let (iova, _, kind) = s.channel_msg();
            assert_eq!(kind, MISS);
            let page = iova / PAGE * PAGE;
            assert!(missed.len() < 16, "misses without progress: {missed:x?}");
            missed.push(page);
            s.map_page(page);
        }
    }
    assert!(missed.contains(&data), "no miss for the evicted data page: {missed:x?}");
    assert_eq!(mem.read(w.status_gpa, 1)[0], VIRTIO_BLK_S_OK);
    s.assert_no_panic();
}

/// An entry that does not allow the access: the frontend is told (access failure on the
/// backend channel) and the device refuses the request as a bad address.
#[test]
fn a_denied_access_is_reported_as_an_access_failure() {
    let mut s = setup::<SplitQueue>(&[]);
    let mem = s.fe.mem.clone();
    let rdata = mem.alloc(PAGE, PAGE);
    s.map_all_but(&[rdata]);
    s.update(rdata, PAGE, mem.qva(rdata), RO);
    s.start();
    let r = prepare_at(
        &mem,
        VIRTIO_BLK_T_IN,
        0,
        &[],
        512,
        mem.alloc(16, 16),
        rdata,
        mem.alloc(1, 1),
        512,
    );
    s.fe.submit(0, &r);
    let (iova, perm, kind) = s.channel_msg();
    assert_eq!((iova, perm, kind), (rdata, WO, ACCESS_FAIL));
    assert!(s.be.wait_stderr("PANIC", TIMEOUT), "the device did not refuse the request");
    s.be.assert_alive();
}

/// A 10.0-era backend that answers IOTLB_MSG in process_msg (-I) keeps the IOTLB to itself:
/// the library uses guest addresses as they are, with no entry of its own.
#[test]
fn a_backend_that_handles_iotlb_msg_itself_keeps_working() {
    let mut s = setup::<SplitQueue>(&["-I"]);
    // Answered by the backend (0), whatever it says: the library would refuse this one.
    assert_eq!(s.send(0, 0, 0, 0, UPDATE), 0);
    assert!(s.be.wait_stderr("intercepted 22", TIMEOUT));
    // Ring addresses as without an IOMMU: frontend addresses.
    s.fe.start_queue(0, s.fe.qs[0].ring_state(), None);
    s.round_trip(4, 0);
    assert!(!s.ch.readable(Duration::from_millis(50)), "the library sent a miss");
    s.assert_no_panic();
}

/// Dirty logging with the IOMMU: the log is indexed by guest physical address, so what the
/// device wrote is logged where it landed, not at its IOVA, and so is the used ring, whose
/// log address QEMU sends as an IOVA.
#[test]
fn the_dirty_log_gets_guest_physical_pages() {
    use std::os::unix::fs::FileExt;
    const F_LOG_ALL: u64 = 1 << 26;
    let mut s = setup_with::<SplitQueue>(&[], F_LOG_ALL, PF_LOG_SHMFD);
    let mem = s.fe.mem.clone();
    // The used ring at an IOVA far from its guest address; a data page mapped elsewhere.
    let cfg = s.fe.qs[0].config(0);
    let used_gpa = s.gpa(cfg.used_ring_addr);
    let used_page = used_gpa / PAGE * PAGE;
    const FAR: u64 = 0x200_0000_0000;
    let iova_page = mem.alloc(PAGE, PAGE);
    let real_page = mem.alloc(PAGE, PAGE);
    s.map_all_but(&[iova_page]);
    s.update(FAR + used_page, PAGE, mem.qva(used_page), RW);
    s.update(iova_page, PAGE, mem.qva(real_page), RW);
    let ring = [s.gpa(cfg.desc_table_addr), FAR + used_gpa, s.gpa(cfg.avail_ring_addr)];
    s.start_at(ring, Some(FAR + used_gpa));
    let log_size = ((GPA0 + MEM) / PAGE / 8).div_ceil(PAGE) * PAGE;
    let log = memfd("dirty-log", log_size);
    let mut p = u64p(log_size);
    p.extend_from_slice(&u64p(0));
    s.fe.c.call(SET_LOG_BASE, &p, &[log.as_raw_fd()]);
    let r = prepare_at(
        &mem,
        VIRTIO_BLK_T_IN,
        0,
        &[],
        1024,
        mem.alloc(16, 16),
        iova_page + 512,
        mem.alloc(1, 1),
        1024,
    );
    log.write_all_at(&vec![0u8; log_size as usize], 0).unwrap();
    assert_eq!(s.fe.io(0, &r).0, VIRTIO_BLK_S_OK);
    let mut bitmap = vec![0u8; log_size as usize];
    log.read_exact_at(&mut bitmap, 0).unwrap();
    let logged = |gpa: u64| bitmap[(gpa / PAGE / 8) as usize] & (1 << (gpa / PAGE % 8)) != 0;
    assert!(logged(real_page), "the page the data landed in is not logged");
    assert!(!logged(iova_page), "the data's IOVA was logged as a guest address");
    assert!(logged(used_page), "the used ring is not logged");
    assert!(logged(r.status_gpa), "the status byte is not logged");
    s.assert_no_panic();
}

/// Entries go stale where the frontend's view changes: a memory table without their user
/// addresses drops them, and so does stopping the device (QEMU forwards no guest unmaps
/// while it is stopped). A new entry for the same IOVA is then taken.
#[test]
fn stale_entries_are_dropped_at_memory_changes_and_stops() {
    let mut s = setup::<SplitQueue>(&[]);
    let mem = s.fe.mem.clone();
    let iova = 0x300_0000_0000u64;
    let page = mem.alloc(PAGE, PAGE);
    s.update(iova, PAGE, mem.qva(page), RW);
    // The same table again: the entry stands (a different one for its IOVA is refused).
    s.fe.set_mem_table();
    assert_ne!(s.send(iova, PAGE, mem.qva(page + PAGE), RW, UPDATE), 0);
    // A table whose frontend addresses moved (same memory): the entry is gone.
    let moved = 1u64 << 44;
    let r = &mem.regions[0];
    let mut p = 1u32.to_le_bytes().to_vec();
    p.extend_from_slice(&[0u8; 4]);
    p.extend_from_slice(&region_bytes(r.gpa, r.size, r.host as u64 + moved, 0));
    s.fe.req(SET_MEM_TABLE, &p, &[r.file.as_raw_fd()]);
    assert_eq!(s.send(iova, PAGE, mem.qva(page + PAGE) + moved, RW, UPDATE), 0);
    // Back to the frontend's real addresses, a started queue, then a stop.
    s.fe.set_mem_table();
    s.update(iova + PAGE, PAGE, mem.qva(page), RW);
    s.map_all_but(&[]);
    s.start();
    s.round_trip(9, 0);
    let base = s.fe.c.call(GET_VRING_BASE, &state(0, 0), &[]);
    assert_eq!(base.u32_at(0), 0);
    assert_eq!(s.send(iova + PAGE, PAGE, mem.qva(page + PAGE), RW, UPDATE), 0);
    s.assert_no_panic();
}

/// Packed rings with inflight tracking: a pop that misses gives its inflight entries back,
/// so three rings' worth of misses leave the area consistent and every request completes.
#[test]
fn packed_inflight_tracking_survives_many_misses() {
    const PF_INFLIGHT_SHMFD: u64 = 1 << 12;
    let mut s = setup_with::<PackedQueue>(&[], 0, PF_INFLIGHT_SHMFD);
    let r = s.fe.c.call(GET_INFLIGHT_FD, &inflight(0, 0, 1, 64), &[]);
    let (size, offset) = (r.u64_at(0), r.u64_at(8));
    let fd = r.fds.into_iter().next().expect("GET_INFLIGHT_FD reply carries no fd");
    s.fe.req(SET_INFLIGHT_FD, &inflight(size, offset, 1, 64), &[fd.as_raw_fd()]);
    let mem = s.fe.mem.clone();
    // The miss is on the chain's last descriptor (its status byte), then in an indirect
    // table (one ring descriptor, first and last): the pop had recorded the whole chain.
    let (hdr, data, status) = (mem.alloc(16, 16), mem.alloc(512, 512), mem.alloc(PAGE, PAGE));
    s.map_all_but(&[]);
    s.start();
    for i in 0..3 * 64u64 {
        assert_eq!(s.send(status, PAGE, 0, 0, INVALIDATE), 0);
        let mut w =
            prepare_at(&mem, VIRTIO_BLK_T_OUT, i % 8, &pattern(i, 512), 0, hdr, data, status, 512);
        w.indirect = i % 2 == 1;
        let head = s.fe.submit(0, &w);
        s.wait_miss_in(status);
        s.map_page(status);
        let (id, _) = s.fe.qs[0].wait_used(TIMEOUT);
        assert_eq!(id, head, "request {i}");
        assert_eq!(mem.read(status, 1)[0], VIRTIO_BLK_S_OK, "request {i}");
    }
    s.assert_no_panic();
}
