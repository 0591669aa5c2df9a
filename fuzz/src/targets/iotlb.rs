// SPDX-License-Identifier: GPL-2.0-or-later
//! The device IOTLB (VIRTIO_F_IOMMU_PLATFORM, virtio feature 33): a valid session that acks
//! bit 33 (split or packed rings, from the input), so that every guest address — ring
//! addresses, descriptors, indirect tables — is an IOVA; then IOTLB messages (entries that map
//! parts of the session's memory with a permission, raw updates of any iova, size, user address
//! and permission, invalidations, messages of any type) mixed with every ring and queue
//! operation of [`super::ring_ops`]: misses and their retries, buffers whose entry does not
//! allow the access, rings that lose their translation with requests in flight, floods.
//!
//! The session's memory is reachable at four IOVA ranges ("spaces"), as a frontend behind a
//! vIOMMU would map it: each region by guest physical address (where descriptors point), and
//! each by frontend user address (where SET_VRING_ADDR points).
//!
//! Seeds: the cases of tests/proto_iotlb.rs.

use super::packed_ring::{position, START};
use super::ring_ops::{self, OpEnc, A, OP_COUNT};
use super::{session_header, Header, MAX_OPS};
use crate::engine::{FdSpec, Scenario, Step};
use crate::input::{Cursor, Enc};
use crate::proto::*;
use crate::ring::{DriverRing, PackedDriver, SplitDriver, F_NEXT as N, F_WRITE as W};

/// Maps (part of) one space: space, first page, pages, permission choice.
pub const OP_MAP: u8 = OP_COUNT;
/// An update with raw fields: iova, size, uaddr, perm.
pub const OP_UPDATE: u8 = OP_COUNT + 1;
/// An invalidation of (part of) one space, or of a raw range.
pub const OP_INVALIDATE: u8 = OP_COUNT + 2;
/// An IOTLB message of any type with raw fields.
pub const OP_RAW: u8 = OP_COUNT + 3;
const OPS: u8 = OP_COUNT + 4;

const PAGE: u64 = 4096;
const PERM_RO: u8 = 1;
const PERM_WO: u8 = 2;
const PERM_RW: u8 = 3;
const UPDATE: u8 = 2;
const INVALIDATE: u8 = 3;

/// Space `k`: (first IOVA, first user address) of one region's GUEST_SIZE bytes.
fn space(s: &Session, k: u8) -> (u64, u64) {
    match k % 4 {
        0 => (0, QVA_BASE),
        1 => (s.region1, QVA_BASE + s.region1),
        2 => (QVA_BASE, QVA_BASE),
        _ => (QVA_BASE + s.region1, QVA_BASE + s.region1),
    }
}

/// Pages `[first, first + pages)` of space `k`, clipped to the region.
fn pages(s: &Session, k: u8, first: u8, pages: u8) -> (u64, u64, u64) {
    let total = GUEST_SIZE as u64 / PAGE;
    let first = u64::from(first) % total;
    let n = (u64::from(pages) % total + 1).min(total - first);
    let (iova, uaddr) = space(s, k);
    (iova + first * PAGE, n * PAGE, uaddr + first * PAGE)
}

fn update(iova: u64, size: u64, uaddr: u64, perm: u8) -> Step {
    msg(IOTLB_MSG, iotlb(iova, size, uaddr, perm, UPDATE))
}

/// Every space mapped read-write (what a frontend sends before the guest's first request).
fn map_all(s: &Session) -> Vec<Step> {
    (0..4).map(|k| pages(s, k, 0, u8::MAX)).map(|(i, n, u)| update(i, n, u, PERM_RW)).collect()
}

