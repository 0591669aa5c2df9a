//! Guest memory regions: the C-visible `VuDev.regions` array itself is the table, kept sorted by
//! guest address and free of overlaps, and translated in O(log n), or through an index kept in
//! the array's unused slots (`region_index`) — no private copy, so a device costs what the
//! original's does.
//!
//! Every function here runs under the device's memory lock (see `device::MemoryLock`): readers
//! translate, the control plane adds and removes regions.

use std::os::fd::BorrowedFd;

use crate::abi::{VhostUserMemoryRegion, VuDevRegion, VHOST_USER_MAX_RAM_SLOTS};
use crate::iotlb::{Iotlb, Lookup, PERM_RO};
use crate::mmap::{hugepage_size, mappable_size, page_size, Mapping};
use crate::queue::Fault;
use crate::region_index;

/// Why a region could not be added.
#[derive(Debug)]
pub enum AddError {
    Overlap,
    Full,
    Invalid(&'static str),
    Mmap(std::io::Error),
}

impl std::fmt::Display for AddError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddError::Overlap => write!(f, "regions with overlapping guest physical addresses"),
            AddError::Full => write!(f, "no free ram slots available"),
            AddError::Invalid(why) => write!(f, "invalid memory region: {why}"),
            AddError::Mmap(e) => write!(f, "region mmap error: {e}"),
        }
    }
}

fn gpa_end(r: &VuDevRegion) -> u64 {
    r.gpa + r.size
}

/// Where region `r` starts in our address space.
fn host_base(r: &VuDevRegion) -> *mut u8 {
    (r.mmap_addr + r.mmap_offset) as *mut u8
}

/// The host address of `[gpa, gpa+len)` if the range lies wholly in region `r`.
fn host_range(r: &VuDevRegion, gpa: u64, len: u64) -> Option<*mut u8> {
    let off = gpa.checked_sub(r.gpa)?;
    let end = off.checked_add(len)?;
    (end <= r.size).then(|| host_base(r).wrapping_add(off as usize))
}

/// The guest range of one region and how to reach it (`translate_dma`'s cache): `size` bytes
/// from `start` in guest physical addresses, host address = gpa + `to_host` (wrapping). The
/// default is empty (matches no address). A start and a size, not two ends: whether an address
/// is inside is one subtraction and one comparison.
#[derive(Clone, Copy, Default)]
pub struct RegionHint {
    start: u64,
    size: u64,
    to_host: u64,
}

impl RegionHint {
    /// Whether `gpa` lies in the hint's region (never, for the empty hint).
    #[inline(always)]
    fn holds(&self, gpa: u64) -> bool {
        gpa.wrapping_sub(self.start) < self.size
    }

    /// Where `gpa` (which the region holds) is in ours, and how many of `len` bytes follow it
    /// there.
    #[inline(always)]
    fn host(&self, gpa: u64, len: u64) -> (*mut u8, u64) {
        let left = self.size - (gpa - self.start);
        (gpa.wrapping_add(self.to_host) as *mut u8, len.min(left))
    }

    /// Where `[gpa, gpa+len)` is in ours if the region holds all of it.
    #[inline(always)]
    pub fn whole(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        let off = gpa.wrapping_sub(self.start);
        (off < self.size && len <= self.size - off)
            .then_some(gpa.wrapping_add(self.to_host) as *mut u8)
    }

    #[inline]
    fn of(r: &VuDevRegion) -> RegionHint {
        RegionHint {
            start: r.gpa,
            size: r.size,
            to_host: (host_base(r) as u64).wrapping_sub(r.gpa),
        }
    }
}

