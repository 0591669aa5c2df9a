//! The data plane: the `vu_queue_*` operations over either ring layout.
//!
//! One call is one [`Queue`] context (device, memory read guard's table, the queue). Its
//! readiness prologue ([`Queue::ring`]) runs once per call and yields the queue's [`Ring`]:
//! the layout the ring was mapped with, split or packed. Each operation then runs the
//! layout's implementation of [`RingOps`]; nothing below the dispatch asks which layout it is.

pub mod chain;
pub mod element;
pub mod express;
pub mod ids;
mod mapper;
pub mod packed;
pub mod packed_ring;
pub mod ring;
pub mod setup;
pub mod split;
#[cfg(test)]
mod tests;

use std::fmt;

use libc::iovec;

use crate::abi::{VuVirtq, VuVirtqElement};
use crate::device::Dev;
use crate::memory::MemoryTable;
use ids::QueueIds;
use packed_ring::{PackedRing, Pos};
use ring::SplitRing;

pub use split::{signal_eventfd, valid_ring_size, Notify};

/// `VIRTIO_F_RING_PACKED`: the packed ring layout (virtio 1.1).
pub const VIRTIO_F_RING_PACKED: u32 = 34;

/// A fatal problem with what the guest put in a queue (or with a notification fd); becomes a
/// `panic` callback with the original's wording. Plain data, so the hot path carries no
/// allocation and returns it in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    AvailIndexJump {
        from: u16,
        to: u16,
    },
    BadHead(u32),
    SizeExceeded,
    DescNext(u32),
    Looped,
    IndirectInChain,
    NestedIndirect,
    IndirectSize,
    IndirectTable,
    Order,
    ZeroSized,
    TooManySegments,
    BadAddress,
    Remap,
    InflightSlot {
        queue: usize,
        desc: u32,
    },
    LogTooSmall {
        addr: u64,
        len: u64,
    },
    EventfdWrite(i32),
    BadElement,
    /// Packed ring: a chain longer than the ring.
    ChainTooLong,
    /// Packed ring: a buffer id outside the ring.
    BadId(u16),
    /// Packed ring: a buffer id the driver made available again while it is in flight.
    IdInFlight(u16),
    /// Packed ring: a ring position (SET_VRING_BASE) outside the ring.
    BadPosition,
    /// Packed inflight area: its bookkeeping disagrees with the ring.
    InflightArea,
    /// A packed chain links into a descriptor the driver has not made available in its lap.
    DescNotAvailable(u16),
    /// A packed driver event offset outside the ring.
    EventOffset(u16),
    /// IOMMU: no IOTLB entry translates `iova` (asked for on the backend channel; the
    /// operation is retried once the frontend's update arrives). Not a guest fault.
    IotlbMiss {
        iova: u64,
        perm: u8,
    },
    /// IOMMU: the entry for `iova` does not allow the access (`perm` is what it needs).
    IotlbDenied {
        iova: u64,
        perm: u8,
    },
}

impl Fault {
    /// Whether this is an IOTLB miss: the operation did nothing and is retried later.
    #[inline]
    pub fn is_miss(&self) -> bool {
        matches!(self, Fault::IotlbMiss { .. })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::AvailIndexJump { from, to } => {
                write!(f, "Guest moved used index from {from} to {to}")
            }
            Fault::BadHead(h) => write!(f, "Guest says index {h} is available"),
            Fault::SizeExceeded => write!(f, "Virtqueue size exceeded"),
            Fault::DescNext(n) => write!(f, "Desc next is {n}"),
            Fault::Looped => write!(f, "Looped descriptor"),
            Fault::IndirectInChain => write!(f, "Indirect descriptor inside a descriptor chain"),
            Fault::NestedIndirect => write!(f, "Nested indirect descriptor table"),
            Fault::IndirectSize => write!(f, "Invalid size for indirect buffer table"),
            Fault::IndirectTable => write!(f, "Invalid indirect buffer table"),
            Fault::Order => write!(f, "Incorrect order for descriptors"),
            Fault::ZeroSized => write!(f, "virtio: zero sized buffers are not allowed"),
            Fault::TooManySegments => write!(f, "virtio: too many descriptors in indirect table"),
            Fault::BadAddress => write!(f, "virtio: invalid address for buffers"),
            Fault::Remap => write!(f, "remapping queue on access"),
            Fault::InflightSlot { queue, desc } => {
                write!(f, "inflight area of queue {queue} has no slot for descriptor {desc}")
            }
            Fault::LogTooSmall { addr, len } => {
                write!(f, "dirty log too small for write at {addr:#x}+{len:#x}")
            }
            Fault::EventfdWrite(errno) => {
                write!(f, "Error writing eventfd: {}", std::io::Error::from_raw_os_error(errno))
            }
            Fault::BadElement => write!(f, "invalid element index"),
            Fault::ChainTooLong => write!(f, "Looped descriptor"),
            Fault::BadId(id) => write!(f, "Guest says buffer id {id} is available"),
            Fault::IdInFlight(id) => write!(f, "Guest reuses buffer id {id} while in flight"),
            Fault::BadPosition => write!(f, "ring position outside the ring"),
            Fault::InflightArea => write!(f, "inconsistent packed inflight area"),
            Fault::DescNotAvailable(slot) => {
                write!(f, "Guest chains into descriptor {slot}, which is not available")
            }
            Fault::EventOffset(off) => write!(f, "Guest's event offset {off} is outside the ring"),
            Fault::IotlbMiss { iova, perm } => {
                write!(f, "IOTLB miss for iova {iova:#x} (perm {perm})")
            }
            Fault::IotlbDenied { iova, perm } => {
                write!(f, "virtio: IOTLB entry for iova {iova:#x} does not allow access {perm}")
            }
        }
    }
}