fn iotlb_op(op: u8, c: &mut Cursor, s: &Session, out: &mut Vec<Step>) {
    match op {
        OP_MAP => {
            let (k, first, n) = (c.u8(), c.u8(), c.u8());
            let perm = [PERM_RW, PERM_RO, PERM_WO, PERM_RW][usize::from(c.u8() % 4)];
            let (iova, size, uaddr) = pages(s, k, first, n);
            out.push(update(iova, size, uaddr, perm));
        }
        OP_UPDATE => {
            let (iova, size, uaddr, perm) = (ring_ops::addr(c, s), c.u64(), c.u64(), c.u8());
            out.push(update(iova, size, uaddr, perm));
        }
        OP_INVALIDATE => {
            let (iova, size) = if c.bool() {
                let (iova, size, _) = pages(s, c.u8(), c.u8(), c.u8());
                (iova, size)
            } else {
                (ring_ops::addr(c, s), c.u64())
            };
            out.push(msg(IOTLB_MSG, iotlb(iova, size, 0, 0, INVALIDATE)));
        }
        _ => {
            let (iova, size, uaddr, perm, kind) = (c.u64(), c.u64(), c.u64(), c.u8(), c.u8());
            out.push(msg(IOTLB_MSG, iotlb(iova, size, uaddr, perm, kind)));
        }
    }
}

pub fn decode(data: &[u8]) -> Scenario {
    let mut c = Cursor::new(data);
    let mut s = session_header(&mut c, PF_BACKEND_REQ);
    s.features |= F_IOMMU_PLATFORM;
    let packed = c.bool();
    if packed {
        s.features |= F_RING_PACKED;
        s.base = position(s.base, s.queue_size);
    }
    let mapped_first = c.bool();
    let backend_channel = c.bool();
    let mut steps = s.negotiate();
    if backend_channel {
        // Where misses go; its peer is gone, so each one fails to be sent.
        steps.push(msg_fds(SET_BACKEND_REQ_FD, vec![], vec![FdSpec::Socket(vec![])]));
    }
    if mapped_first {
        steps.extend(map_all(&s));
    }
    steps.extend(s.ring_steps(0));
    steps.extend(s.start_steps(0));
    let mut split = SplitDriver::new(&s);
    let mut packed_ring = PackedDriver::new(&s);
    let ring: &mut dyn DriverRing = if packed { &mut packed_ring } else { &mut split };
    for _ in 0..MAX_OPS {
        if c.is_empty() {
            break;
        }
        let op = c.u8() % OPS;
        if ring_ops::decode(op, &mut c, &s, &mut *ring, &mut steps).is_none() {
            iotlb_op(op, &mut c, &s, &mut steps);
        }
    }
    s.scenario(steps)
}

/// Input layout: header, packed, mapped first, backend channel, operations.
fn seed(packed: bool, mapped_first: bool, ops: impl FnOnce(&mut OpEnc)) -> Vec<u8> {
    let h = if packed { Header { base: START, ..Header::default() } } else { Header::default() };
    let mut e = Enc::new();
    h.encode(&mut e);
    e.bool(packed).bool(mapped_first).bool(true);
    let mut o = OpEnc::default();
    ops(&mut o);
    e.bytes(&o.e.0);
    e.finish()
}

fn blk(o: &mut OpEnc, write: bool) {
    o.chain(0, &[(A::Buf(0), 16, false), (A::Buf(0x100), 512, write), (A::Buf(0x4000), 1, true)]);
}

fn serve(o: &mut OpEnc) {
    o.kick(0).q(ring_ops::OP_POP, 0).q(ring_ops::OP_PUSH, 0).q(ring_ops::OP_NOTIFY, 0);
}

fn map(o: &mut OpEnc, k: u8, first: u8, n: u8, perm_choice: u8) {
    o.e.u8(OP_MAP).u8(k).u8(first).u8(n).u8(perm_choice);
}

fn map_everything(o: &mut OpEnc) {
    for k in 0..4 {
        map(o, k, 0, u8::MAX, 0);
    }
}

fn raw_update(o: &mut OpEnc, iova: u64, size: u64, uaddr: u64, perm: u8) {
    o.e.u8(OP_UPDATE);
    o.addr(A::Raw(iova));
    o.e.u64(size).u64(uaddr).u8(perm);
}

