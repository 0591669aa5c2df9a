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
#[path = "split_cases/mod.rs"]
mod split_cases;
#[path = "../fuzz/src/sys.rs"]
mod sys;
#[path = "../fuzz/src/targets/mod.rs"]
mod targets;

use live::Live;
use proto::*;
use ring::{F_INDIRECT, F_NEXT, F_WRITE};
use split_cases::{merged, our_ranges, random_case, write_case, Case, Rng};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

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

#[test]
fn random_split_rings_agree_with_virtio_queue() {
    let mut r = Rng::new(0xd1ff_5eed);
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
