// SPDX-License-Identifier: GPL-2.0-or-later
//! vhost-user requests as the frontend writes them, and the valid session the ring, memory
//! and inflight targets start from (their hostile part comes after it).

use crate::engine::{FdSpec, Msg, Step};

pub const GET_FEATURES: u32 = 1;
pub const SET_FEATURES: u32 = 2;
pub const SET_OWNER: u32 = 3;
pub const RESET_OWNER: u32 = 4;
pub const SET_MEM_TABLE: u32 = 5;
pub const SET_LOG_BASE: u32 = 6;
pub const SET_LOG_FD: u32 = 7;
pub const SET_VRING_NUM: u32 = 8;
pub const SET_VRING_ADDR: u32 = 9;
pub const SET_VRING_BASE: u32 = 10;
pub const GET_VRING_BASE: u32 = 11;
pub const SET_VRING_KICK: u32 = 12;
pub const SET_VRING_CALL: u32 = 13;
pub const SET_VRING_ERR: u32 = 14;
pub const GET_PROTOCOL_FEATURES: u32 = 15;
pub const SET_PROTOCOL_FEATURES: u32 = 16;
pub const GET_QUEUE_NUM: u32 = 17;
pub const SET_VRING_ENABLE: u32 = 18;
pub const SET_BACKEND_REQ_FD: u32 = 21;
pub const IOTLB_MSG: u32 = 22;
pub const GET_CONFIG: u32 = 24;
pub const SET_CONFIG: u32 = 25;
pub const POSTCOPY_ADVISE: u32 = 28;
pub const POSTCOPY_LISTEN: u32 = 29;
pub const POSTCOPY_END: u32 = 30;
pub const GET_INFLIGHT_FD: u32 = 31;
pub const SET_INFLIGHT_FD: u32 = 32;
pub const VRING_KICK: u32 = 35;
pub const GET_MAX_MEM_SLOTS: u32 = 36;
pub const ADD_MEM_REG: u32 = 37;
pub const REM_MEM_REG: u32 = 38;
pub const GET_SHARED_OBJECT: u32 = 41;
pub use crate::engine::{CHECK_DEVICE_STATE, SET_DEVICE_STATE_FD};

pub const F_RING_PACKED: u64 = 1 << 34;
pub const F_IOMMU_PLATFORM: u64 = 1 << 33;
pub const F_VERSION_1: u64 = 1 << 32;
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
pub const F_EVENT_IDX: u64 = 1 << 29;
pub const F_INDIRECT_DESC: u64 = 1 << 28;
pub const F_LOG_ALL: u64 = 1 << 26;

pub const PF_MQ: u64 = 1 << 0;
pub const PF_LOG_SHMFD: u64 = 1 << 1;
pub const PF_REPLY_ACK: u64 = 1 << 3;
pub const PF_BACKEND_REQ: u64 = 1 << 5;
pub const PF_CONFIG: u64 = 1 << 9;
pub const PF_INFLIGHT: u64 = 1 << 12;
pub const PF_INBAND: u64 = 1 << 14;
pub const PF_MEM_SLOTS: u64 = 1 << 15;

pub const VRING_NOFD: u64 = 1 << 8;

/// `struct vhost_iotlb_msg`: iova, size, uaddr, perm, type (32 bytes).
pub fn iotlb(iova: u64, size: u64, uaddr: u64, perm: u8, kind: u8) -> Vec<u8> {
    let mut v = Vec::with_capacity(32);
    v.extend_from_slice(&iova.to_le_bytes());
    v.extend_from_slice(&size.to_le_bytes());
    v.extend_from_slice(&uaddr.to_le_bytes());
    v.extend_from_slice(&[perm, kind, 0, 0, 0, 0, 0, 0]);
    v
}

pub fn u64_payload(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub fn state(index: u32, num: u32) -> Vec<u8> {
    let mut v = index.to_le_bytes().to_vec();
    v.extend_from_slice(&num.to_le_bytes());
    v
}

pub fn vring_addr(index: u32, flags: u32, desc: u64, used: u64, avail: u64, log: u64) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&index.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    for x in [desc, used, avail, log] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// A region as the frontend describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    pub gpa: u64,
    pub size: u64,
    pub qva: u64,
    pub offset: u64,
}

impl Region {
    pub fn bytes(&self) -> Vec<u8> {
        [self.gpa, self.size, self.qva, self.offset].iter().flat_map(|x| x.to_le_bytes()).collect()
    }
}

pub fn mem_table(nregions: u32, regions: &[Region]) -> Vec<u8> {
    let mut v = nregions.to_le_bytes().to_vec();
    v.extend_from_slice(&0u32.to_le_bytes());
    for r in regions {
        v.extend(r.bytes());
    }
    v
}

pub fn mem_reg(r: &Region) -> Vec<u8> {
    let mut v = 0u64.to_le_bytes().to_vec();
    v.extend(r.bytes());
    v
}

pub fn inflight(mmap_size: u64, mmap_offset: u64, num_queues: u16, queue_size: u16) -> Vec<u8> {
    let mut v = mmap_size.to_le_bytes().to_vec();
    v.extend_from_slice(&mmap_offset.to_le_bytes());
    v.extend_from_slice(&num_queues.to_le_bytes());
    v.extend_from_slice(&queue_size.to_le_bytes());
    v.extend_from_slice(&[0; 4]);
    v
}

