//! Dirty page logging for live migration: one bit per 4 KiB guest page in a table the frontend
//! shares (SET_LOG_BASE), set for every byte the device writes while VHOST_F_LOG_ALL is on.
//! The table is `VuDev.log_table` / `log_size`; callers hold the memory lock.

use std::sync::atomic::{AtomicU8, Ordering};

use crate::abi::VHOST_LOG_PAGE;
use crate::device::Dev;

pub const VHOST_F_LOG_ALL: u32 = 26;

/// Marks the pages of `[addr, addr+len)` dirty in the device's log. `false` when the range is
/// beyond the log; `true` (nothing to do) when there is no log.
pub fn mark(dev: Dev, addr: u64, len: u64) -> bool {
    let (table, size) = (dev.log_table(), dev.log_size());
    if table.is_null() || len == 0 {
        return true;
    }
    let Some(last) = addr.checked_add(len - 1) else { return false };
    let (first_page, last_page) =
        (addr / u64::from(VHOST_LOG_PAGE), last / u64::from(VHOST_LOG_PAGE));
    if last_page / 8 >= size {
        return false;
    }
    for page in first_page..=last_page {
        // SAFETY: page / 8 < log_size (checked above) lies inside the log mapping, which stays
        // mapped while the caller holds the memory lock; the frontend reads the bitmap
        // concurrently, so bits are set atomically.
        let byte = unsafe { &*(table.add((page / 8) as usize) as *const AtomicU8) };
        byte.fetch_or(1 << (page % 8), Ordering::Relaxed);
    }
    true
}
