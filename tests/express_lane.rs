// SPDX-License-Identifier: GPL-2.0-or-later
//! The express lane (src/queue/express.rs, src/ffi/lane.rs) against the general path: two
//! devices in this process, one as every device is and one set up with
//! LIBVHOST_USER_NO_EXPRESS (every queue call takes the general path), get the same random
//! split rings (tests/split_cases: well-formed chains, indirect tables, and every kind of guest
//! error), with and without EVENT_IDX. Each pops, pushes and notifies alike; after every call
//! the two must agree exactly: the element (head, buffers as guest ranges, split alike), the
//! device broken or not and the panic message, the queue's state in `VuVirtq`, the used ring's
//! bytes and whether the driver was signalled.
//!
//! One test in its own binary: it sets the environment variable around one `vu_init`.
#![allow(dead_code)]

#[path = "../fuzz/src/capi.rs"]
mod capi;
#[path = "../fuzz/src/device.rs"]
mod device;
#[path = "../fuzz/src/engine.rs"]
mod engine;
#[path = "../fuzz/src/input.rs"]
mod input;
#[path = "../fuzz/src/live.rs"]
mod live;
#[path = "../fuzz/src/proto.rs"]
mod proto;
#[path = "../fuzz/src/ring.rs"]
mod ring;
#[path = "split_cases/mod.rs"]
mod split_cases;
#[path = "../fuzz/src/sys.rs"]
mod sys;
#[path = "../fuzz/src/targets/mod.rs"]
mod targets;

use capi::*;
use live::Live;
use proto::*;
use split_cases::{our_ranges, random_case, write_case, Rng};

/// What one call left behind on one device, to compare across the two.
#[derive(Debug, PartialEq)]
struct Seen {
    broken: bool,
    panic: String,
    last_avail_idx: u16,
    shadow_avail_idx: u16,
    used_idx: u16,
    signalled_used: u16,
    signalled_used_valid: bool,
    inuse: u32,
    used_ring: Vec<u8>,
    avail_event: Vec<u8>,
    /// The call eventfd's count, read (and so reset) now.
    signalled: u64,
}

fn seen(l: &Live, s: &Session) -> Seen {
    // SAFETY: queue 0 of this live device, not in use by another thread.
    let vq = unsafe { &*l.vq(0) };
    let n = usize::from(s.queue_size);
    let used = l.guest.read(0, USED_OFF as usize, 4 + 8 * n);
    // The call eventfd is the pool's eventfd 0 (Session::start_steps).
    Seen {
        broken: l.dev.broken(),
        panic: l.dev.ctx.last_panic.lock().unwrap().clone(),
        last_avail_idx: vq.last_avail_idx,
        shadow_avail_idx: vq.shadow_avail_idx,
        used_idx: vq.used_idx,
        signalled_used: vq.signalled_used,
        signalled_used_valid: vq.signalled_used_valid,
        inuse: vq.inuse,
        used_ring: used,
        avail_event: l.guest.read(0, USED_OFF as usize + 4 + 8 * n, 2),
        signalled: sys::eventfd_take(l.events[0]),
    }
}

fn notify(l: &Live) {
    // SAFETY: this live device and its queue 0.
    unsafe { vu_queue_notify(l.dev.raw(), l.vq(0)) };
}

/// A device set up with LIBVHOST_USER_NO_EXPRESS.
fn general_only() -> Live {
    // SAFETY: this test binary has one test, and no other thread of it reads the environment
    // while it changes here.
    unsafe { std::env::set_var("LIBVHOST_USER_NO_EXPRESS", "1") };
    let l = Live::standard();
    // SAFETY: as above.
    unsafe { std::env::remove_var("LIBVHOST_USER_NO_EXPRESS") };
    l
}

#[test]
fn random_split_rings_go_the_same_way_on_the_express_lane_and_the_general_path() {
    let mut r = Rng(0x0e7b_2e55_1a4e);
    let (mut popped, mut refused, mut empty) = (0, 0, 0);
    for case_no in 0..600 {
        let mut c = random_case(&mut r);
        if r.chance(1, 2) {
            c.s.features |= F_EVENT_IDX;
        }
        let mut lane = Live::standard();
        let mut general = general_only();
        for l in [&mut lane, &mut general] {
            l.steps(&c.s.setup());
            assert!(!l.dev.broken(), "case {case_no}: setup refused");
            write_case(l, &c);
        }
        let same = |what: &str, lane: &Live, general: &Live| {
            assert_eq!(
                seen(lane, &c.s),
                seen(general, &c.s),
                "case {case_no}: the two paths differ after {what}"
            );
        };
        same("setup", &lane, &general);
        let mut held = Vec::new();
        for k in 0..c.heads.len() + 1 {
            let (a, b) = (lane.pop(0), general.pop(0));
            match (&a, &b) {
                (Some(a), Some(b)) => {
                    assert_eq!(a.index, b.index, "case {case_no} pop {k}: head");
                    assert_eq!(a.out.len(), b.out.len(), "case {case_no} pop {k}: out iovecs");
                    assert_eq!(a.inb.len(), b.inb.len(), "case {case_no} pop {k}: in iovecs");
                    assert_eq!(
                        our_ranges(&lane, a),
                        our_ranges(&general, b),
                        "case {case_no} pop {k}: buffers"
                    );
                    popped += 1;
                }
                (None, None) if lane.dev.broken() => refused += 1,
                (None, None) => empty += 1,
                _ => panic!("case {case_no} pop {k}: one path popped, the other did not"),
            }
            same("a pop", &lane, &general);
            if let (Some(a), Some(b)) = (a, b) {
                held.push((a, b));
            }
            // Complete some elements at once, some later, out of order.
            if r.chance(1, 2) && !held.is_empty() {
                let i = r.below(held.len() as u64) as usize;
                let (a, b) = held.swap_remove(i);
                let len = r.below(4096) as u32;
                lane.push(0, a, len);
                general.push(0, b, len);
                same("a push", &lane, &general);
                notify(&lane);
                notify(&general);
                same("a notify", &lane, &general);
            }
            if lane.dev.broken() {
                break;
            }
        }
        for (a, b) in held {
            lane.push(0, a, 7);
            general.push(0, b, 7);
            same("a late push", &lane, &general);
        }
        notify(&lane);
        notify(&general);
        same("the last notify", &lane, &general);
    }
    eprintln!("popped alike: {popped}, refused alike: {refused}, empty alike: {empty}");
    assert!(popped > 300 && refused > 50 && empty > 50, "the random rings exercise too little");
}
