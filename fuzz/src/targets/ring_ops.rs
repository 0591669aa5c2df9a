// SPDX-License-Identifier: GPL-2.0-or-later
//! Ring and queue operations shared by the ring, memory-table and inflight targets: the
//! driver writing descriptors, chains and indirect tables at addresses around the regions'
//! edges, publishing heads, moving the avail index, kicking; the device popping, pushing,
//! filling, flushing, rewinding, notifying.
//!
//! Format: one opcode byte, then its fields (see [`decode`]); [`OpEnc`] writes the same.

use crate::engine::{QueueOp, Step};
use crate::input::{Cursor, Enc};
use crate::proto::{Session, BUF_OFF, GUEST_SIZE};
use crate::ring::{guest_write, Desc, DriverRing, F_INDIRECT, F_NEXT, F_WRITE};

pub const OP_DESC: u8 = 0;
pub const OP_PUBLISH: u8 = 1;
pub const OP_CHAIN: u8 = 2;
pub const OP_INDIRECT: u8 = 3;
pub const OP_AVAIL_IDX: u8 = 4;
pub const OP_AVAIL_FLAGS: u8 = 5;
pub const OP_USED_EVENT: u8 = 6;
pub const OP_RAW_WRITE: u8 = 7;
pub const OP_KICK: u8 = 8;
pub const OP_POP: u8 = 9;
pub const OP_PUSH: u8 = 10;
pub const OP_PUSH_LEN: u8 = 11;
pub const OP_FILL: u8 = 12;
pub const OP_FLUSH: u8 = 13;
pub const OP_NOTIFY: u8 = 14;
pub const OP_NOTIFY_SYNC: u8 = 15;
pub const OP_REWIND: u8 = 16;
pub const OP_UNPOP: u8 = 17;
pub const OP_EMPTY: u8 = 18;
pub const OP_AVAIL_BYTES: u8 = 19;
pub const OP_GET_AVAIL_BYTES: u8 = 20;
pub const OP_SET_NOTIFICATION: u8 = 21;
pub const OP_SERVE: u8 = 22;
/// Opcodes from here on belong to the target that embeds these operations.
pub const OP_COUNT: u8 = 23;

/// Guest addresses: where the fuzzer most likely wants them (in the buffer area, at and
/// around both regions' ends, in the gap, wild).
pub fn addr(c: &mut Cursor, s: &Session) -> u64 {
    let size = GUEST_SIZE as u64;
    let mode = c.u8();
    match mode % 8 {
        0 => BUF_OFF + u64::from(c.u16()) % (size - BUF_OFF),
        1 => s.region1 + u64::from(c.u16()) % size,
        2 => size - u64::from(c.u8()),
        3 => s.region1 + size - u64::from(c.u8()),
        4 => s.region1.wrapping_sub(u64::from(c.u8())),
        5 => c.u64(),
        6 => u64::from(c.u16()) % size,
        _ => (1u64 << (c.u8() % 64)).wrapping_sub(u64::from(c.u8())),
    }
}

pub fn len(c: &mut Cursor) -> u32 {
    match c.u8() % 4 {
        0 => u32::from(c.u8()) + 1,
        1 => u32::from(c.u16()),
        2 => c.u32(),
        _ => [0u32, 1, 16, 4096, 0x8000, 0x10000, 0x10001, u32::MAX][c.u8() as usize % 8],
    }
}

fn queue(q: u8, op: QueueOp) -> Step {
    Step::Queue { q, op }
}

