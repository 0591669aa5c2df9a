// SPDX-License-Identifier: GPL-2.0-or-later
//! Dirty page logging: with VHOST_F_LOG_ALL and LOG_SHMFD negotiated, the
//! bitmap given with SET_LOG_BASE gets exactly the pages the device wrote
//! (device-writable buffers up to the used length, the used ring entry and
//! used->idx at the ring's log address), and the SET_LOG_FD eventfd is
//! signalled. Without LOG_ALL nothing is logged.

mod common;
#[path = "proto/mod.rs"]
mod proto;

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use common::*;
use proto::*;

const PAGE: u64 = 4096;
const MEM: u64 = 8 << 20;
/// Where the used ring is "logged": a guest address unrelated to the
/// ring's real location, so a backend that logs the wrong address is caught.
const LOG_ADDR: u64 = 0x60_0000;

fn pages(set: &mut BTreeSet<u64>, addr: u64, len: u64) {
    if len == 0 {
        return;
    }
    for p in addr / PAGE..=(addr + len - 1) / PAGE {
        set.insert(p);
    }
}

fn bitmap_pages(log: &std::fs::File, size: usize) -> BTreeSet<u64> {
    let mut buf = vec![0u8; size];
    log.read_exact_at(&mut buf, 0).unwrap();
    let mut s = BTreeSet::new();
    for (i, b) in buf.iter().enumerate() {
        for bit in 0..8 {
            if b & (1 << bit) != 0 {
                s.insert((i * 8 + bit) as u64);
            }
        }
    }
    s
}

fn run(log_all: bool) {
    let (_dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, &[]);
    let mem = GuestMemory::simple(MEM);
    let mut features = F_VERSION_1 | F_PROTOCOL_FEATURES;
    if log_all {
        features |= F_LOG_ALL;
    }
    let mut fe = Front::new(be.connect(), mem.clone(), features, PF_REPLY_ACK | PF_LOG_SHMFD);
    fe.add_queue(64, 0);
    fe.start_queue(0, 0, Some(LOG_ADDR));

    // One bit per page: MEM / PAGE / 8 bytes, rounded up to a page.
    let log_size = (MEM / PAGE / 8).div_ceil(PAGE) * PAGE;
    let log = memfd("dirty-log", log_size);
    let mut p = u64p(log_size);
    p.extend_from_slice(&u64p(0));
    let r = fe.c.call(SET_LOG_BASE, &p, &[log.as_raw_fd()]);
    assert_eq!(r.payload.len(), 8, "SET_LOG_BASE reply size");
    let efd = eventfd();
    fe.req(SET_LOG_FD, &[], &[efd.as_raw_fd()]);

    let used = fe.qs[0].used;
    let mut k = 0u64;
    // (read length, data segment size, data offset in its page)
    let shapes: [(u32, u32, u64); 6] = [
        (512, 512, 0),
        (4096, 4096, 0),
        (4096, 1024, 100),
        (3 * 4096, 4096, 2048),
        (8192, 8192, 4095),
        (1024, 512, 4000),
    ];
    for (round, &(len, seg, off)) in shapes.iter().enumerate() {
        // Buffers spread over fresh pages, far from the rings.
        let base = 0x20_0000 + round as u64 * 0x4_0000;
        let hdr = base;
        let data = base + 0x1_0000 + off;
        let status = base + 0x3_0000 + 77;
        let sector = (round as u64) * 64;
        // Writes first (the device writes only the status byte), then a read.
        for write in [true, false] {
            log.write_all_at(&vec![0u8; log_size as usize], 0).unwrap();
            eventfd_take(efd.as_raw_fd());
            let slot = fe.qs[0].next_avail % 64;
            let p = if write {
                prepare_at(
                    &mem,
                    VIRTIO_BLK_T_OUT,
                    sector,
                    &pattern(k, len as usize),
                    0,
                    hdr,
                    data,
                    status,
                    seg,
                )
            } else {
                prepare_at(&mem, VIRTIO_BLK_T_IN, sector, &[], len, hdr, data, status, seg)
            };
            k += 1;
            let (st, used_len) = fe.io(0, &p);
            assert_eq!(st, 0, "request failed");
            let got = bitmap_pages(&log, log_size as usize);
            let signalled = eventfd_take(efd.as_raw_fd());
            if !log_all {
                assert!(got.is_empty(), "pages logged without VHOST_F_LOG_ALL: {got:?}");
                assert_eq!(signalled, 0, "log eventfd signalled without VHOST_F_LOG_ALL");
                continue;
            }
            let mut want = BTreeSet::new();
            if !write {
                pages(&mut want, data, len as u64);
                assert_eq!(used_len, len + 1);
            }
            pages(&mut want, status, 1);
            pages(&mut want, LOG_ADDR + 4 + 8 * slot as u64, 8);
            pages(&mut want, LOG_ADDR + 2, 2);
            assert_eq!(
                got, want,
                "dirty pages after a {} of {len} bytes (data at {data:#x}, status at {status:#x}, used ring at {used:#x}, logged at {LOG_ADDR:#x})",
                if write { "write" } else { "read" }
            );
            assert!(signalled > 0, "log eventfd not signalled");
        }
    }
    be.assert_alive();
    assert!(!be.stderr().contains("PANIC"), "backend panicked:\n{}", be.stderr());
}

