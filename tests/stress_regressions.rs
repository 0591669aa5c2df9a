// SPDX-License-Identifier: GPL-2.0-or-later
//! Fixed reproducers of failures found by the random stress tests
//! (stress_messages.rs, stress_rings.rs).

mod common;
use common::raw::*;
use common::*;
use std::os::unix::io::AsRawFd;
use std::time::Duration;

const POSTCOPY_LISTEN: u32 = 29;

/// stress_messages seed 0x5eedcafef00d0001 iteration 421: POSTCOPY_LISTEN
/// (no ADVISE), ADD_MEM_REG, then SET_VRING_ADDR with rings in that region.
/// Postcopy regions used to be mapped PROT_NONE until userfaultfd is armed,
/// so reading used->idx in SET_VRING_ADDR killed the backend with SIGSEGV.
#[test]
fn ring_in_postcopy_region_before_userfault_is_armed() {
    let mut b = Backend::start(BackendOpts::default());
    let c = RawConn::connect(&mut b);
    c.handshake();
    let mem = GuestMemory::simple(1 << 20);
    let r = &mem.region_infos()[0];
    let p = c.call(POSTCOPY_LISTEN, &[], &[]);
    assert_eq!(p, 0u64.to_le_bytes(), "POSTCOPY_LISTEN refused");
    let mut p = 0u64.to_le_bytes().to_vec();
    p.extend(region_bytes((r.guest_phys_addr, r.memory_size, r.userspace_addr, 0)));
    c.call(ADD_MEM_REG, &p, &[mem.regions[0].file.as_raw_fd()]);
    c.call_ack(SET_VRING_NUM, &state_payload(0, 256), &[]);
    c.send(
        SET_VRING_ADDR,
        F_NEED_REPLY,
        &addr_payload(0, 0, mem.qva(0), mem.qva(0x2000), mem.qva(0x1000), 0),
        &[],
    )
    .unwrap();
    let reaction = c.recv();
    std::thread::sleep(Duration::from_millis(50));
    b.assert_alive();
    assert!(!matches!(reaction, Reaction::Timeout), "SET_VRING_ADDR: hang");
    let _ = c.s.shutdown(std::net::Shutdown::Both);
    smoke(&mut b);
    b.assert_alive();
}
