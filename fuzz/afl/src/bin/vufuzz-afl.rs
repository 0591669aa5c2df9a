// SPDX-License-Identifier: GPL-2.0-or-later
//! AFL++ entry point: `vufuzz-afl TARGET` runs the inputs afl-fuzz gives it through the
//! harness of fuzz target TARGET (dispatch, split_ring, mem_table, inflight, packed_ring, iotlb).
fn main() {
    let target = std::env::args().nth(1).expect("usage: vufuzz-afl TARGET");
    assert!(
        vhost_user_afl::targets::TARGETS.iter().any(|t| t.name == target),
        "unknown fuzz target {target}"
    );
    afl::fuzz!(|data: &[u8]| {
        vhost_user_afl::targets::run(&target, data);
    });
}
