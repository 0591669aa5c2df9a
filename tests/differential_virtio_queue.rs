// SPDX-License-Identifier: GPL-2.0-or-later
//! Differential test of the split ring against rust-vmm's `virtio-queue` (a dev-dependency:
//! its licence keeps it out of the shipped libraries). Random rings (descriptor tables,
//! chains, indirect tables, avail entries and indexes) are written to guest memory; our
//! device (in this process, through `vu_queue_pop`, with its memory table over the same
//! memfds) and a `virtio_queue::Queue` over a copy of the same bytes pop them one by one.
//!
//! The same chains must be accepted with the same buffers (compared as guest ranges with their
//! direction, adjacent pieces merged: we split a buffer at a region boundary) and the same
//! ones refused, except where the README's robustness rules make us stricter on purpose; a
//! chain virtio-queue takes and we refuse must break one of these rules:
//! - a zero-length buffer;
//! - a device-readable buffer after a device-writable one;
//! - a buffer (or indirect table) not wholly inside guest memory (virtio-queue checks addresses
//!   only when the buffers are accessed, not when the chain is walked);
//! - an indirect descriptor anywhere but at the head of a chain, or an indirect table of more
//!   than 1024 descriptors (virtio-queue follows one mid-chain, and allows 65535);
//! - more than 1024 buffers in one element.
//!
//! Once we refuse a chain the device is broken (the panic callback fired): that case ends.
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

use live::Live;
use proto::*;
use ring::{Desc, DriverRing, SplitDriver, F_INDIRECT, F_NEXT, F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

struct Rng(u64);

impl Rng {
    fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.u64() % n
    }
    fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
}

/// A guest range and its direction (device-writable?).
type Range = (u64, u64, bool);

/// Merges adjacent ranges of the same direction (we split buffers at region boundaries).
fn merged(v: impl IntoIterator<Item = Range>) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    for (a, l, w) in v {
        match out.last_mut() {
            Some(last) if last.2 == w && last.0 + last.1 == a => last.1 += l,
            _ => out.push((a, l, w)),
        }
    }
    out
}

struct Case {
    s: Session,
    /// Descriptors written to the ring's table, and indirect tables (guest address, entries).
    ring: Vec<Desc>,
    tables: Vec<(u64, Vec<Desc>)>,
    heads: Vec<u16>,
    /// Avail index override (a jump), if any.
    avail_idx: Option<u16>,
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

fn random_case(r: &mut Rng) -> Case {
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

/// Which of our documented stricter rules the chain (as virtio-queue walked it) breaks.
fn stricter_rule(
    c: &Case,
    descs: &[(u64, u32, u16)],
    head_table_len: Option<u32>,
) -> Option<&'static str> {
    if descs.iter().any(|d| d.1 == 0) {
        return Some("zero-length buffer");
    }
    let mut seen_write = false;
    for d in descs {
        if d.2 & F_WRITE != 0 {
            seen_write = true;
        } else if seen_write {
            return Some("readable after writable");
        }
    }
    let size = GUEST_SIZE as u64;
    let inside = |a: u64, l: u64| {
        let end = match a.checked_add(l) {
            Some(e) => e,
            None => return false,
        };
        let r0 = end <= size;
        let r1 = a >= c.s.region1 && end <= c.s.region1 + size;
        let both = c.s.region1 == size && end <= 2 * size;
        r0 || r1 || both
    };
    if descs.iter().any(|d| !inside(d.0, u64::from(d.1))) {
        return Some("buffer outside guest memory");
    }
    if let Some(l) = head_table_len {
        if l / 16 > 1024 {
            return Some("indirect table above 1024 descriptors");
        }
    }
    if descs.len() > 1024 {
        return Some("more than 1024 buffers");
    }
    None
}

/// Whether the chain that starts at `head` has an indirect descriptor after its head (we
/// refuse those; virtio-queue follows them), or an indirect table outside guest memory.
fn indirect_rule(c: &Case, head: u16) -> Option<&'static str> {
    let n = c.s.queue_size;
    let first = c.ring.get(usize::from(head))?;
    if first.flags & F_INDIRECT != 0 {
        return None;
    }
    let mut i = head;
    for _ in 0..n {
        let d = c.ring[usize::from(i)];
        if d.flags & F_INDIRECT != 0 {
            return Some("indirect descriptor after a chain's head");
        }
        if d.flags & F_NEXT == 0 || d.next >= n {
            return None;
        }
        i = d.next;
    }
    None
}