/// Read access to the regions (sorted by `gpa`, non-overlapping, each mapped for
/// `mmap_offset + size` bytes from `mmap_addr`: `add` keeps it so).
///
/// With `VIRTIO_F_IOMMU_PLATFORM` acked the table also carries the device IOTLB, and the
/// `*_dma` translations (what the queues use for guest addresses) take the guest's addresses
/// as IOVAs: IOVA → frontend user address (the IOTLB entry, its permission checked) → ours
/// (the regions). Without it they are guest physical addresses, one branch away.
///
/// `regions` always begins a device's array of `VHOST_USER_MAX_RAM_SLOTS` slots (`of_device`
/// is the only constructor): the slots past the regions hold their index (`region_index`).
#[derive(Clone, Copy)]
pub struct MemoryTable<'a> {
    regions: &'a [VuDevRegion],
    iotlb: Option<&'a Iotlb>,
}

impl<'a> MemoryTable<'a> {
    /// The table of the first `n` (at most 509) regions of a device's array.
    #[inline(always)]
    pub fn of_device(
        slots: &'a [VuDevRegion; VHOST_USER_MAX_RAM_SLOTS],
        n: usize,
    ) -> MemoryTable<'a> {
        MemoryTable { regions: &slots[..n.min(VHOST_USER_MAX_RAM_SLOTS)], iotlb: None }
    }

    /// The whole array the regions begin.
    #[inline(always)]
    fn slots(&self) -> &'a [VuDevRegion; VHOST_USER_MAX_RAM_SLOTS] {
        // SAFETY: `regions` begins a device's array of that many slots (see the type), which
        // lives as long as the regions borrowed from it.
        unsafe { &*self.regions.as_ptr().cast::<[VuDevRegion; VHOST_USER_MAX_RAM_SLOTS]>() }
    }

    /// The table for a device whose guest addresses are IOVAs translated by `iotlb`.
    #[inline]
    pub fn with_iotlb(self, iotlb: Option<&'a Iotlb>) -> MemoryTable<'a> {
        MemoryTable { iotlb, ..self }
    }

    /// The device IOTLB, when guest addresses are IOVAs.
    #[inline]
    pub fn iotlb(&self) -> Option<&'a Iotlb> {
        self.iotlb
    }

    /// Translates the guest address `addr` of an access that needs `need` (`iotlb::PERM_*`,
    /// 0 for any) to a host pointer, with the bytes (at most `len` > 0) contiguous there.
    /// Guest physical (through the hint, else the region search) or, with the IOTLB, an IOVA.
    ///
    /// The hit path is the hint's bounds check alone: a hint holds a region only on a table
    /// without the IOTLB (`first_hint` and the miss path never fill one otherwise), so with
    /// the IOTLB every address takes the miss path, which translates it as an IOVA.
    #[inline(always)]
    pub fn translate_dma(
        &self,
        addr: u64,
        len: u64,
        need: u8,
        hint: &mut RegionHint,
    ) -> Result<(*mut u8, u64), Fault> {
        if len != 0 && hint.holds(addr) {
            return Ok(hint.host(addr, len));
        }
        self.translate_dma_miss(addr, len, need, hint)
    }

    /// `translate_dma` for an address outside the hint: an IOVA with the IOTLB, else the
    /// region search, whose region becomes the hint.
    #[inline]
    fn translate_dma_miss(
        &self,
        addr: u64,
        len: u64,
        need: u8,
        hint: &mut RegionHint,
    ) -> Result<(*mut u8, u64), Fault> {
        match self.iotlb {
            None if len != 0 => {
                *hint = self.hint_for(addr).ok_or(Fault::BadAddress)?;
                Ok(hint.host(addr, len))
            }
            None => Err(Fault::BadAddress),
            Some(iotlb) => self.translate_iova(iotlb, addr, len, need),
        }
    }

    /// IOVA → frontend user address → ours, for up to `len` bytes.
    #[cold]
    #[inline(never)]
    fn translate_iova(
        &self,
        iotlb: &Iotlb,
        iova: u64,
        len: u64,
        need: u8,
    ) -> Result<(*mut u8, u64), Fault> {
        if len == 0 {
            return Err(Fault::BadAddress);
        }
        // A miss asks for what the access needs (read-only for "any").
        let perm = if need == 0 { PERM_RO } else { need };
        match iotlb.lookup(iova, len, need) {
            Lookup::Hit { uaddr, len } => self.qva_translate(uaddr, len).ok_or(Fault::BadAddress),
            Lookup::Miss => Err(Fault::IotlbMiss { iova, perm }),
            Lookup::Denied => Err(Fault::IotlbDenied { iova, perm }),
        }
    }

    /// Translates `[addr, addr+len)` (guest physical, or an IOVA with the IOTLB) to one
    /// contiguous host range: IOTLB entries next to each other whose memory is next to each
    /// other in ours too count as one. For rings and in-place indirect tables.
    pub fn translate_contiguous_dma(
        &self,
        addr: u64,
        len: u64,
        need: u8,
    ) -> Result<*mut u8, Fault> {
        let Some(iotlb) = self.iotlb else {
            return self.translate_exact(addr, len).ok_or(Fault::BadAddress);
        };
        let (start, mut done) = self.translate_iova(iotlb, addr, len, need)?;
        while done < len {
            let next = addr.checked_add(done).ok_or(Fault::BadAddress)?;
            let (p, n) = self.translate_iova(iotlb, next, len - done, need)?;
            if p != start.wrapping_add(done as usize) {
                return Err(Fault::BadAddress);
            }
            done += n;
        }
        Ok(start)
    }

    /// Translates a ring part's address from SET_VRING_ADDR: a frontend user address, or an
    /// IOVA with the IOTLB (the part must be contiguous and allow `need`), aligned to `align`
    /// as the virtio spec requires. `Fault::Remap` for one outside guest memory or misaligned.
    pub fn ring_part(&self, addr: u64, len: u64, align: usize, need: u8) -> Result<*mut u8, Fault> {
        let p = match self.iotlb {
            None => self.qva_to_va(addr, len).ok_or(Fault::Remap)?,
            Some(_) => self.translate_contiguous_dma(addr, len, need)?,
        };
        if (p as usize).is_multiple_of(align) {
            Ok(p)
        } else {
            Err(Fault::Remap)
        }
    }

    /// Translates frontend user address `qva` to ours, with the bytes (at most `len`)
    /// contiguous in its region.
    #[inline]
    pub fn qva_translate(&self, qva: u64, len: u64) -> Option<(*mut u8, u64)> {
        self.regions.iter().find_map(|r| {
            let off = qva.checked_sub(r.qva)?;
            (off < r.size).then(|| (host_base(r).wrapping_add(off as usize), len.min(r.size - off)))
        })
    }

    /// Whether the frontend user range `[qva, qva+len)` lies wholly in guest memory (in
    /// one region or in several that are adjacent in the frontend's address space).
    pub fn qva_range_mapped(&self, qva: u64, len: u64) -> bool {
        let (mut at, mut left) = (qva, len);
        while left > 0 {
            let Some((_, n)) = self.qva_translate(at, left) else { return false };
            left -= n;
            let Some(next) = at.checked_add(n) else { return left == 0 };
            at = next;
        }
        true
    }

    /// The guest physical address of our host range `[host, host+len)` (a buffer or ring
    /// part the device wrote), for the dirty log, which is indexed by guest physical address
    /// whatever addresses the guest uses.
    pub fn host_to_gpa(&self, host: u64, len: u64) -> Option<u64> {
        self.regions.iter().find_map(|r| {
            let off = host.checked_sub(host_base(r) as u64)?;
            (off.checked_add(len)? <= r.size).then(|| r.gpa + off)
        })
    }

    pub fn regions(&self) -> &'a [VuDevRegion] {
        self.regions
    }

    /// The region holding `gpa`: the last region starting at or below it, if that one reaches
    /// it (the regions are sorted and do not overlap). A binary search whose step is a
    /// conditional move, not a branch: guest buffers land in regions the predictor cannot
    /// guess, and each step is one load and one compare (the start alone, not start + size).
    #[inline]
    pub fn find(&self, gpa: u64) -> Option<&'a VuDevRegion> {
        let index = region_index::header(self.slots());
        if let Some(found) = region_index::lookup(index, self.regions, gpa) {
            return found;
        }
        // The answer, if any, is in `window`; each step keeps the half (of the same length:
        // they overlap by one when the length is odd) on the side of `gpa`. Slices of a
        // window longer than one, so no bounds check and no panic path (which would make
        // every caller unwind-aware).
        let mut window = self.regions;
        while window.len() > 1 {
            let keep = window.len() - window.len() / 2;
            let (lower, upper) = (&window[..keep], &window[window.len() - keep..]);
            window = std::hint::select_unpredictable(upper[0].gpa <= gpa, upper, lower);
        }
        let r = window.first()?;
        (gpa.wrapping_sub(r.gpa) < r.size).then_some(r)
    }

    /// Translates `gpa` to a host pointer, with the number of bytes (at most `len`) that are
    /// contiguous there. `None` when `gpa` is in no region or `len` is 0.
    #[cfg(test)]
    pub fn translate(&self, gpa: u64, len: u64) -> Option<(*mut u8, u64)> {
        if len == 0 {
            return None;
        }
        let r = self.find(gpa)?;
        let off = gpa - r.gpa;
        Some((host_base(r).wrapping_add(off as usize), len.min(r.size - off)))
    }

    /// `translate` through a hint (the cache `translate_dma` keeps per element), for the unit
    /// tests that compare the two on a table without the IOTLB.
    #[cfg(test)]
    pub fn translate_cached(
        &self,
        gpa: u64,
        len: u64,
        hint: &mut RegionHint,
    ) -> Option<(*mut u8, u64)> {
        self.translate_dma(gpa, len, 0, hint).ok()
    }

    /// The bounds of the region holding `gpa` (the search behind `translate_dma`'s hint and
    /// the express lane's, `queue::express`): the search out of line (it returns the region,
    /// one register), the hint built in the caller, whose table and hint stay in registers.
    #[inline(always)]
    pub fn hint_for(&self, gpa: u64) -> Option<RegionHint> {
        // SAFETY: a table's regions begin a device's array (see the type).
        unsafe { find_region(self.regions, gpa) }.map(RegionHint::of)
    }

    /// A first hint for `translate_dma`: the lowest region (the only one of most guests).
    /// With the IOTLB: the empty hint (guest addresses are IOVAs, see `translate_dma`).
    #[inline]
    pub fn first_hint(&self) -> RegionHint {
        if self.iotlb.is_some() {
            return RegionHint::default();
        }
        self.regions.first().map(RegionHint::of).unwrap_or_default()
    }

    /// Translates a range that must be contiguous in one region.
    pub fn translate_exact(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        host_range(self.find(gpa)?, gpa, len)
    }

    /// Translates a frontend virtual address range that must lie in one region (ring addresses).
    pub fn qva_to_va(&self, qva: u64, len: u64) -> Option<*mut u8> {
        self.regions.iter().find_map(|r| {
            let off = qva.checked_sub(r.qva)?;
            (off < r.size).then_some(())?;
            host_range(r, r.gpa + off, len)
        })
    }
}

