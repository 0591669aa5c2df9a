//! Guest memory mappings that left the memory table (REM_MEM_REG, SET_MEM_TABLE) while popped
//! elements may still point into them.
//!
//! A `VuVirtqElement` keeps raw iovec pointers into guest memory from `vu_queue_pop` until the
//! backend hands it back (`vu_queue_push`/`fill`, `rewind`), and asynchronous backends do that
//! long after the memory lock was released. Unmapping a region at once (as the original does)
//! lets a frontend make such a backend write to unmapped memory, or into whatever is mapped at
//! that address next. So while any queue has elements in use (`inuse > 0`), removed mappings
//! are kept here and unmapped once every queue's `inuse` is back to 0 (the next memory-lock
//! release that finds it so: `device::MemRead`/`MemWrite` drop), at RESET_DEVICE (which sets
//! every `inuse` to 0) or at `vu_deinit`. GET_VRING_BASE does not release them: an
//! asynchronous backend may still complete the stopped queue's requests.
//!
//! The list is bounded ([`MAX_RETIRED_MAPPINGS`]): a frontend that keeps replacing the table
//! while the backend holds an element gets its request refused (`panic`, error reply) instead
//! of making us keep its memory mapped without end.

use parking_lot::Mutex;

use crate::abi::VHOST_USER_MAX_RAM_SLOTS;
use crate::mmap::Mapping;

/// At most this many removed mappings wait for their elements: one full table of memory slots.
pub const MAX_RETIRED_MAPPINGS: usize = VHOST_USER_MAX_RAM_SLOTS;

#[derive(Default)]
pub struct Retired {
    /// Changed only under the memory write lock (so never contended). Whether it is empty is
    /// mirrored in the memory lock's word (`MemoryGate::set_retired`), which the data path
    /// sees as it leaves.
    mappings: Mutex<Vec<Mapping>>,
}

impl Retired {
    pub fn len(&self) -> usize {
        self.mappings.lock().len()
    }

    /// Whether `n` more mappings fit under the bound.
    pub fn has_room(&self, n: usize) -> bool {
        self.len().saturating_add(n) <= MAX_RETIRED_MAPPINGS
    }

    /// Keeps `mappings` until `release`.
    pub fn keep(&self, mappings: impl IntoIterator<Item = Mapping>) {
        self.mappings.lock().extend(mappings);
    }

    /// Unmaps every kept mapping.
    pub fn release(&self) {
        let list = std::mem::take(&mut *self.mappings.lock());
        drop(list);
    }
}
