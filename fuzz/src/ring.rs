// SPDX-License-Identifier: GPL-2.0-or-later
//! The driver's side of a virtqueue in guest memory, as steps that write it: descriptors,
//! publishing heads, the avail index and flags, the used event. [`DriverRing`] is what a ring
//! layout provides: [`SplitDriver`] the split layout, [`PackedDriver`] the packed one (virtio
//! 1.1); the ring operations of the targets work on either.

use crate::engine::Step;
use crate::proto::{Session, AVAIL_OFF, DESC_OFF, GUEST_SIZE};

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

impl Desc {
    pub fn bytes(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..16].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// Where a guest address lives in the harness's memfds (memfd index, offset), for the
/// standard session's two regions.
pub fn locate(s: &Session, gpa: u64) -> Option<(u8, u32)> {
    let size = GUEST_SIZE as u64;
    if gpa < size {
        return Some((0, gpa as u32));
    }
    if gpa >= s.region1 && gpa - s.region1 < size {
        return Some((1, (gpa - s.region1) as u32));
    }
    None
}

/// A guest write at a guest address (nothing if it is outside guest memory).
pub fn guest_write(s: &Session, gpa: u64, bytes: Vec<u8>) -> Option<Step> {
    locate(s, gpa).map(|(mem, off)| Step::GuestWrite { mem, off, bytes })
}

pub trait DriverRing {
    fn size(&self) -> u16;
    /// The slot a new chain starts at: split rings take any (`hint`), a packed driver
    /// writes at its next position.
    fn chain_start(&self, hint: u16) -> u16;
    /// Writes descriptor `slot` of the ring (`d.next` is a packed descriptor's buffer id).
    fn desc(&mut self, slot: u16, d: Desc) -> Step;
    /// An entry of an indirect table in this layout's descriptor format.
    fn table_entry(&self, d: Desc) -> [u8; 16];
    /// Makes the chain at `head` available and advances the avail index (or position).
    fn publish(&mut self, head: u16) -> Vec<Step>;
    /// Moves the avail index (packed: the driver's position, slot and wrap counter).
    fn set_avail_idx(&mut self, idx: u16) -> Vec<Step>;
    /// The avail ring's flags (packed: the driver event suppression flags).
    fn set_avail_flags(&self, flags: u16) -> Step;
    /// The used event index (packed: the driver event suppression offset and wrap counter).
    fn set_used_event(&self, v: u16) -> Step;
}

/// The split ring of the standard session's queue 0 (in memfd 0).
pub struct SplitDriver {
    pub n: u16,
    pub avail_idx: u16,
}

impl SplitDriver {
    pub fn new(s: &Session) -> Self {
        SplitDriver { n: s.queue_size.max(1), avail_idx: s.base }
    }

    fn write(off: u64, bytes: Vec<u8>) -> Step {
        Step::GuestWrite { mem: 0, off: off as u32, bytes }
    }
}

impl DriverRing for SplitDriver {
    fn size(&self) -> u16 {
        self.n
    }
    fn chain_start(&self, hint: u16) -> u16 {
        hint % self.n
    }
    fn desc(&mut self, slot: u16, d: Desc) -> Step {
        Self::write(DESC_OFF + 16 * u64::from(slot % self.n), d.bytes().to_vec())
    }
    fn table_entry(&self, d: Desc) -> [u8; 16] {
        d.bytes()
    }
    fn publish(&mut self, head: u16) -> Vec<Step> {
        let slot = u64::from(self.avail_idx % self.n);
        let entry = Self::write(AVAIL_OFF + 4 + 2 * slot, head.to_le_bytes().to_vec());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        vec![entry, Self::write(AVAIL_OFF + 2, self.avail_idx.to_le_bytes().to_vec())]
    }
    fn set_avail_idx(&mut self, idx: u16) -> Vec<Step> {
        self.avail_idx = idx;
        vec![Self::write(AVAIL_OFF + 2, idx.to_le_bytes().to_vec())]
    }
    fn set_avail_flags(&self, flags: u16) -> Step {
        Self::write(AVAIL_OFF, flags.to_le_bytes().to_vec())
    }
    fn set_used_event(&self, v: u16) -> Step {
        Self::write(AVAIL_OFF + 4 + 2 * u64::from(self.n), v.to_le_bytes().to_vec())
    }
}

pub const F_PACKED_AVAIL: u16 = 1 << 7;
pub const F_PACKED_USED: u16 = 1 << 15;

/// A packed descriptor `{le64 addr; le32 len; le16 id; le16 flags}` from a [`Desc`] whose
/// `next` is the buffer id.
pub fn packed_bytes(d: Desc) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&d.addr.to_le_bytes());
    b[8..12].copy_from_slice(&d.len.to_le_bytes());
    b[12..14].copy_from_slice(&d.next.to_le_bytes());
    b[14..16].copy_from_slice(&d.flags.to_le_bytes());
    b
}