/// `MemoryTable::find` out of line, on the slice (two registers).
///
/// # Safety
/// `regions` begins a device's array (as a `MemoryTable`'s do).
#[inline(never)]
unsafe fn find_region(regions: &[VuDevRegion], gpa: u64) -> Option<&VuDevRegion> {
    MemoryTable { regions, iotlb: None }.find(gpa)
}

/// The mapping behind region `r`, borrowed (not unmapped when the result is dropped), for
/// advice and protection changes.
pub fn region_mapping(r: &VuDevRegion) -> Option<std::mem::ManuallyDrop<Mapping>> {
    // SAFETY: `add` mapped exactly this range; ManuallyDrop keeps it from being unmapped here.
    unsafe { Mapping::from_raw(r.mmap_addr as *mut u8, (r.mmap_offset + r.size) as usize) }
        .map(std::mem::ManuallyDrop::new)
}

/// Write access: the array and the count (`VuDev.nregions`) it is valid up to.
pub struct MemoryTableMut<'a> {
    slots: &'a mut [VuDevRegion; VHOST_USER_MAX_RAM_SLOTS],
    count: &'a mut u32,
}

/// Takes back the mapping `add` made for region `r` (the caller unmaps it by dropping it, now
/// or once no popped element can point into it any more: see `device::MemWrite::retire`).
fn take_mapping(r: &VuDevRegion) -> Option<Mapping> {
    // SAFETY: `add` created this mapping with exactly this address and length, and the region
    // has just left the table, so this is the only owner.
    unsafe { Mapping::from_raw(r.mmap_addr as *mut u8, (r.mmap_offset + r.size) as usize) }
}

