// SPDX-License-Identifier: GPL-2.0-or-later
//! Driver side of a split virtqueue, living in the test's guest memory.

use std::collections::HashMap;
use std::os::unix::io::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost::VringConfigData;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::mem::GuestMemory;

pub const VRING_DESC_F_NEXT: u16 = 1;
pub const VRING_DESC_F_WRITE: u16 = 2;
pub const VRING_DESC_F_INDIRECT: u16 = 4;
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;

/// A raw split-ring descriptor.
#[derive(Clone, Copy, Debug, Default)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// One buffer of a chain: guest address, length, device-writable?
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub gpa: u64,
    pub len: u32,
    pub write: bool,
}

impl Buf {
    pub fn out(gpa: u64, len: u32) -> Self {
        Buf { gpa, len, write: false }
    }
    pub fn inb(gpa: u64, len: u32) -> Self {
        Buf { gpa, len, write: true }
    }
}

/// vring_need_event() from the virtio spec.
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

pub struct SplitQueue {
    pub mem: Arc<GuestMemory>,
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub event_idx: bool,
    /// Next avail index to publish (driver's shadow of avail->idx).
    pub next_avail: u16,
    /// Next used index we expect to consume.
    pub last_used: u16,
    free: Vec<u16>,
    /// head -> descriptors of its chain (to free on completion).
    inflight: HashMap<u16, Vec<u16>>,
    pub kick: EventFd,
    pub call: EventFd,
    /// Avail index at the last kick decision.
    kicked_at: u16,
    pub kicks: u64,
}

impl SplitQueue {
    /// Allocate and initialise the rings; avail->idx and used->idx start at
    /// `base` (the value that will be sent with SET_VRING_BASE).
    pub fn new(mem: &Arc<GuestMemory>, size: u16, event_idx: bool, base: u16) -> Self {
        assert!(size.is_power_of_two());
        let n = size as u64;
        let desc = mem.alloc(16 * n, 16);
        let avail = mem.alloc(6 + 2 * n, 4);
        let used = mem.alloc(6 + 8 * n, 4);
        let q = SplitQueue {
            mem: mem.clone(),
            size,
            desc,
            avail,
            used,
            event_idx,
            next_avail: base,
            last_used: base,
            free: (0..size).rev().collect(),
            inflight: HashMap::new(),
            kick: EventFd::new(EFD_NONBLOCK).unwrap(),
            call: EventFd::new(EFD_NONBLOCK).unwrap(),
            kicked_at: base,
            kicks: 0,
        };
        mem.store_u16(avail + 2, base);
        mem.store_u16(used + 2, base);
        // The device owns avail_event; start it at base so that the first
        // request is kicked whatever the base.
        mem.store_u16(q.avail_event_addr(), base);
        q
    }

    pub fn renew_eventfds(&mut self) {
        self.kick = EventFd::new(EFD_NONBLOCK).unwrap();
        self.call = EventFd::new(EFD_NONBLOCK).unwrap();
    }

    pub fn config(&self, flags: u32) -> VringConfigData {
        VringConfigData {
            queue_max_size: self.size,
            queue_size: self.size,
            flags,
            desc_table_addr: self.mem.qva(self.desc),
            used_ring_addr: self.mem.qva(self.used),
            avail_ring_addr: self.mem.qva(self.avail),
            log_addr: None,
        }
    }

    fn used_event_addr(&self) -> u64 {
        self.avail + 4 + 2 * self.size as u64
    }
    fn avail_event_addr(&self) -> u64 {
        self.used + 4 + 8 * self.size as u64
    }

    pub fn write_desc(&self, table: u64, i: u16, d: Desc) {
        let a = table + 16 * i as u64;
        self.mem.write_u64(a, d.addr);
        self.mem.write_u32(a + 8, d.len);
        self.mem.write_u16(a + 12, d.flags);
        self.mem.write_u16(a + 14, d.next);
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    fn take(&mut self) -> u16 {
        self.free.pop().expect("no free descriptors")
    }

    /// Build a direct chain; returns its head.
    pub fn add(&mut self, bufs: &[Buf]) -> u16 {
        assert!(!bufs.is_empty());
        let ids: Vec<u16> = (0..bufs.len()).map(|_| self.take()).collect();
        for (k, b) in bufs.iter().enumerate() {
            let last = k + 1 == bufs.len();
            let mut flags = if b.write { VRING_DESC_F_WRITE } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT;
            }
            let next = if last { 0 } else { ids[k + 1] };
            self.write_desc(self.desc, ids[k], Desc { addr: b.gpa, len: b.len, flags, next });
        }
        self.inflight.insert(ids[0], ids.clone());
        ids[0]
    }

