// SPDX-License-Identifier: GPL-2.0-or-later
//! Random split rings for the tests that pop them through our device and compare the result
//! with another implementation (`differential_virtio_queue`: rust-vmm's virtio-queue;
//! `express_lane`: our own general path): descriptor tables, chains, indirect tables, avail
//! entries and indexes, mostly well formed, with every kind of guest error mixed in.
//! Included with `#[path]` beside the fuzz harness modules it builds on.

use crate::live::{self, Live};
use crate::proto::*;
use crate::ring::{self, Desc, DriverRing, SplitDriver, F_INDIRECT, F_NEXT, F_WRITE};

#[path = "../rng/mod.rs"]
mod rng;
pub use rng::Rng;

/// A guest range and its direction (device-writable?).
pub type Range = (u64, u64, bool);

/// Merges adjacent ranges of the same direction (we split buffers at region boundaries).
pub fn merged(v: impl IntoIterator<Item = Range>) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    for (a, l, w) in v {
        match out.last_mut() {
            Some(last) if last.2 == w && last.0 + last.1 == a => last.1 += l,
            _ => out.push((a, l, w)),
        }
    }
    out
}

pub struct Case {
    pub s: Session,
    /// Descriptors written to the ring's table, and indirect tables (guest address, entries).
    pub ring: Vec<Desc>,
    pub tables: Vec<(u64, Vec<Desc>)>,
    pub heads: Vec<u16>,
    /// Avail index override (a jump), if any.
    pub avail_idx: Option<u16>,
}

fn random_addr(r: &mut Rng, s: &Session) -> u64 {
    let size = GUEST_SIZE as u64;
    match r.below(10) {
        0..=4 => BUF_OFF + r.below(size - BUF_OFF),
        5..=6 => s.region1 + r.below(size),
        7 => size - r.below(64),
        8 => s.region1 + size - r.below(64),
        _ => r.u64() >> r.below(64),
    }
}

fn random_len(r: &mut Rng) -> u32 {
    match r.below(8) {
        0 => 0,
        1 => r.below(0x20000) as u32,
        _ => 1 + r.below(1024) as u32,
    }
}

fn random_desc(r: &mut Rng, s: &Session, n: u16, k: u16, table_len: u16) -> Desc {
    let mut flags = 0;
    if r.chance(3, 5) {
        flags |= F_NEXT;
    }
    if r.chance(1, 2) {
        flags |= F_WRITE;
    }
    if r.chance(1, 20) {
        flags |= F_INDIRECT;
    }
    let next =
        if r.chance(9, 10) { (k + 1) % table_len.max(1) } else { r.below(u64::from(n) + 4) as u16 };
    Desc { addr: random_addr(r, s), len: random_len(r), flags, next }
}

pub fn random_case(r: &mut Rng) -> Case {
    let queue_size = [4u16, 8, 16, 64, 256][r.below(5) as usize];
    let region1 = [GUEST_SIZE as u64, 2 * GUEST_SIZE as u64, 1 << 32][r.below(3) as usize];
    let s = Session {
        features: F_VERSION_1 | F_PROTOCOL_FEATURES | F_INDIRECT_DESC,
        protocol: PF_MQ | PF_REPLY_ACK | PF_MEM_SLOTS,
        queue_size,
        base: r.u64() as u16,
        region1,
    };
    let n = queue_size;
    // Mostly well-formed: readable buffers, then writable ones, chained in order.
    let mut ring: Vec<Desc> = (0..n).map(|k| random_desc(r, &s, n, k, n)).collect();
    for k in 0..n as usize {
        if r.chance(2, 3) {
            let d = &mut ring[k];
            d.flags &= !F_INDIRECT;
            if k > 0 && ring[k - 1].flags & F_WRITE != 0 && ring[k - 1].flags & F_NEXT != 0 {
                ring[k].flags |= F_WRITE;
            }
        }
    }
    let mut tables = Vec::new();
    for d in ring.iter_mut().filter(|d| d.flags & F_INDIRECT != 0) {
        let count = [1u16, 2, 3, 8, 17][r.below(5) as usize];
        let at = BUF_OFF + 16 * r.below(0x700);
        let entries: Vec<Desc> = (0..count)
            .map(|k| {
                let mut e = random_desc(r, &s, count, k, count);
                if r.chance(4, 5) {
                    e.flags &= !F_INDIRECT;
                }
                if k + 1 == count {
                    e.flags &= !F_NEXT;
                }
                e
            })
            .collect();
        d.addr = if r.chance(9, 10) { at } else { random_addr(r, &s) };
        d.len = if r.chance(9, 10) { 16 * u32::from(count) } else { random_len(r) };
        tables.push((at, entries));
    }
    let heads = (0..1 + r.below(6))
        .map(|_| if r.chance(19, 20) { r.below(u64::from(n)) as u16 } else { r.u64() as u16 })
        .collect();
    let avail_idx = r.chance(1, 20).then(|| r.u64() as u16);
    Case { s, ring, tables, heads, avail_idx }
}

pub fn write_case(l: &mut Live, c: &Case) {
    let mut r = SplitDriver::new(&c.s);
    let mut steps: Vec<_> = c.ring.iter().enumerate().map(|(i, d)| r.desc(i as u16, *d)).collect();
    for (at, entries) in &c.tables {
        let bytes: Vec<u8> = entries.iter().flat_map(|d| d.bytes()).collect();
        steps.extend(ring::guest_write(&c.s, *at, bytes));
    }
    for &h in &c.heads {
        steps.extend(r.publish(h));
    }
    if let Some(v) = c.avail_idx {
        steps.extend(r.set_avail_idx(v));
    }
    l.steps(&steps);
}

/// Our buffers as guest ranges.
pub fn our_ranges(l: &Live, p: &live::Popped) -> Vec<Range> {
    let regions = l.dev.regions();
    let gpa = |host: u64| {
        let r = regions
            .iter()
            .find(|r| {
                host >= r.mmap_addr + r.mmap_offset && host < r.mmap_addr + r.mmap_offset + r.size
            })
            .expect("buffer outside the regions");
        r.gpa + (host - r.mmap_addr - r.mmap_offset)
    };
    let out = p.out.iter().map(|&(h, n)| (gpa(h), n, false));
    let inb = p.inb.iter().map(|&(h, n)| (gpa(h), n, true));
    merged(out.chain(inb))
}
