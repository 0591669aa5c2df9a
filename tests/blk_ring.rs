// SPDX-License-Identifier: GPL-2.0-or-later
//! Virtqueue mechanics through the vhost-user-blk example: notification
//! suppression with and without EVENT_IDX, 16-bit index wrap-around, and
//! GET_VRING_BASE after a stop.

mod common;
use common::*;
use std::time::Duration;

const NO_CALL_GRACE: Duration = Duration::from_millis(50);

/// Write one sector synchronously, without waiting on the call eventfd.
fn one_request<Q: Driver>(s: &mut Session<Q>, sector: u64) {
    s.write(0, sector, &pattern(sector, 512), Layout::default());
}

#[test]
fn event_idx_on_suppresses_calls_and_publishes_avail_event() {
    let mut b = Backend::start(BackendOpts::default());
    let mut s = Session::connect(
        &mut b,
        SessionOpts { event_idx: true, queue_size: 64, ..Default::default() },
    );
    assert!(s.acked & VIRTIO_RING_F_EVENT_IDX != 0);
    // The first completion is always signalled.
    one_request(&mut s, 0);
    assert_eq!(s.qs[0].wait_call(IO_TIMEOUT), Some(1), "first completion not signalled");
    // The device publishes avail_event = its next avail index.
    assert_eq!(s.qs[0].avail_event(), s.qs[0].next_avail, "avail_event not updated");

    for round in 0..3u16 {
        // Ask to be signalled only once used idx passes used_event.
        let u = s.qs[0].used_idx();
        s.qs[0].set_used_event(u.wrapping_add(2));
        one_request(&mut s, 1);
        one_request(&mut s, 2);
        std::thread::sleep(NO_CALL_GRACE);
        assert_eq!(
            s.qs[0].take_calls(),
            0,
            "round {round}: signalled before used_event was reached"
        );
        one_request(&mut s, 3);
        assert_eq!(
            s.qs[0].wait_call(IO_TIMEOUT),
            Some(1),
            "round {round}: expected exactly one call when used idx passed used_event"
        );
        assert_eq!(s.qs[0].avail_event(), s.qs[0].next_avail);
    }
    // Driver side: every request was kicked because avail_event asked for it.
    assert_eq!(s.qs[0].kicks, 10);
    // used_event far behind (already passed): no more calls.
    let u = s.qs[0].used_idx();
    s.qs[0].set_used_event(u.wrapping_sub(10));
    one_request(&mut s, 4);
    one_request(&mut s, 5);
    std::thread::sleep(NO_CALL_GRACE);
    assert_eq!(s.qs[0].take_calls(), 0, "signalled although used_event was behind");
    // Batch: publish 4 requests, one kick, used_event at the 3rd.
    let u = s.qs[0].used_idx();
    s.qs[0].set_used_event(u.wrapping_add(2));
    let mark = s.mem.mark();
    let ps: Vec<_> =
        (0..4).map(|i| prepare(&s.mem, VIRTIO_BLK_T_IN, i, &[], 512, Layout::default())).collect();
    for p in &ps {
        let vq = &mut s.qs[0];
        let h = vq.add(&p.bufs);
        vq.publish(h);
    }
    assert!(s.qs[0].kick_if_needed(), "4 new buffers must need a kick");
    for _ in 0..4 {
        s.qs[0].wait_used(IO_TIMEOUT);
    }
    assert_eq!(s.qs[0].wait_call(IO_TIMEOUT), Some(1), "batch crossing used_event: one call");
    s.mem.release(mark);
}

#[test]
fn event_idx_off_honours_no_interrupt() {
    event_idx_off::<SplitQueue>();
}

#[test]
fn event_idx_off_honours_event_flags_disable_packed() {
    event_idx_off::<PackedQueue>();
}

