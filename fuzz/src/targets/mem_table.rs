// SPDX-License-Identifier: GPL-2.0-or-later
//! Memory-table changes interleaved with queue operations: after the standard session, the
//! input mixes ring and queue operations (see [`super::ring_ops`]) with SET_MEM_TABLE,
//! ADD_MEM_REG, REM_MEM_REG, SET_VRING_ADDR, SET_VRING_NUM, GET_VRING_BASE and restarts,
//! dirty-log setup and memory-slot queries. Regions name memfds of a pool of three (the third
//! free for ADD_MEM_REG) with addresses, sizes and offsets chosen around the valid ones.
//!
//! Seeds: the memory-table cases of tests/hostile_msgs.rs and tests/proto_mem_slots.rs.

use super::ring_ops::{self, OpEnc, A, OP_COUNT};
use super::{session_header, Header, MAX_OPS};
use crate::engine::{FdSpec, Scenario};
use crate::input::{Cursor, Enc};
use crate::proto::*;
use crate::ring::{DriverRing, SplitDriver};

pub const OP_SET_MEM_TABLE: u8 = OP_COUNT;
pub const OP_ADD_MEM_REG: u8 = OP_COUNT + 1;
pub const OP_REM_MEM_REG: u8 = OP_COUNT + 2;
pub const OP_SET_VRING_ADDR: u8 = OP_COUNT + 3;
pub const OP_STOP_QUEUE: u8 = OP_COUNT + 4;
pub const OP_RESTART_QUEUE: u8 = OP_COUNT + 5;
pub const OP_SET_VRING_NUM: u8 = OP_COUNT + 6;
pub const OP_SET_LOG_BASE: u8 = OP_COUNT + 7;
pub const OP_MAX_MEM_SLOTS: u8 = OP_COUNT + 8;
const OPS: u8 = OP_COUNT + 9;

/// A region: which memfd, and its guest address, size, frontend address and offset, each
/// either the standard value of that memfd or a variation.
fn region(c: &mut Cursor, s: &Session) -> (u8, Region) {
    let mem = c.u8() % 3;
    let std = match mem {
        0 => s.regions()[0],
        1 => s.regions()[1],
        _ => Region { gpa: 8 << 20, size: GUEST_SIZE as u64, qva: QVA_BASE + (8 << 20), offset: 0 },
    };
    let m = c.u8();
    let pick = |c: &mut Cursor, sel: u8, v: u64| match sel % 4 {
        0 => v,
        1 => v.wrapping_add(u64::from(c.u16()) << 12),
        2 => v.wrapping_sub(u64::from(c.u16()) << 12),
        _ => c.u64(),
    };
    let gpa = pick(c, m, std.gpa);
    let size = pick(c, m >> 2, std.size);
    let qva = pick(c, m >> 4, std.qva);
    let offset = pick(c, m >> 6, std.offset);
    (mem, Region { gpa, size, qva, offset })
}

fn qva(c: &mut Cursor, s: &Session, std: u64) -> u64 {
    match c.u8() % 4 {
        0 => std,
        1 => QVA_BASE + s.region1 + u64::from(c.u16()),
        2 => QVA_BASE + u64::from(c.u16()),
        _ => c.u64(),
    }
}