impl<'a> MemoryTableMut<'a> {
    pub fn new(
        slots: &'a mut [VuDevRegion; VHOST_USER_MAX_RAM_SLOTS],
        count: &'a mut u32,
    ) -> MemoryTableMut<'a> {
        MemoryTableMut { slots, count }
    }

    #[cfg(test)]
    pub fn table(&self) -> MemoryTable<'_> {
        MemoryTable::of_device(self.slots, *self.count as usize)
    }

    pub fn len(&self) -> usize {
        *self.count as usize
    }

    /// Maps a region from the frontend's description and inserts it in order; returns where it
    /// is mapped.
    ///
    /// Postcopy regions too are mapped read/write: the original maps them PROT_NONE until
    /// userfaultfd is armed,
    /// so a frontend that sends a ring address or a kick before that (or never arms it) kills
    /// the process with SIGSEGV. We map them read/write from the start: a page read before
    /// arming shows the file's current content, and `postcopy::generate_faults` drops every
    /// page (MADV_DONTNEED) when it registers the region, so later reads fault as intended.
    pub fn add(
        &mut self,
        desc: &VhostUserMemoryRegion,
        fd: BorrowedFd<'_>,
    ) -> Result<VuDevRegion, AddError> {
        let n = self.len();
        if n >= VHOST_USER_MAX_RAM_SLOTS {
            return Err(AddError::Full);
        }
        let size = desc.memory_size;
        if size == 0 {
            return Err(AddError::Invalid("zero size"));
        }
        let end = desc
            .guest_phys_addr
            .checked_add(size)
            .ok_or(AddError::Invalid("guest address range wraps"))?;
        desc.userspace_addr
            .checked_add(size)
            .ok_or(AddError::Invalid("userspace address range wraps"))?;
        let idx = self.slots[..n].partition_point(|r| gpa_end(r) <= desc.guest_phys_addr);
        if idx < n && self.slots[idx].gpa < end {
            return Err(AddError::Overlap);
        }
        // mmap wants a page-aligned file offset; keep the remainder inside the mapping.
        let align = hugepage_size(fd).unwrap_or_else(page_size);
        let fd_offset = desc.mmap_offset / align * align;
        let mmap_offset = desc.mmap_offset - fd_offset;
        let map_len = size.checked_add(mmap_offset).ok_or(AddError::Invalid("size overflows"))?;
        if let Some(file_size) = mappable_size(fd) {
            // Touching a mapping beyond the end of its file raises SIGBUS: refuse it up front.
            let file_end =
                fd_offset.checked_add(map_len).ok_or(AddError::Invalid("offset overflows"))?;
            if file_end > file_size {
                return Err(AddError::Invalid("region extends beyond the end of its file"));
            }
        }
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let mapping =
            Mapping::map_shared(fd, map_len, fd_offset, prot, true).map_err(AddError::Mmap)?;
        // Guest RAM has no place in our core dumps.
        let _ = mapping.advise(libc::MADV_DONTDUMP);
        let (addr, _) = mapping.into_raw();
        let region = VuDevRegion {
            gpa: desc.guest_phys_addr,
            size,
            qva: desc.userspace_addr,
            mmap_offset,
            mmap_addr: addr as u64,
        };
        self.slots.copy_within(idx..n, idx + 1);
        self.slots[idx] = region;
        *self.count += 1;
        region_index::rebuild(self.slots, n + 1);
        Ok(region)
    }

    /// Removes the region that exactly matches `desc` (gpa, size and userspace address) and
    /// returns its mapping (it spans the region's host range), or `None` if there is no such
    /// region.
    pub fn remove_exact(&mut self, desc: &VhostUserMemoryRegion) -> Option<Mapping> {
        let n = self.len();
        let idx = self.slots[..n].iter().position(|r| {
            r.gpa == desc.guest_phys_addr
                && r.size == desc.memory_size
                && r.qva == desc.userspace_addr
        })?;
        let r = self.slots[idx];
        self.slots.copy_within(idx + 1..n, idx);
        *self.count -= 1;
        region_index::rebuild(self.slots, n - 1);
        take_mapping(&r)
    }

    /// Removes every region and returns their mappings.
    pub fn clear(&mut self) -> Vec<Mapping> {
        let n = self.len();
        *self.count = 0;
        let mappings = self.slots[..n].iter().filter_map(take_mapping).collect();
        region_index::rebuild(self.slots, 0);
        mappings
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

    use super::*;

    /// Two regions over one heap buffer: gpa 0x1000..0x2000 at buf[0..], 0x8000..0x9000 at
    /// buf[0x1000..] (frontend addresses 0x10_0000 and 0x20_0000).
    fn two_regions(buf: &mut [u8]) -> [VuDevRegion; 2] {
        let base = buf.as_mut_ptr() as u64;
        [
            VuDevRegion {
                gpa: 0x1000,
                size: 0x1000,
                qva: 0x10_0000,
                mmap_offset: 0,
                mmap_addr: base,
            },
            VuDevRegion {
                gpa: 0x8000,
                size: 0x1000,
                qva: 0x20_0000,
                mmap_offset: 0x10,
                mmap_addr: base + 0x1000 - 0x10,
            },
        ]
    }

    /// A device array holding `regions` (indexed as `MemoryTableMut` leaves it, or not).
    fn device_array(
        regions: &[VuDevRegion],
        indexed: bool,
    ) -> Box<[VuDevRegion; VHOST_USER_MAX_RAM_SLOTS]> {
        let mut a = Box::new([VuDevRegion::default(); VHOST_USER_MAX_RAM_SLOTS]);
        a[..regions.len()].copy_from_slice(regions);
        if indexed {
            region_index::rebuild(&mut a, regions.len());
        }
        a
    }

    /// `find` (the branch-free binary search, and the index where it has one) agrees with a
    /// linear scan on every table of 0 to 17 regions, with and without gaps, at every region
    /// edge, gap and end.
    #[test]
    fn find_agrees_with_a_linear_scan() {
        for (n, indexed) in (0..=17u64).flat_map(|n| [(n, false), (n, true)]) {
            for gap in [0u64, 0x1000, 0x3_0000] {
                let regions: Vec<VuDevRegion> = (0..n)
                    .map(|i| VuDevRegion {
                        gpa: 0x10_0000 + i * (0x4000 + gap),
                        size: 0x4000,
                        qva: 0,
                        mmap_offset: 0,
                        mmap_addr: 0,
                    })
                    .collect();
                let array = device_array(&regions, indexed);
                let t = MemoryTable::of_device(&array, regions.len());
                let mut probes = vec![0, 0xf_ffff, u64::MAX];
                for r in &regions {
                    probes.extend([
                        r.gpa - 1,
                        r.gpa,
                        r.gpa + 1,
                        r.gpa + r.size - 1,
                        r.gpa + r.size,
                    ]);
                }
                for gpa in probes {
                    let linear = regions.iter().position(|r| gpa >= r.gpa && gpa - r.gpa < r.size);
                    let found = t.find(gpa).map(|r| (r as *const VuDevRegion).cast::<u8>());
                    let expected = linear.map(|i| (&array[i] as *const VuDevRegion).cast::<u8>());
                    assert_eq!(found, expected, "{n} regions, gap {gap:#x}, gpa {gpa:#x}");
                }
            }
        }
    }

    #[test]
    fn translate_within_and_across_regions() {
        let mut buf = vec![0u8; 0x2000];
        let base = buf.as_mut_ptr();
        let regions = device_array(&two_regions(&mut buf), true);
        let t = MemoryTable::of_device(&regions, 2);
        assert_eq!(t.translate(0x1000, 16), Some((base, 16)));
        // Shortened to what is contiguous in the region.
        assert_eq!(t.translate(0x1ff0, 0x100), Some((base.wrapping_add(0xff0), 0x10)));
        assert_eq!(t.translate(0x8004, 4), Some((base.wrapping_add(0x1004), 4)));
        assert_eq!(t.translate(0x2000, 1), None, "the gap between regions");
        assert_eq!(t.translate(0x0fff, 1), None, "below the first region");
        assert_eq!(t.translate(0x9000, 1), None, "past the last region");
        assert_eq!(t.translate(0x1000, 0), None, "zero length");
        assert_eq!(t.translate_exact(0x1ff0, 0x10), Some(base.wrapping_add(0xff0)));
        assert_eq!(t.translate_exact(0x1ff0, 0x11), None, "runs off the region's end");
        assert_eq!(t.translate_exact(u64::MAX, 2), None, "wrapping range");
    }

    #[test]
    fn the_cache_hint_agrees_with_the_search() {
        let mut buf = vec![0u8; 0x2000];
        let regions = device_array(&two_regions(&mut buf), true);
        let t = MemoryTable::of_device(&regions, 2);
        let mut hint = RegionHint::default();
        for gpa in [0x1000u64, 0x8000, 0x8fff, 0x1fff, 0x5000, 0x1234, 0x8000, 0x9000, 0xfff] {
            assert_eq!(t.translate_cached(gpa, 8, &mut hint), t.translate(gpa, 8), "gpa {gpa:#x}");
        }
        // Shortened at the cached region's end, as `translate` does.
        assert_eq!(t.translate_cached(0x1ff8, 0x100, &mut hint), t.translate(0x1ff8, 0x100));
        assert_eq!(t.translate_cached(0x1ff8, 0, &mut hint), None, "zero length");
    }

    #[test]
    fn frontend_addresses() {
        let mut buf = vec![0u8; 0x2000];
        let base = buf.as_mut_ptr();
        let regions = device_array(&two_regions(&mut buf), true);
        let t = MemoryTable::of_device(&regions, 2);
        assert_eq!(t.qva_to_va(0x10_0010, 8), Some(base.wrapping_add(0x10)));
        assert_eq!(t.qva_to_va(0x20_0000, 0x1000), Some(base.wrapping_add(0x1000)));
        assert_eq!(t.qva_to_va(0x20_0001, 0x1000), None, "runs off the region's end");
        assert_eq!(t.qva_to_va(0x30_0000, 1), None);
        assert_eq!(t.find(0x8800).map(|r| r.gpa), Some(0x8000));
    }

    fn memfd(len: i64) -> OwnedFd {
        // SAFETY: memfd_create with a valid name; checked.
        let raw = unsafe { libc::memfd_create(c"memory-test".as_ptr(), libc::MFD_CLOEXEC) };
        assert!(raw >= 0);
        // SAFETY: a fresh fd we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain syscall on our fd.
        assert_eq!(unsafe { libc::ftruncate(raw, len) }, 0);
        fd
    }

    #[test]
    fn add_keeps_order_and_refuses_overlaps_and_short_files() {
        let mut slots = [VuDevRegion::default(); VHOST_USER_MAX_RAM_SLOTS];
        let mut count = 0u32;
        let fd = memfd(0x4000);
        let desc = |gpa: u64, size: u64, off: u64| VhostUserMemoryRegion {
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: 0x7000_0000 + gpa,
            mmap_offset: off,
        };
        {
            let mut t = MemoryTableMut::new(&mut slots, &mut count);
            t.add(&desc(0x10_0000, 0x1000, 0x1000), fd.as_fd()).unwrap();
            t.add(&desc(0, 0x1000, 0), fd.as_fd()).unwrap();
            assert!(matches!(t.add(&desc(0x800, 0x1000, 0), fd.as_fd()), Err(AddError::Overlap)));
            assert!(matches!(
                t.add(&desc(0x20_0000, 0x4000, 0x1000), fd.as_fd()),
                Err(AddError::Invalid(_))
            ));
            assert!(matches!(t.add(&desc(0x30_0000, 0, 0), fd.as_fd()), Err(AddError::Invalid(_))));
            assert_eq!(t.len(), 2);
            let table = t.table();
            let gpas: Vec<u64> = table.regions().iter().map(|r| r.gpa).collect();
            assert_eq!(gpas, [0, 0x10_0000], "sorted by guest address");
            // Region 0x10_0000 maps the file from offset 0x1000: a byte written there is
            // at that offset of the file.
            let (p, n) = table.translate(0x10_0010, 1).unwrap();
            assert_eq!(n, 1);
            // SAFETY: a live shared mapping of the memfd.
            unsafe { p.write(0x5a) };
            let mut byte = 0u8;
            // SAFETY: reading one byte of our memfd into a local.
            let rc =
                unsafe { libc::pread(fd.as_raw_fd(), (&mut byte as *mut u8).cast(), 1, 0x1010) };
            assert_eq!((rc, byte), (1, 0x5a));
            assert!(t.remove_exact(&desc(0, 0x1000, 0)).is_some());
            assert!(t.remove_exact(&desc(0, 0x1000, 0)).is_none());
            assert_eq!(t.len(), 1);
            assert_eq!(t.clear().len(), 1);
            assert_eq!(t.len(), 0);
        }
        assert_eq!(count, 0);
    }

    /// The region index follows every change of the table: after each add and removal, in a
    /// scrambled order, every translation agrees with a linear scan of the regions (through
    /// the index while there are enough regions, by the search below that).
    #[test]
    fn lookups_follow_adds_and_removals() {
        let mut slots = Box::new([VuDevRegion::default(); VHOST_USER_MAX_RAM_SLOTS]);
        let mut count = 0u32;
        let fd = memfd(0x1000);
        // Regions of one page every 0x3000: buckets of 0x2000, some with a region starting
        // in their middle.
        let desc = |i: u64| VhostUserMemoryRegion {
            guest_phys_addr: 0x10_0000 + i * 0x3000,
            memory_size: 0x1000,
            userspace_addr: 0x7000_0000 + i * 0x10_0000,
            mmap_offset: 0,
        };
        let check = |t: &MemoryTableMut, what: &str| {
            let table = t.table();
            for g in (0x10_0000 - 0x1000..0x10_0000 + 40 * 0x3000).step_by(0x800) {
                let scan = table.regions().iter().find(|r| g >= r.gpa && g - r.gpa < r.size);
                assert_eq!(table.find(g).map(|r| r.gpa), scan.map(|r| r.gpa), "{what}, {g:#x}");
            }
        };
        let order: Vec<u64> = (0..32u64).map(|i| (i * 13) % 32).collect();
        let mut t = MemoryTableMut::new(&mut slots, &mut count);
        for &i in &order {
            t.add(&desc(i), fd.as_fd()).unwrap();
            check(&t, "after an add");
        }
        for &i in order.iter().rev().step_by(2) {
            assert!(t.remove_exact(&desc(i)).is_some());
            check(&t, "after a removal");
        }
        drop(t.clear());
        check(&t, "after a clear");
    }
}
