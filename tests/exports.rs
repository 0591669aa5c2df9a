//! The shared library exports exactly the functions the header declares (no Rust internals, no
//! missing API), under the soname `libvhost-user.so.0`; and the header declares every function
//! of QEMU 10.0's libvhost-user.h.

#[path = "common/header.rs"]
mod header;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

use header::declared_functions;

/// Every function QEMU 10.0's libvhost-user.h declares.
const QEMU_10_0_FUNCTIONS: &[&str] = &[
    "vu_init",
    "vu_deinit",
    "vu_request_to_string",
    "vu_dispatch",
    "vu_gpa_to_va",
    "vu_get_queue",
    "vu_set_queue_handler",
    "vu_set_queue_host_notifier",
    "vu_lookup_shared_object",
    "vu_add_shared_object",
    "vu_rm_shared_object",
    "vu_queue_set_notification",
    "vu_queue_enabled",
    "vu_queue_started",
    "vu_queue_empty",
    "vu_queue_notify",
    "vu_config_change_msg",
    "vu_queue_notify_sync",
    "vu_queue_pop",
    "vu_queue_unpop",
    "vu_queue_rewind",
    "vu_queue_fill",
    "vu_queue_push",
    "vu_queue_flush",
    "vu_queue_get_avail_bytes",
    "vu_queue_avail_bytes",
];

fn header_text() -> String {
    std::fs::read_to_string(env!("VHOST_USER_GENERATED_HEADER")).expect("generated header")
}

fn cdylib() -> PathBuf {
    // target/<profile>/deps/exports-<hash> -> target/<profile>/libvhost_user.so
    let exe = std::env::current_exe().unwrap();
    let lib = exe.parent().unwrap().parent().unwrap().join("libvhost_user.so");
    assert!(lib.is_file(), "{} not built", lib.display());
    lib
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn header_parser_finds_declarations() {
    let sample = "#ifdef __cplusplus\nextern \"C\" {\n#endif\n/** a (b) */\nbool vu_x(struct VuDev *d,\n int y);\n\nconst char *vu_y(unsigned int r);\nvoid *vu_z(void);\n#ifdef __cplusplus\n}  // extern \"C\"\n#endif\n";
    let found: Vec<String> = declared_functions(sample).into_iter().collect();
    assert_eq!(found, ["vu_x", "vu_y", "vu_z"]);
}

#[test]
fn header_declares_every_qemu_10_0_function() {
    let declared = declared_functions(&header_text());
    let missing: Vec<&str> =
        QEMU_10_0_FUNCTIONS.iter().copied().filter(|f| !declared.contains(*f)).collect();
    assert!(missing.is_empty(), "the header lacks {missing:?}");
}

#[test]
fn cdylib_exports_exactly_the_declared_functions() {
    let declared = declared_functions(&header_text());
    let nm = run(Command::new("nm").args(["-D", "--defined-only"]).arg(cdylib()));
    let exported: BTreeSet<String> = nm
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .map(|s| s.split('@').next().unwrap().to_string())
        .collect();
    let missing: Vec<_> = declared.difference(&exported).collect();
    let extra: Vec<_> = exported.difference(&declared).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "declared but not exported: {missing:?}; exported but not declared: {extra:?}"
    );
}

#[test]
fn cdylib_has_the_soname() {
    let dynamic = run(Command::new("readelf").arg("-d").arg(cdylib()));
    assert!(
        dynamic.lines().any(|l| l.contains("(SONAME)") && l.contains("[libvhost-user.so.0]")),
        "no SONAME libvhost-user.so.0 in:\n{dynamic}"
    );
}
