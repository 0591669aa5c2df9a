//! The element `vu_queue_pop` returns: one `malloc` block holding the caller's struct (with
//! `VuVirtqElement` first), then the iovecs. C frees it with `free()`.
//!
//! The iovecs are written straight into the block while the chain is walked: the out iovecs
//! first, then the in iovecs (a chain lists readable buffers before writable ones), so
//! `out_sg` points at the first and `in_sg` just past the last out iovec. The block starts
//! with room for a few iovecs and grows (realloc) for longer chains.

use std::mem::{align_of, size_of};

use libc::iovec;

use crate::abi::{VuVirtqElement, VIRTQUEUE_MAX_SIZE};

/// Iovecs room in a fresh element: enough for the usual header + data + status chain.
const INITIAL_IOVECS: usize = 4;

pub struct ElementBuilder {
    base: *mut u8,
    sg_ofs: usize,
    cap: usize,
    len: usize,
}

impl ElementBuilder {
    /// Allocates an element of `sz` bytes; `None` if `sz` is too small or memory is short.
    #[inline(always)]
    pub fn new(sz: usize) -> Option<ElementBuilder> {
        if sz < size_of::<VuVirtqElement>() {
            too_small(sz);
            return None;
        }
        let sg_ofs = sz.checked_add(align_of::<iovec>() - 1)? & !(align_of::<iovec>() - 1);
        let bytes = sg_ofs.checked_add(INITIAL_IOVECS * size_of::<iovec>())?;
        // SAFETY: malloc of a checked size; the result is checked for NULL.
        let base = unsafe { libc::malloc(bytes) } as *mut u8;
        (!base.is_null()).then_some(ElementBuilder { base, sg_ofs, cap: INITIAL_IOVECS, len: 0 })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends an iovec; `false` if the chain has more than VIRTQUEUE_MAX_SIZE segments or
    /// memory is short.
    #[inline(always)]
    pub fn push(&mut self, iov: iovec) -> bool {
        if self.len == self.cap {
            // By value: a call taking the builder's address would keep it in memory.
            let Some((base, cap)) = grow(self.base, self.sg_ofs, self.cap) else { return false };
            self.base = base;
            self.cap = cap;
        }
        // SAFETY: len < cap and the block holds sg_ofs + cap iovecs (iovec-aligned).
        unsafe { (self.base.add(self.sg_ofs) as *mut iovec).add(self.len).write(iov) };
        self.len += 1;
        true
    }

    /// Fills in the element header; the first `out_num` iovecs are the readable ones.
    #[inline]
    pub fn finish(self, index: u32, out_num: usize) -> *mut VuVirtqElement {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: the block starts with `sz >= size_of::<VuVirtqElement>()` bytes (malloc
        // alignment suffices) and holds `len` iovecs at sg_ofs; out_num <= len.
        unsafe {
            let out_sg = this.base.add(this.sg_ofs) as *mut iovec;
            let elem = this.base as *mut VuVirtqElement;
            elem.write(VuVirtqElement {
                index,
                out_num: out_num as u32,
                in_num: (this.len - out_num) as u32,
                in_sg: out_sg.add(out_num),
                out_sg,
            });
            elem
        }
    }
}

#[cold]
#[inline(never)]
fn too_small(sz: usize) {
    log::error!("vu_queue_pop: element size {sz} is smaller than VuVirtqElement");
}

/// The element block `base` (iovecs from `sg_ofs`, room for `cap`) with room for more
/// iovecs: its new address and room, or `None` at VIRTQUEUE_MAX_SIZE iovecs or when memory
/// is short (the block is then unchanged).
#[cold]
#[inline(never)]
fn grow(base: *mut u8, sg_ofs: usize, cap: usize) -> Option<(*mut u8, usize)> {
    let max = VIRTQUEUE_MAX_SIZE as usize;
    if cap >= max {
        return None;
    }
    let cap = (cap * 4).min(max);
    // SAFETY: realloc of the caller's block to a size computed from small bounded numbers.
    let base = unsafe { libc::realloc(base.cast(), sg_ofs + cap * size_of::<iovec>()) } as *mut u8;
    (!base.is_null()).then_some((base, cap))
}

impl Drop for ElementBuilder {
    fn drop(&mut self) {
        // SAFETY: our own malloc'd block, not handed out (finish() skips this drop).
        unsafe { libc::free(self.base.cast()) };
    }
}
