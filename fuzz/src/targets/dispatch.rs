// SPDX-License-Identifier: GPL-2.0-or-later
//! Any sequence of frontend messages with fds into `vu_dispatch`: request codes, flags, size
//! fields and payloads as the input says, each fd a guest memfd, an eventfd of the pool
//! (blocking or not), a backend-channel socket with canned replies, a scratch memfd, a dead
//! pipe; interleaved with kicks, event-loop iterations, guest writes, queue service,
//! truncated last messages and reconnects. The queue handler serves whatever gets kicked.
//!
//! Seeds: the sessions of tests/hostile_msgs.rs and tests/stress_messages.rs (valid setups
//! and each hostile message after one).

use super::MAX_OPS;
use crate::engine::{FdSpec, Msg, QueueOp, Scenario, Step, NEED_REPLY, VERSION};
use crate::input::{Cursor, Enc};
use crate::proto::{self, *};

const OP_MSG: u8 = 0;
const OP_LOOP: u8 = 4;
const OP_SIGNAL: u8 = 5;
const OP_GUEST_WRITE: u8 = 6;
const OP_SERVE: u8 = 7;
const OP_TRUNCATED: u8 = 8;
const OP_RECONNECT: u8 = 9;
const OP_IN_ORDER: u8 = 10;
const OPS: u8 = 11;

fn fd_spec(c: &mut Cursor) -> FdSpec {
    let k = c.u8();
    match k % 6 {
        0 => FdSpec::Guest(k / 6),
        1 => FdSpec::Event(k / 6),
        2 => FdSpec::Socket(c.blob(64)),
        3 => FdSpec::Scratch { size: u32::from(c.u16()) << (c.u8() % 8), fill: c.u8() },
        4 => FdSpec::LastInflight,
        _ if (k / 6).is_multiple_of(2) => FdSpec::Pipe,
        _ => FdSpec::PipeWriter,
    }
}

fn message(c: &mut Cursor) -> Msg {
    let r = c.u8();
    let req = if r < 48 { u32::from(r) } else { c.u32() };
    let f = c.u8();
    let flags = if f & 0x80 != 0 { c.u32() } else { VERSION | u32::from(f) & NEED_REPLY };
    let payload = c.blob(300);
    let size = if f & 0x40 != 0 { Some(c.u32()) } else { None };
    let nfds = c.u8() % 11;
    let fds = (0..nfds).map(|_| fd_spec(c)).collect();
    Msg { req, flags, size, payload, fds }
}

pub fn decode(data: &[u8]) -> Scenario {
    let mut c = Cursor::new(data);
    let max_queues = u16::from(c.u8() % 9);
    let guest = (0..2).map(|_| (usize::from(c.u8() % 16) + 1) * 4096).collect();
    let blocking_eventfds = c.u8();
    let mut steps = Vec::new();
    for _ in 0..MAX_OPS {
        if c.is_empty() {
            break;
        }
        match c.u8() % OPS {
            0..=3 => steps.push(Step::Dispatch(message(&mut c))),
            OP_LOOP => steps.push(Step::Loop),
            OP_SIGNAL => steps.push(Step::Signal(c.u8())),
            OP_GUEST_WRITE => {
                let (mem, off) = (c.u8(), u32::from(c.u16()));
                steps.push(Step::GuestWrite { mem, off, bytes: c.blob(256) });
            }
            OP_SERVE => steps.push(Step::Queue { q: c.u8(), op: QueueOp::Serve }),
            OP_TRUNCATED => {
                let msg = message(&mut c);
                steps.push(Step::Truncated { msg, keep: usize::from(c.u16()) });
            }
            OP_RECONNECT => steps.push(Step::Reconnect),
            _ => steps.push(Step::InOrder(c.bool())),
        }
    }
    Scenario { max_queues, guest, eventfds: 4, blocking_eventfds, steps }
}

/// Writes what [`decode`] reads.
struct DispatchEnc {
    e: Enc,
}

