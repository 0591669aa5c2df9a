// SPDX-License-Identifier: GPL-2.0-or-later
//! Hostile control messages, written raw on the socket. The backend must
//! reject each (error reply, or panic callback + dropped connection),
//! neither crash nor hang, and then serve the next frontend normally.
//!
//! These target our library; the C original fails several of them (it
//! accepts bad input, aborts on an assert, or crashes).

mod common;
use common::raw::*;
use common::*;
use std::os::unix::io::{AsRawFd, RawFd};
use vmm_sys_util::eventfd::EventFd;

fn start() -> (Backend, RawConn) {
    let mut b = Backend::start(BackendOpts::default());
    let c = RawConn::connect(&mut b);
    c.handshake();
    (b, c)
}

fn efd() -> EventFd {
    EventFd::new(0).unwrap()
}

/// Send `req` with NEED_REPLY and an explicit size field, expect rejection.
fn hostile(req: u32, size: Option<u32>, payload: &[u8], fds: &[RawFd], ack: bool, what: &str) {
    let (mut b, c) = start();
    let size = size.unwrap_or(payload.len() as u32);
    c.send_sized(req, F_NEED_REPLY, size, payload, fds).expect("send");
    expect_rejected(&mut b, &c, what, ack);
}

/// Same, after a valid memory table (`mem` must outlive the exchange).
fn hostile_with_mem(
    req: u32,
    payload_of: impl Fn(&GuestMemory) -> Vec<u8>,
    fds: &[RawFd],
    what: &str,
) {
    let (mut b, c) = start();
    let mem = GuestMemory::new(&[(0, 1 << 20), (1 << 20, 1 << 20)]);
    c.mem_table(&mem);
    c.call_ack(SET_VRING_NUM, &state_payload(0, 256), &[]);
    let p = payload_of(&mem);
    c.send(req, F_NEED_REPLY, &p, fds).expect("send");
    expect_rejected(&mut b, &c, what, true);
    drop(mem);
}

// ---- wrong sizes -----------------------------------------------------------

#[test]
fn size_too_small_set_features() {
    hostile(SET_FEATURES, None, &[0, 0, 0, 0], &[], true, "SET_FEATURES with a 4-byte payload");
}

#[test]
fn size_too_small_set_vring_num() {
    hostile(SET_VRING_NUM, None, &[0, 0, 0, 0], &[], true, "SET_VRING_NUM with a 4-byte payload");
}

#[test]
fn size_too_large_set_vring_num() {
    hostile(SET_VRING_NUM, None, &[0; 24], &[], true, "SET_VRING_NUM with a 24-byte payload");
}

#[test]
fn size_too_small_set_vring_addr() {
    hostile(
        SET_VRING_ADDR,
        None,
        &state_payload(0, 0),
        &[],
        true,
        "SET_VRING_ADDR with an 8-byte payload",
    );
}

#[test]
fn size_too_small_mem_table() {
    let mem = GuestMemory::simple(1 << 20);
    let fd = mem.regions[0].file.as_raw_fd();
    hostile(
        SET_MEM_TABLE,
        None,
        &mem_table_payload(1, &[]),
        &[fd],
        true,
        "SET_MEM_TABLE without region data",
    );
}

#[test]
fn size_exceeds_maximum() {
    // Header claims 1 MiB of payload; nothing follows (the socket stays open).
    hostile(SET_FEATURES, Some(1 << 20), &[], &[], true, "message claiming a 1 MiB payload");
}

#[test]
fn truncated_payload_then_eof() {
    let (mut b, c) = start();
    c.send_sized(SET_VRING_NUM, F_NEED_REPLY, 8, &[0, 0, 0, 0], &[]).unwrap();
    c.s.shutdown(std::net::Shutdown::Write).unwrap();
    expect_rejected(&mut b, &c, "payload cut short by EOF", true);
}

// ---- file descriptors ------------------------------------------------------

#[test]
fn too_many_fds_vring_kick() {
    let (a, b2) = (efd(), efd());
    hostile(
        SET_VRING_KICK,
        None,
        &u64_payload(0),
        &[a.as_raw_fd(), b2.as_raw_fd()],
        true,
        "SET_VRING_KICK with 2 fds",
    );
}

#[test]
fn too_many_fds_mem_table() {
    let mem = GuestMemory::simple(1 << 20);
    let r = &mem.region_infos()[0];
    let (a, b2) = (efd(), efd());
    hostile(
        SET_MEM_TABLE,
        None,
        &mem_table_payload(1, &[(r.guest_phys_addr, r.memory_size, r.userspace_addr, 0)]),
        &[r.mmap_handle, a.as_raw_fd(), b2.as_raw_fd()],
        true,
        "SET_MEM_TABLE with 1 region and 3 fds",
    );
}

