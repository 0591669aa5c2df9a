//! Dirty page logging for live migration: one bit per 4 KiB guest page in a table the frontend
//! shares (SET_LOG_BASE), set for every byte the device writes while VHOST_F_LOG_ALL is on.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::abi::VHOST_LOG_PAGE;
use crate::mmap::Mapping;

pub const VHOST_F_LOG_ALL: u32 = 26;

pub struct DirtyLog {
    mapping: Mapping,
}

impl DirtyLog {
    pub fn new(mapping: Mapping) -> DirtyLog {
        DirtyLog { mapping }
    }

    pub fn table(&self) -> *mut u8 {
        self.mapping.as_ptr()
    }

    pub fn size(&self) -> u64 {
        self.mapping.len() as u64
    }

    /// Marks the pages of `[addr, addr+len)` dirty. `false` when the range is beyond the log.
    pub fn mark(&self, addr: u64, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let Some(last) = addr.checked_add(len - 1) else { return false };
        let (first_page, last_page) = (addr / u64::from(VHOST_LOG_PAGE), last / u64::from(VHOST_LOG_PAGE));
        if last_page / 8 >= self.size() {
            return false;
        }
        for page in first_page..=last_page {
            // SAFETY: page / 8 < size (checked above) lies inside our mapping; the frontend
            // reads the bitmap concurrently, so bits are set atomically.
            let byte = unsafe { &*(self.mapping.as_ptr().add((page / 8) as usize) as *const AtomicU8) };
            byte.fetch_or(1 << (page % 8), Ordering::Relaxed);
        }
        true
    }
}
