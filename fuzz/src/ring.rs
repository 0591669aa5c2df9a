// SPDX-License-Identifier: GPL-2.0-or-later
//! The driver's side of a virtqueue in guest memory, as steps that write it: descriptors,
//! publishing heads, the avail index and flags, the used event. [`DriverRing`] is what a ring
//! layout provides; [`SplitDriver`] is the split layout (a packed one implements the same
//! trait, and the ring operations of the targets work on either).

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
    /// Writes descriptor `slot` of the ring's table.
    fn desc(&self, slot: u16, d: Desc) -> Step;
    /// Makes `head` available and advances the avail index.
    fn publish(&mut self, head: u16) -> Vec<Step>;
    fn set_avail_idx(&mut self, idx: u16) -> Step;
    fn set_avail_flags(&self, flags: u16) -> Step;
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
    fn desc(&self, slot: u16, d: Desc) -> Step {
        Self::write(DESC_OFF + 16 * u64::from(slot % self.n), d.bytes().to_vec())
    }
    fn publish(&mut self, head: u16) -> Vec<Step> {
        let slot = u64::from(self.avail_idx % self.n);
        let entry = Self::write(AVAIL_OFF + 4 + 2 * slot, head.to_le_bytes().to_vec());
        self.avail_idx = self.avail_idx.wrapping_add(1);
        vec![entry, self.set_avail_idx(self.avail_idx)]
    }
    fn set_avail_idx(&mut self, idx: u16) -> Step {
        self.avail_idx = idx;
        Self::write(AVAIL_OFF + 2, idx.to_le_bytes().to_vec())
    }
    fn set_avail_flags(&self, flags: u16) -> Step {
        Self::write(AVAIL_OFF, flags.to_le_bytes().to_vec())
    }
    fn set_used_event(&self, v: u16) -> Step {
        Self::write(AVAIL_OFF + 4 + 2 * u64::from(self.n), v.to_le_bytes().to_vec())
    }
}
