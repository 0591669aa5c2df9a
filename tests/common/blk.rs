// SPDX-License-Identifier: GPL-2.0-or-later
//! virtio-blk request construction and data patterns.

use super::mem::GuestMemory;
use super::vring::Buf;

pub const SECTOR: u64 = 512;

pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;

pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;

pub const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
pub const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
pub const VIRTIO_BLK_F_CONFIG_WCE: u64 = 1 << 11;
pub const VIRTIO_BLK_F_MQ: u64 = 1 << 12;
pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// Offsets in struct virtio_blk_config.
pub const CFG_CAPACITY: usize = 0;
pub const CFG_SEG_MAX: usize = 12;
pub const CFG_BLK_SIZE: usize = 20;
pub const CFG_WCE: usize = 32;
pub const CFG_NUM_QUEUES: usize = 34;
pub const CFG_LEN: usize = 60;

/// Deterministic test data: byte `i` of pattern `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e3779b97f4a7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// How a request is laid out in guest memory.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    /// Maximum bytes per data descriptor.
    pub seg: u32,
    /// Put the chain in an indirect table.
    pub indirect: bool,
    /// Place the data buffer across the end of this region (into the next).
    pub spanning: Option<usize>,
    /// Put the status byte at the end of the last data descriptor (reads only).
    pub status_in_data: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Layout { seg: 64 * 1024, indirect: false, spanning: None, status_in_data: false }
    }
}

pub struct Prepared {
    pub ty: u32,
    pub bufs: Vec<Buf>,
    pub data_gpa: u64,
    pub data_len: u32,
    pub status_gpa: u64,
    pub indirect: bool,
}

pub struct Completion {
    pub status: u8,
    pub used_len: u32,
    /// Device-written data (for reads / GET_ID).
    pub data: Vec<u8>,
}

/// Lay out a request: header, data (`out` for writes, or `in_len` device-
/// writable bytes), status.
pub fn prepare(
    mem: &GuestMemory,
    ty: u32,
    sector: u64,
    out: &[u8],
    in_len: u32,
    l: Layout,
) -> Prepared {
    let hdr = mem.alloc(16, 16);
    mem.write_u32(hdr, ty);
    mem.write_u32(hdr + 4, 0);
    mem.write_u64(hdr + 8, sector);
    let (len, write) = if out.is_empty() { (in_len, true) } else { (out.len() as u32, false) };
    let extra = if l.status_in_data { 1 } else { 0 };
    let total = len as u64 + extra;
    let data = if total == 0 {
        0
    } else if let Some(r) = l.spanning {
        mem.alloc_spanning(r, (total / 2).max(1), total)
    } else {
        mem.alloc(total, 8)
    };
    if !out.is_empty() {
        mem.write(data, out);
    } else if len > 0 {
        mem.fill(data, len as usize, 0xee);
    }
    let mut bufs = vec![Buf::out(hdr, 16)];
    let mut off = 0u64;
    while off < total {
        let n = (total - off).min(l.seg as u64) as u32;
        bufs.push(Buf { gpa: data + off, len: n, write });
        off += n as u64;
    }
    let status = if l.status_in_data {
        assert!(write, "status_in_data needs a device-writable data buffer");
        data + len as u64
    } else {
        let s = mem.alloc(1, 1);
        bufs.push(Buf::inb(s, 1));
        s
    };
    mem.write(status, &[0xff]);
    Prepared { ty, bufs, data_gpa: data, data_len: len, status_gpa: status, indirect: l.indirect }
}

pub fn finish(mem: &GuestMemory, p: &Prepared, used_len: u32) -> Completion {
    let status = mem.read(p.status_gpa, 1)[0];
    let data = if p.bufs.iter().any(|b| b.write && b.gpa != p.status_gpa) {
        mem.read(p.data_gpa, p.data_len as usize)
    } else {
        Vec::new()
    };
    Completion { status, used_len, data }
}
