// SPDX-License-Identifier: GPL-2.0-or-later
//! virtio-blk I/O for QEMU's blk consumers: 4 KiB-aligned data buffers
//! (contrib vhost-user-blk opens its image with O_DIRECT) spread over the
//! data regions of guest memory (regions 1..; region 0 holds rings, headers,
//! indirect tables), some crossing from one region into the next.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::common::{Buf, GuestMemory, VIRTIO_BLK_S_OK};

use super::fe::Fe;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const IO_TIMEOUT: Duration = Duration::from_secs(15);

struct Slot {
    start: u64,
    end: u64,
    cur: u64,
    top: u64,
}

/// Bump allocator over the data regions (1..), reset between batches.
pub struct Arena {
    slots: Vec<Slot>,
}

impl Arena {
    pub fn new(mem: &GuestMemory) -> Self {
        let slots = mem
            .regions
            .iter()
            .skip(1)
            .map(|r| Slot { start: r.gpa, end: r.gpa + r.size, cur: r.gpa, top: r.gpa + r.size })
            .collect();
        Arena { slots }
    }
    pub fn reset(&mut self) {
        for s in &mut self.slots {
            s.cur = s.start;
            s.top = s.end;
        }
    }
    /// In data region `k` (0-based among data regions), 4 KiB aligned; falls
    /// back to the others.
    pub fn alloc(&mut self, k: usize, size: u64) -> u64 {
        let n = self.slots.len();
        for j in 0..n {
            let s = &mut self.slots[(k + j) % n];
            let a = (s.cur + 4095) & !4095;
            if a + size <= s.top {
                s.cur = a + size;
                return a;
            }
        }
        panic!("data regions exhausted ({size} bytes)");
    }
    /// `size` bytes with `before` bytes at the end of data region k and the
    /// rest at the start of data region k+1 (which must be adjacent), or
    /// None when that is not possible now.
    pub fn alloc_spanning(&mut self, k: usize, before: u64, size: u64) -> Option<u64> {
        if k + 1 >= self.slots.len() || self.slots[k].end != self.slots[k + 1].start {
            return None;
        }
        let start = self.slots[k].end - before;
        if self.slots[k].top != self.slots[k].end
            || self.slots[k].cur > start
            || self.slots[k + 1].cur != self.slots[k + 1].start
        {
            return None;
        }
        self.slots[k].top = start;
        self.slots[k + 1].cur = start + size;
        Some(start)
    }
    pub fn data_regions(&self) -> usize {
        self.slots.len()
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub seg: u32,
    pub indirect: bool,
    pub region: usize,
    /// Cross from data region `region` into the next one.
    pub spanning: bool,
}

/// The k-th request's layout in a varied sequence.
pub fn shape(k: usize, indirect_ok: bool, regions: usize) -> Shape {
    let segs = [65536, 4096, 16384, 8192, 32768];
    Shape {
        seg: segs[k % segs.len()],
        indirect: indirect_ok && k % 3 == 1,
        region: k % regions.max(1),
        spanning: k % 5 == 2,
    }
}

pub struct Req {
    pub q: usize,
    pub head: u16,
    pub ty: u32,
    pub sector: u64,
    pub data_gpa: u64,
    pub len: u32,
    pub status_gpa: u64,
}

/// Lay out and submit (publish + kick as the ring asks) one request.
pub fn submit(
    fe: &mut Fe,
    arena: &mut Arena,
    q: usize,
    ty: u32,
    sector: u64,
    out: &[u8],
    in_len: u32,
    sh: Shape,
) -> Req {
    let mem = fe.mem.clone();
    let hdr = mem.alloc(16, 16);
    mem.write_u32(hdr, ty);
    mem.write_u32(hdr + 4, 0);
    mem.write_u64(hdr + 8, sector);
    let (len, write) = if out.is_empty() { (in_len, true) } else { (out.len() as u32, false) };
    let data = if len == 0 {
        0
    } else {
        let sp = if sh.spanning && len >= 8192 {
            arena.alloc_spanning(sh.region, (len as u64 / 2) & !4095, len as u64)
        } else {
            None
        };
        sp.unwrap_or_else(|| arena.alloc(sh.region, len as u64))
    };
    if !out.is_empty() {
        mem.write(data, out);
    } else if len > 0 {
        mem.fill(data, len as usize, 0xee);
    }
    let mut bufs = vec![Buf::out(hdr, 16)];
    let mut off = 0u64;
    while off < len as u64 {
        let n = (len as u64 - off).min(sh.seg as u64) as u32;
        bufs.push(Buf { gpa: data + off, len: n, write });
        off += n as u64;
    }
    let status = mem.alloc(1, 1);
    mem.write(status, &[0xff]);
    bufs.push(Buf::inb(status, 1));
    let vq = &mut fe.qs[q];
    let head = if sh.indirect { vq.add_indirect(&bufs) } else { vq.add(&bufs) };
    vq.publish(head);
    vq.kick_if_needed();
    Req { q, head, ty, sector, data_gpa: data, len, status_gpa: status }
}

/// Wait (bounded) for every request of `reqs`; returns used lengths by
/// (queue, head). Fails on an unknown or duplicate completion.
pub fn complete(fe: &mut Fe, reqs: &[Req]) -> Result<HashMap<(usize, u16), u32>, String> {
    let mut want: HashMap<(usize, u16), ()> = reqs.iter().map(|r| ((r.q, r.head), ())).collect();
    let mut got = HashMap::new();
    let t0 = Instant::now();
    while !want.is_empty() {
        let mut progress = false;
        for q in 0..fe.qs.len() {
            while let Some((id, len)) = fe.qs[q].poll_used() {
                progress = true;
                if want.remove(&(q, id)).is_none() {
                    return Err(format!(
                        "queue {q}: completion of head {id} which was not outstanding"
                    ));
                }
                got.insert((q, id), len);
            }
        }
        if !progress {
            if t0.elapsed() > IO_TIMEOUT {
                return Err(format!("{} requests not completed after {IO_TIMEOUT:?}", want.len()));
            }
            for q in 0..fe.qs.len() {
                crate::common::wait_readable(
                    std::os::unix::io::AsRawFd::as_raw_fd(&fe.qs[q].call),
                    Duration::from_millis(1),
                );
                fe.qs[q].take_calls();
            }
        }
    }
    Ok(got)
}

pub fn status_of(fe: &Fe, r: &Req) -> u8 {
    fe.mem.read(r.status_gpa, 1)[0]
}

/// Read or write [start, end) of the disk in requests of varied sizes and
/// layouts over all queues, `batch` requests in flight; reads are checked
/// against `expect`, writes take their data from `expect`.
pub fn sweep(
    fe: &mut Fe,
    arena: &mut Arena,
    write: bool,
    start: u64,
    end: u64,
    expect: &[u8],
    batch: usize,
    indirect_ok: bool,
) -> Result<usize, String> {
    let sizes = [65536u64, 4096, 131072, 28672, 12288, 98304];
    let nq = fe.qs.len();
    let mut off = start;
    let mut k = 0usize;
    let mut count = 0;
    while off < end {
        let mark = fe.mem.mark();
        arena.reset();
        let mut reqs = Vec::new();
        while off < end && reqs.len() < batch {
            let len = sizes[k % sizes.len()].min(end - off);
            let sh = shape(k, indirect_ok, arena.data_regions());
            let q = k % nq;
            let r = if write {
                submit(
                    fe,
                    arena,
                    q,
                    T_OUT,
                    off / 512,
                    &expect[off as usize..(off + len) as usize],
                    0,
                    sh,
                )
            } else {
                submit(fe, arena, q, T_IN, off / 512, &[], len as u32, sh)
            };
            reqs.push(r);
            off += len;
            k += 1;
        }
        let used = complete(fe, &reqs)?;
        for r in &reqs {
            let st = status_of(fe, r);
            if st != VIRTIO_BLK_S_OK {
                return Err(format!(
                    "{} at sector {} ({} bytes) status {st}",
                    if write { "write" } else { "read" },
                    r.sector,
                    r.len
                ));
            }
            if !write {
                let ul = used[&(r.q, r.head)];
                if ul != r.len + 1 {
                    return Err(format!(
                        "read at sector {}: used len {ul}, want {}",
                        r.sector,
                        r.len + 1
                    ));
                }
                let got = fe.mem.read(r.data_gpa, r.len as usize);
                let b = (r.sector * 512) as usize;
                if got[..] != expect[b..b + r.len as usize] {
                    let i = got.iter().zip(&expect[b..]).position(|(a, b)| a != b).unwrap();
                    return Err(format!(
                        "read at sector {} ({} bytes, queue {}): data differs at disk offset {}",
                        r.sector,
                        r.len,
                        r.q,
                        b + i
                    ));
                }
            }
            count += 1;
        }
        fe.mem.release(mark);
    }
    Ok(count)
}

/// One request without data (FLUSH) or with device-written data (GET_ID).
pub fn simple(
    fe: &mut Fe,
    arena: &mut Arena,
    q: usize,
    ty: u32,
    in_len: u32,
) -> Result<(u8, u32, Vec<u8>), String> {
    let mark = fe.mem.mark();
    arena.reset();
    let sh = Shape { seg: 4096, indirect: false, region: 0, spanning: false };
    let r = submit(fe, arena, q, ty, 0, &[], in_len, sh);
    let used = complete(fe, std::slice::from_ref(&r))?;
    let data = if in_len > 0 { fe.mem.read(r.data_gpa, in_len as usize) } else { Vec::new() };
    let st = status_of(fe, &r);
    fe.mem.release(mark);
    Ok((st, used[&(r.q, r.head)], data))
}
