//! The express lane of the three calls every request makes — pop, push and notify — for the
//! common case, on either ring layout (with or without inflight tracking): a working device
//! without the IOMMU or migration logging, a mapped ring, no resubmissions pending. Each is a
//! small function whose state stays in registers, on the values the general path (`Queue`)
//! would compute anyway. (`ffi::lane` is how the C entry points get here.)
//!
//! The lane refuses nothing itself. Whatever it does not handle — the unusual configurations
//! above, indirect tables, and every guest error (bad heads, loops, bad addresses, index jumps,
//! unavailable or reused packed ids) — it hands to the general path by returning `None` (or
//! `Head::General`, `false`) *before it has changed anything* that path reads: the general
//! path then starts over from the ring, sees what the guest wrote and gives the original's
//! reaction. So each check the general path makes is made here too (the lane just answers
//! "not mine" instead of naming the fault), and handing a call over is always safe.
//! `tests/express_lane.rs` holds the two paths to the same results.

pub mod packed;
pub mod split;

use std::ptr::NonNull;

use libc::iovec;

use crate::abi::{vring_desc, VuVirtq, VuVirtqElement, VIRTQUEUE_MAX_SIZE};
use crate::device::Dev;
use crate::dirty_log::VHOST_F_LOG_ALL;
use crate::iommu::VIRTIO_F_IOMMU_PLATFORM;
use crate::memory::{MemoryTable, RegionHint};
use crate::queue::chain::VRING_DESC_F_WRITE;
use crate::queue::element::ElementBuilder;
use crate::queue::ring::read_desc;

/// What the first part of a split ring's `vu_queue_pop` found (`split::pop_head`; the second
/// part is out of line so that the first makes no call, see `ffi::queue::pop_chain`).
pub enum Head {
    /// Nothing is waiting.
    Empty,
    /// The chain at this descriptor index is next; nothing changed yet: `split::pop_chain`
    /// takes it.
    At(u16),
    /// The general path takes the call.
    General,
}

/// The features of a push that the general path takes (it logs what the device wrote).
const PUSH_GENERAL_ONLY: u64 = 1 << VHOST_F_LOG_ALL;

/// Whether the lane may work the device's queues now: it works and guest addresses are not
/// IOVAs (the lane's memory table has no IOTLB: `Dev::mem_entered`). `excluded`: features
/// that send this call to the general path as well.
#[inline(always)]
fn lane_open(dev: Dev, excluded: u64) -> bool {
    dev.features() & (excluded | 1 << VIRTIO_F_IOMMU_PLATFORM) == 0 && !dev.broken()
}

/// Whether a queue has resubmissions pending (after a reconnect: the general path's).
#[inline(always)]
fn resubmitting(vq: &VuVirtq) -> bool {
    !vq.resubmit_list.is_null() && vq.resubmit_num > 0
}

/// What a split queue's `push` did.
pub enum Pushed {
    /// The element is used.
    Done,
    /// Nothing yet: the queue tracks inflight elements, which `split::push_tracked` does (out
    /// of line, so that this path makes no call).
    Tracked,
    /// Nothing: the general path takes the call.
    General,
}

/// An element being built from a chain's buffers, for both layouts: the element, and the
/// region the last buffer was in.
struct Buffers<'m> {
    mem: &'m MemoryTable<'m>,
    elem: ElementBuilder,
    hint: RegionHint,
}

