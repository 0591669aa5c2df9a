//! Access to a split ring in guest memory.
//!
//! The guest writes these bytes concurrently, so every field is read once, with volatile
//! loads, into a local value; nothing read from here is trusted without a bounds check.

use std::sync::atomic::{fence, Ordering};

use crate::abi::{vring_avail, vring_desc, vring_used, vring_used_elem, VuVirtq};
use crate::memory::MemoryTable;

/// Bytes of each ring part for a queue of `num` entries (with the event-index words).
pub fn desc_table_size(num: u64) -> u64 {
    16 * num
}
pub fn avail_ring_size(num: u64) -> u64 {
    4 + 2 * num + 2
}
pub fn used_ring_size(num: u64) -> u64 {
    4 + 8 * num + 2
}

/// A validated view of one split ring. `num` entries are accessible behind each pointer.
#[derive(Clone, Copy)]
pub struct SplitRing {
    desc: *mut vring_desc,
    avail: *mut vring_avail,
    used: *mut vring_used,
    num: u16,
}

impl SplitRing {
    /// The view of `vq`'s ring for code that holds the memory table: a `MemoryTable` is only
    /// reachable through a memory guard, so holding one proves the lock that [`SplitRing::of`]
    /// asks of its caller.
    #[inline]
    pub fn under(vq: &VuVirtq, _table: &MemoryTable) -> Option<SplitRing> {
        // SAFETY: the caller holds a memory guard (`_table` exists only inside one); ring
        // pointers are mapped only after they were checked (see `of`).
        unsafe { SplitRing::of(vq) }
    }

    /// The ring of `vq`, or `None` when it is not mapped.
    ///
    /// # Safety
    /// The library maps `vq.vring` pointers only after checking that each part, sized for
    /// `vq.vring.num`, lies in one mapped region, and clears them when that region goes away.
    /// The caller holds the memory table's read lock so the mapping outlives this view.
    #[inline]
    pub unsafe fn of(vq: &VuVirtq) -> Option<SplitRing> {
        let r = &vq.vring;
        // `desc` is the mapped flag: set last, cleared first (`queue::unmap_ring`).
        if r.desc.is_null() {
            return None;
        }
        // Slots are taken modulo a power of two (`slot`), which stays below any num >= 1; the
        // size itself was checked when the ring was mapped.
        let num = u16::try_from(r.num).ok().filter(|n| *n != 0)?;
        Some(SplitRing { desc: r.desc, avail: r.avail, used: r.used, num })
    }

    /// The ring of `vq` without the checks of `of`, for a second look in one call.
    ///
    /// # Safety
    /// `SplitRing::of(vq)` (or `under`) returned the ring since the caller entered the memory
    /// lock, which it still holds (ring pointers and `num` change only under the write lock).
    #[inline(always)]
    pub unsafe fn checked_earlier(vq: &VuVirtq) -> SplitRing {
        let r = &vq.vring;
        SplitRing { desc: r.desc, avail: r.avail, used: r.used, num: r.num as u16 }
    }

    #[inline]
    pub fn num(&self) -> u16 {
        self.num
    }

    #[inline]
    pub fn desc_table(&self) -> *const vring_desc {
        self.desc
    }

    /// Descriptor `i` of the ring's table, if `i < num`.
    #[inline(always)]
    pub fn desc(&self, i: u16) -> Option<vring_desc> {
        // SAFETY: the table holds `num` descriptors (see `of`); `read_desc` checks the index.
        unsafe { read_desc(self.desc, usize::from(self.num), usize::from(i)) }
    }

    #[inline]
    pub fn avail_idx(&self) -> u16 {
        // SAFETY: `avail` points to a mapped avail ring (see `of`); u16 loads are atomic on
        // every supported target, and volatile keeps the compiler from re-reading it.
        u16::from_le(unsafe { std::ptr::addr_of!((*self.avail).idx).read_volatile() })
    }

    #[inline]
    pub fn avail_flags(&self) -> u16 {
        // SAFETY: as in `avail_idx`.
        u16::from_le(unsafe { std::ptr::addr_of!((*self.avail).flags).read_volatile() })
    }

    /// `i % num` (num is a power of two: checked when the ring was mapped; below num anyway).
    #[inline]
    fn slot(&self, i: u16) -> usize {
        usize::from(i & (self.num - 1))
    }

