//! The device IOTLB of `VIRTIO_F_IOMMU_PLATFORM` (virtio feature 33): once the frontend acks
//! it, every address the guest gives the device (ring addresses, descriptors, indirect tables)
//! is an I/O virtual address. The frontend sends the translations it wants us to use
//! (VHOST_USER_IOTLB_MSG update: IOVA range → frontend user address, with a permission) and
//! takes them back (invalidate); we ask for a missing one on the backend channel (miss).
//!
//! The table maps IOVA ranges to frontend user addresses only: those are turned into our
//! pointers through the memory table at each use, so an entry never keeps memory mapped and
//! an invalidation never leaves a pointer into unmapped memory (the mappings behind popped
//! elements are the memory table's, kept alive by `crate::retired`).
//!
//! It lives in the device's private state and is guarded by the memory lock: queue
//! operations read it under the read lock, IOTLB_MSG changes it under the write lock
//! (`device::MemWrite::iotlb_mut`).
//!
//! Bounded: at most [`MAX_ENTRIES`] entries; an update beyond that evicts the oldest entry
//! that no mapped ring uses (eviction is always safe: the next use of its range is a miss).

/// VHOST_ACCESS_RO / WO / RW: what an entry allows, what an access needs.
pub const PERM_RO: u8 = 1;
pub const PERM_WO: u8 = 2;
pub const PERM_RW: u8 = 3;

/// `vhost_iotlb_msg.type`.
pub const IOTLB_MISS: u8 = 1;
pub const IOTLB_UPDATE: u8 = 2;
pub const IOTLB_INVALIDATE: u8 = 3;
pub const IOTLB_ACCESS_FAIL: u8 = 4;

/// The most entries the table holds (DPDK's IOTLB cache holds as many).
pub const MAX_ENTRIES: usize = 2048;

/// `struct vhost_iotlb_msg`: the payload of VHOST_USER_IOTLB_MSG and of the backend's
/// VHOST_USER_BACKEND_IOTLB_MSG.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IotlbMsg {
    pub iova: u64,
    pub size: u64,
    pub uaddr: u64,
    pub perm: u8,
    pub kind: u8,
    pub _pad: [u8; 6],
}

pub const IOTLB_MSG_SIZE: usize = std::mem::size_of::<IotlbMsg>();
const _: () = assert!(IOTLB_MSG_SIZE == 32);

/// One translation: `[iova, iova + size)` → `[uaddr, uaddr + size)` with `perm`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub iova: u64,
    pub size: u64,
    pub uaddr: u64,
    pub perm: u8,
    /// Insertion order, for eviction.
    seq: u64,
}

impl Entry {
    /// The last IOVA of the entry (never wraps: checked on insertion).
    fn last(&self) -> u64 {
        self.iova + (self.size - 1)
    }
}

/// Why an update was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateError {
    ZeroSize,
    Wraps,
    BadPerm(u8),
    /// It overlaps an entry that translates differently.
    Overlap,
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateError::ZeroSize => write!(f, "size 0"),
            UpdateError::Wraps => write!(f, "the IOVA or user address range wraps"),
            UpdateError::BadPerm(p) => write!(f, "unknown permission {p}"),
            UpdateError::Overlap => write!(f, "it overlaps an entry that translates differently"),
        }
    }
}

/// What a lookup found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The frontend user address of the IOVA, and how many bytes (at most the asked length)
    /// the entry translates from there.
    Hit { uaddr: u64, len: u64 },
    /// No entry holds the IOVA.
    Miss,
    /// An entry holds it without the permission the access needs.
    Denied,
}

/// The entries, sorted by IOVA and free of overlaps.
#[derive(Default)]
pub struct Iotlb {
    entries: Vec<Entry>,
    next_seq: u64,
}

impl Iotlb {
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn clear(&mut self) {
        self.entries = Vec::new();
    }

    /// The entries, in IOVA order.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Where the first entry ending at or after `iova` is.
    #[inline]
    fn index_of(&self, iova: u64) -> usize {
        self.entries.partition_point(|e| e.last() < iova)
    }

    /// Translates `iova` for an access that needs `need` (PERM_RO / WO / RW, or 0 for any
    /// entry) of up to `len` bytes (`len` > 0).
    #[inline]
    pub fn lookup(&self, iova: u64, len: u64, need: u8) -> Lookup {
        let Some(e) = self.entries.get(self.index_of(iova)).filter(|e| e.iova <= iova) else {
            return Lookup::Miss;
        };
        if e.perm & need != need {
            return Lookup::Denied;
        }
        let off = iova - e.iova;
        Lookup::Hit { uaddr: e.uaddr + off, len: len.min(e.size - off) }
    }

