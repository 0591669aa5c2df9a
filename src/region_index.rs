//! A direct lookup of the region holding a guest address, for tables of many regions (memory
//! hotplug, virtio-mem: up to 509 slots), kept where it costs nothing: in the slots of the
//! device's 509-slot region array that no region uses.
//!
//! The guest range from the lowest region's start to the highest region's end is cut into
//! buckets of 2^`shift` bytes, no wider than the smallest distance between two regions'
//! starts, so that at most one region starts inside any bucket. Each bucket holds the index of
//! the last region starting at or before the bucket's start: an address is in that region or,
//! past it, in the next one, or in none. A lookup is a subtraction, a shift, one u16 load and
//! at most two range checks, where the binary search takes log2(n) dependent steps.
//!
//! Layout in the array of `VHOST_USER_MAX_RAM_SLOTS` slots with `n` regions: the header in the
//! last slot, the buckets (u16 each) from slot `n` on, up to the header. The index exists only
//! when it fits there (enough free slots, a range and spacing that need few enough buckets)
//! and the table has at least `MIN_REGIONS` regions; otherwise lookups search. It is rebuilt
//! by every change of the table (`memory::MemoryTableMut`, under the memory write lock) and
//! names the region count it was built for, so a stale one is never used. C code never reads
//! slots past `nregions` (the original leaves them stale too).

use std::mem::size_of;

use crate::abi::{VuDevRegion, VHOST_USER_MAX_RAM_SLOTS};

/// Below this many regions the binary search is as quick (two steps or fewer).
pub const MIN_REGIONS: usize = 4;

/// The slot holding the header.
const HEADER_SLOT: usize = VHOST_USER_MAX_RAM_SLOTS - 1;

/// How many u16 buckets one slot holds.
const BUCKETS_PER_SLOT: usize = size_of::<VuDevRegion>() / size_of::<u16>();

/// "vrgindex": a header slot that holds an index (any other content is none).
const MAGIC: u64 = 0x7672_6769_6e64_6578;

/// The index header, in the last slot (a `VuDevRegion`'s size and alignment).
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct IndexHeader {
    magic: u64,
    /// The guest address bucket 0 starts at (the lowest region's start).
    base: u64,
    /// The region count the index was built for.
    regions: u64,
    /// log2 of the bucket width.
    shift: u64,
    /// How many buckets follow slot `regions`.
    buckets: u64,
}

const _: () = assert!(size_of::<IndexHeader>() == size_of::<VuDevRegion>());
const _: () = assert!(std::mem::align_of::<IndexHeader>() <= std::mem::align_of::<VuDevRegion>());

/// How many buckets fit in the free slots of an array holding `n` regions.
fn capacity(n: usize) -> usize {
    HEADER_SLOT.saturating_sub(n) * BUCKETS_PER_SLOT
}

/// The header slot of a device's array, as an index header (for `MemoryTable`).
#[inline(always)]
pub fn header(slots: &[VuDevRegion; VHOST_USER_MAX_RAM_SLOTS]) -> &IndexHeader {
    // SAFETY: `IndexHeader` has the size and (no stricter) alignment of a `VuDevRegion` and
    // only integer fields, for which any bytes are a valid value.
    unsafe { &*(std::ptr::addr_of!(slots[HEADER_SLOT]).cast::<IndexHeader>()) }
}

/// The region of `regions` (the first `n` slots of a device's array whose header is `h`)
/// holding `gpa`: `Some(found)` from the index (`found` is `None` when no region holds it),
/// `None` when the array has no index for these regions (the caller searches).
#[inline(always)]
pub fn lookup<'a>(
    h: &'a IndexHeader,
    regions: &'a [VuDevRegion],
    gpa: u64,
) -> Option<Option<&'a VuDevRegion>> {
    let n = regions.len();
    // A full array has a region in the header slot: no index, whatever its fields hold.
    // Otherwise only `rebuild` writes the header, for `regions` regions and with its
    // buckets before the header.
    if n > HEADER_SLOT || h.magic != MAGIC || h.regions != n as u64 {
        return None;
    }
    // Addresses below the base wrap to a bucket past the last one (`rebuild` keeps the shift
    // below 64).
    let b = gpa.wrapping_sub(h.base) >> (h.shift & 63);
    if b >= h.buckets {
        return Some(None);
    }
    // SAFETY: `h` is the header slot of a device's array and `regions` its first `n` slots
    // (`MemoryTable::of_device` pairs them); the index was built for `n` regions, so its
    // `buckets` u16 values lie in slots n.. of the array, before the header (`rebuild`
    // checked that they fit).
    let i = usize::from(unsafe { regions.as_ptr().add(n).cast::<u16>().add(b as usize).read() });
    let holds = |r: &VuDevRegion| gpa.wrapping_sub(r.gpa) < r.size;
    match regions.get(i) {
        Some(r) if holds(r) => Some(Some(r)),
        _ => Some(regions.get(i + 1).filter(|r| holds(r))),
    }
}