    /// Entry `i % num` of the avail ring.
    #[inline]
    pub fn avail_entry(&self, i: u16) -> u16 {
        let slot = self.slot(i);
        // SAFETY: slot < num and the ring holds num entries after its 4-byte header.
        u16::from_le(unsafe {
            (std::ptr::addr_of!((*self.avail).ring) as *const u16).add(slot).read_volatile()
        })
    }

    /// The driver's `used_event` (EVENT_IDX), stored after the avail ring's entries.
    #[inline]
    pub fn used_event(&self) -> u16 {
        // SAFETY: the avail ring was validated with room for num + 1 entries.
        u16::from_le(unsafe {
            (std::ptr::addr_of!((*self.avail).ring) as *const u16)
                .add(usize::from(self.num))
                .read_volatile()
        })
    }

    /// Our `avail_event` (EVENT_IDX) as the used ring holds it now.
    #[inline]
    pub fn avail_event(&self) -> u16 {
        // SAFETY: as in `set_avail_event`.
        u16::from_le(unsafe {
            let p = (std::ptr::addr_of!((*self.used).ring) as *const vring_used_elem)
                .add(usize::from(self.num));
            (p as *const u16).read_volatile()
        })
    }

    /// Sets our `avail_event` (EVENT_IDX), stored after the used ring's entries.
    #[inline]
    pub fn set_avail_event(&self, val: u16) {
        // SAFETY: the used ring was validated with room for its entries and the event word.
        unsafe {
            let p = (std::ptr::addr_of_mut!((*self.used).ring) as *mut vring_used_elem)
                .add(usize::from(self.num));
            (p as *mut u16).write_volatile(val.to_le());
        }
    }

    #[inline]
    pub fn used_flags(&self) -> u16 {
        // SAFETY: `used` points to a mapped used ring.
        u16::from_le(unsafe { std::ptr::addr_of!((*self.used).flags).read_volatile() })
    }

    #[inline]
    pub fn set_used_flags(&self, flags: u16) {
        // SAFETY: `used` points to a mapped used ring.
        unsafe { std::ptr::addr_of_mut!((*self.used).flags).write_volatile(flags.to_le()) }
    }

    #[inline]
    pub fn used_idx(&self) -> u16 {
        // SAFETY: `used` points to a mapped used ring.
        u16::from_le(unsafe { std::ptr::addr_of!((*self.used).idx).read_volatile() })
    }

    /// Publishes a new used index after the entries it covers (release ordering).
    #[inline]
    pub fn publish_used_idx(&self, idx: u16) {
        fence(Ordering::Release);
        // SAFETY: `used` points to a mapped used ring.
        unsafe { std::ptr::addr_of_mut!((*self.used).idx).write_volatile(idx.to_le()) }
    }

    /// Writes used entry `slot % num`.
    #[inline]
    pub fn write_used(&self, slot: u16, id: u32, len: u32) {
        let slot = self.slot(slot);
        // SAFETY: slot < num and the used ring holds num entries.
        unsafe {
            let p = (std::ptr::addr_of_mut!((*self.used).ring) as *mut vring_used_elem).add(slot);
            p.write_volatile(vring_used_elem { id: id.to_le(), len: len.to_le() });
        }
    }

    /// Where the used ring is mapped (for dirty logging by host address).
    pub fn used_host(&self) -> u64 {
        self.used as u64
    }

    /// Byte offset of used entry `slot % num` inside the used ring (for dirty logging).
    pub fn used_entry_offset(&self, slot: u16) -> u64 {
        4 + 8 * self.slot(slot) as u64
    }
}

/// Reads descriptor `i` of a table of `len` descriptors at `table`.
///
/// # Safety
/// `table` must point to `len` readable descriptors (a validated ring's table or a mapped or
/// copied indirect table) for the duration of the call.
#[inline]
pub unsafe fn read_desc(table: *const vring_desc, len: usize, i: usize) -> Option<vring_desc> {
    if i >= len {
        return None;
    }
    // SAFETY: i < len, and the caller promises `len` readable descriptors at `table`.
    let d = unsafe { table.add(i).read_volatile() };
    Some(vring_desc {
        addr: u64::from_le(d.addr),
        len: u32::from_le(d.len),
        flags: u16::from_le(d.flags),
        next: u16::from_le(d.next),
    })
}
