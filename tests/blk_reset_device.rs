// SPDX-License-Identifier: GPL-2.0-or-later
//! RESET_DEVICE under a real frontend (the `vhost` crate) while the example blk backend's
//! worker threads (-T) are processing requests: the reset stops them through
//! `queue_set_started`, forgets the rings, and the next start serves correct data again.

mod common;

use common::*;
use vhost::vhost_user::message::VhostUserProtocolFeatures;

#[test]
fn reset_device_mid_io_with_queue_threads() {
    let opts = BackendOpts { threads: true, queues: 2, ..Default::default() };
    let mut b = Backend::start(opts);
    let mut s = Session::connect(&mut b, SessionOpts { queues: 2, ..Default::default() });
    let pf = s.ctl("GET_PROTOCOL_FEATURES", |fe| fe.get_protocol_features());
    assert!(pf.contains(VhostUserProtocolFeatures::RESET_DEVICE), "not offered: {pf:?}");
    let pf = s.protocol | VhostUserProtocolFeatures::RESET_DEVICE;
    s.ctl("SET_PROTOCOL_FEATURES", |fe| fe.set_protocol_features(pf));
    s.protocol = pf;
    let data = pattern(0xfeed, 4096);
    s.write(0, 16, &data, Layout::default());
    for round in 0..20u16 {
        // Requests on both queues, not waited for: the reset lands while the workers pop,
        // process and push them.
        let mark = s.mem.mark();
        for q in 0..2 {
            for k in 0..24u64 {
                let p = prepare(&s.mem, VIRTIO_BLK_T_IN, k * 8, &[], 4096, Layout::default());
                s.submit(q, &p);
            }
        }
        if round % 2 == 1 {
            // Sometimes with the rings already partly drained.
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        s.ctl("RESET_DEVICE", |fe| fe.reset_device());
        s.mem.release(mark);
        // What QEMU does at the next start: features again, the rings from scratch.
        let acked = s.acked;
        s.ctl("SET_FEATURES", |fe| fe.set_features(acked));
        s.qs = (0..2).map(|_| SplitQueue::new(&s.mem, 128, false, 0)).collect();
        for q in 0..2 {
            s.start_queue(q);
        }
        for q in 0..2 {
            let back = s.read(q, 16, 4096, Layout::default());
            assert!(back == data, "round {round}, queue {q}: wrong data after the reset");
            assert_eq!(s.qs[q].used_idx(), 1, "round {round}: the new ring did not start at 0");
        }
        b.assert_alive();
    }
    assert!(!b.stderr().contains("panic"), "{}", b.stderr());
    drop(s);
    let st = b.terminate();
    assert!(st.success(), "backend exit: {}", describe(st));
}