/// Rebuilds the index of the first `n` slots of `slots` (sorted, non-overlapping, non-empty
/// regions, as `MemoryTableMut` keeps them), or leaves none where it does not fit.
pub fn rebuild(slots: &mut [VuDevRegion; VHOST_USER_MAX_RAM_SLOTS], n: usize) {
    if n > HEADER_SLOT {
        // The header slot holds a region.
        return;
    }
    slots[HEADER_SLOT] = VuDevRegion::default();
    if n < MIN_REGIONS {
        return;
    }
    let regions = &slots[..n];
    let base = regions[0].gpa;
    let last = &regions[n - 1];
    let Some(end) = last.gpa.checked_add(last.size) else { return };
    let Some(min_gap) = regions.windows(2).map(|w| w[1].gpa.wrapping_sub(w[0].gpa)).min() else {
        return;
    };
    if min_gap == 0 || end <= base {
        return;
    }
    let shift = 63 - min_gap.leading_zeros();
    let buckets = ((end - 1 - base) >> shift) + 1;
    if buckets > capacity(n) as u64 {
        return;
    }
    // Written in place, not built on the heap: the table's memory is the array's (a
    // temporary buffer would stay in malloc's per-thread cache, counted as in use).
    let (regions, free) = slots.split_at_mut(n);
    // SAFETY: `capacity(n)` u16 values fit in the free slots before the header (checked
    // above), which `free` (slots n..) begins; a `VuDevRegion` is plain integers, any bytes
    // are valid, and u16 needs no more alignment than it has.
    let table = unsafe {
        std::slice::from_raw_parts_mut(free.as_mut_ptr().cast::<u16>(), buckets as usize)
    };
    let mut i = 0usize;
    for (b, slot) in table.iter_mut().enumerate() {
        let start = base + ((b as u64) << shift);
        while i + 1 < n && regions[i + 1].gpa <= start {
            i += 1;
        }
        *slot = i as u16;
    }
    let h = IndexHeader { magic: MAGIC, base, regions: n as u64, shift: u64::from(shift), buckets };
    // SAFETY: as in `header`.
    unsafe { std::ptr::addr_of_mut!(slots[HEADER_SLOT]).cast::<IndexHeader>().write(h) };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(layout: &[(u64, u64)]) -> Box<[VuDevRegion; VHOST_USER_MAX_RAM_SLOTS]> {
        let mut a = Box::new([VuDevRegion::default(); VHOST_USER_MAX_RAM_SLOTS]);
        for (slot, &(gpa, size)) in a.iter_mut().zip(layout) {
            *slot = VuDevRegion { gpa, size, ..Default::default() };
        }
        rebuild(&mut a, layout.len());
        a
    }

    fn scan(regions: &[VuDevRegion], gpa: u64) -> Option<u64> {
        regions.iter().find(|r| gpa.wrapping_sub(r.gpa) < r.size).map(|r| r.gpa)
    }

    /// Every probe around every region's edges agrees with a linear scan.
    fn agrees(layout: &[(u64, u64)]) -> bool {
        let a = array(layout);
        let regions = &a[..layout.len()];
        let h = header(&a);
        let mut probes = vec![0, 1, u64::MAX, u64::MAX / 2];
        for &(gpa, size) in layout {
            for p in [gpa, gpa + size - 1, gpa + size, gpa.wrapping_sub(1), gpa + size / 2] {
                probes.push(p);
            }
        }
        let indexed = lookup(h, regions, 0).is_some();
        for p in probes {
            let got = lookup(h, regions, p).map(|r| r.map(|r| r.gpa));
            if indexed {
                assert_eq!(got, Some(scan(regions, p)), "probe {p:#x} in {layout:x?}");
            }
        }
        indexed
    }

    #[test]
    fn lookups_agree_with_a_scan() {
        // Equal contiguous regions, as hotplugged DIMMs.
        let dimms: Vec<(u64, u64)> = (0..256).map(|i| (i << 21, 1 << 21)).collect();
        assert!(agrees(&dimms), "256 contiguous regions are indexed");
        // Gaps and uneven sizes, some buckets with a region starting in their middle.
        let uneven = [
            (0, 0xa0000),
            (0x100000, 0x300000),
            (0x400000, 0x1000),
            (0x403000, 0x5000),
            (0x800000, 0x100000),
        ];
        assert!(agrees(&uneven), "an uneven layout that fits is indexed");
        let spread: Vec<(u64, u64)> =
            (0..8).map(|i| (i * 0x4000_0000 + 0x1000, 0x1000_0000)).collect();
        assert!(agrees(&spread), "8 spread regions are indexed");
        // A layout that needs too many buckets: no index, the caller searches.
        let sparse = [(0, 0x1000), (0x1000, 0x1000), (0x2000, 0x1000), (1 << 60, 0x1000)];
        assert!(!agrees(&sparse));
        // Too few regions for an index.
        assert!(!agrees(&[(0, 0x1000), (0x10000, 0x1000)]));
    }

    #[test]
    fn a_stale_index_is_never_used() {
        let layout: Vec<(u64, u64)> = (0..8).map(|i| (i << 20, 1 << 20)).collect();
        let a = array(&layout);
        // The same array read with another region count (a change not yet rebuilt).
        assert!(lookup(header(&a), &a[..7], 0x1000).is_none());
        // A full array: the header slot is a region, so there is no index.
        let full: Vec<(u64, u64)> =
            (0..VHOST_USER_MAX_RAM_SLOTS as u64).map(|i| (i << 12, 1 << 12)).collect();
        let a = array(&full);
        assert!(lookup(header(&a), &a[..], 0x1000).is_none());
    }
}
