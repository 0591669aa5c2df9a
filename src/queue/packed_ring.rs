//! Access to a packed ring in guest memory (virtio 1.1, `VIRTIO_F_RING_PACKED`): the
//! descriptor ring, the driver's and the device's event suppression areas.
//!
//! As for the split ring, the guest writes these bytes concurrently: every field is read once,
//! with volatile loads, and nothing read here is trusted without a check.
//!
//! Ring positions are kept in the vhost-user `VRING_BASE` encoding: bits 0–14 the slot, bit 15
//! the wrap counter (`Pos`). `VuVirtq.last_avail_idx` and `VuVirtq.used_idx` hold them so.

use std::sync::atomic::{fence, Ordering};

use crate::abi::VuVirtq;

pub const VRING_PACKED_DESC_F_AVAIL: u16 = 1 << 7;
pub const VRING_PACKED_DESC_F_USED: u16 = 1 << 15;

pub const VRING_PACKED_EVENT_FLAG_ENABLE: u16 = 0;
pub const VRING_PACKED_EVENT_FLAG_DISABLE: u16 = 1;
pub const VRING_PACKED_EVENT_FLAG_DESC: u16 = 2;

/// Bytes of a packed ring's parts for a queue of `num` entries.
pub fn desc_ring_size(num: u64) -> u64 {
    16 * num
}
pub const EVENT_AREA_SIZE: u64 = 4;

/// A packed descriptor `{le64 addr; le32 len; le16 id; le16 flags}` (host byte order here).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PackedDesc {
    pub addr: u64,
    pub len: u32,
    pub id: u16,
    pub flags: u16,
}

impl PackedDesc {
    #[inline]
    pub fn from_le(d: PackedDesc) -> PackedDesc {
        PackedDesc {
            addr: u64::from_le(d.addr),
            len: u32::from_le(d.len),
            id: u16::from_le(d.id),
            flags: u16::from_le(d.flags),
        }
    }
}

/// An event suppression structure `{le16 off_wrap; le16 flags}`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct EventSuppress {
    pub off_wrap: u16,
    pub flags: u16,
}

/// A ring position: slot in bits 0–14, wrap counter in bit 15.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pos(pub u16);

impl Pos {
    pub const WRAP: u16 = 1 << 15;

    /// The position of a reset ring: slot 0, wrap counter 1.
    pub const START: Pos = Pos(Pos::WRAP);

    #[inline]
    pub fn slot(self) -> u16 {
        self.0 & !Pos::WRAP
    }

    #[inline]
    pub fn wrap(self) -> bool {
        self.0 & Pos::WRAP != 0
    }

    /// `n <= num` slots further on a ring of `num` slots; the wrap counter flips on wrapping.
    #[inline]
    pub fn advance(self, n: u16, num: u16) -> Pos {
        let slot = self.slot() + n;
        if slot >= num {
            Pos((self.0 & Pos::WRAP ^ Pos::WRAP) | (slot - num))
        } else {
            Pos((self.0 & Pos::WRAP) | slot)
        }
    }

    /// How many slots lie from `self` to `to` on a ring of `num` slots, counted over the two
    /// laps a slot and wrap counter tell apart (`0..2 * num`).
    ///
    /// For positions whose slots lie on the ring (`PackedRing::holds`): each is then a count
    /// in `0..2 * num`, their difference in `-2 * num..2 * num`, and one conditional add
    /// takes it modulo two laps (no division). Others give some value, never a fault.
    ///
    /// (The tests' reference for `lap_or_more_past` and the notify rule, which need no
    /// distances.)
    #[cfg(test)]
    pub fn distance_to(self, to: Pos, num: u16) -> u32 {
        let num = i32::from(num);
        // A ring position as a count modulo two laps: the reset position (wrap 1) is 0.
        let lap = |p: Pos| i32::from(p.slot()) + if p.wrap() { 0 } else { num };
        let d = lap(to) - lap(self);
        (if d < 0 { d + 2 * num } else { d }) as u32
    }
}

impl Pos {
    /// Whether `self` lies a lap or more past `from` (`from.distance_to(self, num) >= num`),
    /// from the wrap counters and slots alone: with equal wrap counters a position whose slot
    /// is lower is a lap and more ahead, with different ones one whose slot is not lower is.
    /// Exact for positions whose slots lie on the ring; others give some answer, never a fault.
    #[inline(always)]
    pub fn lap_or_more_past(self, from: Pos) -> bool {
        let same_lap = (self.0 ^ from.0) & Pos::WRAP == 0;
        same_lap != (self.slot() >= from.slot())
    }
}

