// SPDX-License-Identifier: GPL-2.0-or-later
//! Hostile virtqueue contents (descriptor chains, avail ring), through an
//! otherwise valid session. The library must report each through the panic
//! callback (the example then drops the connection), neither crash nor
//! hang, and the backend must serve the next frontend normally.
//!
//! These target our library; the C original fails some of them.

mod common;
use common::*;
use std::time::Duration;

const QSIZE: u16 = 16;

fn setup() -> (Backend, Session) {
    let mut b = Backend::start(BackendOpts::default());
    let s = Session::connect(&mut b, SessionOpts { queue_size: QSIZE, ..Default::default() });
    (b, s)
}

/// Guest buffers for one request: (header gpa, data gpa, status gpa).
fn bufs(s: &Session) -> (u64, u64, u64) {
    let hdr = s.mem.alloc(16, 16);
    s.mem.write_u32(hdr, VIRTIO_BLK_T_IN);
    let data = s.mem.alloc(4096, 8);
    let status = s.mem.alloc(1, 1);
    (hdr, data, status)
}

fn d(addr: u64, len: u32, flags: u16, next: u16) -> Desc {
    Desc { addr, len, flags, next }
}

/// Write `descs` into freshly reserved ring slots (Desc.next values are
/// indices into `descs`, mapped to the reserved slots unless `raw_next`),
/// publish the first one and kick.
fn submit_chain(s: &mut Session, descs: &[Desc], raw_next: bool) {
    let q = &mut s.qs[0];
    let ids = q.reserve(descs.len());
    for (k, x) in descs.iter().enumerate() {
        let mut x = *x;
        if !raw_next && (x.next as usize) < ids.len() {
            x.next = ids[x.next as usize];
        }
        q.write_desc(q.desc, ids[k], x);
    }
    q.publish(ids[0]);
    q.kick_now();
}

/// Write an indirect table and submit one ring descriptor pointing at it.
fn submit_indirect(s: &mut Session, table: &[Desc], len_override: Option<u32>) {
    let t = s.mem.alloc(16 * table.len().max(1) as u64, 16);
    for (k, x) in table.iter().enumerate() {
        s.qs[0].write_desc(t, k as u16, *x);
    }
    let len = len_override.unwrap_or(16 * table.len() as u32);
    submit_chain(s, &[d(t, len, VRING_DESC_F_INDIRECT, 0)], false);
}

/// The library must call the panic callback; the connection goes away;
/// the process survives and serves a new frontend.
fn expect_panic(mut b: Backend, mut s: Session, what: &str) {
    if !b.wait_stderr("vhost-user panic:", Duration::from_secs(5)) {
        b.assert_alive();
        let used = s.qs[0].used_idx();
        panic!("{what}: no panic reported within 5s (used idx {used})");
    }
    b.assert_alive();
    assert!(
        s.try_ctl(|fe| fe.get_features()).is_err(),
        "{what}: connection still served after the panic"
    );
    drop(s);
    smoke(&mut b);
    b.assert_alive();
}

const W: u16 = VRING_DESC_F_WRITE;
const N: u16 = VRING_DESC_F_NEXT;
const I: u16 = VRING_DESC_F_INDIRECT;

#[test]
fn chain_loops() {
    let (b, mut s) = setup();
    let (h, data, _) = bufs(&s);
    submit_chain(&mut s, &[d(h, 16, N, 1), d(data, 512, W | N, 0)], false);
    expect_panic(b, s, "descriptor loop");
}

#[test]
fn chain_next_beyond_queue_size() {
    let (b, mut s) = setup();
    let (h, _, _) = bufs(&s);
    submit_chain(&mut s, &[d(h, 16, N, QSIZE + 5)], true);
    expect_panic(b, s, "next index beyond the queue size");
}

#[test]
fn buffer_outside_guest_memory() {
    let (b, mut s) = setup();
    let (h, _, st) = bufs(&s);
    submit_chain(
        &mut s,
        &[d(h, 16, N, 1), d(0x7000_0000_0000, 512, W | N, 2), d(st, 1, W, 0)],
        false,
    );
    expect_panic(b, s, "buffer outside guest memory");
}

