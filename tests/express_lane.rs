// SPDX-License-Identifier: GPL-2.0-or-later
//! The express lane (src/queue/express/, src/ffi/lane.rs) against the general path: two
//! devices in this process, one as every device is and one set up with
//! LIBVHOST_USER_NO_EXPRESS (every queue call takes the general path), get the same random
//! rings: split (tests/split_cases: well-formed chains, indirect tables, and every kind of
//! guest error; with and without EVENT_IDX and inflight tracking) and packed (chains at the
//! driver's position, wrapping the ring, with descriptors not available in their lap, reused
//! or out-of-range ids, indirect ones, bad buffers). Each pops, pushes and notifies alike;
//! after every call the two must agree exactly: the element (head or id, buffers as guest
//! ranges, split alike), the device broken or not and the panic message, the queue's state
//! in `VuVirtq`, the ring bytes the device writes (used ring and avail event, or the packed
//! descriptors and device event area), the inflight area, and whether the driver was
//! signalled.
//!
//! Its own binary: the tests set the environment variable around one `vu_init` at a time (a
//! lock keeps device setups apart).
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
use engine::FdSpec;
use live::Live;
use proto::*;
use ring::{Desc, DriverRing, PackedDriver, F_INDIRECT, F_NEXT, F_PACKED_AVAIL, F_WRITE};
use split_cases::{our_ranges, random_case, write_case, Rng};
use targets::inflight::{packed_queue_region_size, queue_region_size};

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
    counter: u64,
    /// What the device writes in guest memory: the used ring and the avail event (split), or
    /// the descriptor ring and the device event area (packed).
    device_bytes: Vec<u8>,
    /// The inflight area, if the session has one.
    inflight: Vec<u8>,
    /// The call eventfd's count, read (and so reset) now.
    signalled: u64,
}

fn seen(l: &Live, s: &Session) -> Seen {
    // SAFETY: queue 0 of this live device, not in use by another thread.
    let vq = unsafe { &*l.vq(0) };
    let n = usize::from(s.queue_size);
    let device_bytes = if s.features & F_RING_PACKED != 0 {
        let mut v = l.guest.read(0, DESC_OFF as usize, 16 * n);
        v.extend(l.guest.read(0, USED_OFF as usize, 4));
        v
    } else {
        l.guest.read(0, USED_OFF as usize, 4 + 8 * n + 2)
    };
    let inflight = if vq.inflight.is_null() {
        Vec::new()
    } else {
        // The queue's states up to the ring's size, or to the mapping's end when the area is
        // shorter (`setup` with a short area).
        // SAFETY: the device's own VuDev, read-only here.
        let info = unsafe { std::ptr::addr_of!((*l.dev.raw()).inflight_info).read() };
        let end = info.addr as usize + info.size as usize;
        // Split: a 16-byte header and 16 bytes a descriptor; packed: 32 and 32.
        let (hdr, per) = if s.features & F_RING_PACKED != 0 { (32, 32) } else { (16, 16) };
        let len = (hdr + per * n).min(end.saturating_sub(vq.inflight as usize));
        // SAFETY: the device's own inflight area of this queue, inside the mapping it holds.
        unsafe { std::slice::from_raw_parts(vq.inflight as *const u8, len) }.to_vec()
    };
    Seen {
        broken: l.dev.broken(),
        panic: l.dev.ctx.last_panic.lock().unwrap().clone(),
        last_avail_idx: vq.last_avail_idx,
        shadow_avail_idx: vq.shadow_avail_idx,
        used_idx: vq.used_idx,
        signalled_used: vq.signalled_used,
        signalled_used_valid: vq.signalled_used_valid,
        inuse: vq.inuse,
        counter: vq.counter,
        device_bytes,
        inflight,
        // The call eventfd is the pool's eventfd 0 (Session::start_steps).
        signalled: sys::eventfd_take(l.events[0]),
    }
}

/// The session's setup, with an inflight area (a fresh memfd) when it negotiates one: two
/// queues' areas for the ring's size, or (`short`) one queue's area for a quarter of it, so
/// that heads past its end have no slot in the mapping (both paths refuse them).
fn setup(s: &Session, short: bool) -> Vec<engine::Step> {
    let mut v = s.negotiate();
    if s.protocol & PF_INFLIGHT != 0 {
        let (queues, qsize) =
            if short { (1, (s.queue_size / 4).max(1)) } else { (2, s.queue_size) };
        let per_queue = if s.features & F_RING_PACKED != 0 {
            packed_queue_region_size(qsize)
        } else {
            queue_region_size(qsize)
        };
        let size = u64::from(queues) * per_queue;
        v.push(msg_fds(
            SET_INFLIGHT_FD,
            inflight(size, 0, queues, qsize),
            vec![FdSpec::Scratch { size: size as u32, fill: 0 }],
        ));
    }
    v.extend(s.ring_steps(0));
    v.extend(s.start_steps(0));
    v
}

