// SPDX-License-Identifier: GPL-2.0-or-later
//! Benchmark driver (run by bench/run.sh, not part of the test suite).
//!
//! Drives the same C backend (examples-c/vhost-user-blk.c in --null mode,
//! see bench/blk-backend.c) linked against each library with the same
//! frontend, and runs the in-process microbenchmark (bench/micro.c) linked
//! against each library. Writes raw results as JSON; bench/report.py turns
//! them into the report.
//!
//! Frontend: control plane through the rust-vmm `vhost` crate, data plane
//! through a lean driver-side split ring (requests are laid out once and
//! re-published, so the frontend does little work per request).

#[path = "../tests/common/mem.rs"]
#[allow(dead_code)]
mod mem;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{fence, AtomicU16, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserHeaderFlag, VhostUserInflight, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use mem::GuestMemory;

const QSIZE: u16 = 1024;
const REGION_SIZE: u64 = 4 << 20;
const CTRL_TIMEOUT: Duration = Duration::from_secs(30);
/// Size of the real consumers' disk (image file / null block device).
const CONSUMER_DISK: u64 = 1 << 30;

const F_SEG_MAX: u64 = 1 << 2;
const F_BLK_SIZE: u64 = 1 << 6;
const F_FLUSH: u64 = 1 << 9;
const F_CONFIG_WCE: u64 = 1 << 11;
const F_INDIRECT: u64 = 1 << 28;
const F_EVENT_IDX: u64 = 1 << 29;
const F_PROTOCOL: u64 = 1 << 30;
const F_VERSION_1: u64 = 1 << 32;

const D_NEXT: u16 = 1;
const D_WRITE: u16 = 2;
const D_INDIRECT: u16 = 4;

// ---------------------------------------------------------------------------
// configuration

#[derive(Clone, Copy, PartialEq)]
enum Fe {
    Poll,
    Wait,
}

#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Chain3,
    Indirect16,
    Seg64,
}

impl Shape {
    fn name(self) -> &'static str {
        match self {
            Shape::Chain3 => "chain3",
            Shape::Indirect16 => "indirect16",
            Shape::Seg64 => "seg64",
        }
    }
    fn descs(self) -> usize {
        match self {
            Shape::Chain3 => 3,
            Shape::Indirect16 => 16,
            Shape::Seg64 => 64,
        }
    }
}

#[derive(Clone)]
struct Wl {
    fe: Fe,
    depth: u16,
    shape: Shape,
    regions: usize,
    event_idx: bool,
    inflight: bool,
    /// Packed virtqueue (micro only; the C original has none).
    packed: bool,
    /// Real-consumer mode: 4 KiB-aligned data buffers (O_DIRECT) and a fresh
    /// random sector in every request header.
    random_4k: bool,
}

impl Wl {
    fn base() -> Self {
        Wl {
            fe: Fe::Poll,
            depth: 16,
            shape: Shape::Chain3,
            regions: 1,
            event_idx: true,
            inflight: false,
            packed: false,
            random_4k: false,
        }
    }
    fn name(&self) -> String {
        format!(
            "{} qd{} {} r{} eidx-{}{}",
            if self.fe == Fe::Poll { "poll" } else { "wait" },
            self.depth,
            self.shape.name(),
            self.regions,
            if self.event_idx { "on" } else { "off" },
            if self.inflight { " inflight" } else { "" }
        ) + if self.packed { " packed" } else { "" }
    }
}

fn workloads() -> Vec<Wl> {
    let b = Wl::base();
    let mut v = Vec::new();
    for fe in [Fe::Poll, Fe::Wait] {
        for depth in [1, 16, 64] {
            v.push(Wl { fe, depth, ..b.clone() });
        }
    }
    v.push(Wl { shape: Shape::Indirect16, ..b.clone() });
    v.push(Wl { shape: Shape::Seg64, ..b.clone() });
    v.push(Wl { regions: 8, ..b.clone() });
    v.push(Wl { regions: 256, ..b.clone() });
    v.push(Wl { event_idx: false, ..b.clone() });
    v.push(Wl { event_idx: false, fe: Fe::Wait, ..b.clone() });
    v.push(Wl { inflight: true, ..b.clone() });
    v
}

struct Lib {
    name: String,
    blk: PathBuf,
    micro: PathBuf,
    max_slots: usize,
}

/// An unchanged QEMU consumer binary built against one library.
struct Consumer {
    gen: String,
    lib: String,
    kind: String,
    bin: PathBuf,
}

struct Cfg {
    quick: bool,
    consumers: Vec<Consumer>,
    /// Consumers that could not be found, as (gen, lib, kind, reason).
    missing: Vec<(String, String, String, String)>,
    image: PathBuf,
    work: PathBuf,
    out: PathBuf,
    libs: Vec<Lib>,
    only: Option<String>,
    /// Only these workload indices (debugging).
    wl: Option<Vec<usize>>,
}

impl Cfg {
    fn reps(&self) -> usize {
        if self.quick {
            3
        } else {
            7
        }
    }
    fn secs(&self) -> f64 {
        if self.quick {
            0.5
        } else {
            2.0
        }
    }
    fn cg_requests(&self) -> u64 {
        if self.quick {
            2000
        } else {
            20000
        }
    }
    fn micro_requests(&self) -> u64 {
        if self.quick {
            300_000
        } else {
            2_000_000
        }
    }
}

// ---------------------------------------------------------------------------
// backend processes

struct Backend {
    child: Child,
    sock: PathBuf,
    _dir: PathBuf,
}