#[test]
fn buffer_crossing_the_end_of_guest_memory() {
    let (b, mut s) = setup();
    let (h, _, st) = bufs(&s);
    let end = s.mem.regions.last().map(|r| r.gpa + r.size).unwrap();
    submit_chain(&mut s, &[d(h, 16, N, 1), d(end - 256, 4096, W | N, 2), d(st, 1, W, 0)], false);
    expect_panic(b, s, "buffer running past the end of guest memory");
}

#[test]
fn buffer_address_plus_length_overflows() {
    let (b, mut s) = setup();
    let (h, _, st) = bufs(&s);
    submit_chain(
        &mut s,
        &[d(h, 16, N, 1), d(u64::MAX - 100, 512, W | N, 2), d(st, 1, W, 0)],
        false,
    );
    expect_panic(b, s, "address + length wrapping around");
}

#[test]
fn writable_before_readable() {
    let (b, mut s) = setup();
    let (h, _, st) = bufs(&s);
    submit_chain(&mut s, &[d(st, 1, W | N, 1), d(h, 16, 0, 0)], false);
    expect_panic(b, s, "device-readable descriptor after a writable one");
}

#[test]
fn indirect_table_outside_guest_memory() {
    let (b, mut s) = setup();
    submit_chain(&mut s, &[d(0xdead_0000_0000, 48, I, 0)], false);
    expect_panic(b, s, "indirect table outside guest memory");
}

#[test]
fn indirect_table_length_not_a_multiple_of_16() {
    let (b, mut s) = setup();
    let (h, data, st) = bufs(&s);
    submit_indirect(&mut s, &[d(h, 16, N, 1), d(data, 512, W | N, 2), d(st, 1, W, 0)], Some(40));
    expect_panic(b, s, "indirect table of 40 bytes");
}

#[test]
fn indirect_table_empty() {
    let (b, mut s) = setup();
    submit_indirect(&mut s, &[], Some(0));
    expect_panic(b, s, "indirect table of 0 bytes");
}

#[test]
fn indirect_nested() {
    let (b, mut s) = setup();
    let (h, data, st) = bufs(&s);
    let inner = s.mem.alloc(32, 16);
    s.qs[0].write_desc(inner, 0, d(data, 512, W | N, 1));
    s.qs[0].write_desc(inner, 1, d(st, 1, W, 0));
    submit_indirect(&mut s, &[d(h, 16, N, 1), d(inner, 32, I, 0)], None);
    expect_panic(b, s, "indirect table inside an indirect table");
}

#[test]
fn indirect_chain_loops() {
    let (b, mut s) = setup();
    let (h, data, _) = bufs(&s);
    submit_indirect(&mut s, &[d(h, 16, N, 1), d(data, 512, W | N, 0)], None);
    expect_panic(b, s, "loop inside an indirect table");
}

#[test]
fn indirect_next_beyond_table() {
    let (b, mut s) = setup();
    let (h, data, _) = bufs(&s);
    submit_indirect(&mut s, &[d(h, 16, N, 7), d(data, 512, W, 0)], None);
    expect_panic(b, s, "indirect next beyond the table");
}

#[test]
fn indirect_chain_longer_than_allowed() {
    // 2048 valid entries: longer than any queue may carry (1024 max).
    let (b, mut s) = setup();
    let (h, _, st) = bufs(&s);
    let buf = s.mem.alloc(2048 * 16, 16);
    let mut t = vec![d(h, 16, N, 1)];
    for k in 1..2047u16 {
        t.push(d(buf + 16 * k as u64, 16, W | N, k + 1));
    }
    t.push(d(st, 1, W, 0));
    submit_indirect(&mut s, &t, None);
    expect_panic(b, s, "indirect chain of 2048 descriptors");
}

#[test]
fn avail_index_jumps_beyond_queue_size() {
    let (b, mut s) = setup();
    let next = s.qs[0].next_avail;
    s.qs[0].set_avail_idx(next.wrapping_add(QSIZE + 1));
    s.qs[0].kick_now();
    expect_panic(b, s, "avail index moved by more than the queue size");
}

#[test]
fn avail_head_beyond_queue_size() {
    let (b, mut s) = setup();
    s.qs[0].publish(200);
    s.qs[0].kick_now();
    expect_panic(b, s, "avail ring entry beyond the queue size");
}