/// SET_DEVICE_STATE_FD's payload: direction (0 save, 1 load) and phase (0 stopped).
pub fn device_state(direction: u32, phase: u32) -> Vec<u8> {
    u64_payload(u64::from(direction) | u64::from(phase) << 32)
}

/// SET_CONFIG's payload: offset, size, flags, then the bytes.
pub fn set_config(offset: u32, bytes: &[u8]) -> Vec<u8> {
    let mut v = offset.to_le_bytes().to_vec();
    v.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    v.extend_from_slice(&[0; 4]);
    v.extend_from_slice(bytes);
    v
}

pub fn log_base(size: u64, offset: u64) -> Vec<u8> {
    let mut v = size.to_le_bytes().to_vec();
    v.extend_from_slice(&offset.to_le_bytes());
    v
}

pub fn msg(req: u32, payload: Vec<u8>) -> Step {
    Step::Dispatch(Msg::new(req, payload))
}

pub fn msg_fds(req: u32, payload: Vec<u8>, fds: Vec<FdSpec>) -> Step {
    Step::Dispatch(Msg::new(req, payload).with_fds(fds))
}

/// Where the standard session puts things. Guest memory memfd 0 holds the rings of queue 0 and
/// the start of the buffer area; memfd 1 is a second region (adjacent, after a gap, or high).
pub const GUEST_SIZE: usize = 64 << 10;
pub const QVA_BASE: u64 = 0x4000_0000;
pub const DESC_OFF: u64 = 0;
pub const AVAIL_OFF: u64 = 0x4000;
pub const USED_OFF: u64 = 0x5000;
pub const BUF_OFF: u64 = 0x8000;

#[derive(Clone, Copy, Debug)]
pub struct Session {
    pub features: u64,
    pub protocol: u64,
    pub queue_size: u16,
    /// SET_VRING_BASE: the avail index, or with packed rings the ring position (slot and
    /// wrap counter) of both the avail and the used index.
    pub base: u16,
    /// Guest address of region 1 (region 0 is at 0).
    pub region1: u64,
}

impl Session {
    pub fn regions(&self) -> [Region; 2] {
        let size = GUEST_SIZE as u64;
        [
            Region { gpa: 0, size, qva: QVA_BASE, offset: 0 },
            Region { gpa: self.region1, size, qva: QVA_BASE + self.region1, offset: 0 },
        ]
    }

    /// Feature negotiation and the memory table.
    pub fn negotiate(&self) -> Vec<Step> {
        vec![
            msg(GET_FEATURES, vec![]),
            msg(SET_FEATURES, u64_payload(self.features)),
            msg(GET_PROTOCOL_FEATURES, vec![]),
            msg(SET_PROTOCOL_FEATURES, u64_payload(self.protocol)),
            msg(SET_OWNER, vec![]),
            msg_fds(
                SET_MEM_TABLE,
                mem_table(2, &self.regions()),
                vec![FdSpec::Guest(0), FdSpec::Guest(1)],
            ),
        ]
    }

    /// Queue `q`'s ring geometry and addresses (rings of queue q at q * 0x8000 in memfd 0
    /// only for q = 0; other queues get theirs in memfd 1).
    pub fn ring_steps(&self, q: u32) -> Vec<Step> {
        let base = if q == 0 { QVA_BASE } else { QVA_BASE + self.region1 };
        vec![
            msg(SET_VRING_NUM, state(q, self.queue_size as u32)),
            msg(SET_VRING_BASE, state(q, self.vring_base())),
            msg(
                SET_VRING_ADDR,
                vring_addr(q, 0, base + DESC_OFF, base + USED_OFF, base + AVAIL_OFF, 0),
            ),
        ]
    }

    /// SET_VRING_BASE's `num` for [`Session::base`].
    pub fn vring_base(&self) -> u32 {
        let b = u32::from(self.base);
        if self.features & F_RING_PACKED != 0 {
            b | b << 16
        } else {
            b
        }
    }

    /// Call and kick eventfds (pool fds 2q and 2q+1) and enabling.
    pub fn start_steps(&self, q: u32) -> Vec<Step> {
        vec![
            msg_fds(SET_VRING_CALL, u64_payload(q as u64), vec![FdSpec::Event(2 * q as u8)]),
            msg_fds(SET_VRING_KICK, u64_payload(q as u64), vec![FdSpec::Event(2 * q as u8 + 1)]),
            msg(SET_VRING_ENABLE, state(q, 1)),
        ]
    }

    /// The whole valid setup of queue 0.
    pub fn setup(&self) -> Vec<Step> {
        let mut v = self.negotiate();
        v.extend(self.ring_steps(0));
        v.extend(self.start_steps(0));
        v
    }

    /// The guest memory pool and eventfds this session needs.
    pub fn scenario(&self, steps: Vec<Step>) -> crate::engine::Scenario {
        crate::engine::Scenario {
            max_queues: 2,
            guest: vec![GUEST_SIZE, GUEST_SIZE],
            eventfds: 4,
            blocking_eventfds: 0,
            steps,
        }
    }
}