pub fn decode(data: &[u8]) -> Scenario {
    let mut c = Cursor::new(data);
    let s = session_header(&mut c, 0);
    let mut steps = s.setup();
    let mut ring = SplitDriver::new(&s);
    for _ in 0..MAX_OPS {
        if c.is_empty() {
            break;
        }
        let op = c.u8() % OPS;
        if ring_ops::decode(op, &mut c, &s, &mut ring as &mut dyn DriverRing, &mut steps).is_some()
        {
            continue;
        }
        match op {
            OP_SET_MEM_TABLE => {
                let n = c.u8() % 10;
                let claimed = if c.bool() { u32::from(n) } else { c.u32() };
                let mut regions = Vec::new();
                let mut fds = Vec::new();
                for _ in 0..n.min(8) {
                    let (mem, r) = region(&mut c, &s);
                    regions.push(r);
                    fds.push(FdSpec::Guest(mem));
                }
                if c.bool() {
                    fds.pop();
                }
                steps.push(msg_fds(SET_MEM_TABLE, mem_table(claimed, &regions), fds));
            }
            OP_ADD_MEM_REG => {
                let (mem, r) = region(&mut c, &s);
                let fds = if c.u8() & 7 == 0 { vec![] } else { vec![FdSpec::Guest(mem)] };
                steps.push(msg_fds(ADD_MEM_REG, mem_reg(&r), fds));
            }
            OP_REM_MEM_REG => {
                let (mem, r) = region(&mut c, &s);
                let fds = if c.bool() { vec![FdSpec::Guest(mem)] } else { vec![] };
                steps.push(msg_fds(REM_MEM_REG, mem_reg(&r), fds));
            }
            OP_SET_VRING_ADDR => {
                let q = u32::from(c.u8() % 3);
                let base = QVA_BASE;
                let desc = qva(&mut c, &s, base + DESC_OFF);
                let used = qva(&mut c, &s, base + USED_OFF);
                let avail = qva(&mut c, &s, base + AVAIL_OFF);
                let flags = u32::from(c.u8() & 1);
                let log = c.u64();
                steps.push(msg(SET_VRING_ADDR, vring_addr(q, flags, desc, used, avail, log)));
            }
            OP_STOP_QUEUE => steps.push(msg(GET_VRING_BASE, state(u32::from(c.u8() % 3), 0))),
            OP_RESTART_QUEUE => {
                let q = u32::from(c.u8() % 2);
                steps.extend(s.ring_steps(q));
                steps.extend(s.start_steps(q));
            }
            OP_SET_VRING_NUM => {
                let q = u32::from(c.u8() % 2);
                steps.push(msg(SET_VRING_NUM, state(q, 1 << (c.u8() % 12))));
            }
            OP_SET_LOG_BASE => {
                let size = u64::from(c.u16()) << (c.u8() % 16);
                let offset = u64::from(c.u16());
                let fill = c.u8();
                steps.push(msg_fds(
                    SET_LOG_BASE,
                    log_base(size, offset),
                    vec![FdSpec::Scratch { size: 8192, fill }, FdSpec::Event(3)],
                ));
            }
            OP_MAX_MEM_SLOTS => steps.push(msg(GET_MAX_MEM_SLOTS, vec![])),
            _ => {}
        }
    }
    let mut sc = s.scenario(steps);
    sc.guest.push(GUEST_SIZE);
    sc
}

/// Writes the operations of this target (on top of the ring operations).
struct MemEnc {
    o: OpEnc,
}

/// A region in the encoding of [`region`]: memfd, then raw values for all four fields.
fn reg_raw(e: &mut Enc, mem: u8, r: Region) {
    e.u8(mem).u8(0xff).u64(r.gpa).u64(r.size).u64(r.qva).u64(r.offset);
}

impl MemEnc {
    fn table(
        &mut self,
        regions: &[(u8, Region)],
        claimed: Option<u32>,
        drop_fd: bool,
    ) -> &mut Self {
        let e = &mut self.o.e;
        e.u8(OP_SET_MEM_TABLE).u8(regions.len() as u8);
        match claimed {
            None => e.bool(true),
            Some(v) => e.bool(false).u32(v),
        };
        for &(m, r) in regions {
            reg_raw(e, m, r);
        }
        e.bool(drop_fd);
        self
    }
    fn add(&mut self, mem: u8, r: Region, with_fd: bool) -> &mut Self {
        self.o.e.u8(OP_ADD_MEM_REG);
        reg_raw(&mut self.o.e, mem, r);
        self.o.e.u8(if with_fd { 1 } else { 0 });
        self
    }
    fn rem(&mut self, mem: u8, r: Region) -> &mut Self {
        self.o.e.u8(OP_REM_MEM_REG);
        reg_raw(&mut self.o.e, mem, r);
        self.o.e.bool(false);
        self
    }
    fn ring_addr(&mut self, q: u8, desc: u64, used: u64, avail: u64) -> &mut Self {
        self.o.e.u8(OP_SET_VRING_ADDR).u8(q).u8(3).u64(desc).u8(3).u64(used).u8(3).u64(avail);
        self.o.e.u8(0).u64(0);
        self
    }
}

fn seed(h: Header, ops: impl FnOnce(&mut MemEnc)) -> Vec<u8> {
    let mut e = Enc::new();
    h.encode(&mut e);
    let mut m = MemEnc { o: OpEnc::default() };
    ops(&mut m);
    e.bytes(&m.o.e.0);
    e.finish()
}

fn request(o: &mut OpEnc) {
    o.chain(0, &[(A::Buf(0), 16, false), (A::R1(0x100), 512, true), (A::Buf(0x4000), 1, true)]);
}

pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    use ring_ops::*;
    let h = Header::default();
    let s = session_header(
        &mut Cursor::new(&{
            let mut e = Enc::new();
            h.encode(&mut e);
            e.finish()
        }),
        0,
    );
    let [r0, r1] = s.regions();
    let r2 = Region { gpa: 8 << 20, size: GUEST_SIZE as u64, qva: QVA_BASE + (8 << 20), offset: 0 };
    vec![
        (
            "replace_table_while_popped",
            seed(h, |m| {
                request(&mut m.o);
                m.o.q(OP_POP, 0);
                m.table(&[(0, r0), (1, r1)], None, false);
                m.o.q(OP_PUSH, 0).q(OP_NOTIFY, 0);
            }),
        ),
        (
            "remove_region_holding_buffers",
            seed(h, |m| {
                request(&mut m.o);
                m.o.q(OP_POP, 0);
                m.rem(1, r1);
                m.o.q(OP_PUSH, 0);
                request(&mut m.o);
                m.o.kick(0);
            }),
        ),
        (
            "remove_region_holding_rings",
            seed(h, |m| {
                m.rem(0, r0);
                request(&mut m.o);
                m.o.kick(0).q(OP_POP, 0);
                m.add(0, r0, true);
                m.o.kick(0).q(OP_SERVE, 0);
            }),
        ),
        (
            "add_third_region",
            seed(h, |m| {
                m.add(2, r2, true);
                m.o.chain(0, &[(A::Raw(r2.gpa + 0x100), 64, true)]);
                m.o.kick(0);
                m.o.e.u8(OP_MAX_MEM_SLOTS);
            }),
        ),
        (
            "add_region_without_fd",
            seed(h, |m| {
                m.add(2, r2, false);
            }),
        ),
        (
            "add_overlapping_region",
            seed(h, |m| {
                m.add(2, Region { gpa: 0x8000, ..r2 }, true);
                request(&mut m.o);
                m.o.kick(0);
            }),
        ),
        (
            "overlapping_regions",
            seed(h, |m| {
                m.table(&[(0, r0), (1, Region { gpa: 0x8000, ..r1 })], None, false);
            }),
        ),
        (
            "nregions_beyond_payload",
            seed(h, |m| {
                m.table(&[(0, r0)], Some(8), false);
            }),
        ),
        (
            "more_regions_than_fds",
            seed(h, |m| {
                m.table(&[(0, r0), (1, r1)], None, true);
            }),
        ),
        (
            "zero_sized_region",
            seed(h, |m| {
                m.table(&[(0, Region { size: 0, ..r0 })], None, false);
            }),
        ),
        (
            "guest_range_overflows",
            seed(h, |m| {
                m.table(&[(0, Region { gpa: u64::MAX - 0x1000, ..r0 })], None, false);
            }),
        ),
        (
            "user_range_overflows",
            seed(h, |m| {
                m.table(&[(0, Region { qva: u64::MAX - 0x1000, ..r0 })], None, false);
            }),
        ),
        (
            "region_beyond_its_file",
            seed(h, |m| {
                m.table(&[(0, Region { size: 2 * GUEST_SIZE as u64, ..r0 })], None, false);
                m.table(&[(0, Region { offset: 0x1000, ..r0 })], None, false);
            }),
        ),
        (
            "offset_mapping",
            seed(h, |m| {
                m.table(
                    &[
                        (0, r0),
                        (
                            1,
                            Region {
                                gpa: r1.gpa + 0x1000,
                                size: r1.size - 0x1000,
                                qva: r1.qva + 0x1000,
                                offset: 0x1000,
                            },
                        ),
                    ],
                    None,
                    false,
                );
                request(&mut m.o);
                m.o.kick(0);
            }),
        ),
        (
            "nine_regions",
            seed(h, |m| {
                m.table(&[(0, r0); 9], None, false);
            }),
        ),
        (
            "ring_moved_outside_memory",
            seed(h, |m| {
                m.ring_addr(0, 0xdead_0000, QVA_BASE + USED_OFF, QVA_BASE + AVAIL_OFF);
                request(&mut m.o);
                m.o.kick(0);
            }),
        ),
        (
            "ring_crossing_region_end",
            seed(h, |m| {
                m.ring_addr(
                    0,
                    QVA_BASE + GUEST_SIZE as u64 - 64,
                    QVA_BASE + USED_OFF,
                    QVA_BASE + AVAIL_OFF,
                );
            }),
        ),
        (
            "stop_and_restart",
            seed(h, |m| {
                request(&mut m.o);
                m.o.q(OP_POP, 0);
                m.o.e.u8(OP_STOP_QUEUE).u8(0);
                m.o.q(OP_PUSH, 0);
                m.o.e.u8(OP_RESTART_QUEUE).u8(0);
                m.o.kick(0).q(OP_SERVE, 0);
            }),
        ),
        (
            "ring_num_changed_under_queue",
            seed(h, |m| {
                request(&mut m.o);
                m.o.e.u8(OP_SET_VRING_NUM).u8(0).u8(10);
                m.o.kick(0).q(OP_SERVE, 0);
            }),
        ),
        (
            "dirty_log",
            seed(Header { log_all: true, ..h }, |m| {
                m.o.e.u8(OP_SET_LOG_BASE).u16(1).u8(0).u16(0).u8(0);
                request(&mut m.o);
                m.o.kick(0).q(OP_SERVE, 0);
                m.o.e.u8(OP_SET_LOG_BASE).u16(0xffff).u8(15).u16(0x7fff).u8(0xff);
                m.o.kick(0).q(OP_SERVE, 0);
            }),
        ),
    ]
}