/// The flags that mark a descriptor available when the driver's wrap counter is `wrap`.
#[inline]
pub fn avail_flags(wrap: bool) -> u16 {
    if wrap {
        VRING_PACKED_DESC_F_AVAIL
    } else {
        VRING_PACKED_DESC_F_USED
    }
}

/// Whether descriptor flags `flags` say "available" for the wrap counter `wrap`.
#[inline]
pub fn is_avail(flags: u16, wrap: bool) -> bool {
    flags & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED) == avail_flags(wrap)
}

/// The AVAIL/USED flags of a used descriptor written with the device wrap counter `wrap`.
#[inline]
pub fn used_flags(wrap: bool) -> u16 {
    if wrap {
        VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED
    } else {
        0
    }
}

/// A validated view of one packed ring: `num` descriptors behind `desc`, one event suppression
/// structure behind each of `driver` and `device`.
#[derive(Clone, Copy)]
pub struct PackedRing {
    desc: *mut PackedDesc,
    driver: *const EventSuppress,
    device: *mut EventSuppress,
    num: u16,
}

impl PackedRing {
    /// The view of `vq`'s ring for code that holds the memory table (which proves the lock,
    /// as for `SplitRing::under`). The caller knows the ring was mapped packed.
    #[inline(always)]
    pub fn under(vq: &VuVirtq, _table: &crate::memory::MemoryTable) -> Option<PackedRing> {
        // SAFETY: the caller holds a memory guard (`_table` exists only inside one); ring
        // pointers are mapped only after they were checked (see `of`).
        unsafe { PackedRing::of(vq) }
    }

    /// The ring of `vq`, or `None` when it is not mapped.
    ///
    /// # Safety
    /// As `SplitRing::of`: `vq.vring` pointers were set by `queue::map_ring` for a packed ring
    /// of `vq.vring.num` entries (`desc` 16-byte aligned, the event areas 4-byte aligned, each
    /// wholly in one mapped region), and the caller holds the memory read lock.
    #[inline(always)]
    pub unsafe fn of(vq: &VuVirtq) -> Option<PackedRing> {
        let r = &vq.vring;
        // `desc` is the mapped flag: set last, cleared first (`queue::unmap_ring`).
        if r.desc.is_null() {
            return None;
        }
        // 1..=2^15 (`map_ring` mapped only such sizes): one subtraction and one comparison.
        if r.num.wrapping_sub(1) >= 1 << 15 {
            return None;
        }
        let num = r.num as u16;
        Some(PackedRing { desc: r.desc.cast(), driver: r.avail.cast(), device: r.used.cast(), num })
    }

    #[inline]
    pub fn num(&self) -> u16 {
        self.num
    }

    /// Whether `pos` names a slot of this ring.
    #[inline]
    pub fn holds(&self, pos: Pos) -> bool {
        pos.slot() < self.num
    }

    /// The flags of the descriptor at `pos` (`None` if the slot is out of range).
    #[inline]
    pub fn flags(&self, pos: Pos) -> Option<u16> {
        if !self.holds(pos) {
            return None;
        }
        // SAFETY: slot < num descriptors behind `desc` (see `of`); an aligned u16 load.
        Some(u16::from_le(unsafe {
            std::ptr::addr_of!((*self.desc.add(usize::from(pos.slot()))).flags).read_volatile()
        }))
    }

    /// The whole descriptor at `pos`.
    #[inline]
    pub fn read(&self, pos: Pos) -> Option<PackedDesc> {
        self.read_slot(pos.slot())
    }

    /// The whole descriptor in ring slot `slot` (`None` past the ring).
    #[inline(always)]
    pub fn read_slot(&self, slot: u16) -> Option<PackedDesc> {
        if slot >= self.num {
            return None;
        }
        // SAFETY: slot < num descriptors behind `desc` (see `of`).
        Some(PackedDesc::from_le(unsafe { self.desc.add(usize::from(slot)).read_volatile() }))
    }

    /// Writes the id and length of a used descriptor at `pos`, not yet its flags.
    #[inline]
    pub fn write_used_body(&self, pos: Pos, id: u16, len: u32) {
        if !self.holds(pos) {
            return;
        }
        // SAFETY: slot < num; the device owns this slot until it publishes the flags.
        unsafe {
            let d = self.desc.add(usize::from(pos.slot()));
            std::ptr::addr_of_mut!((*d).id).write_volatile(id.to_le());
            std::ptr::addr_of_mut!((*d).len).write_volatile(len.to_le());
        }
    }

