// SPDX-License-Identifier: GPL-2.0-or-later
//! Inflight areas: GET_INFLIGHT_FD and SET_INFLIGHT_FD with chosen geometry and fds (the
//! device's own area, or a frontend memfd of chosen size and contents), writes into the area
//! the device handed out (a hostile frontend may change it at any time), reconnects (a new
//! device takes the old area and must resubmit what was in flight at SET_VRING_KICK), the
//! in-order answer, and ring and queue operations (see [`super::ring_ops`]).
//!
//! Seeds: the flows of tests/proto_inflight.rs (get, set, pop, reconnect, resubmit) and the
//! inflight cases of tests/hostile_msgs.rs.

use super::ring_ops::{self, OpEnc, A, OP_COUNT};
use super::{session_header, Header, MAX_OPS};
use crate::engine::{FdSpec, Scenario, Step};
use crate::input::{Cursor, Enc};
use crate::proto::*;
use crate::ring::{DriverRing, SplitDriver};

pub const OP_GET: u8 = OP_COUNT;
pub const OP_SET: u8 = OP_COUNT + 1;
pub const OP_WRITE_AREA: u8 = OP_COUNT + 2;
pub const OP_RECONNECT: u8 = OP_COUNT + 3;
pub const OP_STOP_QUEUE: u8 = OP_COUNT + 4;
pub const OP_RESTART_QUEUE: u8 = OP_COUNT + 5;
pub const OP_IN_ORDER: u8 = OP_COUNT + 6;
pub const OPS: u8 = OP_COUNT + 7;

/// Bytes of one queue's inflight region for `queue_size` descriptors, as QEMU computes it
/// (16 bytes per descriptor plus 2, 64-byte aligned).
pub fn queue_region_size(queue_size: u16) -> u64 {
    (16 * u64::from(queue_size) + 2).div_ceil(64) * 64
}

/// The same for a packed ring (the spec's packed layout: a 32-byte header, 32 bytes per
/// descriptor, 64-byte aligned).
pub fn packed_queue_region_size(queue_size: u16) -> u64 {
    (32 * u64::from(queue_size) + 32).div_ceil(64) * 64
}

/// One queue's inflight region for the session's ring layout.
pub fn region_size(s: &Session, queue_size: u16) -> u64 {
    if s.features & F_RING_PACKED != 0 {
        packed_queue_region_size(queue_size)
    } else {
        queue_region_size(queue_size)
    }
}

fn geometry(c: &mut Cursor, s: &Session) -> (u16, u16) {
    let m = c.u8();
    let nq = if m & 1 == 0 { 1 + u16::from(m >> 1 & 1) } else { c.u16() };
    let qs = if m & 4 == 0 { s.queue_size } else { c.u16() };
    (nq, qs)
}

/// SET_INFLIGHT_FD with the latest area (or a fresh memfd) and its size/offset fields.
fn set(c: &mut Cursor, s: &Session) -> Step {
    let (nq, qs) = geometry(c, s);
    let needed = region_size(s, qs) * u64::from(nq);
    let m = c.u8();
    let size = match m % 4 {
        0 => needed,
        1 => needed.saturating_sub(u64::from(c.u8())),
        2 => needed + u64::from(c.u16()),
        _ => c.u64(),
    };
    let offset = if m & 4 == 0 { 0 } else { u64::from(c.u16()) << (c.u8() % 16) };
    let fd = if m & 8 == 0 {
        FdSpec::LastInflight
    } else {
        FdSpec::Scratch { size: c.u16() as u32 * 64, fill: c.u8() }
    };
    msg_fds(SET_INFLIGHT_FD, inflight(size, offset, nq, qs), vec![fd])
}

pub fn decode(data: &[u8]) -> Scenario {
    let mut c = Cursor::new(data);
    let s = session_header(&mut c, PF_INFLIGHT);
    let mut steps = s.negotiate();
    // The order QEMU's vhost-user-blk uses: the area first, then the rings.
    steps.push(msg(GET_INFLIGHT_FD, inflight(0, 0, 2, s.queue_size)));
    let needed = 2 * queue_region_size(s.queue_size);
    steps.push(msg_fds(
        SET_INFLIGHT_FD,
        inflight(needed, 0, 2, s.queue_size),
        vec![FdSpec::LastInflight],
    ));
    steps.extend(s.ring_steps(0));
    steps.extend(s.start_steps(0));
    let mut ring = SplitDriver::new(&s);
    for _ in 0..MAX_OPS {
        if c.is_empty() {
            break;
        }
        let op = c.u8() % OPS;
        if ring_ops::decode(op, &mut c, &s, &mut ring as &mut dyn DriverRing, &mut steps).is_none()
        {
            area_op(op, &mut c, &s, &mut steps);
        }
    }
    s.scenario(steps)
}