fn tmpdir(work: &Path) -> PathBuf {
    static N: AtomicU32 = AtomicU32::new(0);
    let d = work.join("tmp").join(format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Backend {
    /// Start `bin` (optionally under a wrapper command such as valgrind),
    /// serving one connection (-1) or all (for the control-plane loop).
    fn start(work: &Path, bin: &Path, wrapper: &[String], one_shot: bool) -> Self {
        let dir = tmpdir(work);
        let sock = dir.join("vu.sock");
        let mut cmd = if wrapper.is_empty() {
            Command::new(bin)
        } else {
            let mut c = Command::new(&wrapper[0]);
            c.args(&wrapper[1..]).arg(bin);
            c
        };
        cmd.arg("-s")
            .arg(&sock)
            .arg("--null")
            .arg("-S")
            .arg((1u64 << 30).to_string())
            .arg("-q")
            .arg("1");
        if one_shot {
            cmd.arg("-1");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Backend { child, sock, _dir: dir }
    }

    /// Start a real consumer (unchanged QEMU binary) serving one socket:
    /// contrib vhost-user-blk on `image`, or qemu-storage-daemon exporting a
    /// null-co block device as vhost-user-blk.
    fn start_consumer(work: &Path, c: &Consumer, wrapper: &[String], image: &Path) -> Self {
        let dir = tmpdir(work);
        let sock = dir.join("vu.sock");
        let mut cmd = if wrapper.is_empty() {
            Command::new(&c.bin)
        } else {
            let mut x = Command::new(&wrapper[0]);
            x.args(&wrapper[1..]).arg(&c.bin);
            x
        };
        match c.kind.as_str() {
            "contrib-blk" => {
                cmd.arg("-b").arg(image).arg("-s").arg(&sock);
            }
            "qsd" => {
                cmd.arg("--blockdev")
                    .arg(format!("driver=null-co,node-name=n0,size={CONSUMER_DISK},read-zeroes=on"))
                    .arg("--export")
                    .arg(format!(
                        "type=vhost-user-blk,id=e0,node-name=n0,addr.type=unix,addr.path={}",
                        sock.display()
                    ));
            }
            k => panic!("unknown consumer kind {k}"),
        }
        let libdir = c.bin.parent().unwrap().join("lib");
        if std::fs::read_dir(&libdir).is_ok_and(|mut d| d.next().is_some()) {
            cmd.env("LD_LIBRARY_PATH", &libdir);
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", c.bin.display()));
        Backend { child, sock, _dir: dir }
    }

    fn connect(&mut self) -> UnixStream {
        let t0 = Instant::now();
        loop {
            match UnixStream::connect(&self.sock) {
                Ok(s) => return s,
                Err(e) => {
                    if let Ok(Some(st)) = self.child.try_wait() {
                        panic!("backend exited ({st}) before accepting: {}", self.stderr());
                    }
                    if t0.elapsed() > Duration::from_secs(60) {
                        panic!("cannot connect to {}: {e}", self.sock.display());
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self._dir.join("stderr")).unwrap_or_default()
    }

    /// utime + stime of the backend, in seconds.
    fn cpu(&self) -> f64 {
        let s =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let rest = match s.rfind(')') {
            Some(i) => &s[i + 2..],
            None => return 0.0,
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // fields 14 and 15 of stat; `rest` starts at field 3
        let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        // SAFETY: plain sysconf query.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks as f64 / hz
    }

    /// Wait (bounded) for a one-shot backend to exit; kill it otherwise.
    fn finish(mut self, timeout: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.success();
            }
            if t0.elapsed() > timeout {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn stop(self) {
        self.stop_within(Duration::from_secs(20));
    }

    /// SIGTERM, wait up to `timeout` for the exit, then SIGKILL.
    fn stop_within(mut self, timeout: Duration) {
        // SAFETY: signalling our own, not yet reaped, child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_dir_all(&self._dir);
    }
}

// ---------------------------------------------------------------------------
// frontend: session + lean split ring

fn ok<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    r.unwrap_or_else(|e| panic!("{what} failed: {e:?}"))
}

fn layout(regions: usize) -> Vec<(u64, u64)> {
    (0..regions as u64).map(|i| (i * REGION_SIZE, REGION_SIZE)).collect()
}

struct Session {
    fe: Frontend,
    mem: Arc<GuestMemory>,
    _inflight: Option<std::fs::File>,
}

fn session(
    stream: UnixStream,
    features: u64,
    proto: VhostUserProtocolFeatures,
    regions: usize,
) -> Session {
    stream.set_read_timeout(Some(CTRL_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(CTRL_TIMEOUT)).unwrap();
    let mut fe = Frontend::from_stream(stream, 1);
    ok(fe.set_owner(), "SET_OWNER");
    let offered = ok(fe.get_features(), "GET_FEATURES");
    assert_eq!(offered & features, features, "backend lacks features");
    ok(fe.set_features(features), "SET_FEATURES");
    let pf = ok(fe.get_protocol_features(), "GET_PROTOCOL_FEATURES");
    assert!(pf.contains(proto), "backend protocol features {pf:?} lack {proto:?}");
    ok(fe.set_protocol_features(proto), "SET_PROTOCOL_FEATURES");
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    let mem = GuestMemory::new(&layout(regions));
    let infos = mem.region_infos();
    if regions <= 8 {
        ok(fe.set_mem_table(&infos), "SET_MEM_TABLE");
    } else {
        for r in &infos {
            ok(fe.add_mem_region(r), "ADD_MEM_REG");
        }
    }
    Session { fe, mem, _inflight: None }
}

fn proto_for(regions: usize, inflight: bool) -> VhostUserProtocolFeatures {
    let mut p = VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK;
    if regions > 8 {
        p |= VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
    }
    if inflight {
        p |= VhostUserProtocolFeatures::INFLIGHT_SHMFD;
    }
    p
}

fn blk_features(event_idx: bool) -> u64 {
    let mut f =
        F_VERSION_1 | F_PROTOCOL | F_SEG_MAX | F_BLK_SIZE | F_FLUSH | F_CONFIG_WCE | F_INDIRECT;
    if event_idx {
        f |= F_EVENT_IDX;
    }
    f
}

fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

struct Ring {
    mem: Arc<GuestMemory>,
    desc_gpa: u64,
    avail_gpa: u64,
    used_gpa: u64,
    avail: *mut u16,
    used: *mut u8,
    event_idx: bool,
    poll: bool,
    heads: Vec<u16>,
    /// Random-read mode: header GPA per head, xorshift state.
    hdr_gpa: Vec<u64>,
    rng: u64,
    next_avail: u16,
    last_used: u16,
    kicked_at: u16,
    kick: EventFd,
    call: EventFd,
    kicks: u64,
    /// Random-read mode: completions whose used length was not 4096 + 1.
    bad_len: u64,
}

struct Alloc {
    next: Vec<u64>,
    rr: usize,
}

impl Alloc {
    fn new(regions: usize) -> Self {
        Alloc { next: (0..regions as u64).map(|i| i * REGION_SIZE).collect(), rr: 0 }
    }
    fn at(&mut self, r: usize, size: u64, align: u64) -> u64 {
        let a = self.next[r].div_ceil(align) * align;
        assert!(a + size <= (r as u64 + 1) * REGION_SIZE, "region {r} full");
        self.next[r] = a + size;
        a
    }
    /// Round-robin over the regions.
    fn spread(&mut self, size: u64, align: u64) -> u64 {
        let r = self.rr % self.next.len();
        self.rr += 1;
        self.at(r, size, align)
    }
}

impl Ring {
    fn new(mem: &Arc<GuestMemory>, wl: &Wl) -> Self {
        let mut al = Alloc::new(wl.regions);
        let desc_gpa = al.at(0, 16 * QSIZE as u64, 4096);
        let avail_gpa = al.at(0, 6 + 2 * QSIZE as u64, 4096);
        let used_gpa = al.at(0, 6 + 8 * QSIZE as u64, 4096);
        let wdesc = |table: u64, i: usize, addr: u64, len: u32, flags: u16, next: u16| {
            let a = table + 16 * i as u64;
            mem.write_u64(a, addr);
            mem.write_u32(a + 8, len);
            mem.write_u16(a + 12, flags);
            mem.write_u16(a + 14, next);
        };
        let n = wl.shape.descs();
        let indirect = wl.shape == Shape::Indirect16;
        let mut heads = Vec::new();
        let mut hdr_gpa = vec![0u64; QSIZE as usize];
        for s in 0..wl.depth as usize {
            let (table, base) = if indirect {
                let t = al.spread(16 * n as u64, 16);
                wdesc(desc_gpa, s, t, 16 * n as u32, D_INDIRECT, 0);
                heads.push(s as u16);
                (t, 0)
            } else {
                heads.push((s * n) as u16);
                (desc_gpa, s * n)
            };
            assert!(base + n <= QSIZE as usize);
            for k in 0..n {
                let len: u32 = if k == 0 {
                    16
                } else if k == n - 1 {
                    1
                } else if n == 3 {
                    4096
                } else {
                    512
                };
                let align = if wl.random_4k && len == 4096 { 4096 } else { 16 };
                let g = al.spread(len as u64, align);
                if k == 0 {
                    hdr_gpa[heads[s] as usize] = g;
                    // virtio_blk_outhdr: type IN, ioprio 0, sector = slot
                    mem.write_u32(g, 0);
                    mem.write_u32(g + 4, 0);
                    mem.write_u64(g + 8, s as u64 * 8);
                }
                let mut flags = if k > 0 { D_WRITE } else { 0 };
                if k < n - 1 {
                    flags |= D_NEXT;
                }
                let next = if k < n - 1 { (base + k + 1) as u16 } else { 0 };
                wdesc(table, base + k, g, len, flags, next);
            }
        }
        let avail = mem.host_ptr(avail_gpa, 6 + 2 * QSIZE as u64) as *mut u16;
        let used = mem.host_ptr(used_gpa, 6 + 8 * QSIZE as u64);
        let poll = wl.fe == Fe::Poll;
        let r = Ring {
            mem: mem.clone(),
            desc_gpa,
            avail_gpa,
            used_gpa,
            avail,
            used,
            event_idx: wl.event_idx,
            poll,
            heads,
            hdr_gpa,
            rng: if wl.random_4k { 0x9e37_79b9_7f4a_7c15 } else { 0 },
            next_avail: 0,
            last_used: 0,
            kicked_at: 0,
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
            kicks: 0,
            bad_len: 0,
        };
        if poll && !wl.event_idx {
            r.a16(0).store(1, Ordering::SeqCst); // VRING_AVAIL_F_NO_INTERRUPT
        }
        r.set_used_event();
        r
    }

    fn a16(&self, i: usize) -> &AtomicU16 {
        // SAFETY: i < 3 + QSIZE; the ring lives in guest memory kept alive by self.mem.
        unsafe { &*(self.avail.add(i) as *const AtomicU16) }
    }
    fn u16_at(&self, off: usize) -> &AtomicU16 {
        // SAFETY: inside the used ring (aligned offsets).
        unsafe { &*(self.used.add(off) as *const AtomicU16) }
    }
    fn used_id(&self, slot: u16) -> u32 {
        // SAFETY: inside the used ring, 4-aligned.
        unsafe {
            (*(self.used.add(4 + 8 * slot as usize) as *const AtomicU32)).load(Ordering::Relaxed)
        }
    }

    fn config(&self) -> VringConfigData {
        VringConfigData {
            queue_max_size: QSIZE,
            queue_size: QSIZE,
            flags: 0,
            desc_table_addr: self.mem.qva(self.desc_gpa),
            used_ring_addr: self.mem.qva(self.used_gpa),
            avail_ring_addr: self.mem.qva(self.avail_gpa),
            log_addr: None,
        }
    }

    fn set_used_event(&self) {
        if self.event_idx {
            let v = if self.poll { self.last_used.wrapping_add(0x8000) } else { self.last_used };
            self.a16(2 + QSIZE as usize).store(v, Ordering::Release);
        }
    }

    fn publish(&mut self, head: u16) {
        if self.rng != 0 {
            // 4 KiB random read anywhere in the 1 GiB device
            self.rng ^= self.rng << 13;
            self.rng ^= self.rng >> 7;
            self.rng ^= self.rng << 17;
            let sector = (self.rng % (CONSUMER_DISK / 4096)) * 8;
            self.mem.write_u64(self.hdr_gpa[head as usize] + 8, sector);
        }
        self.a16(2 + (self.next_avail % QSIZE) as usize).store(head, Ordering::Relaxed);
        self.next_avail = self.next_avail.wrapping_add(1);
    }

    fn commit_and_kick(&mut self) {
        self.a16(1).store(self.next_avail, Ordering::Release);
        fence(Ordering::SeqCst);
        let old = self.kicked_at;
        let new = self.next_avail;
        if old == new {
            return;
        }
        let kick = if self.event_idx {
            need_event(self.u16_at(4 + 8 * QSIZE as usize).load(Ordering::Acquire), new, old)
        } else {
            self.u16_at(0).load(Ordering::Acquire) & 1 == 0
        };
        self.kicked_at = new;
        if kick {
            self.kicks += 1;
            self.kick.write(1).unwrap();
        }
    }

    fn used_idx(&self) -> u16 {
        self.u16_at(2).load(Ordering::Acquire)
    }

    /// Keep the queue full until `deadline` or until `limit` requests were
    /// submitted and completed; returns the number of completions.
    fn run(&mut self, deadline: Option<Instant>, limit: Option<u64>) -> u64 {
        let mut submitted = 0u64;
        let mut done = 0u64;
        let depth = self.heads.len();
        for i in 0..depth {
            if limit.is_none_or(|l| submitted < l) {
                let h = self.heads[i];
                self.publish(h);
                submitted += 1;
            }
        }
        self.commit_and_kick();
        let mut spins = 0u32;
        let t_stop = Instant::now() + Duration::from_secs(600);
        loop {
            if let Some(l) = limit {
                if done >= l {
                    break;
                }
            }
            let u = self.used_idx();
            if u == self.last_used {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(4096) {
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) || now > t_stop {
                        break;
                    }
                }
                if self.poll {
                    std::hint::spin_loop();
                } else {
                    self.set_used_event();
                    fence(Ordering::SeqCst);
                    if self.used_idx() == self.last_used {
                        wait_readable(self.call.as_raw_fd(), 50);
                        let _ = self.call.read();
                    }
                }
                continue;
            }
            while self.last_used != u {
                let id = self.used_id(self.last_used % QSIZE) as u16;
                if self.rng != 0 {
                    // SAFETY: inside the used ring, 4-aligned.
                    let len = unsafe {
                        (*(self.used.add(8 + 8 * (self.last_used % QSIZE) as usize)
                            as *const AtomicU32))
                            .load(Ordering::Relaxed)
                    };
                    if len != 4097 {
                        self.bad_len += 1;
                    }
                }
                self.last_used = self.last_used.wrapping_add(1);
                done += 1;
                if limit.is_none_or(|l| submitted < l) {
                    self.publish(id);
                    submitted += 1;
                }
            }
            if self.poll {
                self.set_used_event();
            }
            self.commit_and_kick();
            if let Some(d) = deadline {
                if done.is_multiple_of(64) && Instant::now() >= d {
                    break;
                }
            }
        }
        done
    }
}

fn wait_readable(fd: i32, ms: i32) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    r > 0
}

/// Full device start for one queue; returns the ring.
fn start_device(stream: UnixStream, wl: &Wl) -> (Session, Ring) {
    start_device_proto(stream, wl, proto_for(wl.regions, wl.inflight))
}

fn start_device_proto(
    stream: UnixStream,
    wl: &Wl,
    proto: VhostUserProtocolFeatures,
) -> (Session, Ring) {
    let mut s = session(stream, blk_features(wl.event_idx), proto, wl.regions);
    if wl.inflight {
        let req =
            VhostUserInflight { mmap_size: 0, mmap_offset: 0, num_queues: 1, queue_size: QSIZE };
        let (info, file) = ok(s.fe.get_inflight_fd(&req), "GET_INFLIGHT_FD");
        ok(s.fe.set_inflight_fd(&info, file.as_raw_fd()), "SET_INFLIGHT_FD");
        s._inflight = Some(file);
    }
    let ring = Ring::new(&s.mem, wl);
    ok(s.fe.set_vring_num(0, QSIZE), "SET_VRING_NUM");
    ok(s.fe.set_vring_base(0, 0), "SET_VRING_BASE");
    ok(s.fe.set_vring_addr(0, &ring.config()), "SET_VRING_ADDR");
    ok(s.fe.set_vring_call(0, &ring.call), "SET_VRING_CALL");
    ok(s.fe.set_vring_kick(0, &ring.kick), "SET_VRING_KICK");
    ok(s.fe.set_vring_enable(0, true), "SET_VRING_ENABLE");
    let _ = ring.call.read();
    (s, ring)
}

// ---------------------------------------------------------------------------
// measurements

#[derive(Default)]
struct Stats {
    rps: Vec<f64>,
    cpu_ns: Vec<f64>,
    ir: Option<f64>,
    note: Option<String>,
}

fn supported(lib: &Lib, wl_regions: usize) -> bool {
    wl_regions <= lib.max_slots
}

/// One throughput run: fresh backend, warm-up, timed window.
fn blk_run(cfg: &Cfg, lib: &Lib, wl: &Wl) -> (f64, f64) {
    let mut b = Backend::start(&cfg.work, &lib.blk, &[], true);
    let stream = b.connect();
    let (s, mut ring) = start_device(stream, wl);
    ring.run(Some(Instant::now() + Duration::from_millis(150)), None);
    // drain: let in-flight requests finish so the window starts clean
    let t0 = Instant::now();
    let c0 = b.cpu();
    let n = ring.run(Some(t0 + Duration::from_secs_f64(cfg.secs())), None);
    let dt = t0.elapsed().as_secs_f64();
    let c1 = b.cpu();
    drop(s);
    drop(ring);
    b.finish(Duration::from_secs(20));
    (n as f64 / dt, (c1 - c0) * 1e9 / n as f64)
}

// ---- real consumers (unchanged QEMU binaries) ---------------------------------

fn consumer_wl(depth: u16) -> Wl {
    Wl { depth, random_4k: true, ..Wl::base() }
}

fn consumer_finish(b: Backend, c: &Consumer, timeout: Duration) {
    if c.kind == "qsd" {
        b.stop_within(timeout); // the storage daemon outlives its client
    } else {
        b.finish(timeout); // contrib vhost-user-blk exits on disconnect
    }
}

/// One throughput run against a fresh consumer process.
fn consumer_run(cfg: &Cfg, c: &Consumer, wl: &Wl) -> (f64, f64) {
    let mut b = Backend::start_consumer(&cfg.work, c, &[], &cfg.image);
    let stream = b.connect();
    // Both consumers offer CONFIG (+ INFLIGHT_SHMFD), not REPLY_ACK or MQ.
    let (s, mut ring) = start_device_proto(stream, wl, VhostUserProtocolFeatures::CONFIG);
    ring.run(Some(Instant::now() + Duration::from_millis(150)), None);
    let t0 = Instant::now();
    let c0 = b.cpu();
    let n = ring.run(Some(t0 + Duration::from_secs_f64(cfg.secs())), None);
    let dt = t0.elapsed().as_secs_f64();
    let c1 = b.cpu();
    assert_eq!(
        ring.bad_len,
        0,
        "{}: completions with a used length other than 4097",
        c.bin.display()
    );
    drop(s);
    drop(ring);
    consumer_finish(b, c, Duration::from_secs(20));
    (n as f64 / dt, (c1 - c0) * 1e9 / n.max(1) as f64)
}

/// Instructions of the consumer process for `n` requests (callgrind).
fn consumer_callgrind(cfg: &Cfg, c: &Consumer, wl: &Wl, n: u64, out: &Path) -> Option<f64> {
    let wrapper = vec![
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
        "--quiet".into(),
    ];
    let _ = std::fs::remove_file(out);
    let mut b = Backend::start_consumer(&cfg.work, c, &wrapper, &cfg.image);
    let stream = b.connect();
    let (s, mut ring) = start_device_proto(stream, wl, VhostUserProtocolFeatures::CONFIG);
    if n > 0 {
        let done = ring.run(None, Some(n));
        assert_eq!(done, n);
    }
    drop(s);
    drop(ring);
    consumer_finish(b, c, Duration::from_secs(300));
    callgrind_total(out)
}

fn callgrind_total(file: &Path) -> Option<f64> {
    let s = std::fs::read_to_string(file).ok()?;
    let line = s.lines().find(|l| l.starts_with("totals:") || l.starts_with("summary:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Instructions of the backend process for `n` requests (callgrind).
fn blk_callgrind(cfg: &Cfg, lib: &Lib, wl: &Wl, n: u64, out: &Path) -> Option<f64> {
    let wrapper = vec![
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
        "--quiet".into(),
    ];
    let mut b = Backend::start(&cfg.work, &lib.blk, &wrapper, true);
    let stream = b.connect();
    let (s, mut ring) = start_device(stream, wl);
    if n > 0 {
        let done = ring.run(None, Some(n));
        assert_eq!(done, n);
    }
    drop(s);
    drop(ring);
    if !b.finish(Duration::from_secs(300)) {
        eprintln!("callgrind run of {} did not exit cleanly", lib.name);
    }
    callgrind_total(out)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if s.is_empty() {
        return f64::NAN;
    }
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

fn micro_args(wl: &Wl) -> Vec<String> {
    let mut a = vec![
        "-d".to_string(),
        wl.depth.to_string(),
        "-s".into(),
        wl.shape.name().into(),
        "-r".into(),
        wl.regions.to_string(),
    ];
    if wl.event_idx {
        a.push("-e".into());
    }
    if wl.inflight {
        a.push("-i".into());
    }
    if wl.packed {
        a.push("-p".into());
    }
    a
}

fn run_bounded(cmd: &mut Command, timeout: Duration) -> Option<String> {
    let out_path =
        std::env::temp_dir().join(format!("vu-bench-{}-{}", std::process::id(), rand_u32()));
    let f = std::fs::File::create(&out_path).ok()?;
    let mut child = cmd.stdout(f).stdin(Stdio::null()).spawn().ok()?;
    let t0 = Instant::now();
    let ok = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break st.success();
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let s = std::fs::read_to_string(&out_path).unwrap_or_default();
    let _ = std::fs::remove_file(&out_path);
    if ok {
        Some(s)
    } else {
        None
    }
}

fn rand_u32() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

fn kv(s: &str, key: &str) -> Option<f64> {
    s.split_whitespace()
        .find_map(|t| t.strip_prefix(&format!("{key}=")).and_then(|v| v.parse().ok()))
}

fn micro_run(cfg: &Cfg, lib: &Lib, wl: &Wl) -> Option<(f64, f64)> {
    let n = cfg.micro_requests();
    let out = run_bounded(
        Command::new(&lib.micro).args(micro_args(wl)).arg("-n").arg(n.to_string()),
        Duration::from_secs(300),
    )?;
    let reqs = kv(&out, "requests")?;
    let secs = kv(&out, "seconds")?;
    let cpu = kv(&out, "cpu_ns")?;
    Some((reqs / secs, cpu))
}

fn micro_callgrind(lib: &Lib, wl: &Wl, n: u64, out: &Path) -> Option<f64> {
    run_bounded(
        Command::new("valgrind")
            .arg("--tool=callgrind")
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg("--toggle-collect=bench_backend_drain")
            .arg("--quiet")
            .stderr(Stdio::null())
            .arg(&lib.micro)
            .arg("--inline")
            .args(micro_args(wl))
            .arg("-n")
            .arg(n.to_string()),
        Duration::from_secs(600),
    )?;
    callgrind_total(out)
}

// ---- control plane ----------------------------------------------------------

/// Full device starts per second (connect, features, mem table, rings,
/// enable, disconnect), against one long-running backend.
fn ctrl_starts(cfg: &Cfg, lib: &Lib) -> (f64, f64) {
    let mut b = Backend::start(&cfg.work, &lib.blk, &[], false);
    let wl = Wl { regions: 1, ..Wl::base() };
    // warm-up
    for _ in 0..3 {
        let st = b.connect();
        let (s, r) = start_device(st, &wl);
        drop((s, r));
    }
    let t0 = Instant::now();
    let c0 = b.cpu();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < cfg.secs() {
        let st = b.connect();
        let (s, r) = start_device(st, &wl);
        // GET_VRING_BASE: a reply, so the backend has handled everything
        ok(s.fe.get_vring_base(0), "GET_VRING_BASE");
        drop((s, r));
        n += 1;
    }
    let dt = t0.elapsed().as_secs_f64();
    let c1 = b.cpu();
    b.stop();
    (n as f64 / dt, (c1 - c0) * 1e9 / n as f64)
}

/// SET_MEM_TABLE with 8 regions, repeated on one connection (NEED_REPLY).
fn ctrl_mem_table(cfg: &Cfg, lib: &Lib) -> (f64, f64) {
    let mut b = Backend::start(&cfg.work, &lib.blk, &[], true);
    let st = b.connect();
    let s = session(st, blk_features(true), proto_for(8, false), 8);
    let mems = [s.mem.clone(), GuestMemory::new(&layout(8))];
    let infos: Vec<Vec<VhostUserMemoryRegionInfo>> =
        mems.iter().map(|m| m.region_infos()).collect();
    let t0 = Instant::now();
    let c0 = b.cpu();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < cfg.secs() {
        ok(s.fe.set_mem_table(&infos[(n % 2) as usize]), "SET_MEM_TABLE");
        n += 1;
    }
    let dt = t0.elapsed().as_secs_f64();
    let c1 = b.cpu();
    drop(s);
    b.finish(Duration::from_secs(20));
    (n as f64 / dt, (c1 - c0) * 1e9 / n as f64)
}

/// ADD_MEM_REG of `k` regions then REM_MEM_REG of all, repeated; rate in
/// region operations per second.
fn ctrl_add_rem(cfg: &Cfg, lib: &Lib, k: usize) -> (f64, f64) {
    let mut b = Backend::start(&cfg.work, &lib.blk, &[], true);
    let st = b.connect();
    let mut s = session(st, blk_features(true), proto_for(256, false), 1);
    ok(s.fe.remove_mem_region(&s.mem.region_infos()[0]), "REM_MEM_REG");
    let mem = GuestMemory::new(&layout(k));
    let infos = mem.region_infos();
    let t0 = Instant::now();
    let c0 = b.cpu();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < cfg.secs() {
        for r in &infos {
            ok(s.fe.add_mem_region(r), "ADD_MEM_REG");
        }
        for r in &infos {
            ok(s.fe.remove_mem_region(r), "REM_MEM_REG");
        }
        n += 2 * k as u64;
    }
    let dt = t0.elapsed().as_secs_f64();
    let c1 = b.cpu();
    drop(s);
    b.finish(Duration::from_secs(20));
    (n as f64 / dt, (c1 - c0) * 1e9 / n as f64)
}

// ---------------------------------------------------------------------------
// output

fn json_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

fn json_nums(v: &[f64]) -> String {
    let items: Vec<String> =
        v.iter().map(|x| if x.is_finite() { format!("{x:.3}") } else { "null".into() }).collect();
    format!("[{}]", items.join(","))
}

type Table = BTreeMap<(usize, String), (String, BTreeMap<String, Stats>)>;

fn json_table(t: &Table) -> String {
    let mut s = String::from("[");
    for (i, ((_, _), (name, libs))) in t.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        write!(s, "\n  {{\"workload\": {}, \"libs\": {{", json_str(name)).unwrap();
        for (j, (lib, st)) in libs.iter().enumerate() {
            if j > 0 {
                s.push(',');
            }
            write!(
                s,
                "{}: {{\"rps\": {}, \"cpu_ns\": {}, \"ir\": {}, \"note\": {}}}",
                json_str(lib),
                json_nums(&st.rps),
                json_nums(&st.cpu_ns),
                st.ir.map_or("null".to_string(), |x| format!("{x:.1}")),
                st.note.as_deref().map_or("null".to_string(), json_str)
            )
            .unwrap();
        }
        s.push_str("}}");
    }
    s.push_str("\n]");
    s
}

fn parse_args() -> Cfg {
    let mut quick = false;
    let mut work = PathBuf::from("target/bench-work");
    let mut out = PathBuf::from("results.json");
    let mut libs = Vec::new();
    let mut only = None;
    let mut wl = None;
    let mut consumers = Vec::new();
    let mut missing = Vec::new();
    let mut image = PathBuf::from("/dev/shm/vu-bench.img");
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        let v = args.get(i + 1).cloned().unwrap_or_default();
        match a {
            "--mode" => quick = v == "quick",
            "--work" => work = PathBuf::from(v),
            "--out" => out = PathBuf::from(v),
            "--only" => only = Some(v),
            "--consumer" => {
                // GEN,LIB,KIND,PATH
                let p: Vec<&str> = v.splitn(4, ',').collect();
                assert_eq!(p.len(), 4, "--consumer GEN,LIB,KIND,PATH");
                consumers.push(Consumer {
                    gen: p[0].into(),
                    lib: p[1].into(),
                    kind: p[2].into(),
                    bin: p[3].into(),
                });
            }
            "--consumer-missing" => {
                // GEN,LIB,KIND,REASON
                let p: Vec<&str> = v.splitn(4, ',').collect();
                assert_eq!(p.len(), 4, "--consumer-missing GEN,LIB,KIND,REASON");
                missing.push((p[0].into(), p[1].into(), p[2].into(), p[3].into()));
            }
            "--image" => image = PathBuf::from(v),
            "--wl" => wl = Some(v.split(',').map(|x| x.parse().unwrap()).collect()),
            "--lib" => {
                let (name, rest) = v.split_once('=').expect("--lib NAME=BLK,MICRO");
                let (blk, micro) = rest.split_once(',').expect("--lib NAME=BLK,MICRO");
                let max_slots = if name == "c72" { 32 } else { 509 };
                libs.push(Lib {
                    name: name.into(),
                    blk: blk.into(),
                    micro: micro.into(),
                    max_slots,
                });
            }
            "--bench" => {
                i += 1;
                continue;
            }
            _ => panic!("unknown argument {a}"),
        }
        i += 2;
    }
    assert!(!libs.is_empty() || !consumers.is_empty(), "no --lib or --consumer given");
    Cfg { quick, consumers, missing, image, work, out, libs, only, wl }
}

fn main() {
    let cfg = parse_args();
    std::fs::create_dir_all(&cfg.work).unwrap();
    let raw = cfg.out.parent().unwrap_or(Path::new(".")).to_path_buf();
    let want = |part: &str| cfg.only.as_deref().is_none_or(|o| o.split(',').any(|p| p == part));
    let mut blk: Table = BTreeMap::new();
    let mut micro: Table = BTreeMap::new();
    let mut ctrl: Table = BTreeMap::new();
    let mut cons: Table = BTreeMap::new();
    let wls = workloads();

    // ---- real consumers: contrib vhost-user-blk and qemu-storage-daemon ----
    if want("consumers") && !cfg.consumers.is_empty() {
        if !cfg.image.exists() {
            // sparse image: reads of holes cost no device time
            let f = std::fs::File::create(&cfg.image).unwrap();
            f.set_len(CONSUMER_DISK).unwrap();
        }
        let mut groups: Vec<(String, String)> = Vec::new();
        for c in &cfg.consumers {
            if !groups.contains(&(c.gen.clone(), c.kind.clone())) {
                groups.push((c.gen.clone(), c.kind.clone()));
            }
        }
        for (gen, kind) in &groups {
            for depth in [1u16, 16, 64] {
                let wl = consumer_wl(depth);
                let name = format!("{gen} {kind} randread 4K qd{depth}");
                let key = (cons.len(), name.clone());
                let entry = cons.entry(key).or_insert_with(|| (name.clone(), BTreeMap::new()));
                let these: Vec<&Consumer> =
                    cfg.consumers.iter().filter(|c| &c.gen == gen && &c.kind == kind).collect();
                for (g, l, k, why) in &cfg.missing {
                    if g == gen && k == kind {
                        entry.1.entry(l.clone()).or_default().note = Some(why.clone());
                    }
                }
                for rep in 0..cfg.reps() {
                    for c in &these {
                        let (rps, cpu) = consumer_run(&cfg, c, &wl);
                        eprintln!(
                            "[consumers] {name} {} rep {rep}: {rps:.0} req/s, {cpu:.0} ns CPU/req",
                            c.lib
                        );
                        let st = entry.1.entry(c.lib.clone()).or_default();
                        st.rps.push(rps);
                        st.cpu_ns.push(cpu);
                    }
                }
                let n = cfg.cg_requests() / 4;
                for c in &these {
                    let tag = format!("{}-{}-{}-{depth}", c.gen, c.lib, c.kind);
                    let base =
                        consumer_callgrind(&cfg, c, &wl, 0, &raw.join(format!("cg-cons-{tag}-0")));
                    let full =
                        consumer_callgrind(&cfg, c, &wl, n, &raw.join(format!("cg-cons-{tag}-n")));
                    let ir = match (base, full) {
                        (Some(b), Some(f)) => Some((f - b) / n as f64),
                        _ => None,
                    };
                    eprintln!("[consumers] {name} {}: {:?} instructions/req", c.lib, ir);
                    entry.1.get_mut(&c.lib).unwrap().ir = ir;
                }
                std::fs::write(&cfg.out, render(&blk, &micro, &ctrl, &cons, &cfg)).unwrap();
            }
        }
    }

    // ---- library-bound workloads through the blk backend ----
    if want("blk") {
        for (wi, wl) in wls.iter().enumerate() {
            if cfg.wl.as_ref().is_some_and(|w| !w.contains(&wi)) {
                continue;
            }
            let entry = blk.entry((wi, wl.name())).or_insert_with(|| (wl.name(), BTreeMap::new()));
            for rep in 0..cfg.reps() {
                for lib in &cfg.libs {
                    let st = entry.1.entry(lib.name.clone()).or_default();
                    if !supported(lib, wl.regions) {
                        st.note = Some(format!("max {} memory slots", lib.max_slots));
                        continue;
                    }
                    let (rps, cpu) = blk_run(&cfg, lib, wl);
                    eprintln!(
                        "[blk] {} {} rep {rep}: {rps:.0} req/s, {cpu:.0} ns CPU/req",
                        wl.name(),
                        lib.name
                    );
                    st.rps.push(rps);
                    st.cpu_ns.push(cpu);
                }
            }
            let n = cfg.cg_requests();
            for lib in &cfg.libs {
                if !supported(lib, wl.regions) {
                    continue;
                }
                let base = blk_callgrind(
                    &cfg,
                    lib,
                    wl,
                    0,
                    &raw.join(format!("cg-blk-{}-{wi}-0", lib.name)),
                );
                let fname = raw.join(format!("cg-blk-{}-{wi}-n", lib.name));
                let full = blk_callgrind(&cfg, lib, wl, n, &fname);
                let ir = match (base, full) {
                    (Some(b), Some(f)) => Some((f - b) / n as f64),
                    _ => None,
                };
                eprintln!("[blk] {} {}: {:?} instructions/req", wl.name(), lib.name, ir);
                if wi == 1 {
                    let _ = std::fs::copy(
                        &fname,
                        raw.join(format!("hotspot-blk-{}.callgrind", lib.name)),
                    );
                }
                entry.1.get_mut(&lib.name).unwrap().ir = ir;
            }
            std::fs::write(&cfg.out, render(&blk, &micro, &ctrl, &cons, &cfg)).unwrap();
        }
    }

    // ---- in-process microbenchmark ----
    if want("micro") {
        let b = Wl::base();
        let mwls = vec![
            Wl { depth: 1, ..b.clone() },
            b.clone(),
            Wl { depth: 64, ..b.clone() },
            Wl { shape: Shape::Indirect16, ..b.clone() },
            Wl { shape: Shape::Seg64, ..b.clone() },
            Wl { regions: 8, ..b.clone() },
            Wl { regions: 256, ..b.clone() },
            Wl { event_idx: false, ..b.clone() },
            Wl { inflight: true, ..b.clone() },
            // The same library-bound shapes on packed rings (ours only).
            Wl { depth: 1, packed: true, ..b.clone() },
            Wl { packed: true, ..b.clone() },
            Wl { depth: 64, packed: true, ..b.clone() },
            Wl { shape: Shape::Indirect16, packed: true, ..b.clone() },
            Wl { shape: Shape::Seg64, packed: true, ..b.clone() },
            Wl { regions: 8, packed: true, ..b.clone() },
            Wl { regions: 256, packed: true, ..b.clone() },
            Wl { event_idx: false, packed: true, ..b.clone() },
            Wl { inflight: true, packed: true, ..b.clone() },
        ];
        for (wi, wl) in mwls.iter().enumerate() {
            if cfg.wl.as_ref().is_some_and(|w| !w.contains(&wi)) {
                continue;
            }
            let name = wl.name().replacen("poll ", "", 1);
            let entry =
                micro.entry((wi, name.clone())).or_insert_with(|| (name.clone(), BTreeMap::new()));
            for rep in 0..cfg.reps() {
                for lib in &cfg.libs {
                    let st = entry.1.entry(lib.name.clone()).or_default();
                    if !supported(lib, wl.regions) {
                        st.note = Some(format!("max {} memory slots", lib.max_slots));
                        continue;
                    }
                    if wl.packed && lib.name != "ours" {
                        st.note = Some("no packed rings in the C original".into());
                        continue;
                    }
                    match micro_run(&cfg, lib, wl) {
                        Some((rps, cpu)) => {
                            eprintln!(
                                "[micro] {name} {} rep {rep}: {rps:.0} req/s, {cpu:.0} ns/req",
                                lib.name
                            );
                            st.rps.push(rps);
                            st.cpu_ns.push(cpu);
                        }
                        None => st.note = Some("run failed or timed out".into()),
                    }
                }
            }
            let n = cfg.cg_requests() * 5;
            for lib in &cfg.libs {
                if !supported(lib, wl.regions) || (wl.packed && lib.name != "ours") {
                    continue;
                }
                let f0 = raw.join(format!("cg-micro-{}-{wi}-0", lib.name));
                let f1 = raw.join(format!("cg-micro-{}-{wi}-n", lib.name));
                let ir = match (micro_callgrind(lib, wl, 0, &f0), micro_callgrind(lib, wl, n, &f1))
                {
                    (Some(a), Some(c)) => Some((c - a) / n as f64),
                    _ => None,
                };
                eprintln!("[micro] {name} {}: {:?} instructions/req", lib.name, ir);
                if wi == 1 {
                    let _ = std::fs::copy(&f1, raw.join(format!("hotspot-{}.callgrind", lib.name)));
                }
                if wi == 4 {
                    let _ = std::fs::copy(
                        &f1,
                        raw.join(format!("hotspot-seg64-{}.callgrind", lib.name)),
                    );
                }
                entry.1.get_mut(&lib.name).unwrap().ir = ir;
            }
            std::fs::write(&cfg.out, render(&blk, &micro, &ctrl, &cons, &cfg)).unwrap();
        }
    }

    // ---- control plane ----
    if want("ctrl") {
        let names = [
            "device starts/s (1 queue, 1 region)",
            "SET_MEM_TABLE 8 regions /s",
            "ADD+REM_MEM_REG region ops/s (256 regions; 32 on 7.2)",
        ];
        for (wi, name) in names.iter().enumerate() {
            let entry = ctrl
                .entry((wi, name.to_string()))
                .or_insert_with(|| (name.to_string(), BTreeMap::new()));
            for rep in 0..cfg.reps() {
                for lib in &cfg.libs {
                    let (r, c) = match wi {
                        0 => ctrl_starts(&cfg, lib),
                        1 => ctrl_mem_table(&cfg, lib),
                        _ => ctrl_add_rem(&cfg, lib, 256.min(lib.max_slots)),
                    };
                    eprintln!("[ctrl] {name} {} rep {rep}: {r:.0}/s, {c:.0} ns CPU/op", lib.name);
                    let st = entry.1.entry(lib.name.clone()).or_default();
                    st.rps.push(r);
                    st.cpu_ns.push(c);
                    if wi == 2 && lib.max_slots < 256 {
                        st.note = Some(format!("{} regions", lib.max_slots));
                    }
                }
            }
            std::fs::write(&cfg.out, render(&blk, &micro, &ctrl, &cons, &cfg)).unwrap();
        }
    }
    std::fs::write(&cfg.out, render(&blk, &micro, &ctrl, &cons, &cfg)).unwrap();
    let _ = std::fs::remove_dir_all(cfg.work.join("tmp"));
    eprintln!("results: {}", cfg.out.display());
    let _ = median(&[]);
}

fn render(blk: &Table, micro: &Table, ctrl: &Table, cons: &Table, cfg: &Cfg) -> String {
    format!(
        "{{\"mode\": {}, \"reps\": {}, \"seconds\": {}, \"callgrind_requests\": {}, \"micro_requests\": {},\n\"blk\": {},\n\"micro\": {},\n\"ctrl\": {},\n\"consumers\": {},\n\"consumer_image\": {}\n}}\n",
        json_str(if cfg.quick { "quick" } else { "full" }),
        cfg.reps(),
        cfg.secs(),
        cfg.cg_requests(),
        cfg.micro_requests(),
        json_table(blk),
        json_table(micro),
        json_table(ctrl),
        json_table(cons),
        json_str(&cfg.image.display().to_string())
    )
}