#[test]
fn more_fds_than_the_protocol_allows() {
    let fds: Vec<EventFd> = (0..12).map(|_| efd()).collect();
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    hostile(SET_VRING_CALL, None, &u64_payload(0), &raw, true, "SET_VRING_CALL with 12 fds");
}

#[test]
fn too_few_fds_vring_kick() {
    hostile(
        SET_VRING_KICK,
        None,
        &u64_payload(0),
        &[],
        true,
        "SET_VRING_KICK without fd or NOFD flag",
    );
}

#[test]
fn more_regions_than_fds() {
    let mem = GuestMemory::new(&[(0, 1 << 20), (1 << 20, 1 << 20)]);
    let rs: Vec<_> = mem
        .region_infos()
        .iter()
        .map(|r| (r.guest_phys_addr, r.memory_size, r.userspace_addr, 0))
        .collect();
    let fd = mem.regions[0].file.as_raw_fd();
    hostile(
        SET_MEM_TABLE,
        None,
        &mem_table_payload(2, &rs),
        &[fd],
        true,
        "SET_MEM_TABLE with 2 regions, 1 fd",
    );
}

#[test]
fn add_mem_reg_without_fd() {
    let mem = GuestMemory::simple(1 << 20);
    let r = &mem.region_infos()[0];
    let mut p = 0u64.to_le_bytes().to_vec();
    p.extend(region_bytes((r.guest_phys_addr, r.memory_size, r.userspace_addr, 0)));
    hostile(ADD_MEM_REG, None, &p, &[], true, "ADD_MEM_REG without fd");
}

// ---- unknown requests --------------------------------------------------------

#[test]
fn unknown_request_just_past_the_last() {
    hostile(42, None, &u64_payload(0), &[], true, "request 42");
}

#[test]
fn unknown_request_huge() {
    hostile(9999, None, &[], &[], true, "request 9999");
}

// ---- queue index out of range (the backend has 1 queue) ---------------------

#[test]
fn queue_index_set_vring_num() {
    hostile(SET_VRING_NUM, None, &state_payload(1, 256), &[], true, "SET_VRING_NUM for queue 1");
}

#[test]
fn queue_index_set_vring_num_huge() {
    hostile(
        SET_VRING_NUM,
        None,
        &state_payload(u32::MAX, 256),
        &[],
        true,
        "SET_VRING_NUM for queue 2^32-1",
    );
}

#[test]
fn queue_index_set_vring_base() {
    hostile(SET_VRING_BASE, None, &state_payload(5, 0), &[], true, "SET_VRING_BASE for queue 5");
}

#[test]
fn queue_index_get_vring_base() {
    hostile(GET_VRING_BASE, None, &state_payload(1, 0), &[], false, "GET_VRING_BASE for queue 1");
}

#[test]
fn queue_index_set_vring_addr() {
    hostile(
        SET_VRING_ADDR,
        None,
        &addr_payload(3, 0, 0, 0, 0, 0),
        &[],
        true,
        "SET_VRING_ADDR for queue 3",
    );
}

#[test]
fn queue_index_set_vring_kick() {
    let e = efd();
    hostile(
        SET_VRING_KICK,
        None,
        &u64_payload(7),
        &[e.as_raw_fd()],
        true,
        "SET_VRING_KICK for queue 7",
    );
}

#[test]
fn queue_index_set_vring_call() {
    let e = efd();
    hostile(
        SET_VRING_CALL,
        None,
        &u64_payload(200),
        &[e.as_raw_fd()],
        true,
        "SET_VRING_CALL for queue 200",
    );
}

#[test]
fn queue_index_set_vring_enable() {
    hostile(
        SET_VRING_ENABLE,
        None,
        &state_payload(1, 1),
        &[],
        true,
        "SET_VRING_ENABLE for queue 1",
    );
}

// ---- ring sizes ---------------------------------------------------------------

#[test]
fn ring_size_zero() {
    hostile(SET_VRING_NUM, None, &state_payload(0, 0), &[], true, "ring size 0");
}

#[test]
fn ring_size_not_power_of_two() {
    hostile(SET_VRING_NUM, None, &state_payload(0, 3), &[], true, "ring size 3");
}

#[test]
fn ring_size_too_large() {
    hostile(SET_VRING_NUM, None, &state_payload(0, 2048), &[], true, "ring size 2048");
}

// ---- ring addresses -----------------------------------------------------------

#[test]
fn ring_desc_outside_memory() {
    hostile_with_mem(
        SET_VRING_ADDR,
        |m| addr_payload(0, 0, 0x1000, m.qva(0x2000), m.qva(0x3000), 0),
        &[],
        "descriptor table outside every region",
    );
}

