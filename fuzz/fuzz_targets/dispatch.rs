// SPDX-License-Identifier: GPL-2.0-or-later
//! Fuzz target `dispatch`: see vhost_user_fuzz::targets::dispatch.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vhost_user_fuzz::targets::run("dispatch", data);
});