impl DispatchEnc {
    fn new(max_queues: u8, pages: [u8; 2], blocking: u8) -> Self {
        let mut e = Enc::new();
        e.u8(max_queues).u8(pages[0] - 1).u8(pages[1] - 1).u8(blocking);
        DispatchEnc { e }
    }
    fn fd(&mut self, f: &FdSpec) {
        match f {
            FdSpec::Guest(i) => self.e.u8(i * 6),
            FdSpec::Event(i) => self.e.u8(i * 6 + 1),
            FdSpec::Socket(b) => self.e.u8(2).blob(b),
            FdSpec::Scratch { size, fill } => self.e.u8(3).u16((*size >> 7) as u16).u8(7).u8(*fill),
            FdSpec::LastInflight => self.e.u8(4),
            FdSpec::Pipe => self.e.u8(5),
            FdSpec::PipeWriter => self.e.u8(11),
        };
    }
    fn message(&mut self, m: &Msg) {
        if m.req < 48 {
            self.e.u8(m.req as u8);
        } else {
            self.e.u8(0xff).u32(m.req);
        }
        let std_flags = m.flags & !NEED_REPLY == VERSION;
        let f = if std_flags { (m.flags & NEED_REPLY) as u8 } else { 0x80 }
            | if m.size.is_some() { 0x40 } else { 0 };
        self.e.u8(f);
        if !std_flags {
            self.e.u32(m.flags);
        }
        self.e.blob(&m.payload);
        if let Some(s) = m.size {
            self.e.u32(s);
        }
        self.e.u8(m.fds.len() as u8);
        for f in &m.fds {
            self.fd(f);
        }
    }
    fn steps(&mut self, steps: &[Step]) -> &mut Self {
        for st in steps {
            match st {
                Step::Dispatch(m) => {
                    self.e.u8(OP_MSG);
                    self.message(m);
                }
                Step::Loop => {
                    self.e.u8(OP_LOOP);
                }
                Step::Signal(i) => {
                    self.e.u8(OP_SIGNAL).u8(*i);
                }
                Step::GuestWrite { mem, off, bytes } => {
                    self.e.u8(OP_GUEST_WRITE).u8(*mem).u16(*off as u16).blob(bytes);
                }
                Step::Queue { q, .. } => {
                    self.e.u8(OP_SERVE).u8(*q);
                }
                Step::Truncated { msg, keep } => {
                    self.e.u8(OP_TRUNCATED);
                    self.message(msg);
                    self.e.u16(*keep as u16);
                }
                Step::Reconnect => {
                    self.e.u8(OP_RECONNECT);
                }
                Step::InOrder(v) => {
                    self.e.u8(OP_IN_ORDER).bool(*v);
                }
                Step::InflightWrite { .. } | Step::ServeKicks(_) => {}
            }
        }
        self
    }
}

fn m(req: u32, payload: Vec<u8>) -> Msg {
    Msg::new(req, payload)
}

fn sized(req: u32, size: u32, payload: Vec<u8>) -> Msg {
    Msg { size: Some(size), ..Msg::new(req, payload) }
}

/// The standard valid session (16 descriptors, adjacent regions of 64 KiB).
fn std_session() -> Session {
    Session {
        features: F_VERSION_1 | F_PROTOCOL_FEATURES | F_INDIRECT_DESC,
        protocol: PF_MQ | PF_REPLY_ACK | PF_CONFIG | PF_MEM_SLOTS | PF_LOG_SHMFD,
        queue_size: 16,
        base: 0,
        region1: GUEST_SIZE as u64,
    }
}

/// A seed: the negotiated session with its memory table, then `hostile`.
fn after_setup(hostile: Vec<Step>) -> Vec<u8> {
    let s = std_session();
    let mut e = DispatchEnc::new(2, [16, 16], 0);
    e.steps(&s.negotiate()).steps(&hostile);
    e.e.finish()
}

/// A seed: the whole valid setup of queue 0, then `more`.
fn after_rings(more: Vec<Step>) -> Vec<u8> {
    let s = std_session();
    let mut e = DispatchEnc::new(2, [16, 16], 0);
    e.steps(&s.setup()).steps(&more);
    e.e.finish()
}

fn d(m: Msg) -> Step {
    Step::Dispatch(m)
}

