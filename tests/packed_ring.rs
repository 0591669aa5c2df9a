// SPDX-License-Identifier: GPL-2.0-or-later
//! Packed virtqueues (VIRTIO_F_RING_PACKED, virtio 1.1) through the
//! vhost-user-blk example, with the test's own packed-ring driver
//! (tests/common/packed.rs): negotiation, event suppression with EVENT_IDX
//! (driver and device event areas), the used descriptors the device writes,
//! and the packed SET/GET_VRING_BASE encoding. The scenarios shared with
//! split rings are in blk_io.rs and blk_ring.rs (`*_packed`).

mod common;
use common::*;
use std::time::Duration;

const NO_CALL_GRACE: Duration = Duration::from_millis(50);

fn one_request(s: &mut Session<PackedQueue>, sector: u64) {
    s.write(0, sector, &pattern(sector, 512), Layout::default());
}

#[test]
fn backend_offers_ring_packed() {
    let mut b = Backend::start(BackendOpts::default());
    let s = Session::<PackedQueue>::connect_as(&mut b, SessionOpts::default());
    assert!(s.features & VIRTIO_F_RING_PACKED != 0, "features {:#x}", s.features);
    assert!(s.acked & VIRTIO_F_RING_PACKED != 0);
}

#[test]
fn used_descriptors_carry_id_len_and_both_wrap_bits() {
    let mut b = Backend::start(BackendOpts::default());
    let mut s = Session::<PackedQueue>::connect_as(
        &mut b,
        SessionOpts { queue_size: 8, ..Default::default() },
    );
    // 3 slots per request in an 8-slot ring: heads move around both laps.
    for i in 0..20u64 {
        let at = s.qs[0].used;
        let mark = s.mem.mark();
        let p = prepare(&s.mem, VIRTIO_BLK_T_IN, i, &[], 512, Layout::default());
        let id = s.submit(0, &p);
        let (got, len) = s.qs[0].wait_used(IO_TIMEOUT);
        assert_eq!((got, len), (id, 513), "request {i}");
        let d = s.qs[0].read_desc(at.idx);
        assert_eq!(d.id, id, "request {i}: used descriptor id");
        assert_eq!(d.len, 513, "request {i}: used descriptor len");
        assert_eq!(
            d.flags & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED),
            used_bits(at.wrap),
            "request {i}: used descriptor at {at:?} flags {:#x}",
            d.flags
        );
        assert_eq!(s.qs[0].used, at.advance(3, 8));
        let c = finish(&s.mem, &p, len);
        assert_eq!(c.status, VIRTIO_BLK_S_OK);
        assert!(c.data == initial_image(1 << 20)[(i * 512) as usize..(i * 512 + 512) as usize]);
        s.mem.release(mark);
    }
    assert!(s.qs[0].settled());
}

#[test]
fn event_idx_on_desc_event_suppression() {
    let mut b = Backend::start(BackendOpts::default());
    let mut s = Session::<PackedQueue>::connect_as(
        &mut b,
        SessionOpts { event_idx: true, queue_size: 64, ..Default::default() },
    );
    assert!(s.acked & VIRTIO_RING_F_EVENT_IDX != 0);
    one_request(&mut s, 0);
    assert_eq!(s.qs[0].wait_call(IO_TIMEOUT), Some(1), "first completion not signalled");
    // Idle device: it must want a kick for the next buffer (a waiting
    // device that asks for no kick would hang the ring).
    let (off_wrap, flags) = s.qs[0].device_event();
    assert!(
        flags == RING_EVENT_FLAGS_ENABLE || flags == RING_EVENT_FLAGS_DESC,
        "idle device event flags {flags}"
    );
    if flags == RING_EVENT_FLAGS_DESC {
        let a = s.qs[0].avail;
        assert_eq!(off_wrap, a.idx | (a.wrap as u16) << 15, "device event offset");
    }

    // Each request takes 3 slots (header, data, status).
    for round in 0..8u16 {
        // A call only once the device writes the used descriptor of the
        // 3rd request from now.
        let at = s.qs[0].used.advance(6, 64);
        s.qs[0].set_driver_event(at);
        one_request(&mut s, 1);
        one_request(&mut s, 2);
        std::thread::sleep(NO_CALL_GRACE);
        assert_eq!(s.qs[0].take_calls(), 0, "round {round}: call before the event descriptor");
        one_request(&mut s, 3);
        assert_eq!(
            s.qs[0].wait_call(IO_TIMEOUT),
            Some(1),
            "round {round}: one call when the event descriptor was used"
        );
    }
    // 25 requests * 3 slots: the ring of 64 lapped, wrap counters flipped.
    assert!(!s.qs[0].used.wrap, "expected the second lap, at {:?}", s.qs[0].used);
    // The device asked for every kick (it only works when kicked).
    assert_eq!(s.qs[0].kicks, 25);

    // An event offset already passed (in the previous lap): no calls.
    let u = s.qs[0].used;
    let behind = Pos { idx: u.idx, wrap: !u.wrap }.advance(64 - 10, 64);
    s.qs[0].set_driver_event(behind);
    one_request(&mut s, 4);
    one_request(&mut s, 5);
    std::thread::sleep(NO_CALL_GRACE);
    assert_eq!(s.qs[0].take_calls(), 0, "call although the event offset was behind");

    // DISABLE and ENABLE also hold with EVENT_IDX negotiated.
    s.qs[0].set_driver_event_flags(RING_EVENT_FLAGS_DISABLE);
    one_request(&mut s, 6);
    std::thread::sleep(NO_CALL_GRACE);
    assert_eq!(s.qs[0].take_calls(), 0, "call despite DISABLE");
    s.qs[0].set_driver_event_flags(RING_EVENT_FLAGS_ENABLE);
    one_request(&mut s, 7);
    assert_eq!(s.qs[0].wait_call(IO_TIMEOUT), Some(1), "no call with ENABLE");

    // A batch of 4 requests, one kick, event on the 3rd's used descriptor.
    let at = s.qs[0].used.advance(6, 64);
    s.qs[0].set_driver_event(at);
    let mark = s.mem.mark();
    let ps: Vec<_> =
        (0..4).map(|i| prepare(&s.mem, VIRTIO_BLK_T_IN, i, &[], 512, Layout::default())).collect();
    for p in &ps {
        let vq = &mut s.qs[0];
        let id = vq.add(&p.bufs);
        vq.publish(id);
    }
    assert!(s.qs[0].kick_if_needed(), "4 new buffers must need a kick");
    for _ in 0..4 {
        s.qs[0].wait_used(IO_TIMEOUT);
    }
    assert_eq!(s.qs[0].wait_call(IO_TIMEOUT), Some(1), "batch crossing the event: one call");
    s.mem.release(mark);
    assert!(s.qs[0].settled());
}

