// SPDX-License-Identifier: GPL-2.0-or-later
//! Fuzz target `iotlb`: see vhost_user_fuzz::targets::iotlb.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vhost_user_fuzz::targets::run("iotlb", data);
});