#[test]
fn dirty_log_marks_exactly_the_written_pages() {
    run(true);
}

#[test]
fn no_dirty_log_without_log_all() {
    run(false);
}

/// Packed ring: the device's used-descriptor writes land in the descriptor
/// ring, so they are logged at the descriptor ring's guest address (the
/// log address of SET_VRING_ADDR belongs to the device event area).
#[test]
fn dirty_log_packed_ring_writes() {
    let (_dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, &[]);
    let mem = GuestMemory::simple(MEM);
    let features = F_VERSION_1 | F_PROTOCOL_FEATURES | F_LOG_ALL;
    let mut fe = Front::<PackedQueue>::new_as(
        be.connect(),
        mem.clone(),
        features,
        PF_REPLY_ACK | PF_LOG_SHMFD,
    );
    // 8 slots: the used descriptors move over the whole ring and lap it.
    fe.add_queue(8, 0);
    let base = fe.qs[0].ring_state();
    fe.start_queue(0, base, Some(LOG_ADDR));
    let log_size = (MEM / PAGE / 8).div_ceil(PAGE) * PAGE;
    let log = memfd("dirty-log", log_size);
    let mut p = u64p(log_size);
    p.extend_from_slice(&u64p(0));
    fe.c.call(SET_LOG_BASE, &p, &[log.as_raw_fd()]);
    let efd = eventfd();
    fe.req(SET_LOG_FD, &[], &[efd.as_raw_fd()]);
    let ring = fe.qs[0].ring;
    let device_event = fe.qs[0].device_event;
    for k in 0..12u64 {
        let base = 0x20_0000 + (k % 4) * 0x4_0000;
        let (hdr, data, status) = (base, base + 0x1_0000 + 300, base + 0x3_0000 + 5);
        log.write_all_at(&vec![0u8; log_size as usize], 0).unwrap();
        eventfd_take(efd.as_raw_fd());
        let at = fe.qs[0].used;
        let p = prepare_at(&mem, VIRTIO_BLK_T_IN, k * 8, &[], 4096, hdr, data, status, 4096);
        let (st, len) = fe.io(0, &p);
        assert_eq!((st, len), (0, 4097), "request {k}");
        let got = bitmap_pages(&log, log_size as usize);
        let mut want = BTreeSet::new();
        pages(&mut want, data, 4096);
        pages(&mut want, status, 1);
        pages(&mut want, ring + 16 * at.idx as u64, 16);
        let missing: Vec<_> = want.difference(&got).collect();
        assert!(missing.is_empty(), "request {k}: pages not logged: {missing:?} (got {got:?})");
        // Beyond those, only the device event area (written when the device
        // changes its notification state) may be logged.
        let mut allowed = want.clone();
        pages(&mut allowed, device_event, 4);
        pages(&mut allowed, LOG_ADDR, 4);
        let extra: Vec<_> = got.difference(&allowed).collect();
        assert!(
            extra.is_empty(),
            "request {k}: pages logged that the device did not write: {extra:?}"
        );
        assert!(eventfd_take(efd.as_raw_fd()) > 0, "log eventfd not signalled");
    }
    be.assert_alive();
    assert!(!be.stderr().contains("PANIC"), "backend panicked:\n{}", be.stderr());
}