fn notify(l: &Live) {
    // SAFETY: this live device and its queue 0.
    unsafe { vu_queue_notify(l.dev.raw(), l.vq(0)) };
}

/// Held while a device is set up: the environment variable is set around one `vu_init`
/// only, never while the other test sets up its lane device.
static SETUP: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A device as every device is (on the express lane).
fn lane_device() -> Live {
    let _setup = SETUP.lock().unwrap();
    Live::standard()
}

/// A device set up with LIBVHOST_USER_NO_EXPRESS.
fn general_only() -> Live {
    let _setup = SETUP.lock().unwrap();
    // SAFETY: no other thread reads the environment meanwhile: the tests of this binary set
    // up devices (vu_init reads it) under SETUP, and nothing else here reads it.
    unsafe { std::env::set_var("LIBVHOST_USER_NO_EXPRESS", "1") };
    let l = Live::standard();
    // SAFETY: as above.
    unsafe { std::env::remove_var("LIBVHOST_USER_NO_EXPRESS") };
    l
}

/// Pops, pushes and notifies on both devices alike, `pops` times (pushing some elements at
/// once, out of order, the rest at the end), comparing after every call; with `slots`, every
/// popped head must have a state in the inflight mapping (both paths check it with the same
/// code, so the comparison alone would not see it wrong). Returns (elements popped,
/// refusals, empty pops).
fn run_alike(
    case_no: usize,
    r: &mut Rng,
    s: &Session,
    lane: &Live,
    general: &Live,
    pops: usize,
    slots: Option<u32>,
) -> (usize, usize, usize) {
    let same = |what: &str| {
        assert_eq!(
            seen(lane, s),
            seen(general, s),
            "case {case_no}: the two paths differ after {what}"
        );
    };
    same("setup");
    let (mut popped, mut refused, mut empty) = (0, 0, 0);
    let mut held = Vec::new();
    for k in 0..pops {
        let (a, b) = (lane.pop(0), general.pop(0));
        match (&a, &b) {
            (Some(a), Some(b)) => {
                assert_eq!(a.index, b.index, "case {case_no} pop {k}: head or id");
                if let Some(n) = slots {
                    assert!(a.index < n, "case {case_no} pop {k}: head {} has no slot", a.index);
                }
                assert_eq!(a.out.len(), b.out.len(), "case {case_no} pop {k}: out iovecs");
                assert_eq!(a.inb.len(), b.inb.len(), "case {case_no} pop {k}: in iovecs");
                assert_eq!(
                    our_ranges(lane, a),
                    our_ranges(general, b),
                    "case {case_no} pop {k}: buffers"
                );
                popped += 1;
            }
            (None, None) if lane.dev.broken() => refused += 1,
            (None, None) => empty += 1,
            _ => panic!("case {case_no} pop {k}: one path popped, the other did not"),
        }
        same("a pop");
        if let (Some(a), Some(b)) = (a, b) {
            held.push((a, b));
        }
        if r.chance(1, 2) && !held.is_empty() {
            let i = r.below(held.len() as u64) as usize;
            let (a, b) = held.swap_remove(i);
            let len = if r.chance(1, 8) { 0 } else { r.below(4096) as u32 };
            lane.push(0, a, len);
            general.push(0, b, len);
            same("a push");
            notify(lane);
            notify(general);
            same("a notify");
        }
        if lane.dev.broken() {
            break;
        }
    }
    for (a, b) in held {
        lane.push(0, a, 7);
        general.push(0, b, 7);
        same("a late push");
    }
    notify(lane);
    notify(general);
    same("the last notify");
    (popped, refused, empty)
}

#[test]
fn random_split_rings_go_the_same_way_on_the_express_lane_and_the_general_path() {
    let mut r = Rng::new(0x0e7b_2e55_1a4e);
    let mut total = (0, 0, 0);
    for case_no in 0..1000 {
        let mut c = random_case(&mut r);
        if r.chance(1, 2) {
            c.s.features |= F_EVENT_IDX;
        }
        if r.chance(1, 3) {
            c.s.protocol |= PF_INFLIGHT;
        }
        let short = r.chance(1, 4);
        let mut lane = lane_device();
        let mut general = general_only();
        for l in [&mut lane, &mut general] {
            l.steps(&setup(&c.s, short));
            assert!(!l.dev.broken(), "case {case_no}: setup refused");
            write_case(l, &c);
        }
        // A short area (one queue, a quarter of the ring) holds this many states.
        let slots = (short && c.s.protocol & PF_INFLIGHT != 0)
            .then(|| ((queue_region_size((c.s.queue_size / 4).max(1)) - 16) / 16) as u32);
        let (p, f, e) = run_alike(case_no, &mut r, &c.s, &lane, &general, c.heads.len() + 1, slots);
        total = (total.0 + p, total.1 + f, total.2 + e);
    }
    eprintln!("split: popped, refused, empty alike: {total:?}");
    assert!(total.0 > 300 && total.1 > 50 && total.2 > 30, "the rings exercise too little");
}

