// SPDX-License-Identifier: GPL-2.0-or-later
//! Queue threads popping and pushing while the dispatch thread changes the memory table
//! (SET_MEM_TABLE with fresh mappings, ADD_MEM_REG and REM_MEM_REG of a third region) and
//! stops and restarts a queue (GET_VRING_BASE, then the ring setup again), all on one real
//! device in this process through the C API. Afterwards: no Rust panic inside the library,
//! every request the driver published was completed, the device is not broken.
//!
//! The queue threads complete requests without writing to their buffers: a buffer written
//! after the dispatch thread replaced the table would be unmapped memory (an open finding,
//! see tests/fuzz_findings.rs), which is not what this test is about.
//!
//! `concurrency_stress_under_drd` runs the same test (fewer rounds) under valgrind's DRD
//! thread checker when valgrind is installed; see tests/drd.supp for what it suppresses.
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

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use capi::*;
use engine::{FdSpec, Msg};
use live::Live;
use proto::*;
use ring::{Desc, F_NEXT, F_WRITE};

const QSIZE: u16 = 64;

fn session() -> Session {
    Session {
        features: F_VERSION_1 | F_PROTOCOL_FEATURES | F_EVENT_IDX,
        protocol: PF_MQ | PF_REPLY_ACK | PF_MEM_SLOTS,
        queue_size: QSIZE,
        base: 0,
        region1: GUEST_SIZE as u64,
    }
}

/// Guest memory as the driver sees it: memfd `mem` mapped in this process.
#[derive(Clone, Copy)]
struct Ring {
    base: *mut u8,
    /// Guest address of the memfd's start (for buffer addresses).
    gpa: u64,
}

// SAFETY: a shared mapping; each queue's ring and buffers are touched by one thread only.
unsafe impl Send for Ring {}

impl Ring {
    fn write(&self, off: u64, bytes: &[u8]) {
        // SAFETY: offsets inside the 64 KiB mapping (ring layout of proto::Session).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(off as usize), bytes.len())
        };
    }
    fn u16_at(&self, off: u64) -> &std::sync::atomic::AtomicU16 {
        // SAFETY: aligned ring index inside the mapping.
        unsafe { &*(self.base.add(off as usize) as *const std::sync::atomic::AtomicU16) }
    }
}

/// A pthread mutex (DRD sees pthread synchronisation; std's futex-based Mutex it cannot).
struct PMutex(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex is made to be shared between threads.
unsafe impl Sync for PMutex {}
unsafe impl Send for PMutex {}

struct PGuard<'a>(&'a PMutex);

impl PMutex {
    fn new() -> Self {
        PMutex(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER))
    }
    fn lock(&self) -> PGuard<'_> {
        // SAFETY: an initialised mutex that lives as long as the guard.
        unsafe { libc::pthread_mutex_lock(self.0.get()) };
        PGuard(self)
    }
}

impl Drop for PGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: locked by this thread in `lock`.
        unsafe { libc::pthread_mutex_unlock(self.0 .0.get()) };
    }
}

/// The driver and the device worker of one queue, in one thread.
struct QueueDriver {
    q: usize,
    ring: Ring,
    published: u32,
    completed: u32,
    avail: u16,
    used_seen: u16,
}

impl QueueDriver {
    fn new(q: usize, ring: Ring) -> Self {
        QueueDriver { q, ring, published: 0, completed: 0, avail: 0, used_seen: 0 }
    }

    /// Whether requests are still out.
    fn busy(&self) -> bool {
        self.completed < self.published
    }