/// The packed ring of the standard session's queue 0 (in memfd 0): the descriptor ring at
/// `DESC_OFF`, the driver event suppression area at `AVAIL_OFF`, the device's at `USED_OFF`
/// (where SET_VRING_ADDR's desc, avail and used addresses point).
///
/// The driver writes chains at its position and marks each descriptor available for the lap
/// the device will read it in; a descriptor's own AVAIL/USED bits from the input flip those
/// (descriptors not yet available, stale, or already used). Publishing moves the position past
/// the chain (by the NEXT flags last written), as the driver's next chain starts there.
pub struct PackedDriver {
    pub n: u16,
    /// The driver's next slot and wrap counter.
    pub slot: u16,
    pub wrap: bool,
    /// Whether the descriptor last written to each slot has NEXT (chain lengths).
    next: Vec<bool>,
}

impl PackedDriver {
    /// At the session's `base`, which for a packed session is the ring position (slot in
    /// bits 0-14, wrap counter in bit 15) of both the device's avail and used indexes.
    pub fn new(s: &Session) -> Self {
        let n = s.queue_size.max(1);
        PackedDriver {
            n,
            slot: (s.base & 0x7fff) % n,
            wrap: s.base & 0x8000 != 0,
            next: vec![false; usize::from(n)],
        }
    }

    /// The wrap counter the driver has when it reaches `slot`: this lap, or the next one for
    /// slots behind its position.
    fn lap(&self, slot: u16) -> bool {
        if slot >= self.slot {
            self.wrap
        } else {
            !self.wrap
        }
    }

    fn advance(&mut self, k: u16) {
        let s = u32::from(self.slot) + u32::from(k);
        let n = u32::from(self.n);
        self.slot = (s % n) as u16;
        if (s / n) % 2 == 1 {
            self.wrap = !self.wrap;
        }
    }

    fn write(off: u64, bytes: Vec<u8>) -> Step {
        Step::GuestWrite { mem: 0, off: off as u32, bytes }
    }
}

impl DriverRing for PackedDriver {
    fn size(&self) -> u16 {
        self.n
    }
    fn chain_start(&self, _hint: u16) -> u16 {
        self.slot
    }
    fn desc(&mut self, slot: u16, d: Desc) -> Step {
        let slot = slot % self.n;
        let marks = F_PACKED_AVAIL | F_PACKED_USED;
        let avail = if self.lap(slot) { F_PACKED_AVAIL } else { F_PACKED_USED };
        let flags = (d.flags & !marks) | (avail ^ (d.flags & marks));
        self.next[usize::from(slot)] = flags & F_NEXT != 0;
        let bytes = packed_bytes(Desc { flags, ..d });
        Self::write(DESC_OFF + 16 * u64::from(slot), bytes.to_vec())
    }
    fn table_entry(&self, d: Desc) -> [u8; 16] {
        packed_bytes(d)
    }
    fn publish(&mut self, head: u16) -> Vec<Step> {
        let mut len = 1;
        while len < self.n && self.next[usize::from((head % self.n + len - 1) % self.n)] {
            len += 1;
        }
        self.advance(len);
        Vec::new()
    }
    fn set_avail_idx(&mut self, idx: u16) -> Vec<Step> {
        self.slot = (idx & 0x7fff) % self.n;
        self.wrap = idx & 0x8000 != 0;
        Vec::new()
    }
    fn set_avail_flags(&self, flags: u16) -> Step {
        Self::write(AVAIL_OFF + 2, flags.to_le_bytes().to_vec())
    }
    fn set_used_event(&self, v: u16) -> Step {
        Self::write(AVAIL_OFF, v.to_le_bytes().to_vec())
    }
}