    /// Publishes the used descriptor at `pos` (release: after its id and length).
    #[inline]
    pub fn publish_used_flags(&self, pos: Pos, flags: u16) {
        if !self.holds(pos) {
            return;
        }
        fence(Ordering::Release);
        // SAFETY: slot < num.
        unsafe {
            std::ptr::addr_of_mut!((*self.desc.add(usize::from(pos.slot()))).flags)
                .write_volatile(flags.to_le())
        }
    }

    /// The driver's event suppression structure (read by the device).
    #[inline]
    pub fn driver_event(&self) -> EventSuppress {
        // SAFETY: `driver` points to a mapped, 4-byte aligned event area (see `of`).
        let e = unsafe { self.driver.read_volatile() };
        EventSuppress { off_wrap: u16::from_le(e.off_wrap), flags: u16::from_le(e.flags) }
    }

    /// Sets the device's event suppression flags (ENABLE, DISABLE or DESC).
    #[inline]
    pub fn set_device_flags(&self, flags: u16) {
        // SAFETY: `device` points to a mapped, 4-byte aligned event area (see `of`).
        unsafe { std::ptr::addr_of_mut!((*self.device).flags).write_volatile(flags.to_le()) }
    }

    /// The position the device's event area asks for a kick at, as it holds it now.
    #[inline]
    pub fn device_event_offset(&self) -> u16 {
        // SAFETY: as in `set_device_flags`.
        u16::from_le(unsafe { std::ptr::addr_of!((*self.device).off_wrap).read_volatile() })
    }

    /// Sets the position the device wants a kick at (with DESC flags and EVENT_IDX).
    #[inline]
    pub fn set_device_event_offset(&self, off_wrap: u16) {
        // SAFETY: as in `set_device_flags`.
        unsafe { std::ptr::addr_of_mut!((*self.device).off_wrap).write_volatile(off_wrap.to_le()) }
    }

    /// Byte offset of the descriptor at `pos` in the ring (for dirty logging).
    pub fn desc_offset(&self, pos: Pos) -> u64 {
        16 * u64::from(pos.slot())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_wrap_and_flip_the_counter() {
        let p = Pos::START;
        assert_eq!((p.slot(), p.wrap()), (0, true));
        let p = p.advance(3, 4);
        assert_eq!((p.slot(), p.wrap()), (3, true));
        let p = p.advance(2, 4);
        assert_eq!((p.slot(), p.wrap()), (1, false));
        assert_eq!(Pos::START.advance(4, 4), Pos(0));
        assert_eq!(Pos(0).advance(4, 4), Pos::START);
    }

    #[test]
    fn distances_count_across_the_wrap() {
        let num = 16;
        let p = Pos::START.advance(12, num);
        assert_eq!(p.distance_to(p, num), 0);
        assert_eq!(p.distance_to(p.advance(3, num), num), 3);
        // Across the end of the ring: the wrap counter flipped.
        assert_eq!(p.distance_to(p.advance(6, num), num), 6);
        assert_eq!(p.distance_to(p.advance(16, num), num), 16);
        // Behind by 2 is ahead by two laps minus 2.
        assert_eq!(p.advance(2, num).distance_to(p, num), 30);
    }

    #[test]
    fn a_lap_past_agrees_with_the_distance() {
        for num in [1u16, 2, 3, 5, 8, 16] {
            let on_ring = || (0..num).flat_map(|s| [Pos(s), Pos(s | Pos::WRAP)]);
            for from in on_ring() {
                for to in on_ring() {
                    let want = from.distance_to(to, num) >= u32::from(num);
                    assert_eq!(to.lap_or_more_past(from), want, "{from:?} -> {to:?} of {num}");
                }
            }
        }
    }

    #[test]
    fn availability_follows_the_wrap_counter() {
        assert!(is_avail(VRING_PACKED_DESC_F_AVAIL, true));
        assert!(!is_avail(VRING_PACKED_DESC_F_AVAIL, false));
        assert!(is_avail(VRING_PACKED_DESC_F_USED, false));
        assert!(!is_avail(used_flags(true), true));
        assert!(!is_avail(used_flags(false), false));
        assert!(!is_avail(0, true));
    }
}
