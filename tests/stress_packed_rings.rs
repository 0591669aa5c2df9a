// SPDX-License-Identifier: GPL-2.0-or-later
//! Seeded random stress of packed rings (VIRTIO_F_RING_PACKED): a valid
//! packed session, then the driver makes available mutated virtio-blk
//! requests (random ids, flags, AVAIL/USED bits, addresses around region
//! edges, lengths), random indirect tables, random descriptors and bytes at
//! random ring slots, random driver event areas, and kicks. Afterwards the
//! backend must be alive (bad rings are reported through the panic
//! callback, never a crash or a hang), serve a normal session, and be back
//! to its baseline fds / mappings / threads with bounded RSS. Knobs as for
//! stress_rings.rs (tests/stress/mod.rs).

mod common;
#[path = "stress/mod.rs"]
mod stress;

use std::time::{Duration, Instant};

use common::*;
use stress::*;

const PANIC: &str = "vhost-user panic:";
const N: u16 = VRING_DESC_F_NEXT;
const W: u16 = VRING_DESC_F_WRITE;
const I: u16 = VRING_DESC_F_INDIRECT;
const AU: u16 = VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED;

fn panics(b: &Backend) -> usize {
    b.stderr().matches(PANIC).count()
}

struct Ctx {
    ranges: Vec<(u64, u64)>,
}

