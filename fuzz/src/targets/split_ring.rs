// SPDX-License-Identifier: GPL-2.0-or-later
//! Descriptor chains and avail/used indexes over fuzzer-chosen guest memory: a valid session
//! (features, ring size, base and region layout from the input), then ring and queue
//! operations (see [`super::ring_ops`]).
//!
//! Seeds: the chains of tests/hostile_descs.rs and the request shapes of tests/stress_rings.rs.

use super::ring_ops::{self, OpEnc, A, OP_COUNT};
use super::{session_header, Header, MAX_OPS};
use crate::engine::Scenario;
use crate::input::{Cursor, Enc};
use crate::ring::{DriverRing, SplitDriver, F_INDIRECT as I, F_NEXT as N, F_WRITE as W};

pub fn decode(data: &[u8]) -> Scenario {
    let mut c = Cursor::new(data);
    let s = session_header(&mut c, 0);
    let mut steps = s.setup();
    let mut ring = SplitDriver::new(&s);
    for _ in 0..MAX_OPS {
        if c.is_empty() {
            break;
        }
        let op = c.u8() % OP_COUNT;
        ring_ops::decode(op, &mut c, &s, &mut ring as &mut dyn DriverRing, &mut steps);
    }
    s.scenario(steps)
}

fn seed(h: Header, ops: impl FnOnce(&mut OpEnc)) -> Vec<u8> {
    let mut e = Enc::new();
    h.encode(&mut e);
    let mut o = OpEnc::default();
    ops(&mut o);
    e.bytes(&o.e.0);
    e.finish()
}

/// A virtio-blk style request: header (16 bytes out), data, status (1 byte in).
fn blk(o: &mut OpEnc, start: u16, data_len: u32, write: bool) {
    o.chain(
        start,
        &[(A::Buf(0), 16, false), (A::Buf(0x100), data_len, write), (A::Buf(0x4000), 1, true)],
    );
}

fn serve(o: &mut OpEnc) {
    o.kick(0).q(ring_ops::OP_POP, 0).q(ring_ops::OP_PUSH, 0).q(ring_ops::OP_NOTIFY, 0);
}

pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use ring_ops::*;
    let h = Header::default();
    let ev = Header { event_idx: true, ..h };
    vec![
        (
            "valid_request",
            seed(h, |o| {
                blk(o, 0, 512, true);
                serve(o);
            }),
        ),
        (
            "valid_requests_event_idx",
            seed(ev, |o| {
                blk(o, 0, 512, true);
                blk(o, 3, 4096, false);
                o.used_event(1);
                o.kick(0).q(OP_SERVE, 0).q(OP_POP, 0);
            }),
        ),
        (
            "valid_indirect",
            seed(h, |o| {
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
        ),
        (
            "spanning_regions",
            seed(h, |o| {
                o.chain(
                    0,
                    &[
                        (A::Buf(0), 16, false),
                        (A::EndR0(128), 512, true),
                        (A::Buf(0x4000), 1, true),
                    ],
                );
                serve(o);
            }),
        ),
        (
            "chain_loops",
            seed(h, |o| {
                o.desc(0, A::Buf(0), 16, N, 1).desc(1, A::Buf(0x100), 512, W | N, 0).publish(0);
                serve(o);
            }),
        ),
        (
            "next_beyond_queue_size",
            seed(h, |o| {
                o.desc(0, A::Buf(0), 16, N, 21).publish(0);
                serve(o);
            }),
        ),
        (
            "buffer_outside_memory",
            seed(h, |o| {
                o.chain(
                    0,
                    &[
                        (A::Buf(0), 16, false),
                        (A::Raw(0x7000_0000_0000), 512, true),
                        (A::Buf(0x4000), 1, true),
                    ],
                );
                serve(o);
            }),
        ),
        (
            "buffer_crossing_memory_end",
            seed(Header { layout: 1, ..h }, |o| {
                o.chain(0, &[(A::Buf(0), 16, false), (A::EndR1(128), 4096, true)]);
                serve(o);
            }),
        ),
        (
            "buffer_in_gap",
            seed(Header { layout: 1, ..h }, |o| {
                o.chain(0, &[(A::BeforeR1(64), 16, false)]);
                serve(o);
            }),
        ),
        (
            "address_plus_length_overflows",
            seed(h, |o| {
                o.chain(0, &[(A::Buf(0), 16, false), (A::Raw(u64::MAX - 16), 4096, true)]);
                serve(o);
            }),
        ),
        (
            "zero_length_buffer",
            seed(h, |o| {
                o.chain(0, &[(A::Buf(0), 16, false), (A::Buf(0x100), 0, true)]);
                serve(o);
            }),
        ),
        (
            "writable_before_readable",
            seed(h, |o| {
                o.desc(0, A::Buf(0x4000), 1, W | N, 1).desc(1, A::Buf(0), 16, 0, 0).publish(0);
                serve(o);
            }),
        ),
        (
            "indirect_outside_memory",
            seed(h, |o| {
                o.desc(0, A::Raw(0xdead_0000_0000), 48, I, 0).publish(0);
                serve(o);
            }),
        ),
        (
            "indirect_len_not_multiple_of_16",
            seed(h, |o| {
                o.indirect(
                    A::Buf(0x2000),
                    &[
                        (A::Buf(0), 16, N as u8, 1),
                        (A::Buf(0x100), 512, (W | N) as u8, 2),
                        (A::Buf(0x4000), 1, W as u8, 0),
                    ],
                    0,
                    Some(40),
                );
                serve(o);
            }),
        ),
        (
            "indirect_empty",
            seed(h, |o| {
                o.indirect(A::Buf(0x2000), &[], 0, Some(0));
                serve(o);
            }),
        ),
        (
            "indirect_nested",
            seed(h, |o| {
                o.indirect(
                    A::Buf(0x2000),
                    &[(A::Buf(0), 16, N as u8, 1), (A::Buf(0x3000), 32, I as u8, 0)],
                    0,
                    None,
                );
                serve(o);
            }),
        ),
        (
            "indirect_loops",
            seed(h, |o| {
                o.indirect(
                    A::Buf(0x2000),
                    &[(A::Buf(0), 16, N as u8, 1), (A::Buf(0x100), 512, (W | N) as u8, 0)],
                    0,
                    None,
                );
                serve(o);
            }),
        ),
        (
            "indirect_next_beyond_table",
            seed(h, |o| {
                o.indirect(
                    A::Buf(0x2000),
                    &[(A::Buf(0), 16, N as u8, 7), (A::Buf(0x100), 512, W as u8, 0)],
                    0,
                    None,
                );
                serve(o);
            }),
        ),
        (
            "indirect_table_crossing_region_end",
            seed(h, |o| {
                o.indirect(
                    A::EndR0(24),
                    &[(A::Buf(0), 16, N as u8, 1), (A::Buf(0x100), 512, W as u8, 0)],
                    0,
                    None,
                );
                serve(o);
            }),
        ),
        (
            "indirect_without_feature",
            seed(Header { indirect: false, ..h }, |o| {
                o.indirect(A::Buf(0x2000), &[(A::Buf(0), 16, 0, 0)], 0, None);
                serve(o);
            }),
        ),
        (
            "avail_idx_jumps",
            seed(h, |o| {
                blk(o, 0, 512, true);
                o.avail_idx(100);
                serve(o);
            }),
        ),
        (
            "avail_head_beyond_size",
            seed(h, |o| {
                o.publish(16 + 3);
                serve(o);
            }),
        ),
        (
            "more_in_use_than_size",
            seed(Header { size_log2: 1, ..h }, |o| {
                blk(o, 0, 16, true);
                o.publish(0).publish(0).publish(0);
                o.q(OP_POP, 0).q(OP_POP, 0).q(OP_POP, 0);
            }),
        ),
        (
            "push_fill_flush_rewind",
            seed(ev, |o| {
                blk(o, 0, 512, true);
                blk(o, 3, 512, true);
                o.q(OP_POP, 0).q(OP_POP, 0).rewind(0, 1).q(OP_POP, 0).q(OP_UNPOP, 0).q(OP_POP, 0);
                o.fill(0, 513, 0).fill(0, 1, 1).flush(0, 2).q(OP_NOTIFY, 0).q(OP_NOTIFY_SYNC, 0);
            }),
        ),
        (
            "avail_bytes",
            seed(h, |o| {
                blk(o, 0, 4096, true);
                o.avail_bytes(0, 4097, 16).get_avail_bytes(0, u32::MAX, u32::MAX).q(OP_EMPTY, 0);
                o.set_notification(0, false).set_notification(0, true);
            }),
        ),
        (
            "wrapping_indexes",
            seed(Header { base: 0xfffe, event_idx: true, ..h }, |o| {
                for k in 0..4 {
                    blk(o, 3 * k, 16, true);
                }
                o.used_event(0xffff).kick(0).q(OP_SERVE, 0);
            }),
        ),
        (
            "queue_size_1",
            seed(Header { size_log2: 0, ..h }, |o| {
                o.chain(0, &[(A::Buf(0), 64, true)]);
                serve(o);
            }),
        ),
        (
            "queue_size_1024_long_indirect",
            seed(Header { size_log2: 10, ..h }, |o| {
                let t: Vec<_> = (0..16)
                    .map(|k| (A::Buf(0x100 + 16 * k), 16, (N | W) as u8, (k + 1) as u8))
                    .collect();
                o.indirect(A::Buf(0x2000), &t, 1000, Some(16 * 1025));
                serve(o);
            }),
        ),
        (
            "random_bytes_over_descriptors",
            seed(h, |o| {
                o.raw_write(A::R0(0), &(0..=255u8).map(|b| b.wrapping_mul(37)).collect::<Vec<_>>());
                o.publish(3).publish(200).kick(0).q(OP_SERVE, 0);
            }),
        ),
        (
            "inband_notifications",
            seed(Header { inband: true, ..h }, |o| {
                blk(o, 0, 512, true);
                serve(o);
                o.q(OP_NOTIFY_SYNC, 0);
            }),
        ),
        (
            "log_all",
            seed(Header { log_all: true, ..h }, |o| {
                blk(o, 0, 512, true);
                serve(o);
            }),
        ),
    ]
}