/// Decodes one operation (`opcode` already read) into steps; None if it is not one of these.
pub fn decode(
    op: u8,
    c: &mut Cursor,
    s: &Session,
    ring: &mut dyn DriverRing,
    out: &mut Vec<Step>,
) -> Option<()> {
    let n = ring.size();
    match op {
        OP_DESC => {
            let slot = c.u16();
            let d = Desc { addr: addr(c, s), len: len(c), flags: c.u16(), next: c.u16() };
            out.push(ring.desc(slot, d));
        }
        OP_PUBLISH => {
            let head = c.u16();
            out.extend(ring.publish(head));
        }
        OP_CHAIN => {
            // A well-formed chain at consecutive slots, published.
            let start = ring.chain_start(c.u16());
            let count = (c.u8() % 8 + 1).min(n as u8) as u16;
            for k in 0..count {
                let (a, l, w) = (addr(c, s), len(c), c.bool());
                let last = k + 1 == count;
                let slot = (start + k) % n;
                let flags = if w { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
                let next = (slot + 1) % n;
                out.push(ring.desc(slot, Desc { addr: a, len: l, flags, next }));
            }
            out.extend(ring.publish(start));
        }
        OP_INDIRECT => {
            let table = addr(c, s);
            let count = c.u8() % 17;
            let mut bytes = Vec::new();
            for k in 0..count {
                let d = Desc {
                    addr: addr(c, s),
                    len: len(c),
                    flags: c.u8() as u16,
                    next: c.u8() as u16,
                };
                let d = if c.bool() {
                    // Mostly well formed: next in order, NEXT on all but the last.
                    let flags = (d.flags & F_WRITE) | if k + 1 < count { F_NEXT } else { 0 };
                    Desc { flags, next: k as u16 + 1, ..d }
                } else {
                    d
                };
                bytes.extend_from_slice(&ring.table_entry(d));
            }
            let slot = ring.chain_start(c.u16());
            let tlen = if c.bool() { len(c) } else { 16 * u32::from(count) };
            let extra = c.u8() as u16 & (F_NEXT | F_WRITE);
            out.extend(guest_write(s, table, bytes));
            out.push(
                ring.desc(
                    slot,
                    Desc { addr: table, len: tlen, flags: F_INDIRECT | extra, next: 0 },
                ),
            );
            out.extend(ring.publish(slot));
        }
        OP_AVAIL_IDX => {
            let v = c.u16();
            out.extend(ring.set_avail_idx(v));
        }
        OP_AVAIL_FLAGS => out.push(ring.set_avail_flags(c.u16())),
        OP_USED_EVENT => out.push(ring.set_used_event(c.u16())),
        OP_RAW_WRITE => {
            let a = addr(c, s);
            let b = c.blob(256);
            out.extend(guest_write(s, a, b));
        }
        OP_KICK => {
            // The driver kicks queue q (its kick eventfd is pool fd 2q+1); the event loop runs.
            let q = c.u8() % 2;
            out.push(Step::Signal(2 * q + 1));
            out.push(Step::Loop);
        }
        OP_POP => out.push(queue(c.u8() % 3, QueueOp::Pop)),
        OP_PUSH => out.push(queue(c.u8() % 3, QueueOp::Push(None))),
        OP_PUSH_LEN => {
            let q = c.u8() % 3;
            out.push(queue(q, QueueOp::Push(Some(c.u32()))));
        }
        OP_FILL => {
            let q = c.u8() % 3;
            out.push(queue(q, QueueOp::Fill { len: c.u32(), idx: u32::from(c.u16()) }));
        }
        OP_FLUSH => {
            let q = c.u8() % 3;
            out.push(queue(q, QueueOp::Flush(u32::from(c.u16()))));
        }
        OP_NOTIFY => out.push(queue(c.u8() % 3, QueueOp::Notify)),
        OP_NOTIFY_SYNC => out.push(queue(c.u8() % 3, QueueOp::NotifySync)),
        OP_REWIND => {
            let q = c.u8() % 3;
            out.push(queue(q, QueueOp::Rewind(u32::from(c.u16()))));
        }
        OP_UNPOP => out.push(queue(c.u8() % 3, QueueOp::Unpop)),
        OP_EMPTY => out.push(queue(c.u8() % 3, QueueOp::Empty)),
        OP_AVAIL_BYTES => {
            let q = c.u8() % 3;
            out.push(queue(q, QueueOp::AvailBytes { in_bytes: c.u32(), out_bytes: c.u32() }));
        }
        OP_GET_AVAIL_BYTES => {
            let q = c.u8() % 3;
            out.push(queue(q, QueueOp::GetAvailBytes { max_in: c.u32(), max_out: c.u32() }));
        }
        OP_SET_NOTIFICATION => {
            let q = c.u8() % 3;
            out.push(queue(q, QueueOp::SetNotification(c.bool())));
        }
        OP_SERVE => out.push(queue(c.u8() % 3, QueueOp::Serve)),
        _ => return None,
    }
    Some(())
}

/// Writes ring operations in the format [`decode`] reads (for seed corpora).
#[derive(Default)]
pub struct OpEnc {
    pub e: Enc,
}

/// An address in the encoding of [`addr`].
#[derive(Clone, Copy, Debug)]
pub enum A {
    /// Offset into the buffer area of region 0.
    Buf(u16),
    /// Offset into region 1.
    R1(u16),
    /// This many bytes before the end of region 0 / region 1.
    EndR0(u8),
    EndR1(u8),
    /// This many bytes before region 1's start.
    BeforeR1(u8),
    Raw(u64),
    /// Anywhere in region 0 (the rings too).
    R0(u16),
}

/// A length in the encoding of [`len`] (raw u32).
pub fn l(v: u32) -> u32 {
    v
}

impl OpEnc {
    pub fn addr(&mut self, a: A) -> &mut Self {
        match a {
            A::Buf(o) => self.e.u8(0).u16(o),
            A::R1(o) => self.e.u8(1).u16(o),
            A::EndR0(b) => self.e.u8(2).u8(b),
            A::EndR1(b) => self.e.u8(3).u8(b),
            A::BeforeR1(b) => self.e.u8(4).u8(b),
            A::Raw(v) => self.e.u8(5).u64(v),
            A::R0(o) => self.e.u8(6).u16(o),
        };
        self
    }
    pub fn len(&mut self, v: u32) -> &mut Self {
        self.e.u8(2).u32(v);
        self
    }
    pub fn desc(&mut self, slot: u16, a: A, len: u32, flags: u16, next: u16) -> &mut Self {
        self.e.u8(OP_DESC).u16(slot);
        self.addr(a).len(len);
        self.e.u16(flags).u16(next);
        self
    }
    pub fn publish(&mut self, head: u16) -> &mut Self {
        self.e.u8(OP_PUBLISH).u16(head);
        self
    }
    /// A well-formed chain: (address, length, device-writable).
    pub fn chain(&mut self, start: u16, bufs: &[(A, u32, bool)]) -> &mut Self {
        self.e.u8(OP_CHAIN).u16(start).u8(bufs.len() as u8 - 1);
        for &(a, len, w) in bufs {
            self.addr(a).len(len);
            self.e.bool(w);
        }
        self
    }
    /// An indirect table at `table` with raw descriptors (addr, len, flags, next), in ring
    /// slot `slot`, with table length `tlen` (None: 16 per entry).
    pub fn indirect(
        &mut self,
        table: A,
        descs: &[(A, u32, u8, u8)],
        slot: u16,
        tlen: Option<u32>,
    ) -> &mut Self {
        self.e.u8(OP_INDIRECT);
        self.addr(table);
        self.e.u8(descs.len() as u8);
        for &(a, len, flags, next) in descs {
            self.addr(a).len(len);
            self.e.u8(flags).u8(next).bool(false);
        }
        self.e.u16(slot);
        match tlen {
            Some(t) => {
                self.e.bool(true);
                self.len(t);
            }
            None => {
                self.e.bool(false);
            }
        }
        self.e.u8(0);
        self
    }
    pub fn avail_idx(&mut self, v: u16) -> &mut Self {
        self.e.u8(OP_AVAIL_IDX).u16(v);
        self
    }
    pub fn avail_flags(&mut self, v: u16) -> &mut Self {
        self.e.u8(OP_AVAIL_FLAGS).u16(v);
        self
    }
    pub fn used_event(&mut self, v: u16) -> &mut Self {
        self.e.u8(OP_USED_EVENT).u16(v);
        self
    }
    pub fn raw_write(&mut self, a: A, bytes: &[u8]) -> &mut Self {
        self.e.u8(OP_RAW_WRITE);
        self.addr(a);
        self.e.blob(bytes);
        self
    }
    pub fn kick(&mut self, q: u8) -> &mut Self {
        self.e.u8(OP_KICK).u8(q);
        self
    }
    /// A queue operation with only a queue index.
    pub fn q(&mut self, op: u8, q: u8) -> &mut Self {
        self.e.u8(op).u8(q);
        self
    }
    pub fn push_len(&mut self, q: u8, len: u32) -> &mut Self {
        self.e.u8(OP_PUSH_LEN).u8(q).u32(len);
        self
    }
    pub fn fill(&mut self, q: u8, len: u32, idx: u16) -> &mut Self {
        self.e.u8(OP_FILL).u8(q).u32(len).u16(idx);
        self
    }
    pub fn flush(&mut self, q: u8, n: u16) -> &mut Self {
        self.e.u8(OP_FLUSH).u8(q).u16(n);
        self
    }
    pub fn rewind(&mut self, q: u8, n: u16) -> &mut Self {
        self.e.u8(OP_REWIND).u8(q).u16(n);
        self
    }
    pub fn avail_bytes(&mut self, q: u8, i: u32, o: u32) -> &mut Self {
        self.e.u8(OP_AVAIL_BYTES).u8(q).u32(i).u32(o);
        self
    }
    pub fn get_avail_bytes(&mut self, q: u8, i: u32, o: u32) -> &mut Self {
        self.e.u8(OP_GET_AVAIL_BYTES).u8(q).u32(i).u32(o);
        self
    }
    pub fn set_notification(&mut self, q: u8, on: bool) -> &mut Self {
        self.e.u8(OP_SET_NOTIFICATION).u8(q).bool(on);
        self
    }
}
