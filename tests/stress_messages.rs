// SPDX-License-Identifier: GPL-2.0-or-later
//! Seeded random-mutation stress of the control plane: each iteration builds
//! a valid frontend session (handshake, memory table, rings, config, log,
//! inflight, postcopy...), mutates it (request codes incl. unknown ones, size
//! fields below/above the payload and its maximum, truncated payloads, random
//! fields, 0..9 random fds, random flags), interleaves structure-aware random
//! messages, and sends it raw. Afterwards the backend must be alive, serve a
//! normal session, and be back to its baseline fds / mappings / threads with
//! bounded RSS. See tests/stress/mod.rs for the VU_STRESS_* knobs.

mod common;
#[path = "stress/mod.rs"]
mod stress;

use std::fs::File;
use std::io::Read;
use std::os::unix::io::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use common::raw::*;
use common::*;
use stress::*;
use vmm_sys_util::eventfd::EventFd;

const RESET_OWNER: u32 = 4;
const SET_LOG_BASE: u32 = 6;
const SET_LOG_FD: u32 = 7;
const SET_BACKEND_REQ_FD: u32 = 21;
const POSTCOPY_ADVISE: u32 = 28;
const POSTCOPY_LISTEN: u32 = 29;
const POSTCOPY_END: u32 = 30;
const GET_INFLIGHT_FD: u32 = 31;
const SET_INFLIGHT_FD: u32 = 32;
const RESET_DEVICE: u32 = 34;
const VRING_KICK: u32 = 35;
const SET_STATUS: u32 = 39;
const GET_STATUS: u32 = 40;
const GET_SHARED_OBJECT: u32 = 41;
/// Largest payload (sizeof the payload union).
const PMAX: u32 = 272;
const NQUEUES: u16 = 2;

struct Msg {
    req: u32,
    flags: u32,
    size: Option<u32>,
    payload: Vec<u8>,
    fds: Vec<RawFd>,
}

impl Msg {
    fn new(req: u32, payload: Vec<u8>, fds: Vec<RawFd>) -> Self {
        Msg { req, flags: 0, size: None, payload, fds }
    }
    fn describe(&self) -> String {
        let hex: String = self.payload.iter().take(48).map(|b| format!("{b:02x}")).collect();
        format!(
            "req {} flags {:#x} size {:?}/{} fds {} payload {hex}{}",
            self.req,
            self.flags,
            self.size,
            self.payload.len(),
            self.fds.len(),
            if self.payload.len() > 48 { "..." } else { "" }
        )
    }
}

/// File descriptors an iteration may attach to messages; all closed when it ends.
struct Pool {
    mem: Arc<GuestMemory>,
    files: Vec<File>,
    efds: Vec<EventFd>,
    socks: Vec<UnixStream>,
}

