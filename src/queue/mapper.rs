//! Turning a chain's buffers into the element's iovecs, in one pass, for both ring layouts:
//! each descriptor is translated once and its iovecs written straight into the element.

use libc::iovec;

use crate::abi::VuVirtqElement;
use crate::iotlb::{PERM_RO, PERM_WO};
use crate::memory::{MemoryTable, RegionHint};
use crate::queue::element::ElementBuilder;
use crate::queue::Fault;

pub struct ElementMapper<'m> {
    /// By value: the table is two words, and a copy stays in registers across the chain.
    mem: MemoryTable<'m>,
    elem: ElementBuilder,
    writing: bool,
    hint: RegionHint,
}

impl<'m> ElementMapper<'m> {
    /// A fresh element of `sz` bytes; `None` when `sz` is too small or memory is short.
    #[inline]
    pub fn new(mem: &MemoryTable<'m>, sz: usize) -> Option<ElementMapper<'m>> {
        Some(ElementMapper {
            mem: *mem,
            elem: ElementBuilder::new(sz)?,
            writing: false,
            hint: mem.first_hint(),
        })
    }

    /// Appends the buffer `[addr, addr+len)`, device-writable if `write`. Refuses readable
    /// after writable buffers, empty buffers, addresses outside guest memory and more than
    /// VIRTQUEUE_MAX_SIZE iovecs; with the IOMMU, an address without an IOTLB entry is a
    /// miss and one whose entry does not allow the access is denied.
    #[inline(always)]
    pub fn add(&mut self, addr: u64, len: u32, write: bool) -> Result<(), Fault> {
        if !write && self.writing {
            return Err(Fault::Order);
        }
        if len == 0 {
            return Err(Fault::ZeroSized);
        }
        let (mut addr, mut left) = (addr, u64::from(len));
        // What the device does with the buffer: what its IOTLB entry must allow (IOMMU).
        let need = if write { PERM_WO } else { PERM_RO };
        loop {
            let (p, n) = self.mem.translate_dma(addr, left, need, &mut self.hint)?;
            if !self.elem.push(iovec { iov_base: p.cast(), iov_len: n as usize }) {
                return Err(Fault::TooManySegments);
            }
            left -= n;
            if left == 0 {
                break;
            }
            addr = addr.checked_add(n).ok_or(Fault::BadAddress)?;
        }
        if write {
            self.writing = true;
        } else {
            self.elem.end_readable();
        }
        Ok(())
    }

    /// The finished element, with `index` as its head (split) or buffer id (packed).
    #[inline]
    pub fn finish(self, index: u32) -> *mut VuVirtqElement {
        self.elem.finish(index)
    }
}