    /// One turn: publish a request when there is room (and `publish`), pop, push, notify.
    fn step(&mut self, dev: &device::Device, publish: bool) {
        let ring = self.ring;
        let n = u64::from(QSIZE);
        let used = u16::from_le(ring.u16_at(USED_OFF + 2).load(Ordering::Acquire));
        self.completed += u32::from(used.wrapping_sub(self.used_seen));
        self.used_seen = used;
        if publish && self.avail.wrapping_sub(used) < QSIZE / 2 {
            // A two-buffer request at descriptor slots 2k, 2k+1.
            let k = u64::from(self.avail % (QSIZE / 2));
            let buf = BUF_OFF + 0x100 * k;
            let d0 =
                Desc { addr: ring.gpa + buf, len: 16, flags: F_NEXT, next: (2 * k + 1) as u16 };
            let d1 = Desc { addr: ring.gpa + buf + 16, len: 64, flags: F_WRITE, next: 0 };
            ring.write(DESC_OFF + 16 * 2 * k, &d0.bytes());
            ring.write(DESC_OFF + 16 * (2 * k + 1), &d1.bytes());
            let slot = AVAIL_OFF + 4 + 2 * (u64::from(self.avail) % n);
            ring.write(slot, &((2 * k) as u16).to_le_bytes());
            self.avail = self.avail.wrapping_add(1);
            ring.u16_at(AVAIL_OFF + 2).store(self.avail.to_le(), Ordering::Release);
            self.published += 1;
        }
        let vq = dev.queue(self.q);
        // SAFETY: our device and queue; elements freed once pushed.
        unsafe {
            let e = vu_queue_pop(dev.raw(), vq, device::ELEM_SIZE) as *mut VuVirtqElement;
            if !e.is_null() {
                vu_queue_push(dev.raw(), vq, e, 0);
                libc::free(e.cast());
                vu_queue_notify(dev.raw(), vq);
            }
        }
    }
}

/// A queue's worker thread: `QueueDriver` turns until `stop` and every request completed.
/// Returns (published, completed).
fn worker(
    dev: &device::Device,
    q: usize,
    ring: Ring,
    pause: &PMutex,
    stop: &AtomicBool,
) -> (u32, u32) {
    let mut driver = QueueDriver::new(q, ring);
    while !stop.load(Ordering::Relaxed) || driver.busy() {
        let _g = pause.lock();
        driver.step(dev, !stop.load(Ordering::Relaxed));
        drop(_g);
        if dev.broken() {
            break;
        }
        std::thread::yield_now();
    }
    (driver.published, driver.completed)
}

