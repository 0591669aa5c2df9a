// SPDX-License-Identifier: GPL-2.0-or-later
//! Fuzz target `mem_table`: see vhost_user_fuzz::targets::mem_table.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    vhost_user_fuzz::targets::run("mem_table", data);
});