fn memfd(size: u64) -> File {
    // SAFETY: plain syscall with a valid C string.
    let fd = unsafe { libc::memfd_create(c"stress".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fresh fd we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).unwrap();
    f
}

impl Pool {
    fn new(rng: &mut Rng) -> Self {
        // 1..=3 regions, random sizes and guest addresses, non-overlapping.
        let n = rng.range(1, 3);
        let mut layout = Vec::new();
        let mut gpa = rng.pick(&[0u64, 0x1000, 1 << 20, 1 << 32]);
        for _ in 0..n {
            let size = rng.pick(&[64u64 << 10, 256 << 10, 1 << 20, 2 << 20]);
            layout.push((gpa, size));
            gpa += size + if rng.chance(1, 2) { 0 } else { rng.range(1, 16) * 4096 };
        }
        let mem = GuestMemory::new(&layout);
        let mut files: Vec<File> =
            [0u64, 4096, 64 << 10, 1 << 20].iter().map(|&s| memfd(s)).collect();
        files.push(File::open("/dev/null").unwrap());
        let mut p = [0; 2];
        // SAFETY: plain syscall; both fds are ours afterwards.
        assert_eq!(unsafe { libc::pipe2(p.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh fds.
        files.push(unsafe { File::from_raw_fd(p[0]) });
        files.push(unsafe { File::from_raw_fd(p[1]) });
        let efds = (0..4).map(|_| EventFd::new(0).unwrap()).collect();
        let (a, b) = UnixStream::pair().unwrap();
        Pool { mem, files, efds, socks: vec![a, b] }
    }

    fn any_fd(&self, rng: &mut Rng) -> RawFd {
        match rng.below(4) {
            0 => {
                rng.pick(&self.mem.region_infos().iter().map(|r| r.mmap_handle).collect::<Vec<_>>())
            }
            1 => self.files[rng.below(self.files.len() as u64) as usize].as_raw_fd(),
            2 => self.efds[rng.below(self.efds.len() as u64) as usize].as_raw_fd(),
            _ => self.socks[rng.below(2) as usize].as_raw_fd(),
        }
    }

    fn random_fds(&self, rng: &mut Rng) -> Vec<RawFd> {
        let n = if rng.chance(1, 4) { rng.range(0, 9) } else { rng.range(0, 2) };
        (0..n).map(|_| self.any_fd(rng)).collect()
    }

    fn efd(&self, i: usize) -> RawFd {
        self.efds[i % self.efds.len()].as_raw_fd()
    }
}

fn u32s(xs: &[u32]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}
fn u64s(xs: &[u64]) -> Vec<u8> {
    xs.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A region description, valid or with random fields.
fn region(rng: &mut Rng, pool: &Pool) -> ((u64, u64, u64, u64), RawFd) {
    let infos = pool.mem.region_infos();
    let r = &infos[rng.below(infos.len() as u64) as usize];
    let mut v = (r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset);
    let mut fd = r.mmap_handle;
    if rng.chance(2, 3) {
        match rng.below(5) {
            0 => v.0 = rng.interesting_u64(v.0),
            1 => v.1 = rng.interesting_u64(v.1),
            2 => v.2 = rng.interesting_u64(v.2),
            3 => v.3 = rng.interesting_u64(v.3),
            _ => fd = pool.any_fd(rng),
        }
    }
    (v, fd)
}

fn mem_table(rng: &mut Rng, pool: &Pool, valid: bool) -> Msg {
    if valid {
        let infos = pool.mem.region_infos();
        let rs: Vec<_> =
            infos.iter().map(|r| (r.guest_phys_addr, r.memory_size, r.userspace_addr, 0)).collect();
        return Msg::new(
            SET_MEM_TABLE,
            mem_table_payload(rs.len() as u32, &rs),
            infos.iter().map(|r| r.mmap_handle).collect(),
        );
    }
    let n = rng.range(0, 9) as usize;
    let mut rs = Vec::new();
    let mut fds = Vec::new();
    for _ in 0..n {
        let (r, fd) = region(rng, pool);
        rs.push(r);
        fds.push(fd);
    }
    let claimed = if rng.chance(1, 4) { rng.interesting_u32(n as u32) } else { n as u32 };
    if rng.chance(1, 4) {
        fds = pool.random_fds(rng);
    }
    Msg::new(SET_MEM_TABLE, mem_table_payload(claimed, &rs), fds)
}

fn mem_reg(rng: &mut Rng, pool: &Pool, req: u32) -> Msg {
    let (r, fd) = region(rng, pool);
    let mut p = u64s(&[if rng.chance(1, 4) { rng.u64() } else { 0 }]);
    p.extend(region_bytes(r));
    let fds = match rng.below(4) {
        0 => pool.random_fds(rng),
        1 if req == REM_MEM_REG => vec![],
        _ => vec![fd],
    };
    Msg::new(req, p, fds)
}

fn qidx(rng: &mut Rng) -> u32 {
    if rng.chance(3, 4) {
        rng.below(NQUEUES as u64) as u32
    } else {
        rng.interesting_u32(NQUEUES as u32)
    }
}

fn vring_addr(rng: &mut Rng, pool: &Pool, q: u32, desc: u64, used: u64, avail: u64) -> Msg {
    let mut a = [desc, used, avail, 0];
    let mut flags = 0u32;
    for x in a.iter_mut() {
        if rng.chance(1, 4) {
            *x = match rng.below(3) {
                0 => rng.interesting_u64(*x),
                // Somewhere in (or just around) the guest mapping.
                1 => pool
                    .mem
                    .qva(pool.mem.regions[0].gpa)
                    .wrapping_add(rng.below(pool.mem.regions[0].size + 8192))
                    .wrapping_sub(4096),
                _ => x.wrapping_add(rng.below(64)),
            };
        }
    }
    if rng.chance(1, 8) {
        let r = rng.u32();
        flags = rng.pick(&[1u32, u32::MAX, r]);
    }
    Msg::new(SET_VRING_ADDR, addr_payload(q, flags, a[0], a[1], a[2], a[3]), vec![])
}

fn log_or_inflight(rng: &mut Rng, pool: &Pool, req: u32) -> Msg {
    let near = rng.pick(&[4096u64, 64 << 10, 1 << 20]);
    let size = rng.interesting_u64(near);
    let off = if rng.chance(1, 2) { 0 } else { rng.interesting_u64(4096) };
    let mut p = u64s(&[size, off]);
    if req == SET_INFLIGHT_FD || req == GET_INFLIGHT_FD {
        let nq = if rng.chance(1, 2) { NQUEUES } else { rng.u16() };
        let qs = if rng.chance(1, 2) { 256 } else { rng.interesting_u32(256) as u16 };
        p.extend_from_slice(&nq.to_le_bytes());
        p.extend_from_slice(&qs.to_le_bytes());
        if rng.chance(1, 2) {
            p.extend_from_slice(&[0; 4]);
        }
    }
    let fds = if req == GET_INFLIGHT_FD || rng.chance(1, 4) {
        pool.random_fds(rng)
    } else {
        vec![pool.any_fd(rng)]
    };
    Msg::new(req, p, fds)
}

fn config(rng: &mut Rng, req: u32) -> Msg {
    let off = if rng.chance(1, 2) { rng.pick(&[0u32, 32]) } else { rng.interesting_u32(0) };
    let size =
        if rng.chance(1, 2) { rng.pick(&[1u32, 8, 60, 256]) } else { rng.interesting_u32(60) };
    let flags = if rng.chance(3, 4) { 0 } else { rng.interesting_u32(1) };
    let mut p = u32s(&[off, size, flags]);
    let body = if rng.chance(3, 4) { (size as usize).min(256) } else { rng.range(0, 300) as usize };
    p.extend(rng.bytes(body));
    Msg::new(req, p, vec![])
}

/// A structure-aware message with random fields.
fn random_msg(rng: &mut Rng, pool: &Pool) -> Msg {
    let q = qidx(rng);
    match rng.below(24) {
        0 | 1 => mem_table(rng, pool, false),
        2 | 3 => mem_reg(rng, pool, ADD_MEM_REG),
        4 | 5 => mem_reg(rng, pool, REM_MEM_REG),
        6 => Msg::new(SET_VRING_NUM, state_payload(q, rng.interesting_u32(256)), vec![]),
        7 => Msg::new(SET_VRING_BASE, state_payload(q, rng.interesting_u32(0)), vec![]),
        8 => Msg::new(GET_VRING_BASE, state_payload(q, 0), vec![]),
        9 => {
            let m = pool.mem.qva(pool.mem.regions[0].gpa);
            vring_addr(rng, pool, q, m, m + 0x2000, m + 0x1000)
        }
        10 => {
            let req = rng.pick(&[SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR]);
            let v = q as u64
                | if rng.chance(1, 3) { VRING_NOFD } else { 0 }
                | if rng.chance(1, 8) { rng.u64() } else { 0 };
            let fds =
                if rng.chance(2, 3) { vec![pool.efd(q as usize)] } else { pool.random_fds(rng) };
            Msg::new(req, u64_payload(v), fds)
        }
        11 => Msg::new(SET_VRING_ENABLE, state_payload(q, rng.interesting_u32(1)), vec![]),
        12 => config(rng, GET_CONFIG),
        13 => config(rng, SET_CONFIG),
        14 => log_or_inflight(rng, pool, SET_LOG_BASE),
        15 => log_or_inflight(rng, pool, GET_INFLIGHT_FD),
        16 => log_or_inflight(rng, pool, SET_INFLIGHT_FD),
        17 => Msg::new(
            rng.pick(&[POSTCOPY_ADVISE, POSTCOPY_LISTEN, POSTCOPY_END]),
            vec![],
            pool.random_fds(rng),
        ),
        18 => Msg::new(VRING_KICK, state_payload(q, rng.u32()), vec![]),
        19 => Msg::new(
            rng.pick(&[SET_FEATURES, SET_PROTOCOL_FEATURES]),
            u64_payload(rng.u64()),
            vec![],
        ),
        20 => Msg::new(SET_BACKEND_REQ_FD, vec![], pool.random_fds(rng)),
        21 => Msg::new(
            rng.pick(&[SET_LOG_FD, RESET_OWNER, RESET_DEVICE, SET_STATUS, GET_STATUS]),
            u64_payload(rng.u64()),
            pool.random_fds(rng),
        ),
        22 => Msg::new(GET_SHARED_OBJECT, rng.bytes(16), vec![]),
        _ => {
            // Unknown or arbitrary request with arbitrary bytes.
            let req =
                if rng.chance(1, 2) { rng.range(0, 48) as u32 } else { rng.interesting_u32(100) };
            let n = rng.range(0, PMAX as u64 + 16) as usize;
            Msg::new(req, rng.bytes(n), pool.random_fds(rng))
        }
    }
}

/// Apply one generic mutation.
fn mutate(rng: &mut Rng, pool: &Pool, m: &mut Msg) {
    match rng.below(8) {
        0 => {
            m.req =
                if rng.chance(1, 2) { rng.range(0, 48) as u32 } else { rng.interesting_u32(m.req) }
        }
        1 => {
            let n = m.payload.len() as u32;
            let r = rng.u32();
            m.size = Some(rng.pick(&[
                0,
                n.saturating_sub(1),
                n + 1,
                n + 8,
                PMAX,
                PMAX + 1,
                4096,
                1 << 20,
                u32::MAX,
                r,
            ]));
        }
        2 => {
            // Truncate: the header still claims the full payload.
            m.size = Some(m.payload.len() as u32);
            let keep = rng.below(m.payload.len() as u64 + 1) as usize;
            m.payload.truncate(keep);
        }
        3 => {
            for _ in 0..rng.range(1, 4) {
                if !m.payload.is_empty() {
                    let i = rng.below(m.payload.len() as u64) as usize;
                    m.payload[i] = rng.u64() as u8;
                }
            }
        }
        4 => {
            if m.payload.len() >= 8 {
                let i = (rng.below(m.payload.len() as u64 / 4) * 4) as usize;
                let v = rng.interesting_u64(0).to_le_bytes();
                let end = (i + 8).min(m.payload.len());
                m.payload[i..end].copy_from_slice(&v[..end - i]);
            }
        }
        5 => m.fds = pool.random_fds(rng),
        6 => {
            let r = rng.u32();
            m.flags = rng.pick(&[F_REPLY, F_NEED_REPLY | F_REPLY, 0x3, 0x2, u32::MAX, r]);
        }
        _ => {
            let extra = rng.range(1, PMAX as u64 + 64) as usize;
            m.payload.extend(rng.bytes(extra));
        }
    }
}

/// The messages of a valid session for `pool.mem` (features from the probe).
fn valid_session(
    rng: &mut Rng,
    pool: &Pool,
    features: u64,
    pfeatures: u64,
    queues: &[(u64, u64, u64)],
) -> Vec<Msg> {
    let mut v = vec![
        Msg::new(GET_FEATURES, vec![], vec![]),
        Msg::new(SET_FEATURES, u64_payload(features), vec![]),
        Msg::new(GET_PROTOCOL_FEATURES, vec![], vec![]),
        Msg::new(SET_PROTOCOL_FEATURES, u64_payload(pfeatures), vec![]),
        Msg::new(SET_OWNER, vec![], vec![]),
        Msg::new(GET_QUEUE_NUM, vec![], vec![]),
        Msg::new(GET_MAX_MEM_SLOTS, vec![], vec![]),
    ];
    if rng.chance(1, 2) {
        v.push(mem_table(rng, pool, true));
    } else {
        for r in pool.mem.region_infos() {
            let mut p = u64s(&[0]);
            p.extend(region_bytes((r.guest_phys_addr, r.memory_size, r.userspace_addr, 0)));
            v.push(Msg::new(ADD_MEM_REG, p, vec![r.mmap_handle]));
        }
    }
    if rng.chance(1, 3) {
        let mut p = u64s(&[1 << 20, 0]);
        p.extend_from_slice(&NQUEUES.to_le_bytes());
        p.extend_from_slice(&256u16.to_le_bytes());
        p.extend_from_slice(&[0; 4]);
        v.push(Msg::new(GET_INFLIGHT_FD, p, vec![]));
    }
    for (q, &(desc, used, avail)) in queues.iter().enumerate() {
        let q = q as u32;
        v.push(Msg::new(SET_VRING_NUM, state_payload(q, 256), vec![]));
        v.push(Msg::new(SET_VRING_BASE, state_payload(q, 0), vec![]));
        v.push(Msg::new(SET_VRING_ADDR, addr_payload(q, 0, desc, used, avail, 0), vec![]));
        v.push(Msg::new(SET_VRING_CALL, u64_payload(q as u64), vec![pool.efd(2 * q as usize)]));
        v.push(Msg::new(SET_VRING_KICK, u64_payload(q as u64), vec![pool.efd(2 * q as usize + 1)]));
        v.push(Msg::new(SET_VRING_ENABLE, state_payload(q, 1), vec![]));
    }
    v.push(Msg::new(
        GET_CONFIG,
        {
            let mut p = u32s(&[0, 60, 0]);
            p.extend([0u8; 60]);
            p
        },
        vec![],
    ));
    // Optional tail, in random order.
    let mut tail = Vec::new();
    if rng.chance(1, 2) {
        let mut p = u32s(&[32, 1, 0]);
        p.push(1);
        tail.push(Msg::new(SET_CONFIG, p, vec![]));
    }
    if rng.chance(1, 3) {
        tail.push(Msg::new(SET_LOG_BASE, u64s(&[64 << 10, 0]), vec![pool.files[2].as_raw_fd()]));
    }
    if rng.chance(1, 4) {
        tail.push(Msg::new(POSTCOPY_ADVISE, vec![], vec![]));
        tail.push(Msg::new(POSTCOPY_LISTEN, vec![], vec![]));
        if rng.chance(1, 2) {
            tail.push(mem_table(rng, pool, true));
        }
        tail.push(Msg::new(POSTCOPY_END, vec![], vec![]));
    }
    if rng.chance(1, 3) {
        let r = &pool.mem.region_infos()[0];
        let mut p = u64s(&[0]);
        p.extend(region_bytes((r.guest_phys_addr, r.memory_size, r.userspace_addr, 0)));
        tail.push(Msg::new(REM_MEM_REG, p, vec![]));
    }
    if rng.chance(1, 3) {
        tail.push(Msg::new(
            GET_VRING_BASE,
            state_payload(rng.below(NQUEUES as u64) as u32, 0),
            vec![],
        ));
    }
    if rng.chance(1, 4) {
        tail.push(Msg::new(SET_BACKEND_REQ_FD, vec![], vec![pool.socks[0].as_raw_fd()]));
    }
    while !tail.is_empty() {
        let i = rng.below(tail.len() as u64) as usize;
        v.push(tail.remove(i));
    }
    v
}

/// Read whatever replies are already there (fds included, then dropped).
fn drain(s: &UnixStream) {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 4096];
    while let Ok(n) = (&*s).read(&mut buf) {
        if n == 0 {
            break;
        }
    }
    s.set_nonblocking(false).unwrap();
}

fn probe(b: &mut Backend) -> (u64, u64) {
    let c = RawConn::connect(b);
    let f = u64::from_le_bytes(c.call(GET_FEATURES, &[], &[])[..8].try_into().unwrap());
    let pf = u64::from_le_bytes(c.call(GET_PROTOCOL_FEATURES, &[], &[])[..8].try_into().unwrap());
    drop(c);
    (f, pf)
}

fn stress(threads: bool, default_iters: u64, name: &str) {
    let mut b = Backend::start(BackendOpts { queues: NQUEUES, threads, ..Default::default() });
    smoke(&mut b);
    let (features, pfeatures) = probe(&mut b);
    smoke(&mut b);
    let health = Health::baseline(&mut b);
    run(name, default_iters, |rng, _i, log| {
        let pool = Pool::new(rng);
        let c = RawConn::connect(&mut b);
        let queues: Vec<(u64, u64, u64)> = (0..NQUEUES)
            .map(|_| {
                let q = SplitQueue::new(&pool.mem, 256, false, 0);
                (pool.mem.qva(q.desc), pool.mem.qva(q.used), pool.mem.qva(q.avail))
            })
            .collect();
        // VIRTIO_F_VERSION_1 kept mostly: without it the session ends at SET_FEATURES.
        let feat = if rng.chance(3, 4) { features } else { features & (rng.u64() | 1 << 32) };
        let pfeat = if rng.chance(3, 4) { pfeatures } else { pfeatures & rng.u64() };
        let mut msgs = valid_session(rng, &pool, feat, pfeat, &queues);
        // Mutate / insert / drop.
        let rate = rng.pick(&[4u64, 8, 16]);
        let mut seq = Vec::new();
        for mut m in msgs.drain(..) {
            while rng.chance(1, rate) {
                seq.push(random_msg(rng, &pool));
            }
            if rng.chance(1, rate * 2) {
                continue;
            }
            if rng.chance(1, rate) {
                mutate(rng, &pool, &mut m);
                if rng.chance(1, 3) {
                    mutate(rng, &pool, &mut m);
                }
            }
            seq.push(m);
        }
        for _ in 0..rng.range(0, 12) {
            seq.push(random_msg(rng, &pool));
        }
        let reply_ack = pfeat & PROTO_REPLY_ACK != 0;
        for m in seq.iter_mut() {
            if m.flags == 0 && rng.chance(1, if reply_ack { 2 } else { 8 }) {
                m.flags = F_NEED_REPLY;
            }
        }
        if rng.chance(1, 3) {
            // Junk in guest memory (rings included) before queues get kicked.
            let r = &pool.mem.regions[0];
            pool.mem.write(r.gpa, &rng.bytes(16384.min(r.size as usize)));
        }
        for m in seq.iter_mut() {
            log.push(m.describe());
            let size = m.size.unwrap_or(m.payload.len() as u32);
            if c.send_sized(m.req, m.flags, size, &m.payload, &m.fds).is_err() {
                log.push("(send failed: connection gone)".into());
                break;
            }
            if rng.chance(1, 8) {
                let e = &pool.efds[rng.below(4) as usize];
                let _ = e.write(1);
            }
            if rng.chance(1, 4) {
                drain(&c.s);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.pick(&[0u64, 1, 5, 20])));
        let _ = c.s.shutdown(std::net::Shutdown::Both);
        drop(c);
        drop(pool);
        health.check(&mut b);
    });
    stress::finish(b);
}

#[test]
fn stress_messages() {
    stress(false, 1200, "stress_messages");
}

#[test]
fn stress_messages_worker_threads() {
    stress(true, 600, "stress_messages_worker_threads");
}