/// A completed element as the caller hands it back: its index and its device-writable
/// buffers (for dirty logging of what the device wrote; read only then, so a push without
/// logging loads one field of the element).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Completed<'e> {
    pub index: u32,
    elem: &'e VuVirtqElement,
}

impl<'e> Completed<'e> {
    /// # Safety
    /// `elem` is an element from `vu_queue_pop` that the caller still owns: its `in_num`
    /// iovecs at `in_sg` are readable for `'e`.
    #[inline]
    pub unsafe fn new(elem: &'e VuVirtqElement) -> Completed<'e> {
        Completed { index: elem.index, elem }
    }

    /// The element itself (one register, where the pair would not fit: `ffi::queue`'s
    /// out-of-line continuations).
    #[inline(always)]
    pub fn element(self) -> &'e VuVirtqElement {
        self.elem
    }

    /// The element's device-writable iovecs.
    pub fn in_sg(&self) -> &'e [iovec] {
        let (p, n) = (self.elem.in_sg, self.elem.in_num as usize);
        if p.is_null() || n == 0 {
            return &[];
        }
        // SAFETY: `new`'s contract: `in_num` readable iovecs at `in_sg`.
        unsafe { std::slice::from_raw_parts(p, n) }
    }
}

/// One queue call: the device, its memory (read-locked for the call), the queue.
pub struct Queue<'a> {
    pub dev: Dev<'a>,
    /// By value (two words): a reference to the caller's guard would keep it in memory.
    pub mem: MemoryTable<'a>,
    pub vq: &'a mut VuVirtq,
    pub qidx: usize,
}

/// A mapped ring, as the layout it was mapped with.
pub enum Ring<'a> {
    Split(SplitRing),
    Packed(PackedRing, &'a mut QueueIds),
}

/// The operations behind the `vu_queue_*` calls, implemented once per layout.
pub trait RingOps {
    fn pop(&mut self, q: &mut Queue, sz: usize) -> Result<*mut VuVirtqElement, Fault>;
    fn rewind(&mut self, q: &mut Queue, num: u32) -> bool;
    fn fill(&mut self, q: &mut Queue, elem: Completed, len: u32, idx: u32) -> Result<(), Fault>;
    fn flush(&mut self, q: &mut Queue, count: u32) -> Result<(), Fault>;
    fn push(&mut self, q: &mut Queue, elem: Completed, len: u32) -> Result<(), Fault>;
    fn is_empty(&mut self, q: &mut Queue) -> Result<bool, Fault>;
    fn should_notify(&mut self, q: &mut Queue) -> Result<bool, Fault>;
    fn set_notification(&mut self, q: &mut Queue, enable: bool) -> Result<(), Fault>;
    fn avail_bytes(
        &mut self,
        q: &mut Queue,
        max_in: u32,
        max_out: u32,
    ) -> Result<(u32, u32), Fault>;
}

macro_rules! dispatch {
    ($q:expr, $none:expr, |$r:ident| $call:expr) => {
        match $q.ring()? {
            None => Ok($none),
            Some(Ring::Split(mut $r)) => $call,
            Some(Ring::Packed(ring, ids)) => {
                let mut $r = packed::Packed { ring, ids };
                $call
            }
        }
    };
}