/// A request with its blk chain in guest memory, kicked and served.
fn kicked_request() -> Vec<Step> {
    let desc = |addr: u64, len: u32, flags: u16, next: u16| {
        crate::ring::Desc { addr, len, flags, next }.bytes()
    };
    let mut table = Vec::new();
    table.extend(desc(BUF_OFF, 16, 1, 1));
    table.extend(desc(BUF_OFF + 0x100, 512, 3, 2));
    table.extend(desc(BUF_OFF + 0x400, 1, 2, 0));
    vec![
        Step::GuestWrite { mem: 0, off: DESC_OFF as u32, bytes: table },
        Step::GuestWrite { mem: 0, off: AVAIL_OFF as u32 + 2, bytes: vec![1, 0, 0, 0] },
        Step::Signal(1),
        Step::Loop,
    ]
}

pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let s = std_session();
    let [r0, r1] = s.regions();
    let ev = |i| vec![FdSpec::Event(i)];
    let mut v: Vec<(&'static str, Vec<u8>)> = vec![
        ("valid_session_kick", after_rings(kicked_request())),
        (
            "valid_session_stop_restart",
            after_rings({
                let mut x = kicked_request();
                x.push(proto::msg(GET_VRING_BASE, state(0, 0)));
                x.extend(s.ring_steps(0));
                x.extend(s.start_steps(0));
                x.extend(kicked_request());
                x
            }),
        ),
        (
            "inband_kick",
            after_rings({
                let mut x = kicked_request();
                x.pop();
                x.pop();
                x.push(proto::msg(VRING_KICK, state(0, 0)));
                x
            }),
        ),
        (
            "queries",
            after_setup(vec![
                proto::msg(GET_QUEUE_NUM, vec![]),
                proto::msg(GET_MAX_MEM_SLOTS, vec![]),
                proto::msg(GET_CONFIG, {
                    let mut p = vec![0u8; 12];
                    p[4] = 16;
                    p.extend([0; 16]);
                    p
                }),
                proto::msg(SET_CONFIG, {
                    let mut p = vec![0u8; 12];
                    p[4] = 4;
                    p.extend([1, 2, 3, 4]);
                    p
                }),
                proto::msg(GET_SHARED_OBJECT, vec![0; 16]),
                proto::msg(RESET_OWNER, vec![]),
            ]),
        ),
        (
            "config_offset_overflow",
            after_setup(vec![
                proto::msg(GET_CONFIG, {
                    let mut p = 0xffff_fff0u32.to_le_bytes().to_vec();
                    p.extend(256u32.to_le_bytes());
                    p.extend([0; 4]);
                    p.extend([0; 16]);
                    p
                }),
                proto::msg(SET_CONFIG, {
                    let mut p = 250u32.to_le_bytes().to_vec();
                    p.extend(16u32.to_le_bytes());
                    p.extend([0; 4]);
                    p.extend([9; 16]);
                    p
                }),
            ]),
        ),
        (
            "backend_channel",
            after_rings(vec![
                proto::msg_fds(
                    SET_BACKEND_REQ_FD,
                    vec![],
                    vec![FdSpec::Socket({
                        let mut r = 3u32.to_le_bytes().to_vec();
                        r.extend((1u32 | 4).to_le_bytes());
                        r.extend(8u32.to_le_bytes());
                        r.extend([0; 8]);
                        r
                    })],
                ),
                proto::msg(VRING_KICK, state(0, 0)),
            ]),
        ),
        ("size_too_small_set_features", after_setup(vec![d(sized(SET_FEATURES, 4, vec![0; 4]))])),
        ("size_too_small_set_vring_num", after_setup(vec![d(sized(SET_VRING_NUM, 4, vec![0; 4]))])),
        (
            "size_too_large_set_vring_num",
            after_setup(vec![d(sized(SET_VRING_NUM, 16, vec![0; 16]))]),
        ),
        (
            "size_too_small_set_vring_addr",
            after_setup(vec![d(sized(SET_VRING_ADDR, 20, vec![0; 20]))]),
        ),
        (
            "size_too_small_mem_table",
            after_setup(vec![d(
                sized(SET_MEM_TABLE, 4, vec![1, 0, 0, 0]).with_fds(vec![FdSpec::Guest(0)])
            )]),
        ),
        ("size_exceeds_maximum", after_setup(vec![d(sized(SET_FEATURES, 0x10000, vec![]))])),
        (
            "truncated_payload_then_eof",
            after_setup(vec![Step::Truncated {
                msg: m(SET_VRING_ADDR, vring_addr(0, 0, 0, 0, 0, 0)),
                keep: 20,
            }]),
        ),
        (
            "too_many_fds_vring_kick",
            after_setup(vec![d(m(SET_VRING_KICK, u64_payload(0))
                .with_fds(vec![FdSpec::Event(0), FdSpec::Event(1)]))]),
        ),
        (
            "more_fds_than_the_protocol_allows",
            after_setup(vec![d(m(SET_MEM_TABLE, mem_table(1, &[r0]))
                .with_fds((0..10).map(|i| FdSpec::Event(i % 4)).collect()))]),
        ),
        ("too_few_fds_vring_kick", after_setup(vec![d(m(SET_VRING_KICK, u64_payload(0)))])),
        (
            "nofd_with_fd",
            after_setup(vec![d(m(SET_VRING_CALL, u64_payload(VRING_NOFD)).with_fds(ev(0)))]),
        ),
        (
            "add_mem_reg_without_fd",
            after_setup(vec![d(m(ADD_MEM_REG, mem_reg(&Region { gpa: 8 << 20, ..r1 })))]),
        ),
        ("unknown_request_just_past_the_last", after_setup(vec![d(m(44, vec![]))])),
        ("unknown_request_huge", after_setup(vec![d(m(0x7fff_ffff, vec![]))])),
        ("queue_index_set_vring_num", after_setup(vec![d(m(SET_VRING_NUM, state(2, 16)))])),
        (
            "queue_index_huge",
            after_setup(vec![
                d(m(SET_VRING_NUM, state(0xffff_ffff, 16))),
                d(m(SET_VRING_BASE, state(0x1_0000, 0))),
            ]),
        ),
        ("queue_index_get_vring_base", after_setup(vec![d(m(GET_VRING_BASE, state(7, 0)))])),
        (
            "queue_index_set_vring_addr",
            after_setup(vec![d(m(SET_VRING_ADDR, vring_addr(5, 0, 0, 0, 0, 0)))]),
        ),
        (
            "queue_index_set_vring_kick",
            after_setup(vec![d(m(SET_VRING_KICK, u64_payload(0xff)).with_fds(ev(1)))]),
        ),
        (
            "queue_index_set_vring_call",
            after_setup(vec![d(m(SET_VRING_CALL, u64_payload(2)).with_fds(ev(0)))]),
        ),
        ("queue_index_set_vring_enable", after_setup(vec![d(m(SET_VRING_ENABLE, state(2, 1)))])),
        ("ring_size_zero", after_setup(vec![d(m(SET_VRING_NUM, state(0, 0)))])),
        ("ring_size_not_power_of_two", after_setup(vec![d(m(SET_VRING_NUM, state(0, 100)))])),
        ("ring_size_too_large", after_setup(vec![d(m(SET_VRING_NUM, state(0, 2048)))])),
        (
            "ring_desc_outside_memory",
            after_setup(vec![
                d(m(SET_VRING_NUM, state(0, 16))),
                d(m(
                    SET_VRING_ADDR,
                    vring_addr(0, 0, 0xdead_0000, QVA_BASE + USED_OFF, QVA_BASE + AVAIL_OFF, 0),
                )),
            ]),
        ),
        (
            "ring_used_outside_memory",
            after_setup(vec![
                d(m(SET_VRING_NUM, state(0, 16))),
                d(m(
                    SET_VRING_ADDR,
                    vring_addr(0, 0, QVA_BASE, 0xdead_0000, QVA_BASE + AVAIL_OFF, 0),
                )),
            ]),
        ),
        (
            "ring_desc_crossing_the_end_of_memory",
            after_setup(vec![
                d(m(SET_VRING_NUM, state(0, 256))),
                d(m(
                    SET_VRING_ADDR,
                    vring_addr(
                        0,
                        0,
                        QVA_BASE + 2 * GUEST_SIZE as u64 - 64,
                        QVA_BASE + USED_OFF,
                        QVA_BASE + AVAIL_OFF,
                        0,
                    ),
                )),
            ]),
        ),
        (
            "mem_table_overlapping_regions",
            after_setup(vec![d(m(
                SET_MEM_TABLE,
                mem_table(2, &[r0, Region { gpa: 0x8000, ..r1 }]),
            )
            .with_fds(vec![FdSpec::Guest(0), FdSpec::Guest(1)]))]),
        ),
        (
            "mem_table_nregions_beyond_payload",
            after_setup(vec![d(
                m(SET_MEM_TABLE, mem_table(8, &[r0])).with_fds(vec![FdSpec::Guest(0)])
            )]),
        ),
        (
            "mem_table_region_beyond_its_file",
            after_setup(vec![d(m(SET_MEM_TABLE, mem_table(1, &[Region { size: 1 << 20, ..r0 }]))
                .with_fds(vec![FdSpec::Guest(0)]))]),
        ),
        (
            "log_base_bounds",
            after_rings(
                vec![
                    d(m(SET_LOG_BASE, log_base(u64::MAX - 4095, 4096))
                        .with_fds(vec![FdSpec::Scratch { size: 8192, fill: 0 }, FdSpec::Event(3)])),
                    d(m(SET_LOG_BASE, log_base(4096, u64::MAX - 100))
                        .with_fds(vec![FdSpec::Scratch { size: 8192, fill: 0 }])),
                    d(m(SET_LOG_BASE, log_base(1, 0))
                        .with_fds(vec![FdSpec::Scratch { size: 8192, fill: 0 }])),
                    d(m(SET_FEATURES, u64_payload(F_VERSION_1 | F_PROTOCOL_FEATURES | F_LOG_ALL))),
                ]
                .into_iter()
                .chain(kicked_request())
                .collect(),
            ),
        ),
        (
            "log_fd",
            after_setup(vec![d(m(SET_LOG_FD, vec![]).with_fds(ev(3))), d(m(SET_LOG_FD, vec![]))]),
        ),
        (
            "inflight_geometry",
            after_setup(vec![
                d(m(GET_INFLIGHT_FD, inflight(0, 0, 0xffff, 0xffff))),
                d(m(GET_INFLIGHT_FD, inflight(0, 0, 2, 16))),
                d(m(SET_INFLIGHT_FD, inflight(u64::MAX, 0, 2, 16))
                    .with_fds(vec![FdSpec::LastInflight])),
                d(m(SET_INFLIGHT_FD, inflight(1024, 0, 2, 16))
                    .with_fds(vec![FdSpec::LastInflight])),
            ]),
        ),
        (
            "postcopy",
            after_setup(vec![
                proto::msg(POSTCOPY_ADVISE, vec![]),
                proto::msg(POSTCOPY_LISTEN, vec![]),
                proto::msg(POSTCOPY_END, vec![]),
            ]),
        ),
        ("postcopy_listen_then_mem_table", {
            let mut e = DispatchEnc::new(2, [16, 16], 0);
            let mut neg = s.negotiate();
            let table = neg.pop().unwrap();
            e.steps(&neg).steps(&[
                proto::msg(POSTCOPY_ADVISE, vec![]),
                proto::msg(POSTCOPY_LISTEN, vec![]),
                table,
                d(m(5, u64_payload(0))),
            ]);
            e.steps(&s.ring_steps(0)).steps(&kicked_request());
            e.e.finish()
        }),
        ("legacy_features", after_setup(vec![d(m(SET_FEATURES, u64_payload(0)))])),
        (
            "inband_without_backend_req",
            after_setup(vec![d(m(SET_PROTOCOL_FEATURES, u64_payload(PF_INBAND)))]),
        ),
        (
            "reconnect",
            after_rings({
                let mut x = kicked_request();
                x.push(Step::Reconnect);
                x.extend(s.setup());
                x.extend(kicked_request());
                x
            }),
        ),
        (
            "blocking_call_fd_socket_kick",
            after_setup(vec![
                proto::msg_fds(SET_VRING_CALL, u64_payload(0), vec![FdSpec::Pipe]),
                proto::msg_fds(
                    SET_VRING_KICK,
                    u64_payload(0),
                    vec![FdSpec::Socket(vec![1, 0, 0, 0, 0, 0, 0, 0])],
                ),
                Step::Loop,
            ]),
        ),
    ];
    v.extend(device_state_seeds());
    // A frontend that sends nothing valid: vu_init with zero queues, or an empty stream.
    v.push(("zero_queues", {
        let mut e = DispatchEnc::new(0, [1, 1], 0);
        e.steps(&[proto::msg(GET_FEATURES, vec![])]);
        e.e.finish()
    }));
    v
}

