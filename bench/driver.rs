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
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{fence, AtomicU16, AtomicU32, AtomicU64, Ordering};
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
const F_RING_PACKED: u64 = 1 << 34;

const D_NEXT: u16 = 1;
const D_WRITE: u16 = 2;
const D_INDIRECT: u16 = 4;
/// Packed ring: descriptor flags AVAIL/USED, event suppression flags.
const P_AVAIL: u16 = 1 << 7;
const P_USED: u16 = 1 << 15;
const EV_ENABLE: u16 = 0;
const EV_DISABLE: u16 = 1;
const EV_DESC: u16 = 2;

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
    /// Real-consumer mode: 4 KiB-aligned data buffers (O_DIRECT) and a fresh
    /// random sector in every request header.
    random_4k: bool,
    /// Packed virtqueue (VIRTIO_F_RING_PACKED) instead of the split ring.
    packed: bool,
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
            random_4k: false,
            packed: false,
        }
    }
    fn name(&self) -> String {
        format!(
            "{} qd{} {} r{} eidx-{}{}{}",
            if self.fe == Fe::Poll { "poll" } else { "wait" },
            self.depth,
            self.shape.name(),
            self.regions,
            if self.event_idx { "on" } else { "off" },
            if self.inflight { " inflight" } else { "" },
            if self.packed { " packed" } else { "" }
        )
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
    // the same shapes on packed rings (run for the libraries that offer them)
    let packed: Vec<Wl> = v.iter().map(|w| Wl { packed: true, ..w.clone() }).collect();
    v.extend(packed);
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
    /// Frontend and backend CPUs for every run (None: not pinned).
    pin: Option<Pin>,
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
    /// Rounds of the blk throughput runs (`blk_runs`: short windows, back to back).
    fn blk_rounds(&self) -> usize {
        if self.quick {
            5
        } else {
            15
        }
    }
    fn blk_window(&self) -> f64 {
        if self.quick {
            0.2
        } else {
            0.5
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

// ---------------------------------------------------------------------------
// CPU pinning: the frontend (this process) on one CPU, the backend on another

/// CPUs for the frontend and the backend, as `taskset -c` would pin them.
#[derive(Clone, Copy)]
struct Pin {
    frontend: usize,
    backend: usize,
}

fn set_affinity(cpu: usize) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is the empty set; CPU_SET stays inside it
    // (cpu < CPU_SETSIZE is checked); sched_setaffinity(0) affects only the
    // calling thread.
    unsafe {
        if cpu >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
        }
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Pin the child that `cmd` starts (all its threads) to the backend CPU.
fn pin_child(cmd: &mut Command, pin: Option<Pin>) {
    if let Some(p) = pin {
        let cpu = p.backend;
        // SAFETY: the closure runs between fork and exec and only makes the
        // sched_setaffinity system call (async-signal-safe, no allocation).
        unsafe {
            cmd.pre_exec(move || set_affinity(cpu));
        }
    }
}

/// The default pinning: frontend on the first allowed CPU, backend on the
/// second; none on a single-CPU machine.
fn default_pin() -> Option<Pin> {
    // SAFETY: zeroed cpu_set_t filled by sched_getaffinity of this thread.
    let cpus: Vec<usize> = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    };
    (cpus.len() >= 2).then(|| Pin { frontend: cpus[0], backend: cpus[1] })
}

impl Backend {
    /// Start `bin` (optionally under a wrapper command such as valgrind),
    /// serving one connection (-1) or all (for the control-plane loop).
    fn start(
        work: &Path,
        bin: &Path,
        wrapper: &[String],
        one_shot: bool,
        pin: Option<Pin>,
    ) -> Self {
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
        pin_child(&mut cmd, pin);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        Backend { child, sock, _dir: dir }
    }

    /// Start a real consumer (unchanged QEMU binary) serving one socket:
    /// contrib vhost-user-blk on `image`, or qemu-storage-daemon exporting a
    /// null-co block device as vhost-user-blk.
    fn start_consumer(
        work: &Path,
        c: &Consumer,
        wrapper: &[String],
        image: &Path,
        pin: Option<Pin>,
    ) -> Self {
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
        pin_child(&mut cmd, pin);
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

    /// utime + stime of the backend, in seconds (`BENCH_CPU_PART=user` or `sys`: one of them,
    /// to tell where a difference in CPU time per request lies).
    fn cpu(&self) -> f64 {
        let s =
            std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap_or_default();
        let rest = match s.rfind(')') {
            Some(i) => &s[i + 2..],
            None => return 0.0,
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        // fields 14 and 15 of stat; `rest` starts at field 3
        let (u, k) = (f[11].parse::<u64>().unwrap(), f[12].parse::<u64>().unwrap());
        let ticks: u64 = match std::env::var("BENCH_CPU_PART").as_deref() {
            Ok("user") => u,
            Ok("sys") => k,
            _ => u + k,
        };
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
    /// The same connection, for messages the `vhost` crate cannot send.
    raw: UnixStream,
    mem: Arc<GuestMemory>,
    _inflight: Option<std::fs::File>,
}

impl Session {
    /// SET_VRING_BASE with a 32-bit value (a packed ring's state; the `vhost`
    /// crate sends 16 bits), NEED_REPLY set and the ack checked.
    fn set_vring_base32(&mut self, index: u32, base: u32) {
        use std::io::{Read as _, Write as _};
        const SET_VRING_BASE: u32 = 10;
        let mut m = Vec::new();
        for v in [SET_VRING_BASE, 0x1 | 0x8, 8, index, base] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        ok(self.raw.write_all(&m), "SET_VRING_BASE (32 bit)");
        let mut r = [0u8; 20];
        ok(self.raw.read_exact(&mut r), "SET_VRING_BASE reply");
        let req = u32::from_le_bytes(r[0..4].try_into().unwrap());
        let v = u64::from_le_bytes(r[12..20].try_into().unwrap());
        assert!(req == SET_VRING_BASE && v == 0, "SET_VRING_BASE {base:#x}: reply {req} {v}");
    }
}

fn session(
    stream: UnixStream,
    features: u64,
    proto: VhostUserProtocolFeatures,
    regions: usize,
) -> Session {
    stream.set_read_timeout(Some(CTRL_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(CTRL_TIMEOUT)).unwrap();
    let raw = stream.try_clone().unwrap();
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
    Session { fe, raw, mem, _inflight: None }
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

fn wl_features(wl: &Wl) -> u64 {
    blk_features(wl.event_idx) | if wl.packed { F_RING_PACKED } else { 0 }
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
    /// Split ring: the used index last read.
    used_seen: u16,
    /// The `depth` requests were published (by the first run(); later runs
    /// go on with them in flight instead of publishing them a second time).
    primed: bool,
    /// Packed ring instead of the split one (the same requests).
    packed: Option<Packed>,
}

/// A ring position: slot and wrap counter.
#[derive(Clone, Copy)]
struct Pos {
    idx: u16,
    wrap: bool,
}

impl Pos {
    fn advance(self, n: u16) -> Pos {
        let i = self.idx + n;
        if i >= QSIZE {
            Pos { idx: i - QSIZE, wrap: !self.wrap }
        } else {
            Pos { idx: i, wrap: self.wrap }
        }
    }
    /// The event suppression encoding: offset | wrap << 15.
    fn off_wrap(self) -> u16 {
        self.idx | (self.wrap as u16) << 15
    }
}

/// Driver side of a packed virtqueue (virtio 1.1): the descriptor ring where
/// the split ring's descriptor table is, the driver event suppression area
/// where its avail ring is, the device's where its used ring is. Request
/// `id` is always the chain `chains[id]`, published afresh each time.
struct Packed {
    ring: *mut u8,
    drv_event: *mut u16,
    dev_event: *const u16,
    /// (addr, len, WRITE/INDIRECT flags) of each request's descriptors
    chains: Vec<Vec<(u64, u32, u16)>>,
    avail: Pos,
    used: Pos,
    /// descriptors made available since the last kick decision (not bounded by the ring: the
    /// device completes requests while `Ring::run` republishes them, so one batch can go round
    /// the ring many times)
    added: u32,
}

impl Packed {
    fn flags(&self, slot: u16) -> &AtomicU16 {
        // SAFETY: slot < QSIZE; 16-byte descriptors of the ring mapping,
        // flags at offset 14 (2-aligned); kept alive by Ring::mem.
        unsafe { &*(self.ring.add(16 * slot as usize + 14) as *const AtomicU16) }
    }
    fn publish(&mut self, id: u16) {
        let n = self.chains[id as usize].len();
        let head = self.avail;
        let mut pos = head;
        let mut head_flags = 0;
        for k in 0..n {
            let (addr, len, f) = self.chains[id as usize][k];
            let avail_bits = if pos.wrap { P_AVAIL } else { P_USED };
            let flags = f | if k + 1 < n { D_NEXT } else { 0 } | avail_bits;
            // SAFETY: descriptor `pos.idx` of the ring (16-aligned), as above.
            unsafe {
                let d = self.ring.add(16 * pos.idx as usize);
                (*(d as *const AtomicU64)).store(addr, Ordering::Relaxed);
                (*(d.add(8) as *const AtomicU32)).store(len, Ordering::Relaxed);
                (*(d.add(12) as *const AtomicU16)).store(id, Ordering::Relaxed);
            }
            if k == 0 {
                head_flags = flags;
            } else {
                self.flags(pos.idx).store(flags, Ordering::Relaxed);
            }
            pos = pos.advance(1);
        }
        // the head's flags last: they make the whole chain available
        self.flags(head.idx).store(head_flags, Ordering::Release);
        self.avail = pos;
        self.added += n as u32;
    }
    fn pending(&self) -> bool {
        let f = self.flags(self.used.idx).load(Ordering::Acquire);
        let used_bits = if self.used.wrap { P_AVAIL | P_USED } else { 0 };
        f & (P_AVAIL | P_USED) == used_bits
    }
    fn take(&mut self) -> Option<(u16, u32)> {
        if !self.pending() {
            return None;
        }
        // SAFETY: the used descriptor's id (offset 12) and len (offset 8).
        let (id, len) = unsafe {
            let d = self.ring.add(16 * self.used.idx as usize);
            (
                (*(d.add(12) as *const AtomicU16)).load(Ordering::Relaxed),
                (*(d.add(8) as *const AtomicU32)).load(Ordering::Relaxed),
            )
        };
        let n = self.chains.get(id as usize).map_or(0, |c| c.len());
        assert!(n > 0, "packed ring: used id {id} is no request of ours");
        self.used = self.used.advance(n as u16);
        Some((id, len))
    }
    fn set_driver_event(&self, off_wrap: u16, flags: u16) {
        // SAFETY: the driver event area: le16 off_wrap, le16 flags.
        unsafe {
            (*(self.drv_event as *const AtomicU16)).store(off_wrap, Ordering::Relaxed);
            (*(self.drv_event.add(1) as *const AtomicU16)).store(flags, Ordering::Release);
        }
    }
    /// Whether the device asked for a kick for the descriptors added since
    /// the last decision (the spec's event suppression, as Linux decides it).
    fn kick_decision(&mut self, event_idx: bool) -> bool {
        if self.added == 0 {
            return false;
        }
        // SAFETY: the device event area: le16 off_wrap, le16 flags.
        let (off_wrap, flags) = unsafe {
            (
                (*(self.dev_event as *const AtomicU16)).load(Ordering::Acquire),
                (*(self.dev_event.add(1) as *const AtomicU16)).load(Ordering::Acquire),
            )
        };
        let new = self.avail.idx;
        // A batch of a lap or more made every slot available once: whatever the device asked
        // for is behind it (and a 16-bit `old` could not say how far: a batch of 65536 reads
        // as none, which lost the kick of a device asleep at the batch's start).
        if self.added >= u32::from(QSIZE) {
            self.added = 0;
            return flags != EV_DISABLE;
        }
        let old = new.wrapping_sub(self.added as u16);
        self.added = 0;
        match flags {
            EV_DISABLE => false,
            EV_DESC if event_idx => {
                let mut ev = off_wrap & 0x7fff;
                if (off_wrap >> 15 != 0) != self.avail.wrap {
                    ev = ev.wrapping_sub(QSIZE);
                }
                need_event(ev, new, old)
            }
            _ => true,
        }
    }
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
        // packed: each request's descriptors (the indirect one for indirect16)
        let mut chains: Vec<Vec<(u64, u32, u16)>> = Vec::new();
        for s in 0..wl.depth as usize {
            let mut chain = Vec::new();
            let (table, base) = if indirect {
                let t = al.spread(16 * n as u64, 16);
                wdesc(desc_gpa, s, t, 16 * n as u32, D_INDIRECT, 0);
                heads.push(s as u16);
                chain.push((t, 16 * n as u32, D_INDIRECT));
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
                if wl.packed && indirect {
                    // a packed ring's indirect table: packed descriptors
                    // {addr, len, id (unused), flags}, no NEXT
                    let a = table + 16 * (base + k) as u64;
                    mem.write_u64(a, g);
                    mem.write_u32(a + 8, len);
                    mem.write_u16(a + 12, 0);
                    mem.write_u16(a + 14, flags & D_WRITE);
                } else {
                    wdesc(table, base + k, g, len, flags, next);
                }
                if !indirect {
                    chain.push((g, len, flags & D_WRITE));
                }
            }
            chains.push(chain);
        }
        let packed = wl.packed.then(|| {
            // the ring where the descriptor table was: no descriptor available yet
            mem.fill(desc_gpa, 16 * QSIZE as usize, 0);
            mem.fill(avail_gpa, 4, 0);
            mem.fill(used_gpa, 4, 0);
            // request s is published with id s
            heads = (0..wl.depth).collect();
            let start = Pos { idx: 0, wrap: true };
            Packed {
                ring: mem.host_ptr(desc_gpa, 16 * QSIZE as u64),
                drv_event: mem.host_ptr(avail_gpa, 4) as *mut u16,
                dev_event: mem.host_ptr(used_gpa, 4) as *const u16,
                chains,
                avail: start,
                used: start,
                added: 0,
            }
        });
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
            used_seen: 0,
            primed: false,
            packed,
        };
        if poll && !wl.event_idx && r.packed.is_none() {
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
        if let Some(p) = &self.packed {
            match (self.poll, self.event_idx) {
                (true, true) => p.set_driver_event(p.used.advance(QSIZE / 2).off_wrap(), EV_DESC),
                (true, false) => p.set_driver_event(0, EV_DISABLE),
                (false, true) => p.set_driver_event(p.used.off_wrap(), EV_DESC),
                (false, false) => p.set_driver_event(0, EV_ENABLE),
            }
            return;
        }
        if self.event_idx {
            let v = if self.poll { self.last_used.wrapping_add(0x8000) } else { self.last_used };
            self.a16(2 + QSIZE as usize).store(v, Ordering::Release);
        }
    }

    fn publish(&mut self, head: u16) {
        if let Some(p) = &mut self.packed {
            p.publish(head);
            return;
        }
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
        if let Some(p) = &mut self.packed {
            fence(Ordering::SeqCst);
            if p.kick_decision(self.event_idx) {
                self.kicks += 1;
                self.kick.write(1).unwrap();
            }
            return;
        }
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

    /// Whether a completion is waiting (split: also snapshots the used index).
    fn pending(&mut self) -> bool {
        if let Some(p) = &self.packed {
            return p.pending();
        }
        self.used_seen = self.used_idx();
        self.used_seen != self.last_used
    }

    /// The next completion (request head/id, used length), up to the last
    /// pending() snapshot for the split ring.
    fn take(&mut self) -> Option<(u16, u32)> {
        if let Some(p) = &mut self.packed {
            return p.take();
        }
        if self.last_used == self.used_seen {
            return None;
        }
        let slot = self.last_used % QSIZE;
        let id = self.used_id(slot) as u16;
        // SAFETY: inside the used ring, 4-aligned.
        let len = unsafe {
            (*(self.used.add(8 + 8 * slot as usize) as *const AtomicU32)).load(Ordering::Relaxed)
        };
        self.last_used = self.last_used.wrapping_add(1);
        Some((id, len))
    }

    /// Keep the queue full until `deadline` or until `limit` requests were
    /// submitted and completed; returns the number of completions.
    fn run(&mut self, deadline: Option<Instant>, limit: Option<u64>) -> u64 {
        let mut submitted = 0u64;
        let mut done = 0u64;
        let depth = self.heads.len();
        if !self.primed {
            self.primed = true;
            for i in 0..depth {
                if limit.is_none_or(|l| submitted < l) {
                    let h = self.heads[i];
                    self.publish(h);
                    submitted += 1;
                }
            }
            self.commit_and_kick();
        }
        let mut spins = 0u32;
        let t_stop = Instant::now() + Duration::from_secs(600);
        // a backend that stops completing requests ends the run
        let (mut progress_at, mut progress_done) = (Instant::now(), 0u64);
        loop {
            if let Some(l) = limit {
                if done >= l {
                    break;
                }
            }
            if !self.pending() {
                spins = spins.wrapping_add(1);
                if spins.is_multiple_of(4096) {
                    let now = Instant::now();
                    if done != progress_done {
                        (progress_at, progress_done) = (now, done);
                    }
                    if deadline.is_some_and(|d| now >= d)
                        || now > t_stop
                        || now.duration_since(progress_at) > Duration::from_secs(30)
                    {
                        break;
                    }
                }
                if self.poll {
                    std::hint::spin_loop();
                } else {
                    self.set_used_event();
                    fence(Ordering::SeqCst);
                    if !self.pending() {
                        wait_readable(self.call.as_raw_fd(), 50);
                        let _ = self.call.read();
                    }
                }
                continue;
            }
            while let Some((id, len)) = self.take() {
                if self.rng != 0 && len != 4097 {
                    self.bad_len += 1;
                }
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
    let mut s = session(stream, wl_features(wl), proto, wl.regions);
    if wl.inflight {
        let req =
            VhostUserInflight { mmap_size: 0, mmap_offset: 0, num_queues: 1, queue_size: QSIZE };
        let (info, file) = ok(s.fe.get_inflight_fd(&req), "GET_INFLIGHT_FD");
        ok(s.fe.set_inflight_fd(&info, file.as_raw_fd()), "SET_INFLIGHT_FD");
        s._inflight = Some(file);
    }
    let ring = Ring::new(&s.mem, wl);
    ok(s.fe.set_vring_num(0, QSIZE), "SET_VRING_NUM");
    if wl.packed {
        // next avail 0 and next used 0, both wrap counters 1
        s.set_vring_base32(0, 0x8000_8000);
    } else {
        ok(s.fe.set_vring_base(0, 0), "SET_VRING_BASE");
    }
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

/// Whether `lib`'s blk backend offers VIRTIO_F_RING_PACKED.
fn offers_packed(cfg: &Cfg, lib: &Lib) -> bool {
    let mut b = Backend::start(&cfg.work, &lib.blk, &[], true, cfg.pin);
    let stream = b.connect();
    stream.set_read_timeout(Some(CTRL_TIMEOUT)).unwrap();
    let fe = Frontend::from_stream(stream, 1);
    ok(fe.set_owner(), "SET_OWNER");
    let offered = ok(fe.get_features(), "GET_FEATURES");
    drop(fe);
    b.finish(Duration::from_secs(20));
    offered & F_RING_PACKED != 0
}

/// One throughput run: fresh backend, warm-up, timed window.
/// The measured windows of backends already connected, started and warmed up: `cfg.blk_rounds()`
/// rounds, each backend once per round (the order reversed every other round), a window of
/// `cfg.blk_window()` each. Per backend, per round: (req/s, backend CPU ns per request).
fn rounds(cfg: &Cfg, live: &mut [(Backend, Session, Ring)]) -> Vec<Vec<(f64, f64)>> {
    let mut out = vec![Vec::new(); live.len()];
    for round in 0..cfg.blk_rounds() {
        let mut order: Vec<usize> = (0..live.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (b, _, ring) = &mut live[i];
            let t0 = Instant::now();
            let c0 = b.cpu();
            let n = ring.run(Some(t0 + Duration::from_secs_f64(cfg.blk_window())), None);
            let dt = t0.elapsed().as_secs_f64();
            let c1 = b.cpu();
            out[i].push((n as f64 / dt, (c1 - c0) * 1e9 / n.max(1) as f64));
        }
    }
    out
}

/// Throughput of each of `runs` (a library with the workload it runs: one without packed
/// rings runs a packed workload's split twin beside the others' packed one): one blk backend
/// per run, connected, started and warmed up once, then measured in `rounds`. A pair
/// compared (round i of two runs) is thus a fraction of a second apart, so both see the
/// same state of the machine: on these virtual machines the speed of the same binary can
/// change by a factor of two from one second to the next (where the host runs the two
/// vCPUs), and pairs measured seconds apart compared those states more than the libraries.
fn blk_runs(cfg: &Cfg, runs: &[(&Lib, &Wl)]) -> Vec<Vec<(f64, f64)>> {
    let mut live: Vec<(Backend, Session, Ring)> = runs
        .iter()
        .map(|&(lib, wl)| {
            let mut b = Backend::start(&cfg.work, &lib.blk, &[], true, cfg.pin);
            let stream = b.connect();
            let (s, mut ring) = start_device(stream, wl);
            ring.run(Some(Instant::now() + Duration::from_millis(150)), None);
            (b, s, ring)
        })
        .collect();
    let out = rounds(cfg, &mut live);
    for (b, s, ring) in live {
        drop(s);
        drop(ring);
        b.finish(Duration::from_secs(20));
    }
    out
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

/// IOPS of `wl` on each of `consumers` (one QEMU generation and kind, each library's build),
/// measured as `blk_runs` measures: each consumer started and connected once, then rounds
/// of short windows back to back. Per consumer, per round: (req/s, CPU ns per request).
fn consumer_runs(cfg: &Cfg, consumers: &[&Consumer], wl: &Wl) -> Vec<Vec<(f64, f64)>> {
    let mut live: Vec<(Backend, Session, Ring)> = consumers
        .iter()
        .map(|c| {
            let mut b = Backend::start_consumer(&cfg.work, c, &[], &cfg.image, cfg.pin);
            let stream = b.connect();
            // Both consumers offer CONFIG (+ INFLIGHT_SHMFD), not REPLY_ACK or MQ.
            let (s, mut ring) = start_device_proto(stream, wl, VhostUserProtocolFeatures::CONFIG);
            ring.run(Some(Instant::now() + Duration::from_millis(150)), None);
            (b, s, ring)
        })
        .collect();
    let out = rounds(cfg, &mut live);
    for ((b, s, ring), c) in live.into_iter().zip(consumers) {
        assert_eq!(
            ring.bad_len,
            0,
            "{}: completions with a used length other than 4097",
            c.bin.display()
        );
        drop(s);
        drop(ring);
        consumer_finish(b, c, Duration::from_secs(20));
    }
    out
}

/// Instructions of the consumer process for `n` requests (callgrind).
/// More callgrind options for the consumer and blk backend runs (`BENCH_CALLGRIND_ARGS`,
/// split on whitespace), e.g. `--cache-sim=yes --branch-sim=yes` to compare simulated misses,
/// `--dump-instr=yes` for per-instruction costs.
fn extra_callgrind_args() -> Vec<String> {
    std::env::var("BENCH_CALLGRIND_ARGS")
        .map(|v| v.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

fn consumer_callgrind(cfg: &Cfg, c: &Consumer, wl: &Wl, n: u64, out: &Path) -> Option<f64> {
    let mut wrapper = vec![
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
        "--quiet".into(),
    ];
    wrapper.extend(extra_callgrind_args());
    let _ = std::fs::remove_file(out);
    let mut b = Backend::start_consumer(&cfg.work, c, &wrapper, &cfg.image, cfg.pin);
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
    let mut wrapper = vec![
        "valgrind".to_string(),
        "--tool=callgrind".into(),
        format!("--callgrind-out-file={}", out.display()),
        "--quiet".into(),
    ];
    wrapper.extend(extra_callgrind_args());
    let mut b = Backend::start(&cfg.work, &lib.blk, &wrapper, true, cfg.pin);
    let stream = b.connect();
    let (s, mut ring) = start_device(stream, wl);
    let done = if n > 0 { ring.run(None, Some(n)) } else { 0 };
    drop(s);
    drop(ring);
    if !b.finish(Duration::from_secs(300)) {
        eprintln!("callgrind run of {} did not exit cleanly", lib.name);
    }
    if done != n {
        eprintln!("callgrind run of {} {}: {done} of {n} requests completed", lib.name, wl.name());
        return None;
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
    let mut cmd = Command::new(&lib.micro);
    cmd.args(micro_args(wl)).arg("-n").arg(n.to_string());
    if let Some(p) = cfg.pin {
        // its backend thread (the main one) and its frontend thread
        cmd.arg("-P").arg(format!("{},{}", p.frontend, p.backend));
    }
    let out = run_bounded(&mut cmd, Duration::from_secs(300))?;
    let reqs = kv(&out, "requests")?;
    let secs = kv(&out, "seconds")?;
    let cpu = kv(&out, "cpu_ns")?;
    Some((reqs / secs, cpu))
}

/// Why `lib`'s microbenchmark cannot run packed rings (None: it can): micro
/// exits with status 3 when the library does not offer VIRTIO_F_RING_PACKED.
fn packed_missing(lib: &Lib) -> Option<String> {
    let st = Command::new(&lib.micro)
        .args(["--inline", "-p", "-d", "1", "-n", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match st {
        Ok(s) if s.success() => None,
        Ok(s) if s.code() == Some(3) => Some("packed rings not offered".into()),
        Ok(s) => Some(format!("packed run failed ({s})")),
        Err(e) => Some(format!("cannot run micro: {e}")),
    }
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
    let mut b = Backend::start(&cfg.work, &lib.blk, &[], false, cfg.pin);
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
    let mut b = Backend::start(&cfg.work, &lib.blk, &[], true, cfg.pin);
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
    let mut b = Backend::start(&cfg.work, &lib.blk, &[], true, cfg.pin);
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
    for (i, ((wi, _), (name, libs))) in t.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        // index: the workload's number in its section (names the raw callgrind files)
        write!(s, "\n  {{\"workload\": {}, \"index\": {wi}, \"libs\": {{", json_str(name)).unwrap();
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
    let mut pin = default_pin();
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
            "--pin" => {
                // FE,BE (CPU numbers) or `none`
                pin = if v == "none" {
                    None
                } else {
                    let (f, b) = v.split_once(',').expect("--pin FE,BE|none");
                    Some(Pin {
                        frontend: f.parse().expect("--pin FE,BE"),
                        backend: b.parse().expect("--pin FE,BE"),
                    })
                };
            }
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
    Cfg { quick, consumers, missing, image, work, out, libs, only, wl, pin }
}

fn main() {
    let cfg = parse_args();
    std::fs::create_dir_all(&cfg.work).unwrap();
    if let Some(p) = cfg.pin {
        // The frontend: this thread (every frontend loop runs on it).
        set_affinity(p.frontend).unwrap_or_else(|e| panic!("pin to CPU {}: {e}", p.frontend));
        eprintln!("pinned: frontend CPU {}, backend CPU {}", p.frontend, p.backend);
    }
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
                for (c, runs) in these.iter().zip(consumer_runs(&cfg, &these, &wl)) {
                    let st = entry.1.entry(c.lib.clone()).or_default();
                    for (rep, (rps, cpu)) in runs.into_iter().enumerate() {
                        eprintln!(
                            "[consumers] {name} {} rep {rep}: {rps:.0} req/s, {cpu:.0} ns CPU/req",
                            c.lib
                        );
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
        let no_packed: BTreeMap<String, String> = cfg
            .libs
            .iter()
            .filter(|l| !offers_packed(&cfg, l))
            .map(|l| (l.name.clone(), "packed rings not offered".to_string()))
            .collect();
        for (wi, wl) in wls.iter().enumerate() {
            if cfg.wl.as_ref().is_some_and(|w| !w.contains(&wi)) {
                continue;
            }
            let skip = |lib: &Lib| {
                if !supported(lib, wl.regions) {
                    Some(format!("max {} memory slots", lib.max_slots))
                } else if wl.packed {
                    no_packed.get(&lib.name).cloned()
                } else {
                    None
                }
            };
            let entry = blk.entry((wi, wl.name())).or_insert_with(|| (wl.name(), BTreeMap::new()));
            // A library without packed rings runs the split twin in the same rounds (the
            // packed goals compare with it), recorded as `<lib>-split-twin`.
            let twin = Wl { packed: false, ..wl.clone() };
            let mut runs: Vec<(&Lib, &Wl, String)> = Vec::new();
            for lib in &cfg.libs {
                let st = entry.1.entry(lib.name.clone()).or_default();
                match skip(lib) {
                    Some(why) => {
                        st.note = Some(why);
                        if wl.packed && supported(lib, wl.regions) {
                            runs.push((lib, &twin, format!("{}-split-twin", lib.name)));
                        }
                    }
                    None => runs.push((lib, wl, lib.name.clone())),
                }
            }
            let pairs: Vec<(&Lib, &Wl)> = runs.iter().map(|(l, w, _)| (*l, *w)).collect();
            for ((_, w, key), res) in runs.iter().zip(blk_runs(&cfg, &pairs)) {
                let st = entry.1.entry(key.clone()).or_default();
                for (rep, (rps, cpu)) in res.into_iter().enumerate() {
                    eprintln!(
                        "[blk] {} {key} rep {rep}: {rps:.0} req/s, {cpu:.0} ns CPU/req",
                        w.name()
                    );
                    st.rps.push(rps);
                    st.cpu_ns.push(cpu);
                }
            }
            let n = cfg.cg_requests();
            for lib in &cfg.libs {
                if skip(lib).is_some() {
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
        let mut mwls = vec![
            Wl { depth: 1, ..b.clone() },
            b.clone(),
            Wl { depth: 64, ..b.clone() },
            Wl { shape: Shape::Indirect16, ..b.clone() },
            Wl { shape: Shape::Seg64, ..b.clone() },
            Wl { regions: 8, ..b.clone() },
            Wl { regions: 256, ..b.clone() },
            Wl { event_idx: false, ..b.clone() },
            Wl { inflight: true, ..b.clone() },
        ];
        // The same shapes on packed rings (only libraries that offer them).
        let packed: Vec<Wl> = mwls.iter().map(|w| Wl { packed: true, ..w.clone() }).collect();
        mwls.extend(packed);
        let no_packed: BTreeMap<String, String> = cfg
            .libs
            .iter()
            .filter_map(|l| packed_missing(l).map(|why| (l.name.clone(), why)))
            .collect();
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
                    if wl.packed && no_packed.contains_key(&lib.name) {
                        st.note = Some(no_packed[&lib.name].clone());
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
                if !supported(lib, wl.regions) || (wl.packed && no_packed.contains_key(&lib.name)) {
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
                if wl.shape == Shape::Chain3 && wl.depth == 64 {
                    // the per-function profile of issue 10 (chain3 depth 64)
                    let tag = if wl.packed { "-packed" } else { "" };
                    let _ = std::fs::copy(
                        &f1,
                        raw.join(format!("hotspot-qd64{tag}-{}.callgrind", lib.name)),
                    );
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
        "{{\"mode\": {}, \"reps\": {}, \"seconds\": {}, \"blk_rounds\": {}, \"blk_window\": {}, \"callgrind_requests\": {}, \"micro_requests\": {}, \"pin\": {},\n\"blk\": {},\n\"micro\": {},\n\"ctrl\": {},\n\"consumers\": {},\n\"consumer_image\": {}\n}}\n",
        json_str(if cfg.quick { "quick" } else { "full" }),
        cfg.reps(),
        cfg.secs(),
        cfg.blk_rounds(),
        cfg.blk_window(),
        cfg.cg_requests(),
        cfg.micro_requests(),
        cfg.pin.map_or("null".to_string(), |p| format!("[{}, {}]", p.frontend, p.backend)),
        json_table(blk),
        json_table(micro),
        json_table(ctrl),
        json_table(cons),
        json_str(&cfg.image.display().to_string())
    )
}