#[test]
fn event_idx_on_exact_calls_at_every_ring_alignment() {
    // A 16-slot ring, 3-slot requests, a call wanted on the 3rd request of
    // each round: over 16 rounds the requests that must not call cross the
    // end of the ring at every alignment (the device's used index wraps
    // between two checks: a device that forgets its last signalled
    // position on each wrap, as QEMU's does, calls early once a lap).
    let mut b = Backend::start(BackendOpts::default());
    let mut s = Session::<PackedQueue>::connect_as(
        &mut b,
        SessionOpts { event_idx: true, queue_size: 16, ..Default::default() },
    );
    one_request(&mut s, 0);
    assert_eq!(s.qs[0].wait_call(IO_TIMEOUT), Some(1));
    for round in 0..16u16 {
        let start = s.qs[0].used;
        s.qs[0].set_driver_event(start.advance(6, 16));
        one_request(&mut s, 1);
        one_request(&mut s, 2);
        std::thread::sleep(NO_CALL_GRACE);
        assert_eq!(
            s.qs[0].take_calls(),
            0,
            "round {round} (from {start:?}): call before the event descriptor"
        );
        one_request(&mut s, 3);
        assert_eq!(
            s.qs[0].wait_call(IO_TIMEOUT),
            Some(1),
            "round {round} (from {start:?}): one call at the event descriptor"
        );
    }
}

#[test]
fn event_idx_on_device_event_across_laps_in_a_small_ring() {
    // Every kick decision goes through the device's event offset, across
    // many wrap-counter flips of an 8-slot ring (Linux's kick_prepare_packed
    // arithmetic): a single lost kick hangs the ring.
    let mut b = Backend::start(BackendOpts::default());
    let mut s = Session::<PackedQueue>::connect_as(
        &mut b,
        SessionOpts { event_idx: true, queue_size: 8, ..Default::default() },
    );
    for i in 0..60u64 {
        one_request(&mut s, i % 16);
    }
    assert_eq!(s.qs[0].kicks, 60, "the idle device must ask for each kick");
    let want = s.qs[0].ring_state();
    assert_eq!(s.stop_queue(0), want);
}

#[test]
fn vring_base_round_trip_in_packed_encoding() {
    let mut b = Backend::start(BackendOpts::default());
    // Start in the second lap at slot 5: avail and used wrap counters 0.
    let mut s = Session::<PackedQueue>::connect_as(
        &mut b,
        SessionOpts { queue_size: 16, base: 16 + 5, ..Default::default() },
    );
    assert_eq!(s.qs[0].ring_state(), 5 | 5 << 16, "test setup: both wrap counters 0");
    for i in 0..3 {
        one_request(&mut s, i);
    }
    // 9 slots later: slot 14, still lap 0.
    assert_eq!(s.stop_queue(0), 14 | 14 << 16);
    s.restart_queue(0, 14 | 14 << 16);
    one_request(&mut s, 3);
    // 3 more: slot 1 of the next lap, wrap counters 1 again.
    let got = s.stop_queue(0);
    assert_eq!(got, encode_base(1, true, 1, true), "GET_VRING_BASE {got:#x}");
    s.restart_queue(0, got);
    one_request(&mut s, 4);
    assert_eq!(s.stop_queue(0), encode_base(4, true, 4, true));
}

#[test]
fn environment_variable_turns_packed_rings_off() {
    let env = vec![("LIBVHOST_USER_NO_PACKED".to_string(), "1".to_string())];
    let mut b = Backend::start(BackendOpts { env, ..Default::default() });
    // Offered features lack bit 34; split rings work as before.
    let mut s = Session::connect(&mut b, SessionOpts::default());
    assert!(s.features & VIRTIO_F_RING_PACKED == 0, "bit 34 offered: {:#x}", s.features);
    s.write(0, 0, &pattern(1, 4096), Layout::default());
    assert!(s.read(0, 0, 4096, Layout::default()) == pattern(1, 4096));
    drop(s);
    // A frontend that acks bit 34 anyway is refused, and the backend lives on.
    let c = raw::RawConn::connect(&mut b);
    let f = u64::from_le_bytes(c.call(raw::GET_FEATURES, &[], &[])[..8].try_into().unwrap());
    assert!(f & VIRTIO_F_RING_PACKED == 0);
    c.send(raw::SET_FEATURES, 0, &raw::u64_payload(f | VIRTIO_F_RING_PACKED), &[]).unwrap();
    assert!(
        b.wait_stderr("vhost-user panic:", Duration::from_secs(3)),
        "acking a packed ring that was not offered is accepted"
    );
    b.assert_alive();
    drop(c);
    smoke(&mut b);
}