/// Forgets the ring pointers (the ring is unmapped until its next use). `desc` is the mapped
/// flag the queue calls test (`SplitRing::of`, `PackedRing::of`): it is cleared first here and
/// set last by `map_ring`, so a non-null `desc` means all three parts are mapped. Both ring
/// layouts, and every place that forgets a ring, use this one function.
pub fn unmap_ring(vq: &mut VuVirtq) {
    vq.vring.desc = std::ptr::null_mut();
    vq.vring.avail = std::ptr::null_mut();
    vq.vring.used = std::ptr::null_mut();
}

/// Whether the frontend negotiated packed rings (the layout rings are mapped with).
#[inline]
pub fn is_packed(dev: Dev) -> bool {
    dev.has_feature(VIRTIO_F_RING_PACKED)
}

/// Points `vq.vring` at the ring parts for the negotiated layout, each checked to lie wholly
/// in one region and be aligned as the virtio spec requires; on failure the ring is unmapped.
/// The caller holds the memory lock (write, or read as the queue's own thread).
pub fn map_ring(dev: Dev, mem: &MemoryTable, vq: &mut VuVirtq) -> Result<(), Fault> {
    if is_packed(dev) {
        packed::map_ring(mem, vq)?;
        packed::suppress_kicks(dev, vq);
        Ok(())
    } else {
        split::map_ring(mem, vq)
    }
}

impl<'a> Queue<'a> {
    /// The readiness prologue of every queue call: the ring if the queue can be used now,
    /// remapping it if a memory change unmapped it (the original's `vu_is_vq_usable`).
    #[inline(always)]
    pub fn ring(&mut self) -> Result<Option<Ring<'a>>, Fault> {
        if self.dev.broken() {
            return Ok(None);
        }
        if !is_packed(self.dev) {
            // SAFETY: ring pointers are only set by `map_ring` (for this layout: a layout
            // change unmaps them), and the caller holds the read lock.
            if let Some(r) = unsafe { SplitRing::of(self.vq) } {
                return Ok(Some(Ring::Split(r)));
            }
            if !remap(self.dev, self.mem, self.vq, self.qidx)? {
                return Ok(None);
            }
            // SAFETY: as above (just mapped).
            return Ok(unsafe { SplitRing::of(self.vq) }.map(Ring::Split));
        }
        // SAFETY: as above, mapped for the packed layout.
        let ring = match unsafe { PackedRing::of(self.vq) } {
            Some(r) => r,
            None => {
                if !remap(self.dev, self.mem, self.vq, self.qidx)? {
                    return Ok(None);
                }
                // SAFETY: as above (just mapped).
                let Some(r) = (unsafe { PackedRing::of(self.vq) }) else { return Ok(None) };
                r
            }
        };
        let Some(ids) = ids::queue_ids(self.dev, self.qidx) else { return Ok(None) };
        if ids.ids.len() != usize::from(ring.num()) {
            ids.reset(ring.num());
        }
        if !ring.holds(Pos(self.vq.last_avail_idx)) || !ring.holds(Pos(self.vq.used_idx)) {
            return Err(Fault::BadPosition);
        }
        Ok(Some(Ring::Packed(ring, ids)))
    }

    /// `vu_queue_pop`: the next request, or NULL when there is none (or no memory for it).
    #[inline(always)]
    pub fn pop(&mut self, sz: usize) -> Result<*mut VuVirtqElement, Fault> {
        dispatch!(self, std::ptr::null_mut(), |r| r.pop(self, sz))
    }

    /// `vu_queue_unpop`: the most recent element goes back to the ring.
    pub fn unpop(&mut self) -> Result<(), Fault> {
        if !is_packed(self.dev) {
            split::unpop(self.dev, &self.mem, self.vq);
            return Ok(());
        }
        dispatch!(self, (), |r| {
            r.rewind(self, 1);
            Ok(())
        })
    }

    /// `vu_queue_rewind`: the last `num` popped elements go back to the ring; false if fewer
    /// are in flight. A split queue needs no ring for it (the original's arithmetic).
    pub fn rewind(&mut self, num: u32) -> Result<bool, Fault> {
        if !is_packed(self.dev) {
            return Ok(split::rewind(self.dev, &self.mem, self.vq, num));
        }
        dispatch!(self, false, |r| Ok(r.rewind(self, num)))
    }

    /// `vu_queue_fill`.
    pub fn fill(&mut self, elem: Completed, len: u32, idx: u32) -> Result<(), Fault> {
        dispatch!(self, (), |r| r.fill(self, elem, len, idx))
    }

    /// `vu_queue_flush`.
    pub fn flush(&mut self, count: u32) -> Result<(), Fault> {
        dispatch!(self, (), |r| r.flush(self, count))
    }

    /// `vu_queue_push`: fill + flush of one element.
    #[inline(always)]
    pub fn push(&mut self, elem: Completed, len: u32) -> Result<(), Fault> {
        let ring = match self.ring() {
            Err(f) if f.is_miss() => {
                // The ring's IOTLB entries were invalidated under the backend: as without a
                // ring, the element can only be forgotten.
                split::forget(self, elem.index)?;
                return Err(f);
            }
            r => r?,
        };
        match ring {
            // No ring: nothing to publish, but the element is no longer in flight.
            None => split::forget(self, elem.index),
            Some(Ring::Split(mut r)) => r.push(self, elem, len),
            Some(Ring::Packed(ring, ids)) => packed::Packed { ring, ids }.push(self, elem, len),
        }
    }

    /// `vu_queue_empty`: true when nothing is waiting or the queue is not ready.
    pub fn empty(&mut self) -> Result<bool, Fault> {
        dispatch!(self, true, |r| r.is_empty(self))
    }

    /// `vu_queue_set_notification`.
    pub fn set_notification(&mut self, enable: bool) -> Result<(), Fault> {
        self.vq.notification = enable;
        dispatch!(self, (), |r| r.set_notification(self, enable))
    }

    /// `vu_queue_get_avail_bytes`: bytes offered in waiting requests, counted up to the given
    /// maxima. Returns (in, out).
    pub fn avail_bytes(&mut self, max_in: u32, max_out: u32) -> Result<(u32, u32), Fault> {
        dispatch!(self, (0, 0), |r| r.avail_bytes(self, max_in, max_out))
    }

    /// Decides whether and how `vu_queue_notify(_sync)` signals the driver.
    #[inline(always)]
    pub fn notify_decision(&mut self, sync: bool) -> Result<Notify, Fault> {
        let notify = dispatch!(self, false, |r| r.should_notify(self))?;
        Ok(if notify { split::delivery(self.dev, self.vq, sync) } else { Notify::None })
    }
}

