// SPDX-License-Identifier: GPL-2.0-or-later
//! Packed rings (VIRTIO_F_RING_PACKED, virtio 1.1): a valid session that acks packed rings
//! (features, ring size, starting position and region layout from the input; the inflight
//! area set up first or not), then descriptor chains, indirect tables, driver positions and
//! event suppression over fuzzer-written guest memory with every queue operation (see
//! [`super::ring_ops`]), mixed with the inflight and queue-lifecycle operations of
//! [`super::inflight`] (GET/SET_INFLIGHT_FD, area writes, reconnects with resubmission from the
//! packed inflight area, stop and restart).
//!
//! Seeds: the cases of tests/hostile_packed.rs (buffer ids, chains into descriptors not made
//! available or already used, indirect tables, event offsets, ring positions) and valid flows
//! across several laps of the ring.

use super::inflight::{self, OP_GET, OP_RECONNECT, OP_RESTART_QUEUE, OP_STOP_QUEUE};
use super::ring_ops::{self, OpEnc, A};
use super::{session_header, Header, MAX_OPS};
use crate::engine::{FdSpec, Scenario};
use crate::input::{Cursor, Enc};
use crate::proto::*;
use crate::ring::{
    DriverRing, PackedDriver, F_INDIRECT as I, F_NEXT as N, F_PACKED_AVAIL, F_PACKED_USED,
    F_WRITE as W,
};

/// Bit 14 of the header's base keeps it as it is (a ring position the device must refuse if
/// it is outside the ring); otherwise the slot is taken modulo the ring size.
const RAW_BASE: u16 = 1 << 14;

/// The session's starting ring position from the header's base field.
pub(super) fn position(base: u16, queue_size: u16) -> u16 {
    if base & RAW_BASE != 0 {
        base
    } else {
        (base & 0x8000) | ((base & 0x3fff) % queue_size.max(1))
    }
}

pub fn decode(data: &[u8]) -> Scenario {
    let mut c = Cursor::new(data);
    let mut s = session_header(&mut c, 0);
    s.features |= F_RING_PACKED;
    s.base = position(s.base, s.queue_size);
    // With the inflight feature the device refuses to start a queue that has no area.
    let area_first = c.bool();
    if area_first {
        s.protocol |= PF_INFLIGHT;
    }
    let mut steps = s.negotiate();
    if area_first {
        // The order QEMU's vhost-user-blk uses: the area first, then the rings.
        steps.push(msg(GET_INFLIGHT_FD, inflight(0, 0, 2, s.queue_size)));
        let needed = 2 * inflight::region_size(&s, s.queue_size);
        steps.push(msg_fds(
            SET_INFLIGHT_FD,
            inflight(needed, 0, 2, s.queue_size),
            vec![FdSpec::LastInflight],
        ));
    }
    steps.extend(s.ring_steps(0));
    steps.extend(s.start_steps(0));
    let mut ring = PackedDriver::new(&s);
    for _ in 0..MAX_OPS {
        if c.is_empty() {
            break;
        }
        let op = c.u8() % inflight::OPS;
        if ring_ops::decode(op, &mut c, &s, &mut ring as &mut dyn DriverRing, &mut steps).is_none()
        {
            inflight::area_op(op, &mut c, &s, &mut steps);
        }
    }
    s.scenario(steps)
}

/// The reset position of a packed ring: slot 0, wrap counter 1.
pub(super) const START: u16 = 0x8000;

fn seed(h: Header, area_first: bool, ops: impl FnOnce(&mut OpEnc)) -> Vec<u8> {
    let mut e = Enc::new();
    h.encode(&mut e);
    e.bool(area_first);
    let mut o = OpEnc::default();
    ops(&mut o);
    e.bytes(&o.e.0);
    e.finish()
}

/// A virtio-blk style request at the driver's position: header, data, status.
fn blk(o: &mut OpEnc, data_len: u32, write: bool) {
    o.chain(
        0,
        &[(A::Buf(0), 16, false), (A::Buf(0x100), data_len, write), (A::Buf(0x4000), 1, true)],
    );
}

fn serve(o: &mut OpEnc) {
    o.kick(0).q(ring_ops::OP_POP, 0).q(ring_ops::OP_PUSH, 0).q(ring_ops::OP_NOTIFY, 0);
}

