// SPDX-License-Identifier: GPL-2.0-or-later
//! Seeded random stress of the data plane: a valid session, then the driver
//! writes random bytes or random but plausible descriptors into the
//! descriptor table, the avail ring (index jumps, heads out of range) and
//! indirect tables (random len/addr/flags, nested INDIRECT, NEXT loops),
//! with buffer addresses around region boundaries, in gaps and beyond
//! memory, and kicks. Afterwards the backend must be alive (a bad ring is
//! reported through the panic callback, never a crash), serve a normal
//! session, and be back to its baseline fds / mappings / threads with bounded
//! RSS; every wait is bounded. See tests/stress/mod.rs for the knobs.

mod common;
#[path = "stress/mod.rs"]
mod stress;

use std::time::{Duration, Instant};

use common::*;
use stress::*;

const PANIC: &str = "vhost-user panic:";

fn panics(b: &Backend) -> usize {
    b.stderr().matches(PANIC).count()
}

struct Ctx {
    /// (start, end) of every region's guest range.
    ranges: Vec<(u64, u64)>,
}

impl Ctx {
    /// A guest address: inside a region, at / around its edges, in a gap,
    /// beyond memory, or wild.
    fn addr(&self, rng: &mut Rng, near: u64) -> u64 {
        let (s, e) = self.ranges[rng.below(self.ranges.len() as u64) as usize];
        match rng.below(8) {
            0 | 1 => near,
            2 => s + rng.below(e - s),
            3 => e.wrapping_sub(rng.range(0, 64)),
            4 => e.wrapping_add(rng.range(0, 4096)),
            5 => s.wrapping_sub(rng.range(1, 64)),
            6 => near.wrapping_add(rng.range(0, 1 << 16)),
            _ => rng.interesting_u64(near),
        }
    }

    fn len(&self, rng: &mut Rng, near: u32) -> u32 {
        match rng.below(4) {
            0 | 1 => near,
            2 => rng.pick(&[0u32, 1, 15, 16, 17, 512, 4096, 65536, 1 << 20, u32::MAX]),
            _ => rng.interesting_u32(near),
        }
    }

    fn flags(&self, rng: &mut Rng) -> u16 {
        const N: u16 = VRING_DESC_F_NEXT;
        const W: u16 = VRING_DESC_F_WRITE;
        const I: u16 = VRING_DESC_F_INDIRECT;
        if rng.chance(1, 8) {
            rng.u16()
        } else {
            rng.pick(&[0, N, W, N | W, 0, N, W, N | W, I, I | N, I | W, I | N | W])
        }
    }

    fn desc(&self, rng: &mut Rng, qsize: u16, near: u64) -> Desc {
        let next = if rng.chance(7, 8) { rng.below(qsize as u64) as u16 } else { rng.u16() };
        Desc { addr: self.addr(rng, near), len: self.len(rng, 512), flags: self.flags(rng), next }
    }
}

/// A plausible virtio-blk request, then at most a few corrupted fields.
fn mutated_request(
    rng: &mut Rng,
    s: &mut Session,
    ctx: &Ctx,
    q: usize,
    log: &mut Vec<String>,
) -> u16 {
    let r = rng.u32();
    let ty =
        rng.pick(&[VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, r]);
    let r = 512 * rng.range(1, 64) as u32;
    let len = rng.pick(&[0u32, 512, 4096, 8192, r]);
    let out = if ty == VIRTIO_BLK_T_OUT { pattern(rng.u64(), len as usize) } else { Vec::new() };
    let sector = if rng.chance(3, 4) { rng.below(2048) } else { rng.interesting_u64(0) };
    let l = Layout {
        seg: rng.pick(&[512u32, 4096, 65536]),
        indirect: rng.chance(1, 3),
        spanning: None,
        status_in_data: false,
    };
    let mut p = prepare(&s.mem, ty, sector, &out, if out.is_empty() { len } else { 0 }, l);
    for _ in 0..rng.range(0, 2) {
        let i = rng.below(p.bufs.len() as u64) as usize;
        match rng.below(3) {
            0 => p.bufs[i].gpa = ctx.addr(rng, p.bufs[i].gpa),
            1 => p.bufs[i].len = ctx.len(rng, p.bufs[i].len),
            _ => p.bufs[i].write = !p.bufs[i].write,
        }
    }
    log.push(format!(
        "q{q} request ty {ty} sector {sector} indirect {} bufs {:x?}",
        p.indirect, p.bufs
    ));
    let vq = &mut s.qs[q];
    if vq.free_count() < p.bufs.len() + 1 {
        return 0;
    }
    let head = if p.indirect { vq.add_indirect(&p.bufs) } else { vq.add(&p.bufs) };
    if rng.chance(1, 4) {
        // Corrupt one descriptor of the chain in the ring.
        let d = ctx.desc(rng, vq.size, s.mem.regions[0].gpa);
        log.push(format!("  ring desc {head} := {d:x?}"));
        vq.write_desc(vq.desc, head, d);
    }
    head
}