    /// Build an indirect table for `bufs` and one ring descriptor pointing
    /// at it; returns the head.
    pub fn add_indirect(&mut self, bufs: &[Buf]) -> u16 {
        let n = bufs.len() as u64;
        let table = self.mem.alloc(16 * n, 16);
        for (k, b) in bufs.iter().enumerate() {
            let last = k + 1 == bufs.len();
            let mut flags = if b.write { VRING_DESC_F_WRITE } else { 0 };
            if !last {
                flags |= VRING_DESC_F_NEXT;
            }
            let d =
                Desc { addr: b.gpa, len: b.len, flags, next: if last { 0 } else { k as u16 + 1 } };
            self.write_desc(table, k as u16, d);
        }
        let head = self.take();
        self.write_desc(
            self.desc,
            head,
            Desc { addr: table, len: (16 * n) as u32, flags: VRING_DESC_F_INDIRECT, next: 0 },
        );
        self.inflight.insert(head, vec![head]);
        head
    }

    /// Reserve `n` descriptors of the ring for hand-written (possibly
    /// invalid) chains; they are never returned to the free list.
    pub fn reserve(&mut self, n: usize) -> Vec<u16> {
        (0..n).map(|_| self.take()).collect()
    }

    /// Put `head` in the avail ring (without kicking).
    pub fn publish(&mut self, head: u16) {
        let slot = self.next_avail % self.size;
        self.mem.write_u16(self.avail + 4 + 2 * slot as u64, head);
        self.next_avail = self.next_avail.wrapping_add(1);
        self.mem.store_u16(self.avail + 2, self.next_avail);
    }

    /// Write avail->idx directly (hostile tests).
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.next_avail = idx;
        self.mem.store_u16(self.avail + 2, idx);
    }

    /// Would the device want a kick for what was published since the last
    /// kick decision?
    pub fn needs_kick(&self) -> bool {
        let old = self.kicked_at;
        let new = self.next_avail;
        if old == new {
            return false;
        }
        if self.event_idx {
            need_event(self.avail_event(), new, old)
        } else {
            self.mem.load_u16(self.used) & VRING_USED_F_NO_NOTIFY == 0
        }
    }

    /// Kick if the device asked for it (EVENT_IDX / NO_NOTIFY rules).
    pub fn kick_if_needed(&mut self) -> bool {
        let k = self.needs_kick();
        self.kicked_at = self.next_avail;
        if k {
            self.kick_now();
        }
        k
    }

    pub fn kick_now(&mut self) {
        self.kicked_at = self.next_avail;
        self.kicks += 1;
        self.kick.write(1).unwrap();
    }

    pub fn avail_event(&self) -> u16 {
        self.mem.load_u16(self.avail_event_addr())
    }
    pub fn set_used_event(&self, v: u16) {
        self.mem.store_u16(self.used_event_addr(), v);
    }
    pub fn set_avail_flags(&self, f: u16) {
        self.mem.store_u16(self.avail, f);
    }
    pub fn used_idx(&self) -> u16 {
        self.mem.load_u16(self.used + 2)
    }
    pub fn used_flags(&self) -> u16 {
        self.mem.load_u16(self.used)
    }

    /// Take one used element if there is one: (id, len).
    pub fn poll_used(&mut self) -> Option<(u16, u32)> {
        if self.used_idx() == self.last_used {
            return None;
        }
        let slot = (self.last_used % self.size) as u64;
        let e = self.used + 4 + 8 * slot;
        let id = self.mem.read_u32(e);
        let len = self.mem.read_u32(e + 4);
        self.last_used = self.last_used.wrapping_add(1);
        let id16 = u16::try_from(id).unwrap_or_else(|_| panic!("used id {id} out of range"));
        let chain = self
            .inflight
            .remove(&id16)
            .unwrap_or_else(|| panic!("device returned id {id} which is not in flight"));
        self.free.extend(chain);
        Some((id16, len))
    }

    /// Wait (bounded) for the next used element.
    pub fn wait_used(&mut self, timeout: Duration) -> (u16, u32) {
        let t0 = Instant::now();
        loop {
            if let Some(e) = self.poll_used() {
                return e;
            }
            if t0.elapsed() > timeout {
                panic!(
                    "timeout: no used element (used idx {}, expected > {}, avail idx {})",
                    self.used_idx(),
                    self.last_used,
                    self.next_avail
                );
            }
            // Sleep on the call eventfd (without consuming it) or poll.
            wait_readable(self.call.as_raw_fd(), Duration::from_millis(2));
        }
    }

    /// Wait (bounded) for the call eventfd; returns the counter (number of
    /// signals since the last read), or None on timeout.
    pub fn wait_call(&self, timeout: Duration) -> Option<u64> {
        if wait_readable(self.call.as_raw_fd(), timeout) {
            self.call.read().ok()
        } else {
            None
        }
    }

    /// Read and reset the call counter without waiting (0 if none).
    pub fn take_calls(&self) -> u64 {
        self.call.read().unwrap_or(0)
    }
}

/// poll() an fd for readability, bounded.
pub fn wait_readable(fd: i32, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, ms) };
    r > 0 && pfd.revents & libc::POLLIN != 0
}