/// A packed descriptor: mostly a good buffer, sometimes an empty, huge, misplaced, indirect
/// or not-yet-available one, with a buffer id mostly unused so far.
fn packed_desc(r: &mut Rng, s: &Session, id: u16, next: bool, write: bool) -> Desc {
    let size = GUEST_SIZE as u64;
    let addr = match r.below(12) {
        0 => s.region1 + r.below(size),
        1 => size - r.below(64),
        2 => r.u64() >> r.below(64),
        _ => BUF_OFF + r.below(size - BUF_OFF - 0x1000),
    };
    let len = match r.below(16) {
        0 => 0,
        1 => r.below(0x20000) as u32,
        _ => 1 + r.below(1024) as u32,
    };
    let mut flags = if next { F_NEXT } else { 0 } | if write { F_WRITE } else { 0 };
    if r.chance(1, 40) {
        flags |= F_INDIRECT;
    }
    if r.chance(1, 30) {
        // Not available in its lap (stale, or used).
        flags |= F_PACKED_AVAIL;
    }
    Desc { addr, len, flags, next: id }
}

#[test]
fn random_packed_rings_go_the_same_way_on_the_express_lane_and_the_general_path() {
    let mut r = Rng::new(0x9ac_ced5_1a4e);
    let mut total = (0, 0, 0);
    for case_no in 0..800 {
        let queue_size = [4u16, 8, 16, 64][r.below(4) as usize];
        let mut s = Session {
            features: F_VERSION_1 | F_PROTOCOL_FEATURES | F_INDIRECT_DESC | F_RING_PACKED,
            protocol: PF_MQ | PF_REPLY_ACK | PF_MEM_SLOTS,
            queue_size,
            base: r.below(u64::from(queue_size)) as u16 | if r.chance(1, 2) { 0x8000 } else { 0 },
            region1: [GUEST_SIZE as u64, 1 << 32][r.below(2) as usize],
        };
        if r.chance(1, 2) {
            s.features |= F_EVENT_IDX;
        }
        if r.chance(1, 3) {
            s.protocol |= PF_INFLIGHT;
        }
        let short = r.chance(1, 4);
        let mut lane = lane_device();
        let mut general = general_only();
        let mut steps = setup(&s, short);
        // Chains at the driver's position, one after the other (wrapping the ring).
        let mut ring = PackedDriver::new(&s);
        let chains = 1 + r.below(6) as usize;
        let mut slot = ring.chain_start(0);
        for _ in 0..chains {
            let longest = if r.chance(1, 10) { u64::from(queue_size) } else { 3 };
            let len = 1 + r.below(longest) as u16;
            let id = if r.chance(9, 10) { r.below(u64::from(queue_size)) } else { r.u64() } as u16;
            if r.chance(1, 8) {
                // One indirect descriptor and its table (mostly a good one).
                let count = 1 + r.below(8) as u16;
                let at = BUF_OFF + 16 * r.below(0x700);
                let from = r.below(u64::from(count) + 1) as u16;
                let table: Vec<u8> = (0..count)
                    .flat_map(|k| {
                        let mut e = packed_desc(&mut r, &s, 0, false, k >= from);
                        e.flags &= !F_PACKED_AVAIL;
                        ring.table_entry(e)
                    })
                    .collect();
                steps.extend(ring::guest_write(&s, at, table));
                let mut d = packed_desc(&mut r, &s, id, false, false);
                d.flags |= F_INDIRECT;
                d.addr = if r.chance(9, 10) { at } else { d.addr };
                d.len = if r.chance(9, 10) { 16 * u32::from(count) } else { d.len };
                steps.push(ring.desc(slot, d));
                slot = (slot + 1) % queue_size;
                steps.extend(ring.publish(ring.chain_start(0)));
                continue;
            }
            let writes_from = r.below(u64::from(len) + 1) as u16;
            for k in 0..len {
                let write = if r.chance(1, 20) { r.chance(1, 2) } else { k >= writes_from };
                let d = packed_desc(&mut r, &s, id, k + 1 < len, write);
                steps.push(ring.desc(slot, d));
                slot = (slot + 1) % queue_size;
            }
            steps.extend(ring.publish(ring.chain_start(0)));
        }
        for l in [&mut lane, &mut general] {
            l.steps(&steps);
            assert!(!l.dev.broken(), "case {case_no}: setup refused");
        }
        let (p, f, e) = run_alike(case_no, &mut r, &s, &lane, &general, chains + 1, None);
        total = (total.0 + p, total.1 + f, total.2 + e);
    }
    eprintln!("packed: popped, refused, empty alike: {total:?}");
    assert!(total.0 > 300 && total.1 > 50 && total.2 > 50, "the rings exercise too little");
}