/// A reconnect that hands the saved area to the new device (standard geometry and size).
fn reconnect(o: &mut OpEnc) {
    o.e.u8(OP_RECONNECT).u8(0).u8(0);
}

pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use ring_ops::*;
    let h = Header { base: START, ..Header::default() };
    let ev = Header { event_idx: true, ..h };
    let table = [
        (A::Buf(0), 16, N as u8, 1),
        (A::Buf(0x100), 512, (W | N) as u8, 2),
        (A::Buf(0x4000), 1, W as u8, 0),
    ];
    vec![
        (
            "valid_request",
            seed(h, false, |o| {
                blk(o, 512, true);
                serve(o);
            }),
        ),
        (
            "valid_requests_event_idx",
            seed(ev, false, |o| {
                blk(o, 512, true);
                blk(o, 4096, false);
                // Driver event suppression: notify at a descriptor position.
                o.avail_flags(2).used_event(START | 4);
                o.kick(0).q(OP_SERVE, 0).q(OP_POP, 0);
            }),
        ),
        (
            "event_suppression_disabled",
            seed(ev, false, |o| {
                o.avail_flags(1);
                blk(o, 512, true);
                o.kick(0).q(OP_SERVE, 0);
                o.avail_flags(0);
                blk(o, 512, true);
                o.kick(0).q(OP_SERVE, 0).q(OP_NOTIFY_SYNC, 0);
            }),
        ),
        (
            "valid_indirect",
            seed(h, false, |o| {
                o.indirect(A::Buf(0x2000), &table, 0, None);
                serve(o);
            }),
        ),
        (
            "laps_of_a_small_ring",
            seed(Header { size_log2: 1, ..ev }, false, |o| {
                for _ in 0..7 {
                    o.chain(0, &[(A::Buf(0), 16, false), (A::Buf(0x100), 64, true)]);
                    o.kick(0).q(OP_SERVE, 0);
                }
            }),
        ),
        (
            "chain_across_the_ring_end",
            seed(Header { base: START | 14, ..h }, false, |o| {
                blk(o, 512, true);
                serve(o);
                blk(o, 512, false);
                serve(o);
            }),
        ),
        (
            "start_in_wrap_0",
            seed(Header { base: 5, ..h }, false, |o| {
                blk(o, 512, true);
                serve(o);
            }),
        ),
        (
            "chain_into_descriptor_not_available",
            seed(h, false, |o| {
                // The second descriptor's AVAIL bit flipped: not made available in this lap.
                o.desc(0, A::Buf(0), 16, N, 0).desc(1, A::Buf(0x100), 512, W | F_PACKED_AVAIL, 0);
                o.publish(0);
                serve(o);
            }),
        ),
        (
            "chain_into_used_descriptor",
            seed(h, false, |o| {
                o.desc(0, A::Buf(0), 16, N, 0).desc(1, A::Buf(0x100), 512, W | F_PACKED_USED, 0);
                o.publish(0);
                serve(o);
            }),
        ),
        (
            "head_not_available",
            seed(h, false, |o| {
                o.desc(0, A::Buf(0), 16, F_PACKED_AVAIL, 0).publish(0);
                serve(o);
                o.q(OP_EMPTY, 0).avail_bytes(0, 1, 1);
            }),
        ),
        (
            "buffer_id_beyond_queue_size",
            seed(h, false, |o| {
                o.desc(0, A::Buf(0), 16, 0, 16).publish(0);
                serve(o);
            }),
        ),
        (
            "buffer_id_0xffff",
            seed(h, false, |o| {
                o.desc(0, A::Buf(0), 16, 0, 0xffff).publish(0);
                serve(o);
            }),
        ),
        (
            "buffer_id_reused_while_in_flight",
            seed(h, false, |o| {
                o.desc(0, A::Buf(0), 16, 0, 3).publish(0);
                o.desc(1, A::Buf(0x100), 16, W, 3).publish(1);
                // Popped without a kick (the handler would complete the first at once).
                o.q(OP_POP, 0).q(OP_POP, 0).q(OP_PUSH, 0).q(OP_PUSH, 0);
                o.q(OP_NOTIFY, 0);
            }),
        ),
        (
            "chain_longer_than_the_ring",
            seed(Header { size_log2: 1, ..h }, false, |o| {
                o.desc(0, A::Buf(0), 16, N, 0).desc(1, A::Buf(0x100), 16, N, 1).publish(0);
                serve(o);
            }),
        ),
        (
            "indirect_with_next",
            seed(h, false, |o| {
                o.desc(0, A::Buf(0x2000), 48, I | N, 0).desc(1, A::Buf(0), 16, 0, 1).publish(0);
                serve(o);
            }),
        ),
        (
            "indirect_inside_a_chain",
            seed(h, false, |o| {
                o.desc(0, A::Buf(0), 16, N, 0).desc(1, A::Buf(0x2000), 48, I, 1).publish(0);
                serve(o);
            }),
        ),
        (
            "indirect_nested",
            seed(h, false, |o| {
                o.indirect(
                    A::Buf(0x2000),
                    &[(A::Buf(0), 16, 0, 0), (A::Buf(0x3000), 32, I as u8, 0)],
                    0,
                    None,
                );
                serve(o);
            }),
        ),
        (
            "indirect_len_not_multiple_of_16",
            seed(h, false, |o| {
                o.indirect(A::Buf(0x2000), &table, 0, Some(40));
                serve(o);
            }),
        ),
        (
            "indirect_empty",
            seed(h, false, |o| {
                o.indirect(A::Buf(0x2000), &[], 0, Some(0));
                serve(o);
            }),
        ),
        (
            "indirect_table_crossing_region_end",
            seed(h, false, |o| {
                o.indirect(A::EndR0(24), &table, 0, None);
                serve(o);
            }),
        ),
        (
            "indirect_outside_memory",
            seed(h, false, |o| {
                o.desc(0, A::Raw(0xdead_0000_0000), 48, I, 0).publish(0);
                serve(o);
            }),
        ),
        (
            "indirect_without_feature",
            seed(Header { indirect: false, ..h }, false, |o| {
                o.indirect(A::Buf(0x2000), &table, 0, None);
                serve(o);
            }),
        ),
        (
            "buffer_outside_memory",
            seed(h, false, |o| {
                o.chain(0, &[(A::Buf(0), 16, false), (A::Raw(0x7000_0000_0000), 512, true)]);
                serve(o);
            }),
        ),
        (
            "buffer_crossing_memory_end",
            seed(Header { layout: 1, ..h }, false, |o| {
                o.chain(0, &[(A::Buf(0), 16, false), (A::EndR1(128), 4096, true)]);
                serve(o);
            }),
        ),
        (
            "address_plus_length_overflows",
            seed(h, false, |o| {
                o.chain(0, &[(A::Buf(0), 16, false), (A::Raw(u64::MAX - 16), 4096, true)]);
                serve(o);
            }),
        ),
        (
            "spanning_regions",
            seed(h, false, |o| {
                o.chain(0, &[(A::Buf(0), 16, false), (A::EndR0(128), 512, true)]);
                serve(o);
            }),
        ),
        (
            "writable_before_readable",
            seed(h, false, |o| {
                o.desc(0, A::Buf(0x4000), 1, W | N, 0).desc(1, A::Buf(0), 16, 0, 1).publish(0);
                serve(o);
            }),
        ),
        (
            "driver_event_offset_beyond_queue_size",
            seed(ev, false, |o| {
                o.avail_flags(2).used_event(START | 100);
                blk(o, 512, true);
                serve(o);
            }),
        ),
        (
            "driver_event_offset_0x7fff_with_wrap",
            seed(ev, false, |o| {
                o.avail_flags(2).used_event(0xffff);
                blk(o, 512, true);
                serve(o);
            }),
        ),
        (
            "vring_base_beyond_queue_size",
            seed(Header { base: START | RAW_BASE | 0x100, ..h }, false, |o| {
                blk(o, 512, true);
                serve(o);
            }),
        ),
        (
            "driver_position_jumps",
            seed(h, false, |o| {
                blk(o, 512, true);
                o.avail_idx(START | 9);
                blk(o, 512, true);
                o.kick(0).q(OP_SERVE, 0);
            }),
        ),
        (
            "push_fill_flush_rewind_unpop",
            seed(ev, false, |o| {
                blk(o, 512, true);
                blk(o, 512, true);
                o.q(OP_POP, 0).q(OP_POP, 0).rewind(0, 1).q(OP_POP, 0).q(OP_UNPOP, 0).q(OP_POP, 0);
                o.fill(0, 513, 0).fill(0, 1, 1).flush(0, 2).q(OP_NOTIFY, 0);
                o.push_len(0, u32::MAX);
            }),
        ),
        (
            "avail_bytes",
            seed(h, false, |o| {
                blk(o, 4096, true);
                o.indirect(A::Buf(0x2000), &table, 0, None);
                o.avail_bytes(0, 4097, 16).get_avail_bytes(0, u32::MAX, u32::MAX).q(OP_EMPTY, 0);
                o.set_notification(0, false).set_notification(0, true);
            }),
        ),
        (
            "queue_size_1",
            seed(Header { size_log2: 0, ..h }, false, |o| {
                for _ in 0..3 {
                    o.chain(0, &[(A::Buf(0), 64, true)]);
                    serve(o);
                }
            }),
        ),
        (
            "queue_size_1024_long_indirect",
            seed(Header { size_log2: 10, ..h }, false, |o| {
                let t: Vec<_> = (0..16).map(|k| (A::Buf(0x100 + 16 * k), 16, W as u8, 0)).collect();
                o.indirect(A::Buf(0x2000), &t, 0, Some(16 * 1025));
                serve(o);
            }),
        ),
        (
            "stop_restart",
            seed(h, false, |o| {
                blk(o, 512, true);
                o.kick(0).q(OP_POP, 0);
                o.e.u8(OP_STOP_QUEUE);
                o.e.u8(OP_RESTART_QUEUE);
                o.q(OP_POP, 0).q(OP_PUSH, 0);
            }),
        ),
        (
            "inflight_resubmission",
            seed(h, true, |o| {
                blk(o, 512, true);
                blk(o, 512, false);
                o.q(OP_POP, 0).q(OP_POP, 0).q(OP_PUSH, 0);
                reconnect(o);
                o.kick(0).q(OP_SERVE, 0);
            }),
        ),
        (
            "inflight_in_order",
            seed(h, true, |o| {
                blk(o, 512, true);
                o.q(OP_POP, 0);
                o.e.u8(inflight::OP_IN_ORDER).bool(true);
                reconnect(o);
                o.q(OP_SERVE, 0);
            }),
        ),
        (
            "inflight_corrupted_area",
            seed(h, true, |o| {
                blk(o, 512, true);
                o.q(OP_POP, 0);
                o.e.u8(inflight::OP_WRITE_AREA).u16(0).blob(&[0xff; 64]);
                o.e.u8(inflight::OP_WRITE_AREA).u16(32).blob(&[0xff; 32]);
                reconnect(o);
                o.q(OP_POP, 0).q(OP_POP, 0);
            }),
        ),
        (
            "inflight_area_replaced_while_started",
            seed(h, true, |o| {
                o.e.u8(OP_GET).u8(0).bool(true);
                o.e.u8(inflight::OP_SET).u8(0).u8(0);
                blk(o, 512, true);
                o.kick(0).q(OP_POP, 0);
                reconnect(o);
                o.q(OP_SERVE, 0);
            }),
        ),
        (
            "inflight_split_sized_area",
            seed(h, true, |o| {
                o.e.u8(OP_GET).u8(0).bool(true);
                // The split layout's size: too small for a packed area.
                o.e.u8(inflight::OP_SET).u8(0).u8(3).u64(2 * inflight::queue_region_size(16));
                blk(o, 512, true);
                serve(o);
            }),
        ),
        (
            "random_bytes_over_descriptors",
            seed(h, false, |o| {
                o.raw_write(A::R0(0), &(0..=255u8).map(|b| b.wrapping_mul(37)).collect::<Vec<_>>());
                o.publish(0).publish(3).kick(0).q(OP_SERVE, 0);
            }),
        ),
        (
            "inband_notifications",
            seed(Header { inband: true, ..h }, false, |o| {
                blk(o, 512, true);
                serve(o);
                o.q(OP_NOTIFY_SYNC, 0);
            }),
        ),
        (
            "log_all",
            seed(Header { log_all: true, ..h }, false, |o| {
                blk(o, 512, true);
                serve(o);
            }),
        ),
    ]
}