fn rounds() -> u32 {
    std::env::var("VU_CONC_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(300)
}

#[test]
fn concurrency_stress() {
    stress(Serving::Workers);
}

/// Queue 0 served by the dispatch thread between its messages — the express lane's home,
/// whose calls the memory lock does not count (`memory_gate`) — and queue 1 by a worker
/// thread (counted), while the dispatch thread changes the memory table under the worker.
#[test]
fn concurrency_stress_with_a_home_queue() {
    stress(Serving::HomeAndWorker);
}

#[derive(Clone, Copy, PartialEq)]
enum Serving {
    /// A worker thread per queue.
    Workers,
    /// Queue 0 by the dispatch thread, queue 1 by a worker.
    HomeAndWorker,
}

fn stress(serving: Serving) {
    let s = session();
    let mut l = Live::new(2, &[GUEST_SIZE, GUEST_SIZE, GUEST_SIZE]);
    l.steps(&s.setup());
    l.steps(&s.ring_steps(1));
    l.steps(&s.start_steps(1));
    assert!(!l.dev.broken(), "setup refused: {}", l.dev.ctx.last_panic.lock().unwrap());
    // Queue threads serve by polling; kicks are not needed.
    l.dev.ctx.serve_kicks.store(false, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let pauses: Arc<[PMutex; 2]> = Arc::new([PMutex::new(), PMutex::new()]);
    let rings = [
        Ring { base: l.guest.maps[0].0, gpa: 0 },
        Ring { base: l.guest.maps[1].0, gpa: s.region1 },
    ];
    let restarts = AtomicU32::new(0);
    let [r0, r1] = s.regions();
    let r2 = Region { gpa: 8 << 20, size: GUEST_SIZE as u64, qva: QVA_BASE + (8 << 20), offset: 0 };
    let results = std::thread::scope(|sc| {
        let dev: &device::Device = &l.dev;
        let home_queue = serving == Serving::HomeAndWorker;
        let mut home = QueueDriver::new(0, rings[0]);
        let handles: Vec<_> = (usize::from(home_queue)..2)
            .map(|q| {
                let (stop, pauses, ring) = (stop.clone(), pauses.clone(), rings[q]);
                sc.spawn(move || worker(dev, q, ring, &pauses[q], &stop))
            })
            .collect();
        // The dispatch thread (this one). `l` is borrowed by the workers only through `dev`;
        // sending needs the socket and fd pool, which only this thread uses.
        let sock = l.sock;
        let send = |m: &Msg, fds: &[i32]| {
            assert!(sys::send_with_fds(sock, &m.bytes(), fds));
            let ok = dev.dispatch();
            engine::assert_no_library_panic("vu_dispatch");
            let mut buf = Vec::new();
            let mut rfds = Vec::new();
            sys::recv_all(sock, &mut buf, &mut rfds);
            for fd in rfds {
                sys::close(fd);
            }
            (ok, buf)
        };
        let g = &l.guest.fds;
        for round in 0..rounds() {
            match round % 4 {
                0 => {
                    send(&Msg::new(SET_MEM_TABLE, mem_table(2, &[r0, r1])), &[g[0], g[1]]);
                }
                1 => {
                    send(&Msg::new(ADD_MEM_REG, mem_reg(&r2)), &[g[2]]);
                }
                2 => {
                    send(&Msg::new(REM_MEM_REG, mem_reg(&r2)), &[]);
                }
                _ => {
                    // Stop and restart queue 1 with its worker paused, as a backend does
                    // between queue_set_started(false) and (true).
                    let _p = pauses[1].lock();
                    let (_, reply) = send(&Msg::new(GET_VRING_BASE, state(1, 0)), &[]);
                    let base = u32::from_le_bytes(reply[16..20].try_into().unwrap());
                    let qva = QVA_BASE + s.region1;
                    send(&Msg::new(SET_VRING_NUM, state(1, u32::from(QSIZE))), &[]);
                    send(&Msg::new(SET_VRING_BASE, state(1, base)), &[]);
                    send(
                        &Msg::new(
                            SET_VRING_ADDR,
                            vring_addr(1, 0, qva + DESC_OFF, qva + USED_OFF, qva + AVAIL_OFF, 0),
                        ),
                        &[],
                    );
                    let ev = |i: usize| l.events[i];
                    send(&Msg::new(SET_VRING_CALL, u64_payload(1)), &[ev(2)]);
                    send(&Msg::new(SET_VRING_KICK, u64_payload(1)), &[ev(3)]);
                    send(&Msg::new(SET_VRING_ENABLE, state(1, 1)), &[]);
                    restarts.fetch_add(1, Ordering::Relaxed);
                }
            }
            assert!(!dev.broken(), "round {round}: {}", dev.ctx.last_panic.lock().unwrap());
            if home_queue {
                for _ in 0..4 {
                    home.step(dev, true);
                }
            }
            std::thread::yield_now();
        }
        stop.store(true, Ordering::Relaxed);
        let mut results = Vec::new();
        if home_queue {
            for _ in 0..100_000 {
                if !home.busy() || dev.broken() {
                    break;
                }
                home.step(dev, false);
            }
            results.push((home.published, home.completed));
        }
        results.extend(handles.into_iter().map(|h| h.join().unwrap()));
        results
    });
    assert!(!l.dev.broken(), "device broken: {}", l.dev.ctx.last_panic.lock().unwrap());
    for (q, (published, completed)) in results.iter().enumerate() {
        assert!(*published > 0, "queue {q} never ran");
        assert_eq!(published, completed, "queue {q}: {published} published, {completed} completed");
    }
    let _ = FdSpec::Pipe;
    eprintln!(
        "rounds {}, queue restarts {}, requests {:?}",
        rounds(),
        restarts.load(Ordering::Relaxed),
        results
    );
}

/// The same under valgrind's DRD (a short run), when valgrind is installed.
#[test]
fn concurrency_stress_under_drd() {
    if std::env::var_os("VU_UNDER_DRD").is_some() {
        return; // this process is the one under DRD
    }
    let Ok(v) = std::process::Command::new("valgrind").arg("--version").output() else {
        eprintln!("valgrind not installed: skipped");
        return;
    };
    assert!(v.status.success());
    let supp = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/drd.supp");
    let out = std::process::Command::new("valgrind")
        .args(["--tool=drd", "--error-exitcode=99", "--quiet"])
        .arg(format!("--suppressions={supp}"))
        .arg(std::env::current_exe().unwrap())
        .args(["--exact", "concurrency_stress", "concurrency_stress_with_a_home_queue"])
        .args(["--test-threads=1", "--nocapture"])
        .env("VU_UNDER_DRD", "1")
        .env("VU_CONC_ROUNDS", "40")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "DRD run failed ({}):\n{}",
        out.status,
        &err[err.len().saturating_sub(20000)..]
    );
}

const IOTLB_MSG: u32 = 22;
const F_IOMMU: u64 = 1 << 33;

fn iotlb(iova: u64, size: u64, uaddr: u64, kind: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    for x in [iova, size, uaddr] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.extend_from_slice(&[3, kind, 0, 0, 0, 0, 0, 0]);
    v
}

/// With VIRTIO_F_IOMMU_PLATFORM: queue threads pop and push through IOTLB translations
/// (IOVA = the frontend address, page by page) while the dispatch thread invalidates the
/// pages their buffers are in, maps them again and replaces the memory table. Pops that
/// miss return NULL and are retried; afterwards every request was completed, nothing
/// panicked, the device is not broken.
#[test]
fn concurrency_stress_with_iotlb_invalidations() {
    let s = Session { features: session().features | F_IOMMU, ..session() };
    let mut l = Live::new(2, &[GUEST_SIZE, GUEST_SIZE]);
    l.steps(&s.setup());
    l.steps(&s.ring_steps(1));
    l.steps(&s.start_steps(1));
    assert!(!l.dev.broken(), "setup refused: {}", l.dev.ctx.last_panic.lock().unwrap());
    l.dev.ctx.serve_kicks.store(false, Ordering::Relaxed);
    let [r0, r1] = s.regions();
    let pages: Vec<u64> =
        [r0, r1].iter().flat_map(|r| (0..r.size / 4096).map(move |i| r.qva + i * 4096)).collect();
    let buffer_pages: Vec<u64> =
        [r0, r1].iter().flat_map(|r| [r.qva + BUF_OFF, r.qva + BUF_OFF + 0x1000]).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let pauses: Arc<[PMutex; 2]> = Arc::new([PMutex::new(), PMutex::new()]);
    // Descriptors carry IOVAs: the frontend addresses.
    let rings = [
        Ring { base: l.guest.maps[0].0, gpa: r0.qva },
        Ring { base: l.guest.maps[1].0, gpa: r1.qva },
    ];
    let results = std::thread::scope(|sc| {
        let dev: &device::Device = &l.dev;
        let sock = l.sock;
        let send = |m: &Msg, fds: &[i32]| {
            assert!(sys::send_with_fds(sock, &m.bytes(), fds));
            let ok = dev.dispatch();
            engine::assert_no_library_panic("vu_dispatch");
            let mut buf = Vec::new();
            let mut rfds = Vec::new();
            sys::recv_all(sock, &mut buf, &mut rfds);
            for fd in rfds {
                sys::close(fd);
            }
            assert!(ok);
            buf
        };
        let map_all = || {
            for &p in &pages {
                let reply = send(&Msg::new(IOTLB_MSG, iotlb(p, 4096, p, 2)), &[]);
                assert_eq!(reply[12..20], [0; 8], "update of {p:#x} refused");
            }
        };
        map_all();
        let handles: Vec<_> = (0..2)
            .map(|q| {
                let (stop, pauses, ring) = (stop.clone(), pauses.clone(), rings[q]);
                sc.spawn(move || worker(dev, q, ring, &pauses[q], &stop))
            })
            .collect();
        let g = &l.guest.fds;
        for round in 0..rounds() {
            let page = buffer_pages[round as usize % buffer_pages.len()];
            match round % 4 {
                0 | 1 => {
                    send(&Msg::new(IOTLB_MSG, iotlb(page, 4096, 0, 3)), &[]);
                }
                2 => map_all(),
                _ => {
                    // Rings are mapped again through the IOTLB under the write lock.
                    send(&Msg::new(SET_MEM_TABLE, mem_table(2, &[r0, r1])), &[g[0], g[1]]);
                }
            }
            assert!(!dev.broken(), "round {round}: {}", dev.ctx.last_panic.lock().unwrap());
            std::thread::yield_now();
        }
        map_all();
        stop.store(true, Ordering::Relaxed);
        handles.into_iter().map(|h| h.join().unwrap()).collect::<Vec<_>>()
    });
    assert!(!l.dev.broken(), "device broken: {}", l.dev.ctx.last_panic.lock().unwrap());
    for (q, (published, completed)) in results.iter().enumerate() {
        assert!(*published > 0, "queue {q} never ran");
        assert_eq!(published, completed, "queue {q}: {published} published, {completed} completed");
    }
}