fn raw(o: &mut OpEnc, iova: u64, size: u64, uaddr: u64, perm: u8, kind: u8) {
    o.e.u8(OP_RAW).u64(iova).u64(size).u64(uaddr).u8(perm).u8(kind);
}

fn invalidate_space(o: &mut OpEnc, k: u8) {
    o.e.u8(OP_INVALIDATE).bool(true).u8(k).u8(0).u8(u8::MAX);
}

/// A seed written for both ring layouts: split name, packed name, mapped-first flag, the ops.
type SeedForBoth = (&'static str, &'static str, bool, fn(&mut OpEnc));

pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use ring_ops::*;
    let mut v = Vec::new();
    // Each of these on a split and on a packed ring.
    let both: [SeedForBoth; 5] = [
        ("mapped_request", "packed_mapped_request", true, |o| {
            blk(o, true);
            serve(o);
        }),
        // The rings and buffers have no entry yet: the pop misses; the updates wake the queue.
        ("miss_then_update", "packed_miss_then_update", false, |o| {
            blk(o, true);
            serve(o);
            map_everything(o);
            o.q(OP_SERVE, 0);
        }),
        ("ring_invalidated_in_flight", "packed_ring_invalidated_in_flight", true, |o| {
            blk(o, false);
            o.kick(0).q(OP_POP, 0);
            invalidate_space(o, 2);
            o.q(OP_PUSH, 0).q(OP_NOTIFY, 0);
            map(o, 2, 0, u8::MAX, 0);
            blk(o, true);
            o.q(OP_SERVE, 0);
        }),
        ("writable_buffer_read_only_entry", "packed_writable_buffer_read_only_entry", false, |o| {
            map(o, 2, 0, u8::MAX, 0);
            map(o, 0, 0, u8::MAX, 1);
            blk(o, true);
            serve(o);
        }),
        ("indirect_through_entries", "packed_indirect_through_entries", true, |o| {
            o.indirect(
                A::Buf(0x2000),
                &[
                    (A::Buf(0), 16, N as u8, 1),
                    (A::Buf(0x100), 512, (W | N) as u8, 2),
                    (A::Buf(0x4000), 1, W as u8, 0),
                ],
                0,
                None,
            );
            serve(o);
        }),
    ];
    for (split_name, packed_name, mapped_first, ops) in both {
        v.push((split_name, seed(false, mapped_first, ops)));
        v.push((packed_name, seed(true, mapped_first, ops)));
    }
    v.push((
        "bad_entries",
        seed(false, true, |o| {
            let q = QVA_BASE;
            raw_update(o, 0x100000, 0, q, PERM_RW);
            raw_update(o, u64::MAX - 0xfff, 0x2000, q, PERM_RW);
            raw_update(o, 0x100000, 0x1000, u64::MAX - 0xfff, PERM_RW);
            raw_update(o, 0x100000, 0x1000, q, 0);
            raw_update(o, 0x100000, 0x1000, q, 4);
            raw_update(o, 0x100000, 0x1000, 0x1000, PERM_RW);
            raw_update(o, 0x100000, GUEST_SIZE as u64 * 8, q, PERM_RW);
            // Overlapping the mapped buffer space with another translation.
            raw_update(o, 0x1000, 0x2000, q + 0x8000, PERM_RW);
            for kind in [0u8, 1, 4, 9] {
                raw(o, 0x1000, 0x1000, q, PERM_RW, kind);
            }
            o.e.u8(OP_INVALIDATE).bool(false);
            o.addr(A::Raw(0x7000_0000_0000));
            o.e.u64(u64::MAX);
            blk(o, true);
            serve(o);
        }),
    ));
    v.push((
        "update_flood",
        seed(false, true, |o| {
            for i in 0..150u64 {
                raw_update(o, 0x1000_0000 + i * PAGE, PAGE, QVA_BASE + (i % 16) * PAGE, PERM_RW);
            }
            blk(o, true);
            serve(o);
        }),
    ));
    v
}
