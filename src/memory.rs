//! The guest memory table: regions the frontend shared with us, sorted by guest address,
//! translated in O(log n).

use std::os::fd::BorrowedFd;

use crate::abi::{VhostUserMemoryRegion, VuDevRegion, VHOST_USER_MAX_RAM_SLOTS};
use crate::mmap::{hugepage_size, mappable_size, page_size, Mapping};

/// One mapped guest memory region.
#[derive(Debug)]
pub struct Region {
    pub gpa: u64,
    pub size: u64,
    /// The frontend's virtual address of the region (ring addresses are given in it).
    pub qva: u64,
    /// Where the region starts inside `mapping` (non-zero only for unaligned hugetlbfs offsets).
    pub mmap_offset: u64,
    mapping: Mapping,
}

impl Region {
    fn host_base(&self) -> *mut u8 {
        // `mmap_offset + size` is the mapping's length, checked when mapping.
        self.mapping.as_ptr().wrapping_add(self.mmap_offset as usize)
    }

    fn gpa_end(&self) -> u64 {
        self.gpa + self.size
    }

    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }

    pub fn as_c(&self) -> VuDevRegion {
        VuDevRegion {
            gpa: self.gpa,
            size: self.size,
            qva: self.qva,
            mmap_offset: self.mmap_offset,
            mmap_addr: self.mapping.as_ptr() as u64,
        }
    }

    /// The host address of `[gpa, gpa+len)` if the range lies wholly in this region.
    fn host_range(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        let off = gpa.checked_sub(self.gpa)?;
        let end = off.checked_add(len)?;
        (end <= self.size).then(|| self.host_base().wrapping_add(off as usize))
    }
}

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

/// All guest memory regions, sorted by guest physical address, never overlapping.
#[derive(Debug, Default)]
pub struct MemoryTable {
    regions: Vec<Region>,
}

impl MemoryTable {
    pub fn len(&self) -> usize {
        self.regions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.regions.is_empty()
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    /// The region holding `gpa`.
    #[inline]
    pub fn find(&self, gpa: u64) -> Option<&Region> {
        let idx = self.regions.partition_point(|r| r.gpa_end() <= gpa);
        self.regions.get(idx).filter(|r| r.gpa <= gpa)
    }

    /// Translates `gpa` to a host pointer, with the number of bytes (at most `len`) that are
    /// contiguous there. `None` when `gpa` is in no region or `len` is 0.
    #[inline]
    pub fn translate(&self, gpa: u64, len: u64) -> Option<(*mut u8, u64)> {
        if len == 0 {
            return None;
        }
        let r = self.find(gpa)?;
        let off = gpa - r.gpa;
        let avail = r.size - off;
        Some((r.host_base().wrapping_add(off as usize), len.min(avail)))
    }

    /// Translates a range that must be contiguous in one region.
    pub fn translate_exact(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        self.find(gpa)?.host_range(gpa, len)
    }

    /// Translates a frontend virtual address range that must lie in one region (ring addresses).
    pub fn qva_to_va(&self, qva: u64, len: u64) -> Option<*mut u8> {
        self.regions.iter().find_map(|r| {
            let off = qva.checked_sub(r.qva)?;
            (off < r.size).then_some(())?;
            r.host_range(r.gpa + off, len)
        })
    }

    /// Maps a region from the frontend's description and inserts it in order.
    /// `prot_none` is for postcopy, where pages must fault until userfaultfd is armed.
    pub fn add(&mut self, desc: &VhostUserMemoryRegion, fd: BorrowedFd<'_>, prot_none: bool) -> Result<&Region, AddError> {
        if self.regions.len() >= VHOST_USER_MAX_RAM_SLOTS {
            return Err(AddError::Full);
        }
        let size = desc.memory_size;
        if size == 0 {
            return Err(AddError::Invalid("zero size"));
        }
        let gpa_end = desc.guest_phys_addr.checked_add(size).ok_or(AddError::Invalid("guest address range wraps"))?;
        desc.userspace_addr.checked_add(size).ok_or(AddError::Invalid("userspace address range wraps"))?;
        let idx = self.regions.partition_point(|r| r.gpa_end() <= desc.guest_phys_addr);
        if self.regions.get(idx).is_some_and(|r| r.gpa < gpa_end) {
            return Err(AddError::Overlap);
        }
        // mmap wants a page-aligned file offset; keep the remainder inside the mapping.
        let align = hugepage_size(fd).unwrap_or_else(page_size);
        let fd_offset = desc.mmap_offset / align * align;
        let mmap_offset = desc.mmap_offset - fd_offset;
        let map_len = size.checked_add(mmap_offset).ok_or(AddError::Invalid("size overflows"))?;
        if let Some(file_size) = mappable_size(fd) {
            // Touching a mapping beyond the end of its file raises SIGBUS: refuse it up front.
            let end = fd_offset.checked_add(map_len).ok_or(AddError::Invalid("offset overflows"))?;
            if end > file_size {
                return Err(AddError::Invalid("region extends beyond the end of its file"));
            }
        }
        let prot = if prot_none { libc::PROT_NONE } else { libc::PROT_READ | libc::PROT_WRITE };
        let mapping = Mapping::map_shared(fd, map_len, fd_offset, prot, true).map_err(AddError::Mmap)?;
        // Guest RAM has no place in our core dumps.
        let _ = mapping.advise(libc::MADV_DONTDUMP);
        let region = Region { gpa: desc.guest_phys_addr, size, qva: desc.userspace_addr, mmap_offset, mapping };
        self.regions.insert(idx, region);
        Ok(&self.regions[idx])
    }

    /// Removes the region that exactly matches `desc` (gpa, size and userspace address).
    pub fn remove_exact(&mut self, desc: &VhostUserMemoryRegion) -> Option<Region> {
        let idx = self.regions.iter().position(|r| {
            r.gpa == desc.guest_phys_addr && r.size == desc.memory_size && r.qva == desc.userspace_addr
        })?;
        Some(self.regions.remove(idx))
    }

    pub fn clear(&mut self) {
        self.regions.clear();
    }

    /// Copies the table into the C-visible `VuDev.regions` array; returns the count.
    pub fn export(&self, out: &mut [VuDevRegion]) -> u32 {
        for (slot, r) in out.iter_mut().zip(&self.regions) {
            *slot = r.as_c();
        }
        self.regions.len() as u32
    }
}

impl MemoryTable {
    /// `translate` with a one-entry cache of the last region used: consecutive buffers of a
    /// request almost always share a region, so most lookups skip the binary search.
    #[inline]
    pub fn translate_cached(&self, gpa: u64, len: u64, hint: &mut usize) -> Option<(*mut u8, u64)> {
        if len == 0 {
            return None;
        }
        let r = match self.regions.get(*hint) {
            Some(r) if r.gpa <= gpa && gpa < r.gpa_end() => r,
            _ => {
                let idx = self.regions.partition_point(|r| r.gpa_end() <= gpa);
                let r = self.regions.get(idx).filter(|r| r.gpa <= gpa)?;
                *hint = idx;
                r
            }
        };
        let off = gpa - r.gpa;
        Some((r.host_base().wrapping_add(off as usize), len.min(r.size - off)))
    }
}
