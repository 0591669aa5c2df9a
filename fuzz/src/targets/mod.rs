// SPDX-License-Identifier: GPL-2.0-or-later
//! The fuzz targets' input decoders (bytes to a [`Scenario`]) and their seed inputs.
//!
//! - [`dispatch`]: any sequence of frontend messages with fds, kicks and guest writes.
//! - [`split_ring`]: a valid session, then descriptor chains, avail/used indexes and queue
//!   operations over fuzzer-written guest memory.
//! - [`mem_table`]: memory-table changes (SET_MEM_TABLE, ADD/REM_MEM_REG, ring addresses)
//!   interleaved with ring and queue operations.
//! - [`inflight`]: inflight areas (GET/SET_INFLIGHT_FD, their contents, reconnects and
//!   resubmission) with ring and queue operations.
//! - [`packed_ring`]: the same ring, queue and inflight operations on a packed ring.
//! - [`iotlb`]: a session that acks VIRTIO_F_IOMMU_PLATFORM, IOTLB updates, invalidations and
//!   raw IOTLB messages with the ring and queue operations (split or packed).

pub mod dispatch;
pub mod inflight;
pub mod iotlb;
pub mod mem_table;
pub mod packed_ring;
pub mod ring_ops;
pub mod split_ring;

use crate::engine::Scenario;
use crate::input::{Cursor, Enc};
use crate::proto::*;

/// Most operations a decoder reads from one input (inputs stay fast).
pub const MAX_OPS: usize = 192;

/// The standard session's parameters, from the input's first bytes.
pub fn session_header(c: &mut Cursor, extra_protocol: u64) -> Session {
    let f = c.u8();
    let mut features = F_VERSION_1 | F_PROTOCOL_FEATURES;
    if f & 1 != 0 {
        features |= F_EVENT_IDX;
    }
    if f & 2 != 0 {
        features |= F_INDIRECT_DESC;
    }
    if f & 4 != 0 {
        features |= F_LOG_ALL;
    }
    let mut protocol =
        PF_MQ | PF_REPLY_ACK | PF_CONFIG | PF_MEM_SLOTS | PF_LOG_SHMFD | extra_protocol;
    if f & 8 != 0 {
        protocol |= PF_BACKEND_REQ | PF_INBAND;
    }
    let queue_size = 1u16 << (c.u8() % 11);
    let base = c.u16();
    let region1 = match c.u8() % 3 {
        0 => GUEST_SIZE as u64,
        1 => 2 * GUEST_SIZE as u64,
        _ => 1 << 32,
    };
    Session { features, protocol, queue_size, base, region1 }
}

/// Writes what [`session_header`] reads.
#[derive(Clone, Copy, Debug)]
pub struct Header {
    pub event_idx: bool,
    pub indirect: bool,
    pub log_all: bool,
    pub inband: bool,
    /// log2 of the queue size.
    pub size_log2: u8,
    pub base: u16,
    /// 0: region 1 adjacent to region 0; 1: after a gap; 2: at 4 GiB.
    pub layout: u8,
}

impl Default for Header {
    fn default() -> Self {
        Header {
            event_idx: false,
            indirect: true,
            log_all: false,
            inband: false,
            size_log2: 4,
            base: 0,
            layout: 0,
        }
    }
}

impl Header {
    pub fn encode(&self, e: &mut Enc) {
        let f = self.event_idx as u8
            | (self.indirect as u8) << 1
            | (self.log_all as u8) << 2
            | (self.inband as u8) << 3;
        e.u8(f).u8(self.size_log2).u16(self.base).u8(self.layout);
    }
}

/// Every target: its name, how it runs an input, and its seeds.
pub struct Target {
    pub name: &'static str,
    pub decode: fn(&[u8]) -> Scenario,
    pub seeds: fn() -> Vec<(&'static str, Vec<u8>)>,
}

pub const TARGETS: [Target; 6] = [
    Target { name: "dispatch", decode: dispatch::decode, seeds: dispatch::seeds },
    Target { name: "split_ring", decode: split_ring::decode, seeds: split_ring::seeds },
    Target { name: "mem_table", decode: mem_table::decode, seeds: mem_table::seeds },
    Target { name: "inflight", decode: inflight::decode, seeds: inflight::seeds },
    Target { name: "packed_ring", decode: packed_ring::decode, seeds: packed_ring::seeds },
    Target { name: "iotlb", decode: iotlb::decode, seeds: iotlb::seeds },
];

/// Runs one input of target `name`.
pub fn run(name: &str, data: &[u8]) {
    let t = TARGETS.iter().find(|t| t.name == name).expect("unknown fuzz target");
    crate::engine::run(&(t.decode)(data));
}
