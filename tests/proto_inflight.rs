// SPDX-License-Identifier: GPL-2.0-or-later
//! Inflight I/O tracking (VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD): the backend
//! is SIGKILLed with requests in flight, a new backend process is given the
//! same inflight fd and ring state, and every request completes exactly once,
//! in the original order, with the right data.

mod common;
#[path = "proto/mod.rs"]
mod proto;

use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use common::*;
use proto::*;

const QSIZE: u16 = 256;
const IMAGE: u64 = 1 << 20;
const NREQ: usize = 40;
const REQ_SECTORS: u64 = 8; // 4 KiB per request

struct Req {
    p: Prepared,
    write: bool,
    sector: u64,
    /// For reads: the expected data.
    expect: Vec<u8>,
}

fn connect_and_setup(be: &mut ProtoBackend, mem: &std::sync::Arc<GuestMemory>) -> Front {
    let c = be.connect();
    Front::new(c, mem.clone(), F_VERSION_1 | F_PROTOCOL_FEATURES, PF_REPLY_ACK | PF_INFLIGHT_SHMFD)
}

#[test]
fn inflight_requests_survive_backend_sigkill() {
    let (dir, sock, image) = workdir(IMAGE);
    let mut model = initial_image(IMAGE);
    let mut resubmitted_total = 0usize;
    let t_all = Instant::now();
    for iter in 0..20u64 {
        let mem = GuestMemory::simple(4 << 20);
        let mut be = ProtoBackend::spawn(&sock, &image, &["-d", "2"]);
        let mut fe = connect_and_setup(&mut be, &mem);

        // GET_INFLIGHT_FD, then hand the area back with SET_INFLIGHT_FD (as QEMU does).
        let r = fe.c.call(GET_INFLIGHT_FD, &inflight(0, 0, 1, QSIZE), &[]);
        assert_eq!(r.fds.len(), 1, "GET_INFLIGHT_FD reply carries no fd");
        let mmap_size = r.u64_at(0);
        let mmap_offset = r.u64_at(8);
        assert!(
            mmap_size >= 64 * QSIZE as u64 / 4,
            "inflight area of {mmap_size} bytes is too small"
        );
        let inflight_fd: OwnedFd = r.fds.into_iter().next().unwrap();
        fe.req(
            SET_INFLIGHT_FD,
            &inflight(mmap_size, mmap_offset, 1, QSIZE),
            &[inflight_fd.as_raw_fd()],
        );

        fe.add_queue(QSIZE, 0);
        fe.start_queue(0, 0, None);

        // Requests: writes of fresh data to distinct sectors, reads of other
        // sectors (whose content the model knows).
        let total_sectors = IMAGE / 512;
        let mut reqs = Vec::new();
        for k in 0..NREQ as u64 {
            let slot = (iter * 13 + k * 7) % (total_sectors / REQ_SECTORS);
            let sector = slot * REQ_SECTORS;
            let write = k % 3 != 2;
            let hdr = mem.alloc(16, 16);
            let data = mem.alloc(REQ_SECTORS * 512, 512);
            let status = mem.alloc(1, 1);
            let range = (sector * 512) as usize..((sector + REQ_SECTORS) * 512) as usize;
            if write {
                let d = pattern(iter * 1000 + k, (REQ_SECTORS * 512) as usize);
                let p = prepare_at(&mem, VIRTIO_BLK_T_OUT, sector, &d, 0, hdr, data, status, 1024);
                model[range].copy_from_slice(&d);
                reqs.push(Req { p, write, sector, expect: Vec::new() });
            } else {
                let p = prepare_at(
                    &mem,
                    0,
                    sector,
                    &[],
                    (REQ_SECTORS * 512) as u32,
                    hdr,
                    data,
                    status,
                    4096,
                );
                reqs.push(Req { p, write, sector, expect: model[range].to_vec() });
            }
        }
        // Reads must not depend on which of this round's writes ran first:
        // a read of a sector written in this round is re-pointed elsewhere.
        let written: std::collections::HashSet<u64> =
            reqs.iter().filter(|r| r.write).map(|r| r.sector).collect();
        for r in reqs.iter_mut().filter(|r| !r.write) {
            assert!(!written.contains(&r.sector), "test layout: read overlaps a write");
        }

        let mut heads = Vec::new();
        for r in &reqs {
            heads.push(fe.submit_nokick(0, &r.p, false));
        }
        fe.qs[0].kick_now();

        // Let the slow backend complete some (2 ms each), then kill it.
        let wait_ms = (iter * 37) % 70;
        std::thread::sleep(Duration::from_millis(wait_ms));
        let st = be.sigkill();
        assert!(
            describe(st).contains("signal 9"),
            "backend ended with {} before the kill",
            describe(st)
        );
        let popped = be.stderr().matches("popped q0").count();

        let mut order = Vec::new();
        while let Some((id, len)) = fe.qs[0].poll_used() {
            order.push((id, len));
        }
        let done_before = order.len();
        assert!(
            done_before < NREQ,
            "iteration {iter}: everything completed before the kill (make the backend slower)"
        );

        // A new backend process, the same front-end state and inflight fd.
        let used_idx = fe.qs[0].used_idx();
        let mut be2 = ProtoBackend::spawn(&sock, &image, &[]);
        let c2 = be2.connect();
        Front::handshake(&c2, F_VERSION_1 | F_PROTOCOL_FEATURES, PF_REPLY_ACK | PF_INFLIGHT_SHMFD);
        fe.c = c2;
        fe.set_mem_table();
        fe.req(
            SET_INFLIGHT_FD,
            &inflight(mmap_size, mmap_offset, 1, QSIZE),
            &[inflight_fd.as_raw_fd()],
        );
        fe.qs[0].renew_eventfds();
        // Like QEMU after a lost backend: resume from the used index.
        fe.start_queue(0, used_idx as u32, None);

        let t0 = Instant::now();
        while order.len() < NREQ {
            match fe.qs[0].poll_used() {
                Some(e) => order.push(e),
                None => {
                    assert!(
                        t0.elapsed() < TIMEOUT,
                        "iteration {iter}: only {} of {NREQ} requests completed after the restart ({done_before} before the kill)\n{}",
                        order.len(),
                        be2.stderr()
                    );
                    wait_readable(fe.qs[0].call.as_raw_fd(), Duration::from_millis(5));
                    fe.qs[0].take_calls();
                }
            }
        }
        // Nothing completes twice: no further used entries show up.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            fe.qs[0].used_idx(),
            fe.qs[0].last_used,
            "iteration {iter}: extra used entries (a request completed twice)"
        );

        // Completion order = submission order (the backend completes FIFO,
        // so resubmitted requests must come back in their original order).
        let got: Vec<u16> = order.iter().map(|e| e.0).collect();
        assert_eq!(got, heads, "iteration {iter}: completion order differs from submission order ({done_before} done before the kill, {popped} popped)");
        for (r, &(_, len)) in reqs.iter().zip(order.iter()) {
            let status = mem.read(r.p.status_gpa, 1)[0];
            assert_eq!(status, 0, "iteration {iter}: request at sector {} failed", r.sector);
            if r.write {
                assert_eq!(len, 1, "used length of a write");
            } else {
                assert_eq!(len, (REQ_SECTORS * 512) as u32 + 1, "used length of a read");
                let data = mem.read(r.p.data_gpa, r.p.data_len as usize);
                assert!(
                    data == r.expect,
                    "iteration {iter}: read of sector {} returned wrong data",
                    r.sector
                );
            }
        }
        resubmitted_total += popped.saturating_sub(done_before);
        be2.assert_alive();
        assert!(!be2.stderr().contains("PANIC"), "backend panicked:\n{}", be2.stderr());
        drop(fe);
        assert!(
            be2.wait_exit(TIMEOUT).is_some(),
            "backend did not exit after the front-end closed"
        );
        assert!(t_all.elapsed() < Duration::from_secs(120), "test too slow");
    }
    // The image holds every write.
    let content = std::fs::read(&image).unwrap();
    assert!(content == model, "image content differs from the model");
    // The test must actually have exercised resubmission.
    assert!(resubmitted_total > 0, "no request was in flight at any kill");
    eprintln!("{resubmitted_total} requests were in flight at a kill and resubmitted");
    drop(dir);
}
