//! The element `vu_queue_pop` returns: one `malloc` block holding the caller's struct (with
//! `VuVirtqElement` first), then the iovecs. C frees it with `free()`.
//!
//! The iovecs are written straight into the block while the chain is walked: the out iovecs
//! first, then the in iovecs (a chain lists readable buffers before writable ones), so
//! `out_sg` points at the first and `in_sg` just past the last out iovec. The block starts
//! with room for a few iovecs and grows (realloc) for longer chains; an indirect table, whose
//! length is known before its first entry is read, gets a block of its size at once
//! (`reserve_empty`).

use std::mem::{align_of, size_of};

use libc::iovec;

use crate::abi::{VuVirtqElement, VIRTQUEUE_MAX_SIZE};

/// Iovecs room in a fresh element: enough for the usual header + data + status chain.
const INITIAL_IOVECS: usize = 4;

/// An element being built: the block, and cursors into its iovecs (pointers, not counts: an
/// append is a compare, two stores and an add).
pub struct ElementBuilder {
    base: *mut u8,
    /// The first iovec (`out_sg`).
    sg: *mut iovec,
    /// Just past the readable iovecs (the out iovecs end here, the in iovecs start here).
    out_end: *mut iovec,
    /// Where the next iovec goes.
    next: *mut iovec,
    /// Just past the room.
    end: *mut iovec,
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
        if base.is_null() {
            return None;
        }
        // SAFETY: the block holds sg_ofs bytes, then INITIAL_IOVECS iovecs (iovec-aligned).
        let (sg, end) = unsafe {
            let sg = base.add(sg_ofs) as *mut iovec;
            (sg, sg.add(INITIAL_IOVECS))
        };
        Some(ElementBuilder { base, sg, out_end: sg, next: sg, end })
    }

    /// A builder that owns no block (a placeholder while one is moved out; dropping it frees
    /// nothing).
    #[inline(always)]
    pub fn empty() -> ElementBuilder {
        let null: *mut iovec = std::ptr::null_mut();
        ElementBuilder { base: null.cast(), sg: null, out_end: null, next: null, end: null }
    }

    /// Makes room for at least `iovecs` iovecs in a builder that holds none yet (an indirect
    /// table's entries, known before its first is read): a fresh block of that size for the
    /// small one, cheaper than the reallocs that growing one iovec at a time would make.
    /// `false` (the builder unchanged) when memory is short.
    #[inline(always)]
    pub fn reserve_empty(&mut self, iovecs: usize) -> bool {
        debug_assert!(self.next == self.sg);
        if iovecs <= (self.end as usize - self.sg as usize) / size_of::<iovec>() {
            return true;
        }
        let Some(roomy) = reallocate_empty(self.base, self.sg, iovecs) else { return false };
        // The old block was freed by `reallocate_empty`.
        std::mem::forget(std::mem::replace(self, roomy));
        true
    }

    /// Whether every iovec so far is readable (a readable buffer may still come).
    #[inline(always)]
    pub fn only_readable(&self) -> bool {
        self.next == self.out_end
    }

    /// Records that the iovecs so far are all readable ones.
    #[inline(always)]
    pub fn end_readable(&mut self) {
        self.out_end = self.next;
    }

    /// Appends an iovec; `false` if the chain has more than VIRTQUEUE_MAX_SIZE segments or
    /// memory is short.
    #[inline(always)]
    pub fn push(&mut self, iov: iovec) -> bool {
        if self.next == self.end {
            // By value: a call taking the builder's address would keep it in memory.
            let Some(grown) = grow(self.base, self.sg, self.out_end, self.next) else {
                return false;
            };
            // The old builder's block is the grown one's now (realloc): not freed here.
            std::mem::forget(std::mem::replace(self, grown));
        }
        // SAFETY: next < end, inside the block's iovecs.
        unsafe {
            self.next.write(iov);
            self.next = self.next.add(1);
        }
        true
    }

    /// Fills in the element header (the iovecs up to `end_readable`'s mark are the readable
    /// ones).
    #[inline(always)]
    pub fn finish(self, index: u32) -> *mut VuVirtqElement {
        let this = std::mem::ManuallyDrop::new(self);
        let count = |from: *mut iovec, to: *mut iovec| {
            ((to as usize - from as usize) / size_of::<iovec>()) as u32
        };
        let elem = this.base as *mut VuVirtqElement;
        // SAFETY: the block starts with `sz >= size_of::<VuVirtqElement>()` bytes (malloc
        // alignment suffices); sg <= out_end <= next lie in its iovecs.
        unsafe {
            elem.write(VuVirtqElement {
                index,
                out_num: count(this.sg, this.out_end),
                in_num: count(this.out_end, this.next),
                in_sg: this.out_end,
                out_sg: this.sg,
            })
        };
        elem
    }
}