/// Whether `vu_queue_notify`'s common case may be decided without the general prologue
/// (`Queue::ring`): a working device without NOTIFY_ON_EMPTY. The layout's
/// `quick_should_notify` then decides (`split::`, `packed::`): `None`, with nothing changed,
/// for the rest (unmapped, a bad packed event offset), which the general path
/// (`Queue::notify_decision`) decides. The caller holds the memory lock. Reads no ring position
/// the library did not write but the driver's event area.
#[inline(always)]
pub fn quick_notify_open(dev: Dev) -> bool {
    !dev.has_feature(split::VIRTIO_F_NOTIFY_ON_EMPTY) && !dev.broken()
}

/// Maps the ring again after a memory change unmapped it; false if it has no addresses.
/// Out of line, on values: a call taking the `Queue` context's address would keep it in
/// memory on every call's path.
#[cold]
#[inline(never)]
fn remap(dev: Dev, mem: MemoryTable, vq: &mut VuVirtq, qidx: usize) -> Result<bool, Fault> {
    let vra = &vq.vra;
    if vra.desc_user_addr == 0 || vra.used_user_addr == 0 || vra.avail_user_addr == 0 {
        return Ok(false);
    }
    map_ring(dev, &mem, vq)?;
    if mem.iotlb().is_some() {
        crate::iommu::ring_mapped(dev, vq, qidx)?;
    }
    Ok(true)
}

/// On queue start (SET_VRING_KICK): rebuild the in-flight state from the inflight area, for
/// the ring's layout (the original's `vu_check_queue_inflights`).
pub fn check_inflight(
    dev: Dev,
    mem: &MemoryTable,
    vq: &mut VuVirtq,
    qidx: usize,
) -> Result<(), String> {
    if !dev.has_protocol_feature(
        crate::abi::VhostUserProtocolFeature::VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD,
    ) {
        return Ok(());
    }
    let mut q = Queue { dev, mem: *mem, vq, qidx };
    let ring = q.ring();
    if matches!(ring, Err(f) if f.is_miss()) {
        // With the IOMMU the ring may not be translatable yet (its IOTLB updates come after
        // the start): the area is checked once the ring is mapped (`iommu::ring_mapped`).
        dev.ext().iommu.defer_inflight_check(qidx);
        return Ok(());
    }
    let ready = matches!(ring, Ok(Some(_)));
    if is_packed(dev) {
        if !ready {
            return Err("rings not mapped".into());
        }
        return crate::inflight::check_packed_queue(dev, q.vq, qidx);
    }
    // SAFETY: mapped by `ring()` above (or not at all), under the caller's lock.
    let used = if ready { unsafe { SplitRing::of(q.vq) }.map(|r| r.used_idx()) } else { None };
    crate::inflight::check_queue(dev, q.vq, qidx, used)
}