impl Ctx {
    fn addr(&self, rng: &mut Rng, near: u64) -> u64 {
        let (s, e) = self.ranges[rng.below(self.ranges.len() as u64) as usize];
        match rng.below(8) {
            0..=2 => near,
            3 => s + rng.below(e - s),
            4 => e.wrapping_sub(rng.range(0, 64)),
            5 => e.wrapping_add(rng.range(0, 4096)),
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

    /// Chain flags (NEXT / WRITE / INDIRECT), occasionally anything.
    fn flags(&self, rng: &mut Rng, near: u16) -> u16 {
        match rng.below(8) {
            0..=4 => near,
            5 => rng.pick(&[0, N, W, N | W, I, I | N, I | W]),
            6 => near ^ rng.pick(&[N, W, I]),
            _ => rng.u16() & !AU,
        }
    }

    fn id(&self, rng: &mut Rng, qsize: u16, near: u16) -> u16 {
        match rng.below(8) {
            0..=5 => near,
            6 => rng.below(qsize as u64) as u16,
            _ => {
                let r = rng.u16();
                rng.pick(&[qsize, qsize + 1, 0x7fff, 0x8000, 0xffff, r])
            }
        }
    }
}

/// A plausible request laid out at the avail position with a few fields
/// corrupted, made available.
fn mutated_request(rng: &mut Rng, s: &mut Session<PackedQueue>, ctx: &Ctx, log: &mut Vec<String>) {
    let seg = rng.pick(&[512u32, 4096, 65536]);
    let ty = if rng.chance(1, 2) { VIRTIO_BLK_T_IN } else { VIRTIO_BLK_T_OUT };
    let out = if ty == VIRTIO_BLK_T_OUT { pattern(rng.u64(), 4096) } else { Vec::new() };
    let p = prepare(&s.mem, ty, rng.below(64), &out, 4096, Layout { seg, ..Default::default() });
    let q = &mut s.qs[0];
    let near = rng.below(q.size as u64) as u16;
    let id = ctx.id(rng, q.size, near);
    let indirect = rng.chance(1, 3);
    let mut descs: Vec<PackedDesc> = p
        .bufs
        .iter()
        .enumerate()
        .map(|(k, b)| {
            let mut flags = if b.write { W } else { 0 };
            if k + 1 < p.bufs.len() && !indirect {
                flags |= N;
            }
            PackedDesc { addr: b.gpa, len: b.len, id, flags }
        })
        .collect();
    let n_mut = rng.range(0, 2);
    for _ in 0..n_mut {
        let k = rng.below(descs.len() as u64) as usize;
        let d = &mut descs[k];
        match rng.below(4) {
            0 => d.addr = ctx.addr(rng, d.addr),
            1 => d.len = ctx.len(rng, d.len),
            2 => d.flags = ctx.flags(rng, d.flags),
            _ => d.id = ctx.id(rng, q.size, d.id),
        }
    }
    if indirect {
        let n = descs.len() as u64;
        let t = s.mem.alloc(16 * n, 16);
        for (k, d) in descs.iter().enumerate() {
            q.write_table(t, k as u16, *d);
        }
        let len = if rng.chance(1, 6) { ctx.len(rng, 16 * n as u32) } else { 16 * n as u32 };
        let addr = if rng.chance(1, 8) { ctx.addr(rng, t) } else { t };
        let flags = if rng.chance(1, 8) { ctx.flags(rng, I) } else { I };
        descs = vec![PackedDesc { addr, len, id, flags }];
    }
    if descs.len() > q.free_count() {
        log.push(format!("skip: {} descriptors, {} free", descs.len(), q.free_count()));
        return;
    }
    log.push(format!("request id {id} indirect {indirect} at {:?}: {descs:x?}", q.avail));
    let start = q.avail;
    q.add_descs(id, &descs);
    q.publish(id);
    if rng.chance(1, 6) {
        // AVAIL/USED bits of one descriptor of the chain in another state.
        let k = rng.below(descs.len() as u64) as u16;
        let pos = start.advance(k, q.size);
        let d = q.read_desc(pos.idx);
        let bits = rng.pick(&[0, VRING_PACKED_DESC_F_AVAIL, VRING_PACKED_DESC_F_USED, AU]);
        log.push(format!("desc {} AVAIL/USED := {bits:#x}", pos.idx));
        q.write_desc(pos.idx, PackedDesc { flags: d.flags & !AU | bits, ..d });
    }
}

fn round(rng: &mut Rng, s: &mut Session<PackedQueue>, ctx: &Ctx, log: &mut Vec<String>) {
    let qsize = s.qs[0].size;
    for _ in 0..rng.range(1, 4) {
        match rng.below(6) {
            0..=2 => mutated_request(rng, s, ctx, log),
            3 => {
                for _ in 0..rng.range(1, qsize as u64) {
                    let i = rng.below(qsize as u64) as u16;
                    let near = s.mem.regions[0].gpa;
                    let d = PackedDesc {
                        addr: ctx.addr(rng, near),
                        len: ctx.len(rng, 512),
                        id: ctx.id(rng, qsize, 0),
                        flags: rng.u16(),
                    };
                    log.push(format!("desc {i} := {d:x?}"));
                    s.qs[0].write_desc(i, d);
                }
            }
            4 => {
                let n = 16 * rng.range(1, qsize as u64) as usize;
                log.push(format!("{n} random bytes into the descriptor ring"));
                s.mem.write(s.qs[0].ring, &rng.bytes(n));
            }
            _ => {
                let (off, r) = (rng.u16(), rng.u16());
                let flags = rng.pick(&[0u16, 1, 2, 3, r]);
                log.push(format!("driver event := {off:#x} {flags:#x}"));
                s.qs[0].set_driver_event_raw(off, flags);
            }
        }
    }
    s.qs[0].kick_now();
}

fn stress(threads: bool, name: &str) {
    let mut b = Backend::start(BackendOpts { threads, ..Default::default() });
    smoke(&mut b);
    let health = Health::baseline(&mut b);
    run(name, 800, |rng, _i, log| {
        let gap = rng.pick(&[0u64, 0, 4096, 1 << 20]);
        let base = rng.pick(&[0u64, 1 << 20, 1 << 32]);
        let size0 = rng.pick(&[1u64 << 20, 2 << 20]);
        let layout = vec![(base, size0), (base + size0 + gap, 1 << 20)];
        let queue_size = rng.pick(&[4u16, 16, 64, 256]);
        let opts = SessionOpts {
            queue_size,
            event_idx: rng.chance(1, 2),
            base: rng.u16() & !(queue_size - 1) | rng.below(queue_size as u64) as u16,
            layout: layout.clone(),
            ..Default::default()
        };
        log.push(format!("session {opts:?}"));
        let ctx = Ctx { ranges: layout.iter().map(|&(g, s)| (g, g + s)).collect() };
        let p0 = panics(&b);
        let mut s = Session::<PackedQueue>::connect_as(&mut b, opts);
        for _ in 0..rng.range(1, 6) {
            let mark = s.mem.mark();
            round(rng, &mut s, &ctx, log);
            let t0 = Instant::now();
            let wait = Duration::from_millis(rng.pick(&[1u64, 10, 50]));
            while t0.elapsed() < wait && panics(&b) == p0 {
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
fn stress_packed_rings() {
    stress(false, "stress_packed_rings");
}

#[test]
fn stress_packed_rings_worker_threads() {
    stress(true, "stress_packed_rings_worker_threads");
}