#[cold]
#[inline(never)]
fn too_small(sz: usize) {
    log::error!("vu_queue_pop: element size {sz} is smaller than VuVirtqElement");
}

/// `reserve_empty`'s new block: `iovecs` (clamped) iovecs after the same header room as the
/// old block at `base` (whose iovecs start at `sg`), which is freed; `None` (the old block
/// kept) when memory is short. On values, out of line: see `push`.
#[cold]
#[inline(never)]
fn reallocate_empty(base: *mut u8, sg: *mut iovec, iovecs: usize) -> Option<ElementBuilder> {
    let sg_ofs = sg as usize - base as usize;
    let iovecs = iovecs.min(VIRTQUEUE_MAX_SIZE as usize);
    // SAFETY: malloc of a size computed from small bounded numbers; checked for NULL.
    let new = unsafe { libc::malloc(sg_ofs + iovecs * size_of::<iovec>()) } as *mut u8;
    if new.is_null() {
        return None;
    }
    // SAFETY: the old block is ours and holds nothing yet (no header, no iovecs); the new one
    // holds sg_ofs bytes, then `iovecs` iovecs (sg_ofs is iovec-aligned).
    unsafe {
        libc::free(base.cast());
        let sg = new.add(sg_ofs) as *mut iovec;
        Some(ElementBuilder { base: new, sg, out_end: sg, next: sg, end: sg.add(iovecs) })
    }
}

/// The builder of a full element block (`next` at the end of its room) with room for more
/// iovecs, or `None` at VIRTQUEUE_MAX_SIZE iovecs or when memory is short (the block is then
/// unchanged). On values, out of line: see `push`.
#[cold]
#[inline(never)]
fn grow(
    base: *mut u8,
    sg: *mut iovec,
    out_end: *mut iovec,
    next: *mut iovec,
) -> Option<ElementBuilder> {
    let max = VIRTQUEUE_MAX_SIZE as usize;
    let (sg_ofs, out_num, cap) = (
        sg as usize - base as usize,
        (out_end as usize - sg as usize) / size_of::<iovec>(),
        (next as usize - sg as usize) / size_of::<iovec>(),
    );
    if cap >= max {
        return None;
    }
    let new_cap = (cap * 4).min(max);
    // SAFETY: realloc of the caller's block to a size computed from small bounded numbers.
    let base =
        unsafe { libc::realloc(base.cast(), sg_ofs + new_cap * size_of::<iovec>()) } as *mut u8;
    if base.is_null() {
        return None;
    }
    // SAFETY: the new block holds sg_ofs bytes, then new_cap iovecs; out_num <= cap < new_cap.
    unsafe {
        let sg = base.add(sg_ofs) as *mut iovec;
        Some(ElementBuilder {
            base,
            sg,
            out_end: sg.add(out_num),
            next: sg.add(cap),
            end: sg.add(new_cap),
        })
    }
}

impl Drop for ElementBuilder {
    fn drop(&mut self) {
        // SAFETY: our own malloc'd block, not handed out (finish() skips this drop).
        unsafe { libc::free(self.base.cast()) };
    }
}
