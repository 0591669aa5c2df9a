// SPDX-License-Identifier: GPL-2.0-or-later
//! The driver operations both ring layouts share, so that a scenario can
//! run on split and packed rings alike.

use std::sync::Arc;
use std::time::Duration;

use vhost::VringConfigData;
use vmm_sys_util::eventfd::EventFd;

use super::mem::GuestMemory;
use super::packed::{PackedQueue, VIRTIO_F_RING_PACKED};
use super::vring::{Buf, SplitQueue};

pub trait Driver {
    /// Layout name, for messages.
    const NAME: &'static str;
    /// Virtio features the layout needs acked.
    const FEATURES: u64;

    /// A ring `base` slots after a reset (split: avail/used idx = base).
    fn create(mem: &Arc<GuestMemory>, size: u16, event_idx: bool, base: u16) -> Self;
    fn size(&self) -> u16;
    fn config(&self, flags: u32) -> VringConfigData;
    /// The SET_VRING_BASE value for the driver's state, which is also what
    /// GET_VRING_BASE returns once the device consumed and used everything
    /// published.
    fn ring_state(&self) -> u32;
    fn renew_eventfds(&mut self);
    fn kick_fd(&self) -> &EventFd;
    fn call_fd(&self) -> &EventFd;

    /// Lay out a buffer (direct chain / indirect table); returns its id.
    fn add(&mut self, bufs: &[Buf]) -> u16;
    fn add_indirect(&mut self, bufs: &[Buf]) -> u16;
    /// Make an added buffer available (in the order added).
    fn publish(&mut self, id: u16);
    fn kick_if_needed(&mut self) -> bool;
    fn kick_now(&mut self);
    fn kicks(&self) -> u64;
    /// Descriptors (split) / ring slots (packed) free.
    fn free_count(&self) -> usize;

    fn poll_used(&mut self) -> Option<(u16, u32)>;
    fn wait_used(&mut self, timeout: Duration) -> (u16, u32);
    fn wait_call(&self, timeout: Duration) -> Option<u64>;
    fn take_calls(&self) -> u64;
    /// Nothing in flight, and the device wrote no used entry beyond those
    /// taken (split: used->idx == last taken == avail->idx).
    fn settled(&self) -> bool;
    /// Ask the device for no calls (split: NO_INTERRUPT, packed: DISABLE),
    /// or for calls again (flags 0 / ENABLE).
    fn suppress_calls(&self, off: bool);
}

impl Driver for SplitQueue {
    const NAME: &'static str = "split";
    const FEATURES: u64 = 0;

    fn create(mem: &Arc<GuestMemory>, size: u16, event_idx: bool, base: u16) -> Self {
        SplitQueue::new(mem, size, event_idx, base)
    }
    fn size(&self) -> u16 {
        self.size
    }
    fn config(&self, flags: u32) -> VringConfigData {
        SplitQueue::config(self, flags)
    }
    fn ring_state(&self) -> u32 {
        self.next_avail as u32
    }
    fn renew_eventfds(&mut self) {
        SplitQueue::renew_eventfds(self)
    }
    fn kick_fd(&self) -> &EventFd {
        &self.kick
    }
    fn call_fd(&self) -> &EventFd {
        &self.call
    }
    fn add(&mut self, bufs: &[Buf]) -> u16 {
        SplitQueue::add(self, bufs)
    }
    fn add_indirect(&mut self, bufs: &[Buf]) -> u16 {
        SplitQueue::add_indirect(self, bufs)
    }
    fn publish(&mut self, id: u16) {
        SplitQueue::publish(self, id)
    }
    fn kick_if_needed(&mut self) -> bool {
        SplitQueue::kick_if_needed(self)
    }
    fn kick_now(&mut self) {
        SplitQueue::kick_now(self)
    }
    fn kicks(&self) -> u64 {
        self.kicks
    }
    fn free_count(&self) -> usize {
        SplitQueue::free_count(self)
    }
    fn poll_used(&mut self) -> Option<(u16, u32)> {
        SplitQueue::poll_used(self)
    }
    fn wait_used(&mut self, timeout: Duration) -> (u16, u32) {
        SplitQueue::wait_used(self, timeout)
    }
    fn wait_call(&self, timeout: Duration) -> Option<u64> {
        SplitQueue::wait_call(self, timeout)
    }
    fn take_calls(&self) -> u64 {
        SplitQueue::take_calls(self)
    }
    fn settled(&self) -> bool {
        self.used_idx() == self.last_used && self.last_used == self.next_avail
    }
    fn suppress_calls(&self, off: bool) {
        self.set_avail_flags(if off { super::vring::VRING_AVAIL_F_NO_INTERRUPT } else { 0 })
    }
}

impl Driver for PackedQueue {
    const NAME: &'static str = "packed";
    const FEATURES: u64 = VIRTIO_F_RING_PACKED;

    fn create(mem: &Arc<GuestMemory>, size: u16, event_idx: bool, base: u16) -> Self {
        PackedQueue::new(mem, size, event_idx, base)
    }
    fn size(&self) -> u16 {
        self.size
    }
    fn config(&self, flags: u32) -> VringConfigData {
        PackedQueue::config(self, flags)
    }
    fn ring_state(&self) -> u32 {
        PackedQueue::ring_state(self)
    }
    fn renew_eventfds(&mut self) {
        PackedQueue::renew_eventfds(self)
    }
    fn kick_fd(&self) -> &EventFd {
        &self.kick
    }
    fn call_fd(&self) -> &EventFd {
        &self.call
    }
    fn add(&mut self, bufs: &[Buf]) -> u16 {
        PackedQueue::add(self, bufs)
    }
    fn add_indirect(&mut self, bufs: &[Buf]) -> u16 {
        PackedQueue::add_indirect(self, bufs)
    }
    fn publish(&mut self, id: u16) {
        PackedQueue::publish(self, id)
    }
    fn kick_if_needed(&mut self) -> bool {
        PackedQueue::kick_if_needed(self)
    }
    fn kick_now(&mut self) {
        PackedQueue::kick_now(self)
    }
    fn kicks(&self) -> u64 {
        self.kicks
    }
    fn free_count(&self) -> usize {
        PackedQueue::free_count(self)
    }
    fn poll_used(&mut self) -> Option<(u16, u32)> {
        PackedQueue::poll_used(self)
    }
    fn wait_used(&mut self, timeout: Duration) -> (u16, u32) {
        PackedQueue::wait_used(self, timeout)
    }
    fn wait_call(&self, timeout: Duration) -> Option<u64> {
        PackedQueue::wait_call(self, timeout)
    }
    fn take_calls(&self) -> u64 {
        PackedQueue::take_calls(self)
    }
    fn settled(&self) -> bool {
        PackedQueue::settled(self)
    }
    fn suppress_calls(&self, off: bool) {
        self.set_driver_event_flags(if off {
            super::packed::RING_EVENT_FLAGS_DISABLE
        } else {
            super::packed::RING_EVENT_FLAGS_ENABLE
        })
    }
}
