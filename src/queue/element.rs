//! The element `vu_queue_pop` returns: one `malloc` block holding the caller's struct (with
//! `VuVirtqElement` first), then the in and out iovec arrays. C frees it with `free()`.

use std::mem::{align_of, size_of};

use libc::iovec;

use crate::abi::VuVirtqElement;

/// Allocates and fills an element; `None` if `sz` is too small or memory is short.
pub fn alloc(sz: usize, index: u32, out: &[iovec], in_: &[iovec]) -> Option<*mut VuVirtqElement> {
    if sz < size_of::<VuVirtqElement>() {
        log::error!("vu_queue_pop: element size {sz} is smaller than VuVirtqElement");
        return None;
    }
    let in_ofs = sz.checked_add(align_of::<iovec>() - 1)? / align_of::<iovec>() * align_of::<iovec>();
    let out_ofs = in_ofs.checked_add(in_.len().checked_mul(size_of::<iovec>())?)?;
    let end = out_ofs.checked_add(out.len().checked_mul(size_of::<iovec>())?)?;
    // SAFETY: malloc of a checked size; the result is checked for NULL.
    let base = unsafe { libc::malloc(end.max(1)) } as *mut u8;
    if base.is_null() {
        return None;
    }
    // SAFETY: the block holds `end` bytes: the element at 0 (sz >= its size, malloc alignment
    // suffices), `in_` at in_ofs and `out` at out_ofs (both iovec-aligned), as computed above.
    unsafe {
        let in_sg = base.add(in_ofs) as *mut iovec;
        let out_sg = base.add(out_ofs) as *mut iovec;
        std::ptr::copy_nonoverlapping(in_.as_ptr(), in_sg, in_.len());
        std::ptr::copy_nonoverlapping(out.as_ptr(), out_sg, out.len());
        let elem = base as *mut VuVirtqElement;
        elem.write(VuVirtqElement { index, out_num: out.len() as u32, in_num: in_.len() as u32, in_sg, out_sg });
        Some(elem)
    }
}