/// The device-state transfer (SET_DEVICE_STATE_FD / CHECK_DEVICE_STATE; the harness device
/// registers save/load handlers, its config bytes 0-4 choose the saved size or a failure).
fn device_state_seeds() -> Vec<(&'static str, Vec<u8>)> {
    const SAVE: u32 = 0;
    const LOAD: u32 = 1;
    let size = |n: u32, fail: bool| {
        let mut b = n.to_le_bytes().to_vec();
        b.push(if fail { 0xff } else { 0 });
        proto::msg(SET_CONFIG, set_config(0, &b))
    };
    let start =
        |dir, fd: FdSpec| proto::msg_fds(SET_DEVICE_STATE_FD, device_state(dir, 0), vec![fd]);
    let check = || proto::msg(CHECK_DEVICE_STATE, vec![]);
    let state = |first: u8| {
        let mut b = vec![first; 8];
        b.extend(0u8..56);
        FdSpec::Socket(b)
    };
    vec![
        (
            "state_save",
            after_rings(vec![size(1000, false), start(SAVE, FdSpec::PipeWriter), check()]),
        ),
        (
            "state_save_larger_than_the_pipe",
            after_setup(vec![size(200_000, false), start(SAVE, FdSpec::PipeWriter), check()]),
        ),
        (
            "state_save_then_teardown",
            after_setup(vec![size(1 << 20, false), start(SAVE, FdSpec::PipeWriter)]),
        ),
        (
            "state_save_empty",
            after_setup(vec![size(0, false), start(SAVE, FdSpec::PipeWriter), check()]),
        ),
        (
            "state_save_fails",
            after_setup(vec![size(16, true), start(SAVE, FdSpec::PipeWriter), check()]),
        ),
        (
            "state_save_to_read_end_and_socket",
            after_setup(vec![
                size(100, false),
                start(SAVE, FdSpec::Pipe),
                check(),
                start(SAVE, FdSpec::Socket(vec![])),
                check(),
                start(SAVE, FdSpec::Scratch { size: 4096, fill: 0 }),
                check(),
            ]),
        ),
        ("state_load", after_rings(vec![start(LOAD, state(1)), check()])),
        ("state_load_refused", after_setup(vec![start(LOAD, state(0xff)), check()])),
        (
            "state_load_larger_than_allowed",
            after_setup(vec![start(LOAD, FdSpec::Scratch { size: 512 << 10, fill: 7 }), check()]),
        ),
        ("state_load_never_ends", after_setup(vec![start(LOAD, FdSpec::Event(0)), check()])),
        ("state_load_empty", after_setup(vec![start(LOAD, FdSpec::Pipe), check()])),
        (
            "state_transfer_replaced",
            after_setup(vec![
                size(300_000, false),
                start(SAVE, FdSpec::PipeWriter),
                start(LOAD, state(2)),
                start(SAVE, FdSpec::PipeWriter),
                check(),
                check(),
            ]),
        ),
        (
            "state_transfer_bad_requests",
            after_setup(vec![
                check(),
                proto::msg_fds(SET_DEVICE_STATE_FD, device_state(2, 0), vec![FdSpec::Pipe]),
                proto::msg_fds(SET_DEVICE_STATE_FD, device_state(LOAD, 1), vec![FdSpec::Pipe]),
                proto::msg(SET_DEVICE_STATE_FD, device_state(LOAD, 0)),
                proto::msg_fds(
                    SET_DEVICE_STATE_FD,
                    device_state(LOAD, 0),
                    vec![FdSpec::Pipe, FdSpec::Event(0)],
                ),
                d(sized(SET_DEVICE_STATE_FD, 4, vec![1, 0, 0, 0]).with_fds(vec![FdSpec::Pipe])),
                d(m(CHECK_DEVICE_STATE, u64_payload(0))),
            ]),
        ),
        (
            "state_transfer_reconnect",
            after_setup(vec![
                size(500_000, false),
                start(SAVE, FdSpec::PipeWriter),
                Step::Reconnect,
                start(LOAD, state(3)),
                Step::Reconnect,
                check(),
            ]),
        ),
    ]
}