/// An indirect table of random descriptors (plausible or not).
fn random_indirect(
    rng: &mut Rng,
    s: &mut Session,
    ctx: &Ctx,
    q: usize,
    log: &mut Vec<String>,
) -> u16 {
    let r = rng.range(1, 2100);
    let n = rng.pick(&[1u64, 2, 3, 8, 64, r]) as u16;
    let table = s.mem.alloc(16 * n as u64, 16);
    let buf = s.mem.alloc(4096, 8);
    for k in 0..n {
        let mut d = ctx.desc(rng, n, buf);
        if rng.chance(1, 2) {
            // Mostly a well-formed chain, with an occasional twist.
            d.next = k + 1;
            d.flags = if k + 1 == n {
                VRING_DESC_F_WRITE
            } else {
                VRING_DESC_F_NEXT | (d.flags & VRING_DESC_F_WRITE)
            };
            if rng.chance(1, 16) {
                d.flags |= VRING_DESC_F_INDIRECT; // nested
            }
            if rng.chance(1, 16) {
                d.next = rng.below(k as u64 + 1) as u16; // loop
            }
        }
        s.qs[q].write_desc(table, k, d);
    }
    let len = if rng.chance(3, 4) { 16 * n as u32 } else { ctx.len(rng, 16 * n as u32) };
    let taddr = if rng.chance(7, 8) { table } else { ctx.addr(rng, table) };
    let vq = &mut s.qs[q];
    if vq.free_count() == 0 {
        // The driver's descriptors are all used up by earlier (unanswered) rounds.
        return rng.below(vq.size as u64) as u16;
    }
    let head = vq.reserve(1)[0];
    let flags = VRING_DESC_F_INDIRECT
        | if rng.chance(1, 8) { VRING_DESC_F_NEXT | VRING_DESC_F_WRITE } else { 0 };
    vq.write_desc(
        vq.desc,
        head,
        Desc { addr: taddr, len, flags, next: rng.below(vq.size as u64) as u16 },
    );
    log.push(format!("q{q} indirect head {head} table {taddr:#x} len {len} n {n}"));
    head
}

fn round(rng: &mut Rng, s: &mut Session, ctx: &Ctx, log: &mut Vec<String>) {
    let q = rng.below(s.qs.len() as u64) as usize;
    let qsize = s.qs[q].size;
    let mut heads = Vec::new();
    for _ in 0..rng.range(1, 4) {
        match rng.below(6) {
            0 | 1 => heads.push(mutated_request(rng, s, ctx, q, log)),
            2 => heads.push(random_indirect(rng, s, ctx, q, log)),
            3 => {
                // Random descriptors at random ring slots.
                for _ in 0..rng.range(1, qsize as u64) {
                    let i = rng.below(qsize as u64) as u16;
                    let d = ctx.desc(rng, qsize, s.mem.regions[0].gpa);
                    log.push(format!("q{q} desc {i} := {d:x?}"));
                    s.qs[q].write_desc(s.qs[q].desc, i, d);
                }
                heads.push(rng.below(qsize as u64) as u16);
            }
            4 => {
                // Raw random bytes over (part of) the descriptor table.
                let n = 16 * rng.range(1, qsize as u64) as usize;
                log.push(format!("q{q} {n} random bytes into the descriptor table"));
                s.mem.write(s.qs[q].desc, &rng.bytes(n));
                heads.push(rng.below(qsize as u64) as u16);
            }
            _ => {
                let h = if rng.chance(1, 2) { rng.u16() } else { qsize + rng.range(0, 4) as u16 };
                heads.push(h);
            }
        }
    }
    let vq = &mut s.qs[q];
    for h in heads {
        vq.publish(h);
    }
    if rng.chance(1, 6) {
        let r = rng.u16();
        let jump = rng.pick(&[0u16, 1, qsize - 1, qsize, qsize + 1, 0x8000, 0xffff, r]);
        log.push(format!("q{q} avail idx jumps by {jump}"));
        let n = vq.next_avail.wrapping_add(jump);
        vq.set_avail_idx(n);
    }
    if rng.chance(1, 8) {
        let f = rng.u16();
        vq.set_avail_flags(f);
        vq.set_used_event(rng.u16());
    }
    vq.kick_now();
}

fn stress(threads: bool, default_iters: u64, name: &str) {
    let mut b = Backend::start(BackendOpts { queues: 2, threads, ..Default::default() });
    smoke(&mut b);
    let health = Health::baseline(&mut b);
    run(name, default_iters, |rng, _i, log| {
        let gap = rng.pick(&[0u64, 0, 4096, 1 << 20]);
        let base = rng.pick(&[0u64, 1 << 20, 1 << 32]);
        let size0 = rng.pick(&[1u64 << 20, 2 << 20]);
        let layout = vec![(base, size0), (base + size0 + gap, 1 << 20)];
        let opts = SessionOpts {
            queues: rng.range(1, 2) as u16,
            queue_size: rng.pick(&[4u16, 16, 64, 256]),
            event_idx: rng.chance(1, 2),
            layout: layout.clone(),
            ..Default::default()
        };
        log.push(format!("session {opts:?}"));
        let ctx = Ctx { ranges: layout.iter().map(|&(g, s)| (g, g + s)).collect() };
        let p0 = panics(&b);
        let mut s = Session::connect(&mut b, opts);
        for _ in 0..rng.range(1, 6) {
            let mark = s.mem.mark();
            let used_before: Vec<u16> = s.qs.iter().map(|q| q.used_idx()).collect();
            round(rng, &mut s, &ctx, log);
            // Bounded wait: the device completes something, or gives up.
            let t0 = Instant::now();
            let wait = Duration::from_millis(rng.pick(&[1u64, 10, 50]));
            while t0.elapsed() < wait {
                if panics(&b) > p0 || s.qs.iter().zip(&used_before).any(|(q, u)| q.used_idx() != *u)
                {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            s.mem.release(mark);
            if panics(&b) > p0 {
                log.push("(panic reported)".into());
                break;
            }
        }
        drop(s);
        health.check(&mut b);
    });
    stress::finish(b);
}

#[test]
fn stress_rings() {
    stress(false, 1500, "stress_rings");
}

#[test]
fn stress_rings_worker_threads() {
    stress(true, 1000, "stress_rings_worker_threads");
}