fn write_case(l: &mut Live, c: &Case) {
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

/// virtio-queue's view: a Queue over a copy of both regions.
fn their_queue(l: &Live, c: &Case) -> (Queue, GuestMemoryMmap) {
    let size = GUEST_SIZE;
    let mem = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), size),
        (GuestAddress(c.s.region1), size),
    ])
    .unwrap();
    for (i, gpa) in [(0usize, 0u64), (1, c.s.region1)] {
        let (p, n) = l.guest.maps[i];
        // SAFETY: our own mapping of the memfd, n bytes.
        let bytes = unsafe { std::slice::from_raw_parts(p, n) };
        mem.write_slice(bytes, GuestAddress(gpa)).unwrap();
    }
    let mut q = Queue::new(1024).unwrap();
    q.set_size(c.s.queue_size);
    q.set_desc_table_address(Some(DESC_OFF as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL_OFF as u32), Some(0));
    q.set_used_ring_address(Some(USED_OFF as u32), Some(0));
    q.set_next_avail(c.s.base);
    q.set_next_used(c.s.base);
    q.set_ready(true);
    (q, mem)
}

/// Our buffers as guest ranges.
fn our_ranges(l: &Live, p: &live::Popped) -> Vec<Range> {
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

#[test]
fn random_split_rings_agree_with_virtio_queue() {
    let mut r = Rng(0xd1ff_5eed);
    let (mut accepted, mut refused, mut rules) =
        (0, 0, std::collections::BTreeMap::<&str, usize>::new());
    for case_no in 0..400 {
        let c = random_case(&mut r);
        let mut l = Live::standard();
        l.steps(&c.s.setup());
        assert!(!l.dev.broken(), "case {case_no}: setup refused");
        write_case(&mut l, &c);
        let (mut q, mem) = their_queue(&l, &c);
        for _ in 0..c.heads.len() + 1 {
            let head_slot = q.next_avail();
            let theirs = q.pop_descriptor_chain(&mem).map(|chain| {
                let head = chain.head_index();
                let descs: Vec<(u64, u32, u16)> =
                    chain.map(|d| (d.addr().0, d.len(), d.flags())).collect();
                (head, descs)
            });
            let ours = l.pop(0);
            let ctx = || format!("case {case_no} (avail slot {head_slot}): theirs {theirs:x?}");
            // virtio-queue's chain is complete when its last descriptor ends it.
            let complete =
                theirs.as_ref().filter(|(_, d)| d.last().is_some_and(|x| x.2 & F_NEXT == 0));
            match (ours, complete) {
                (Some(p), Some((head, descs))) => {
                    assert_eq!(p.index, u32::from(*head), "{}", ctx());
                    let want =
                        merged(descs.iter().map(|d| (d.0, u64::from(d.1), d.2 & F_WRITE != 0)));
                    assert_eq!(our_ranges(&l, &p), want, "{}: different buffers", ctx());
                    accepted += 1;
                }
                (Some(p), None) => {
                    panic!("{}: we accepted head {} that virtio-queue refuses", ctx(), p.index)
                }
                (None, Some((head, descs))) => {
                    assert!(l.dev.broken(), "{}: we returned nothing without refusing", ctx());
                    let first = c.ring[usize::from(*head) % c.ring.len()];
                    let table_len = (first.flags & F_INDIRECT != 0).then_some(first.len);
                    let why =
                        indirect_rule(&c, *head).or_else(|| stricter_rule(&c, descs, table_len));
                    let why = why.unwrap_or_else(|| {
                        panic!(
                            "{}: we refused ({}) a chain no documented rule excludes",
                            ctx(),
                            l.dev.ctx.last_panic.lock().unwrap()
                        )
                    });
                    *rules.entry(why).or_default() += 1;
                    break;
                }
                (None, None) => {
                    if l.dev.broken() {
                        refused += 1;
                        break;
                    }
                    // Both empty.
                    if theirs.is_none() {
                        break;
                    }
                    panic!("{}: virtio-queue walked an incomplete chain, we returned nothing without refusing", ctx());
                }
            }
        }
    }
    eprintln!("accepted alike: {accepted}, refused alike: {refused}, refused by our stricter rules: {rules:?}");
    assert!(accepted > 100 && refused > 20, "the random rings exercise too little");
}