impl<'m> Buffers<'m> {
    /// A fresh element of `sz` bytes (`None`: too small, or no memory).
    #[inline(always)]
    fn new(mem: &'m MemoryTable<'m>, sz: usize) -> Option<Buffers<'m>> {
        if sz < std::mem::size_of::<VuVirtqElement>() {
            return None;
        }
        Some(Buffers { mem, elem: ElementBuilder::new(sz)?, hint: mem.first_hint() })
    }

    /// Appends the buffer of a descriptor with these fields; `None` for what the general path
    /// refuses: an empty buffer, a readable one after a writable one, an address outside guest
    /// memory, too many segments (or no memory for them).
    #[inline(always)]
    fn add(&mut self, addr: u64, len: u32, flags: u16) -> Option<()> {
        if len == 0 {
            return None;
        }
        let write = flags & VRING_DESC_F_WRITE != 0;
        // The out iovecs come first: a readable buffer after a writable one is out of order.
        if !write && !self.elem.only_readable() {
            return None;
        }
        let len = u64::from(len);
        match self.locate(addr, len) {
            Some(p) => {
                if !self.elem.push(iovec { iov_base: p.cast(), iov_len: len as usize }) {
                    return None;
                }
            }
            // It spans regions (or lies outside guest memory: then this fails too).
            None => {
                let elem = std::mem::replace(&mut self.elem, ElementBuilder::empty());
                (self.elem, self.hint) = map_spanning(*self.mem, elem, addr, len)?;
            }
        }
        if !write {
            self.elem.end_readable();
        }
        Some(())
    }

    /// Where `[addr, addr+len)` is in ours if one region holds all of it: the hint's region,
    /// else the region holding `addr`, which becomes the hint.
    #[inline(always)]
    fn locate(&mut self, addr: u64, len: u64) -> Option<*mut u8> {
        if let Some(p) = self.hint.whole(addr, len) {
            return Some(p);
        }
        self.hint = self.mem.hint_for(addr)?;
        self.hint.whole(addr, len)
    }

    /// The indirect table a descriptor with these fields points to, in place: `None` unless
    /// its size is a whole number of descriptors, at most VIRTQUEUE_MAX_SIZE of them, and it
    /// lies wholly in one region, aligned (the general path refuses the first two and copies
    /// a table that spans regions or is misaligned).
    #[inline(always)]
    fn table(&mut self, addr: u64, len: u32) -> Option<IndirectTable> {
        const DESC: u32 = std::mem::size_of::<vring_desc>() as u32;
        if len == 0 || !len.is_multiple_of(DESC) || len / DESC > VIRTQUEUE_MAX_SIZE {
            return None;
        }
        let p = self.locate(addr, u64::from(len))?;
        if !(p as usize).is_multiple_of(std::mem::align_of::<vring_desc>()) {
            return None;
        }
        let table = IndirectTable { descs: p.cast(), len: (len / DESC) as u16 };
        // The table is the chain's first buffer list: room for all of it at once.
        self.elem.reserve_empty(usize::from(table.len)).then_some(table)
    }

    /// The element, with `index` as its head (split) or buffer id (packed).
    #[inline(always)]
    fn finish(self, index: u16) -> Option<NonNull<VuVirtqElement>> {
        NonNull::new(self.elem.finish(u32::from(index)))
    }
}

/// An indirect table in guest memory (`Buffers::table`): `len` descriptors at `descs`, in the
/// split layout (packed tables are read through the same fields: see `queue::packed`).
#[derive(Clone, Copy)]
struct IndirectTable {
    descs: *const vring_desc,
    len: u16,
}

impl IndirectTable {
    /// Entry `i`, if `i < len`.
    #[inline(always)]
    fn get(self, i: u16) -> Option<vring_desc> {
        // SAFETY: `Buffers::table` found `len` descriptors at `descs`, aligned, inside one
        // region of the memory table, which stays mapped while the caller holds it.
        unsafe { read_desc(self.descs, usize::from(self.len), usize::from(i)) }
    }
}

/// A buffer that spans regions: translated region by region (`MemoryTable::translate_dma`,
/// as the general path does), with the region of its end as the new hint. Out of line, on
/// values, so that the caller's element and hint stay in registers.
#[inline(never)]
fn map_spanning(
    mem: MemoryTable,
    mut elem: ElementBuilder,
    mut addr: u64,
    mut rest: u64,
) -> Option<(ElementBuilder, RegionHint)> {
    let mut hint = RegionHint::default();
    loop {
        let (p, n) = mem.translate_dma(addr, rest, 0, &mut hint).ok()?;
        if !elem.push(iovec { iov_base: p.cast(), iov_len: n as usize }) {
            return None;
        }
        rest -= n;
        if rest == 0 {
            return Some((elem, hint));
        }
        addr = addr.checked_add(n)?;
    }
}