/// One inflight-area or queue-lifecycle operation (`op` from [`OP_GET`] on); the ring and
/// queue operations are [`ring_ops::decode`]'s. Used by the packed ring target too.
pub fn area_op(op: u8, c: &mut Cursor, s: &Session, steps: &mut Vec<Step>) {
    match op % OPS {
        OP_GET => {
            let (nq, qs) = geometry(c, s);
            let size = if c.bool() { 24 } else { u32::from(c.u8()) };
            let mut m = crate::engine::Msg::new(GET_INFLIGHT_FD, inflight(0, 0, nq, qs));
            m.size = Some(size);
            m.payload.resize((size as usize).min(24), 0);
            steps.push(Step::Dispatch(m));
        }
        OP_SET => steps.push(set(c, s)),
        OP_WRITE_AREA => {
            let off = u32::from(c.u16());
            let bytes = c.blob(64);
            steps.push(Step::InflightWrite { off, bytes });
        }
        OP_RECONNECT => {
            // The backend restarts; the frontend hands the saved area to the new device.
            steps.push(Step::Reconnect);
            steps.extend(s.negotiate());
            steps.push(set(c, s));
            steps.extend(s.ring_steps(0));
            steps.extend(s.start_steps(0));
        }
        OP_STOP_QUEUE => steps.push(msg(GET_VRING_BASE, state(0, 0))),
        OP_RESTART_QUEUE => {
            steps.extend(s.ring_steps(0));
            steps.extend(s.start_steps(0));
        }
        OP_IN_ORDER => steps.push(Step::InOrder(c.bool())),
        _ => {}
    }
}

fn seed(h: Header, ops: impl FnOnce(&mut OpEnc)) -> Vec<u8> {
    let mut e = Enc::new();
    h.encode(&mut e);
    let mut o = OpEnc::default();
    ops(&mut o);
    e.bytes(&o.e.0);
    e.finish()
}

fn request(o: &mut OpEnc, start: u16) {
    o.chain(
        start,
        &[(A::Buf(0), 16, false), (A::Buf(0x100), 512, true), (A::Buf(0x4000), 1, true)],
    );
}

/// SET in the encoding of [`set`]: standard geometry, size mode, latest area.
fn set_std(o: &mut OpEnc, size_mode: u8) {
    o.e.u8(OP_SET).u8(0).u8(size_mode);
}

pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use ring_ops::*;
    let h = Header::default();
    vec![
        (
            "pop_reconnect_resubmit",
            seed(h, |o| {
                request(o, 0);
                request(o, 3);
                o.q(OP_POP, 0).q(OP_POP, 0).q(OP_PUSH, 0);
                o.e.u8(OP_RECONNECT).u8(0).u8(0);
                o.q(OP_POP, 0).q(OP_POP, 0).q(OP_PUSH, 0).q(OP_PUSH, 0);
            }),
        ),
        (
            "reconnect_in_order",
            seed(h, |o| {
                request(o, 0);
                o.q(OP_POP, 0);
                o.e.u8(OP_IN_ORDER).bool(true);
                o.e.u8(OP_RECONNECT).u8(0).u8(0);
                o.kick(0).q(OP_SERVE, 0);
            }),
        ),
        (
            "corrupted_area_then_reconnect",
            seed(h, |o| {
                request(o, 0);
                o.q(OP_POP, 0);
                o.e.u8(OP_WRITE_AREA).u16(0).blob(&[0xff; 64]);
                o.e.u8(OP_WRITE_AREA)
                    .u16(16)
                    .blob(&[1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 7, 0, 0, 0, 0, 0, 0, 0]);
                o.e.u8(OP_RECONNECT).u8(0).u8(0);
                o.q(OP_POP, 0).q(OP_POP, 0);
            }),
        ),
        (
            "area_too_small",
            seed(h, |o| {
                set_std(o, 1);
                o.e.u8(0xff);
            }),
        ),
        (
            "area_size_huge",
            seed(h, |o| {
                o.e.u8(OP_SET).u8(0).u8(3).u64(u64::MAX);
            }),
        ),
        (
            "area_offset_beyond_file",
            seed(h, |o| {
                o.e.u8(OP_SET).u8(0).u8(4 | 2).u16(0).u16(0xffff).u8(15);
            }),
        ),
        (
            "area_from_frontend_memfd",
            seed(h, |o| {
                o.e.u8(OP_SET).u8(0).u8(8).u16(64).u8(0xff);
                request(o, 0);
                o.kick(0).q(OP_SERVE, 0);
            }),
        ),
        (
            "get_huge_geometry",
            seed(h, |o| {
                o.e.u8(OP_GET).u8(1 | 4).u16(0xffff).u16(0xffff).bool(true);
            }),
        ),
        (
            "get_zero_geometry",
            seed(h, |o| {
                o.e.u8(OP_GET).u8(1 | 4).u16(0).u16(0).bool(true);
            }),
        ),
        (
            "get_bad_size",
            seed(h, |o| {
                o.e.u8(OP_GET).u8(0).bool(false).u8(8);
            }),
        ),
        (
            "stop_restart_with_inflight",
            seed(h, |o| {
                request(o, 0);
                o.q(OP_POP, 0);
                o.e.u8(OP_STOP_QUEUE);
                o.e.u8(OP_RESTART_QUEUE);
                o.q(OP_POP, 0).q(OP_PUSH, 0);
            }),
        ),
        (
            "inflight_event_idx_wrap",
            seed(Header { event_idx: true, base: 0xffff, ..h }, |o| {
                request(o, 0);
                request(o, 3);
                o.q(OP_POP, 0).q(OP_POP, 0).fill(0, 1, 1).fill(0, 1, 0).flush(0, 2);
                o.e.u8(OP_RECONNECT).u8(0).u8(0);
                o.q(OP_SERVE, 0);
            }),
        ),
    ]
}