#[test]
fn ring_used_outside_memory() {
    hostile_with_mem(
        SET_VRING_ADDR,
        |m| addr_payload(0, 0, m.qva(0x1000), 0xdead_0000, m.qva(0x3000), 0),
        &[],
        "used ring outside every region",
    );
}

#[test]
fn ring_avail_outside_memory() {
    hostile_with_mem(
        SET_VRING_ADDR,
        |m| addr_payload(0, 0, m.qva(0x1000), m.qva(0x2000), u64::MAX - 4, 0),
        &[],
        "avail ring outside every region",
    );
}

#[test]
fn ring_desc_crossing_the_end_of_memory() {
    // 256 descriptors = 4 KiB, starting 16 bytes before the end of the
    // last region (the two regions are not adjacent in QVA space).
    hostile_with_mem(
        SET_VRING_ADDR,
        |m| addr_payload(0, 0, m.qva((2 << 20) - 16), m.qva(0x2000), m.qva(0x3000), 0),
        &[],
        "descriptor table running past the end of its region",
    );
}

// ---- memory tables ------------------------------------------------------------

fn mem_table_case(regions: &[(u64, u64, u64, u64)], nregions: u32, nfds: usize, what: &str) {
    let mem = GuestMemory::new(&[(0, 1 << 20), (1 << 20, 1 << 20), (2 << 20, 1 << 20)]);
    let fds: Vec<RawFd> = mem.regions.iter().take(nfds).map(|r| r.file.as_raw_fd()).collect();
    hostile(SET_MEM_TABLE, None, &mem_table_payload(nregions, regions), &fds, true, what);
}

#[test]
fn mem_table_overlapping_regions() {
    mem_table_case(
        &[(0, 1 << 20, 0x7000_0000_0000, 0), (1 << 19, 1 << 20, 0x7100_0000_0000, 0)],
        2,
        2,
        "overlapping guest ranges",
    );
}

#[test]
fn mem_table_nregions_beyond_payload() {
    mem_table_case(
        &[(0, 1 << 20, 0x7000_0000_0000, 0)],
        5,
        1,
        "nregions 5 with one region in the payload",
    );
}

#[test]
fn mem_table_zero_sized_region() {
    mem_table_case(&[(0, 0, 0x7000_0000_0000, 0)], 1, 1, "a zero-sized region");
}

#[test]
fn mem_table_guest_range_overflows() {
    mem_table_case(
        &[(u64::MAX - 0xfff, 1 << 20, 0x7000_0000_0000, 0)],
        1,
        1,
        "gpa + size overflowing",
    );
}

#[test]
fn mem_table_user_range_overflows() {
    mem_table_case(&[(0, 1 << 20, u64::MAX - 0xfff, 0)], 1, 1, "userspace_addr + size overflowing");
}

#[test]
fn mem_table_region_beyond_its_file() {
    // mmap_offset past the end of a 1 MiB memfd: mapping it "works" but any
    // access would fault.
    mem_table_case(
        &[(0, 1 << 20, 0x7000_0000_0000, 1 << 30)],
        1,
        1,
        "region beyond the end of its file",
    );
}

// ---- config space -----------------------------------------------------------------

#[test]
fn get_config_larger_than_the_maximum() {
    let (mut b, c) = start();
    let mut p = Vec::new();
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&4096u32.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&[0u8; 256]);
    c.send(GET_CONFIG, F_NEED_REPLY, &p, &[]).unwrap();
    match c.recv() {
        // An empty reply is how libvhost-user reports a GET_CONFIG error.
        Reaction::Reply(_, _, payload) if payload.is_empty() => {
            b.assert_alive();
            let _ = c.s.shutdown(std::net::Shutdown::Both);
            smoke(&mut b);
        }
        Reaction::Reply(_, _, payload) => {
            let sz = u32::from_le_bytes(payload[4..8].try_into().unwrap());
            assert!(sz <= 256, "GET_CONFIG answered with size {sz}");
            expect_rejected(&mut b, &c, "GET_CONFIG of 4096 bytes", false);
        }
        Reaction::Closed => {
            b.assert_alive();
            smoke(&mut b);
        }
        Reaction::Timeout => panic!("GET_CONFIG of 4096 bytes: hang"),
    }
}

#[test]
fn set_config_larger_than_the_maximum() {
    let mut p = Vec::new();
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&300u32.to_le_bytes());
    p.extend_from_slice(&0u32.to_le_bytes());
    p.extend_from_slice(&[0u8; 256]);
    hostile(SET_CONFIG, None, &p, &[], true, "SET_CONFIG of 300 bytes");
}