    /// Adds an entry. An exact duplicate of an entry is accepted and changes nothing (two
    /// queues missing the same page get two updates); any other overlap is refused. With
    /// the table full, the oldest entry for which `pinned` is false is evicted first (if
    /// every entry is pinned, the oldest one).
    pub fn insert(
        &mut self,
        iova: u64,
        size: u64,
        uaddr: u64,
        perm: u8,
        pinned: impl Fn(&Entry) -> bool,
    ) -> Result<(), UpdateError> {
        if size == 0 {
            return Err(UpdateError::ZeroSize);
        }
        if iova.checked_add(size - 1).is_none() || uaddr.checked_add(size - 1).is_none() {
            return Err(UpdateError::Wraps);
        }
        if !matches!(perm, PERM_RO | PERM_WO | PERM_RW) {
            return Err(UpdateError::BadPerm(perm));
        }
        let new = Entry { iova, size, uaddr, perm, seq: self.next_seq };
        let idx = self.index_of(iova);
        if let Some(e) = self.entries.get(idx) {
            if e.iova <= new.last() {
                let same = e.iova == iova && e.size == size && e.uaddr == uaddr && e.perm == perm;
                return if same { Ok(()) } else { Err(UpdateError::Overlap) };
            }
        }
        self.next_seq += 1;
        let mut idx = idx;
        if self.entries.len() >= MAX_ENTRIES {
            let victim = self.victim(pinned);
            self.entries.remove(victim);
            if victim < idx {
                idx -= 1;
            }
        }
        self.entries.insert(idx, new);
        Ok(())
    }

    /// The entry to evict: the oldest unpinned one, else the oldest.
    #[cold]
    fn victim(&self, pinned: impl Fn(&Entry) -> bool) -> usize {
        let oldest = |it: &mut dyn Iterator<Item = (usize, &Entry)>| {
            it.min_by_key(|(_, e)| e.seq).map(|(i, _)| i)
        };
        oldest(&mut self.entries.iter().enumerate().filter(|(_, e)| !pinned(e)))
            .or_else(|| oldest(&mut self.entries.iter().enumerate()))
            .unwrap_or(0)
    }

    /// Removes every entry that intersects `[iova, iova + size)` (a range that runs past the
    /// end of the address space ends there); returns how many. Size 0 removes nothing.
    pub fn invalidate(&mut self, iova: u64, size: u64) -> usize {
        if size == 0 {
            return 0;
        }
        let last = iova.saturating_add(size - 1);
        let start = self.index_of(iova);
        let end = start + self.entries[start..].partition_point(|e| e.iova <= last);
        self.entries.drain(start..end);
        end - start
    }
}