/// Split: VRING_AVAIL_F_NO_INTERRUPT; packed: driver event flags DISABLE.
fn event_idx_off<Q: Driver>() {
    let mut b = Backend::start(BackendOpts::default());
    let mut s =
        Session::<Q>::connect_as(&mut b, SessionOpts { event_idx: false, ..Default::default() });
    assert!(s.acked & VIRTIO_RING_F_EVENT_IDX == 0);
    one_request(&mut s, 0);
    assert_eq!(s.qs[0].wait_call(IO_TIMEOUT), Some(1));
    for round in 0..3 {
        s.qs[0].suppress_calls(true);
        one_request(&mut s, 1);
        one_request(&mut s, 2);
        std::thread::sleep(NO_CALL_GRACE);
        assert_eq!(
            s.qs[0].take_calls(),
            0,
            "round {round}: call despite VRING_AVAIL_F_NO_INTERRUPT"
        );
        s.qs[0].suppress_calls(false);
        one_request(&mut s, 3);
        assert_eq!(
            s.qs[0].wait_call(IO_TIMEOUT),
            Some(1),
            "round {round}: one call once interrupts are back"
        );
    }
    // Without EVENT_IDX the device must not rely on avail_event kicks: the
    // driver kicks for every request unless NO_NOTIFY (packed: DISABLE) is set.
    assert_eq!(s.qs[0].kicks(), 10);
}

/// Split: across the 16-bit index wrap. Packed: a ring of 8 slots starting
/// two slots before a wrap-counter flip (65530 slots after a reset), lapped
/// many times (direct chains of 4 slots, or 1 slot when indirect), so both
/// the driver's and the device's wrap counters flip again and again.
fn wrap_around<Q: Driver>(event_idx: bool, indirect: bool) {
    let base: u16 = 65530;
    let mut b = Backend::start(BackendOpts { image_size: Some(128 * 1024), ..Default::default() });
    let mut s = Session::<Q>::connect_as(
        &mut b,
        SessionOpts { event_idx, base, queue_size: 8, ..Default::default() },
    );
    let l = Layout { indirect, seg: 512, ..Default::default() };
    let mut n: u16 = 0;
    // Single requests across the 65535 -> 0 wrap.
    for i in 0..12u64 {
        let data = pattern(i + 1000, 1024);
        s.write(0, i * 2, &data, l);
        assert!(s.read(0, i * 2, 1024, l) == data, "data wrong near index wrap (request {i})");
        n = n.wrapping_add(2);
    }
    assert!(s.qs[0].settled(), "extra used entries ({})", Q::NAME);
    if Q::NAME == "split" {
        assert_eq!(s.qs[0].ring_state(), base.wrapping_add(n) as u32);
    }
    // Batches of up to 2 requests (4 descriptors each for direct chains).
    for round in 0..10u64 {
        let mark = s.mem.mark();
        let ps: Vec<_> =
            (0..2).map(|i| prepare(&s.mem, VIRTIO_BLK_T_IN, round + i, &[], 1024, l)).collect();
        let heads: Vec<u16> = ps.iter().map(|p| s.submit(0, p)).collect();
        let mut got = vec![s.qs[0].wait_used(IO_TIMEOUT).0, s.qs[0].wait_used(IO_TIMEOUT).0];
        got.sort();
        let mut want = heads.clone();
        want.sort();
        assert_eq!(got, want);
        for (i, p) in ps.iter().enumerate() {
            let c = finish(&s.mem, p, 0);
            assert_eq!(c.status, VIRTIO_BLK_S_OK);
            let sector = round + i as u64;
            let exp = s_expected(&b, sector);
            assert!(c.data == exp, "batched read of sector {sector} wrong");
        }
        s.mem.release(mark);
        n = n.wrapping_add(2);
    }
    assert!(s.qs[0].settled(), "extra used entries ({})", Q::NAME);
    if Q::NAME == "split" {
        assert_eq!(s.qs[0].ring_state(), base.wrapping_add(n) as u32);
    }
    let want = s.qs[0].ring_state();
    assert_eq!(s.stop_queue(0), want, "GET_VRING_BASE after wrap ({})", Q::NAME);
    assert_eq!(s.qs[0].free_count(), 8, "ring slots leaked");
}

