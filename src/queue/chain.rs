//! Walking a descriptor chain, direct or through an indirect table, with every guest-supplied
//! index, length and address checked.

use std::ops::ControlFlow;

use crate::abi::{vring_desc, VIRTQUEUE_MAX_SIZE};
use crate::iotlb::PERM_RO;
use crate::memory::{MemoryTable, RegionHint};
use crate::queue::mapper::ElementMapper;
use crate::queue::ring::{read_desc, SplitRing};
use crate::queue::Fault;

pub const VRING_DESC_F_NEXT: u16 = 1;
pub const VRING_DESC_F_WRITE: u16 = 2;
pub const VRING_DESC_F_INDIRECT: u16 = 4;

const DESC_SIZE: u64 = std::mem::size_of::<vring_desc>() as u64;

/// A descriptor table to walk: the ring's own, an indirect table in place, or a copy of an
/// indirect table that spans regions.
pub(crate) enum Table {
    InPlace(*const vring_desc, usize),
    Copied(Vec<vring_desc>),
}

impl Table {
    pub(crate) fn get(&self, i: usize) -> Option<vring_desc> {
        match self {
            // SAFETY: in-place tables come from a validated ring or a translation of exactly
            // `len` descriptors, under the memory read lock the caller holds.
            Table::InPlace(p, len) => unsafe { read_desc(*p, *len, i) },
            Table::Copied(v) => v.get(i).copied(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        match self {
            Table::InPlace(_, len) => *len,
            Table::Copied(v) => v.len(),
        }
    }
}

pub(crate) fn indirect_table(mem: &MemoryTable, d: &vring_desc) -> Result<Table, Fault> {
    if d.len == 0 || u64::from(d.len) % DESC_SIZE != 0 {
        return Err(Fault::IndirectSize);
    }
    let count = (u64::from(d.len) / DESC_SIZE) as usize;
    // A chain is never longer than the largest queue (virtio spec), so neither is a table.
    if count > VIRTQUEUE_MAX_SIZE as usize {
        return Err(Fault::IndirectTable);
    }
    if let Ok(p) = mem.translate_contiguous_dma(d.addr, u64::from(d.len), PERM_RO) {
        if (p as usize).is_multiple_of(std::mem::align_of::<vring_desc>()) {
            return Ok(Table::InPlace(p as *const vring_desc, count));
        }
    }
    // Spans regions (or is misaligned): copy it.
    let mut table = vec![vring_desc::default(); count];
    let dst = table.as_mut_ptr() as *mut u8;
    let (mut addr, mut done, total) = (d.addr, 0u64, u64::from(d.len));
    let mut hint = RegionHint::default();
    while done < total {
        let (src, n) =
            mem.translate_dma(addr, total - done, PERM_RO, &mut hint).map_err(|f| match f {
                Fault::IotlbMiss { .. } | Fault::IotlbDenied { .. } => f,
                _ => Fault::IndirectTable,
            })?;
        // SAFETY: `src` is valid for `n` bytes of mapped guest memory (under the read lock);
        // `dst + done` has `total - done >= n` bytes left in the vector.
        unsafe {
            std::ptr::copy_nonoverlapping(src as *const u8, dst.add(done as usize), n as usize)
        };
        done += n;
        addr = addr.checked_add(n).ok_or(Fault::IndirectTable)?;
    }
    for d in &mut table {
        *d = vring_desc {
            addr: u64::from_le(d.addr),
            len: u32::from_le(d.len),
            flags: u16::from_le(d.flags),
            next: u16::from_le(d.next),
        };
    }
    Ok(Table::Copied(table))
}

/// Walks the chain that starts at `head`, calling `visit` for each buffer descriptor in order.
/// Refuses loops, out-of-range `next`, nested indirect tables and bad indirect tables.
pub fn walk<F>(mem: &MemoryTable, ring: &SplitRing, head: u16, mut visit: F) -> Result<(), Fault>
where
    F: FnMut(&vring_desc) -> Result<ControlFlow<()>, Fault>,
{
    let ring_table = Table::InPlace(ring.desc_table(), usize::from(ring.num()));
    let first = ring_table.get(usize::from(head)).ok_or(Fault::BadHead(u32::from(head)))?;
    let (table, mut i, indirect) = if first.flags & VRING_DESC_F_INDIRECT != 0 {
        (indirect_table(mem, &first)?, 0usize, true)
    } else {
        (ring_table, usize::from(head), false)
    };
    let max = table.len();
    let mut seen = 0usize;
    loop {
        let d = table.get(i).ok_or(Fault::DescNext(i as u32))?;
        seen += 1;
        if seen > max {
            return Err(Fault::Looped);
        }
        if d.flags & VRING_DESC_F_INDIRECT != 0 {
            return Err(if indirect { Fault::NestedIndirect } else { Fault::IndirectInChain });
        }
        if visit(&d)?.is_break() {
            return Ok(());
        }
        if d.flags & VRING_DESC_F_NEXT == 0 {
            return Ok(());
        }
        i = usize::from(d.next);
        if i >= max {
            return Err(Fault::DescNext(i as u32));
        }
    }
}

/// Maps the chain at `head` into `elem`, in one pass: each descriptor read once from the ring
/// (or its indirect table) and translated straight into iovecs. Refuses what `walk` refuses.
#[inline(always)]
pub fn map_chain(
    mem: &MemoryTable,
    ring: &SplitRing,
    head: u16,
    elem: &mut ElementMapper,
) -> Result<(), Fault> {
    let mut d = ring.desc(head).ok_or(Fault::BadHead(u32::from(head)))?;
    if d.flags & VRING_DESC_F_INDIRECT != 0 {
        return map_indirect(mem, &d, elem);
    }
    let max = u32::from(ring.num());
    let mut seen = 1u32;
    loop {
        elem.add(d.addr, d.len, d.flags & VRING_DESC_F_WRITE != 0)?;
        if d.flags & VRING_DESC_F_NEXT == 0 {
            return Ok(());
        }
        seen += 1;
        if seen > max {
            return Err(Fault::Looped);
        }
        d = ring.desc(d.next).ok_or(Fault::DescNext(u32::from(d.next)))?;
        if d.flags & VRING_DESC_F_INDIRECT != 0 {
            return Err(Fault::IndirectInChain);
        }
    }
}

/// `indirect_table`, out of line (for the packed ring's inline indirect loop).
#[inline(never)]
pub(crate) fn indirect_table_cold(mem: &MemoryTable, d: &vring_desc) -> Result<Table, Fault> {
    indirect_table(mem, d)
}

/// The indirect case of `map_chain` (out of line: the common chain is direct).
#[inline(never)]
fn map_indirect(mem: &MemoryTable, d: &vring_desc, elem: &mut ElementMapper) -> Result<(), Fault> {
    let table = indirect_table(mem, d)?;
    let max = table.len();
    let (mut i, mut seen) = (0usize, 0usize);
    loop {
        let d = table.get(i).ok_or(Fault::DescNext(i as u32))?;
        seen += 1;
        if seen > max {
            return Err(Fault::Looped);
        }
        if d.flags & VRING_DESC_F_INDIRECT != 0 {
            return Err(Fault::NestedIndirect);
        }
        elem.add(d.addr, d.len, d.flags & VRING_DESC_F_WRITE != 0)?;
        if d.flags & VRING_DESC_F_NEXT == 0 {
            return Ok(());
        }
        i = usize::from(d.next);
        if i >= max {
            return Err(Fault::DescNext(i as u32));
        }
    }
}
