// SPDX-License-Identifier: GPL-2.0-or-later
//! Fuzz target `packed_ring`: see vhost_user_fuzz::targets::packed_ring.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vhost_user_fuzz::targets::run("packed_ring", data);
});