/// Expected content of 2 sectors starting at `sector` after wrap_around's
/// writes (each write covered sectors 2i, 2i+1 with pattern(i+1000)).
fn s_expected(_b: &Backend, sector: u64) -> Vec<u8> {
    let mut v = Vec::new();
    for sec in sector..sector + 2 {
        let i = sec / 2;
        let p = pattern(i + 1000, 1024);
        let off = ((sec % 2) * 512) as usize;
        v.extend_from_slice(&p[off..off + 512]);
    }
    v
}

#[test]
fn index_wrap_around_without_event_idx() {
    wrap_around::<SplitQueue>(false, false);
}

#[test]
fn index_wrap_around_with_event_idx() {
    wrap_around::<SplitQueue>(true, false);
}

#[test]
fn index_wrap_around_indirect() {
    wrap_around::<SplitQueue>(true, true);
}

#[test]
fn wrap_counters_flip_without_event_idx_packed() {
    wrap_around::<PackedQueue>(false, false);
}

#[test]
fn wrap_counters_flip_with_event_idx_packed() {
    wrap_around::<PackedQueue>(true, false);
}

#[test]
fn wrap_counters_flip_indirect_packed() {
    wrap_around::<PackedQueue>(true, true);
}

#[test]
fn wrap_counters_flip_indirect_without_event_idx_packed() {
    wrap_around::<PackedQueue>(false, true);
}

#[test]
fn get_vring_base_after_stop_and_resume() {
    stop_and_resume::<SplitQueue>(100);
}

#[test]
fn get_vring_base_after_stop_and_resume_packed() {
    // 100 slots after a reset in a 256-slot ring; then 200 (second lap).
    stop_and_resume::<PackedQueue>(100);
    stop_and_resume::<PackedQueue>(200);
}

fn stop_and_resume<Q: Driver>(base: u16) {
    let mut b = Backend::start(BackendOpts::default());
    let mut s = Session::<Q>::connect_as(&mut b, SessionOpts { base, ..Default::default() });
    for i in 0..5 {
        one_request(&mut s, i);
    }
    let consumed = s.qs[0].ring_state();
    // Two requests published but not kicked: not processed yet (the
    // example processes a queue only when kicked).
    let mark = s.mem.mark();
    let ps: Vec<_> =
        (0..2).map(|i| prepare(&s.mem, VIRTIO_BLK_T_IN, i, &[], 512, Layout::default())).collect();
    let mut heads = Vec::new();
    for p in &ps {
        let h = s.qs[0].add(&p.bufs);
        s.qs[0].publish(h);
        heads.push(h);
    }
    let base = s.stop_queue(0);
    assert_eq!(base, consumed, "GET_VRING_BASE must return the next avail index to process");
    assert!(s.qs[0].poll_used().is_none(), "requests that were never kicked got completed");
    if Q::NAME == "split" {
        assert_eq!(base, 105);
    }
    // Restart from that base: the pending requests get processed.
    s.restart_queue(0, base);
    s.qs[0].kick_now();
    let mut got = vec![s.qs[0].wait_used(IO_TIMEOUT).0, s.qs[0].wait_used(IO_TIMEOUT).0];
    got.sort();
    heads.sort();
    assert_eq!(got, heads);
    for (i, p) in ps.iter().enumerate() {
        let c = finish(&s.mem, p, 0);
        assert_eq!(c.status, VIRTIO_BLK_S_OK);
        assert!(c.data == pattern(i as u64, 512));
    }
    s.mem.release(mark);
    one_request(&mut s, 9);
    let want = s.qs[0].ring_state();
    assert_eq!(s.stop_queue(0), want);
    if Q::NAME == "split" {
        assert_eq!(want, 108);
    }
}