/// Whether `[a, a + alen)` and `[b, b + blen)` intersect (lengths > 0, saturating ends).
pub fn intersects(a: u64, alen: u64, b: u64, blen: u64) -> bool {
    alen > 0 && blen > 0 && a <= b.saturating_add(blen - 1) && b <= a.saturating_add(alen - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert(
        t: &mut Iotlb,
        iova: u64,
        size: u64,
        uaddr: u64,
        perm: u8,
    ) -> Result<(), UpdateError> {
        t.insert(iova, size, uaddr, perm, |_| false)
    }

    #[test]
    fn lookups_translate_within_entries_and_check_permissions() {
        let mut t = Iotlb::default();
        insert(&mut t, 0x1000, 0x1000, 0x7000_0000, PERM_RO).unwrap();
        insert(&mut t, 0x3000, 0x2000, 0x8000_0000, PERM_RW).unwrap();
        assert_eq!(t.lookup(0x1010, 8, PERM_RO), Lookup::Hit { uaddr: 0x7000_0010, len: 8 });
        assert_eq!(t.lookup(0x1ff0, 0x100, PERM_RO), Lookup::Hit { uaddr: 0x7000_0ff0, len: 0x10 });
        assert_eq!(t.lookup(0x1010, 8, PERM_WO), Lookup::Denied);
        assert_eq!(t.lookup(0x1010, 8, 0), Lookup::Hit { uaddr: 0x7000_0010, len: 8 });
        assert_eq!(t.lookup(0x2000, 8, PERM_RO), Lookup::Miss);
        assert_eq!(t.lookup(0x4fff, 8, PERM_RW), Lookup::Hit { uaddr: 0x8000_1fff, len: 1 });
        assert_eq!(t.lookup(0x5000, 1, PERM_RO), Lookup::Miss);
        assert_eq!(t.lookup(0, 1, PERM_RO), Lookup::Miss);
    }

    #[test]
    fn bad_updates_are_refused_and_duplicates_accepted() {
        let mut t = Iotlb::default();
        assert_eq!(insert(&mut t, 0x1000, 0, 0x1000, PERM_RO), Err(UpdateError::ZeroSize));
        assert_eq!(insert(&mut t, u64::MAX - 1, 4, 0x1000, PERM_RO), Err(UpdateError::Wraps));
        assert_eq!(insert(&mut t, 0x1000, 4, u64::MAX - 1, PERM_RO), Err(UpdateError::Wraps));
        assert_eq!(insert(&mut t, 0x1000, 4, 0x1000, 0), Err(UpdateError::BadPerm(0)));
        assert_eq!(insert(&mut t, 0x1000, 4, 0x1000, 4), Err(UpdateError::BadPerm(4)));
        insert(&mut t, 0x1000, 0x1000, 0x9000, PERM_RW).unwrap();
        insert(&mut t, 0x1000, 0x1000, 0x9000, PERM_RW).unwrap();
        assert_eq!(t.len(), 1);
        assert_eq!(insert(&mut t, 0x1800, 0x1000, 0x9000, PERM_RW), Err(UpdateError::Overlap));
        assert_eq!(insert(&mut t, 0x800, 0x1000, 0x9000, PERM_RW), Err(UpdateError::Overlap));
        assert_eq!(insert(&mut t, 0x1000, 0x1000, 0xa000, PERM_RW), Err(UpdateError::Overlap));
        assert_eq!(insert(&mut t, 0, 0x10000, 0xa000, PERM_RW), Err(UpdateError::Overlap));
        // Adjacent entries are fine; the full address space end too.
        insert(&mut t, 0x2000, 0x1000, 0x9000, PERM_RW).unwrap();
        insert(&mut t, 0x0, 0x1000, 0x9000, PERM_RW).unwrap();
        insert(&mut t, u64::MAX - 0xfff, 0x1000, 0x9000, PERM_RO).unwrap();
        assert_eq!(t.len(), 4);
        assert_eq!(t.lookup(u64::MAX, 1, PERM_RO), Lookup::Hit { uaddr: 0x9fff, len: 1 });
    }

    #[test]
    fn invalidation_removes_every_intersecting_entry() {
        let mut t = Iotlb::default();
        for i in 0..8u64 {
            insert(&mut t, i * 0x2000, 0x1000, 0x10_0000 + i * 0x1000, PERM_RW).unwrap();
        }
        assert_eq!(t.invalidate(0x1000, 0x1000), 0, "the gap between two entries");
        assert_eq!(t.invalidate(0x1000, 0), 0);
        assert_eq!(t.invalidate(0x1fff, 2), 1, "the last byte of a gap and one of an entry");
        assert_eq!(t.lookup(0x2000, 1, PERM_RO), Lookup::Miss);
        assert_eq!(t.invalidate(0x4800, 0x4000), 3);
        assert_eq!(t.len(), 4);
        assert_eq!(t.invalidate(0xe000, u64::MAX), 1, "a range past the end of the space");
        assert_eq!(t.invalidate(0, u64::MAX), 3);
        assert_eq!(t.len(), 0);
    }

    #[test]
    fn a_flood_stays_bounded_and_evicts_the_oldest_unpinned() {
        let mut t = Iotlb::default();
        for i in 0..(MAX_ENTRIES as u64 * 3) {
            t.insert(i * 0x1000, 0x1000, i * 0x1000, PERM_RW, |e| e.iova == 0).unwrap();
            assert!(t.len() <= MAX_ENTRIES);
        }
        assert_eq!(t.len(), MAX_ENTRIES);
        assert!(matches!(t.lookup(0, 1, PERM_RO), Lookup::Hit { .. }), "pinned entry kept");
        assert_eq!(t.lookup(0x1000, 1, PERM_RO), Lookup::Miss, "oldest unpinned evicted");
        let newest = (MAX_ENTRIES as u64 * 3 - 1) * 0x1000;
        assert!(matches!(t.lookup(newest, 1, PERM_RO), Lookup::Hit { .. }));
        let sorted = t.entries.windows(2).all(|w| w[0].last() < w[1].iova);
        assert!(sorted);
    }

    #[test]
    fn intersection() {
        assert!(intersects(0, 10, 9, 1));
        assert!(!intersects(0, 10, 10, 1));
        assert!(intersects(5, u64::MAX, u64::MAX, 1));
        assert!(!intersects(5, 0, 5, 1));
    }
}
