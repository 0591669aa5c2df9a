//! libvhost-user-glib carries the whole core: its shared library exports exactly the
//! functions of libvhost-user.h and libvhost-user-glib.h, under the soname
//! libvhost-user-glib.so.0, and a program using only the core links its static library alone.

mod common;

use common::*;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn declared() -> BTreeSet<String> {
    let inc = repo_root().join("include");
    let core =
        std::fs::read_to_string(inc.join("libvhost-user.h")).expect("include/libvhost-user.h");
    let glib = std::fs::read_to_string(inc.join("libvhost-user-glib.h"))
        .expect("include/libvhost-user-glib.h");
    let mut set: BTreeSet<String> = header_functions(&core, "vu_").into_iter().collect();
    for f in ["vu_init", "vu_deinit", "vu_dispatch", "vu_queue_pop", "vu_queue_push"] {
        assert!(set.contains(f), "libvhost-user.h does not declare {f}");
    }
    set.extend(header_functions(&glib, "vug_"));
    set
}

/// Functions `nm -D` reports as defined (exported) by the shared library `lib`.
fn exported_functions(lib: &Path) -> BTreeSet<String> {
    let mut cmd = Command::new("nm");
    cmd.args(["-D", "--defined-only"]).arg(lib);
    let out = run_bounded(&mut cmd, Duration::from_secs(60));
    assert!(out.status.success(), "nm {}: {}", lib.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace().rev();
            let name = w.next()?;
            let kind = w.next()?;
            (kind == "T").then(|| name.split('@').next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn shared_library_exports_exactly_the_header_functions() {
    let exported = exported_functions(&shared_lib());
    let want = declared();
    let missing: Vec<_> = want.difference(&exported).collect();
    let extra: Vec<_> = exported.difference(&want).collect();
    assert!(missing.is_empty(), "declared but not exported: {missing:?}");
    assert!(extra.is_empty(), "exported but not declared: {extra:?}");
}

#[test]
fn shared_library_soname() {
    let out =
        run_bounded(Command::new("objdump").arg("-p").arg(shared_lib()), Duration::from_secs(60));
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let soname = text.lines().find(|l| l.trim_start().starts_with("SONAME")).expect("no SONAME");
    assert_eq!(soname.split_whitespace().nth(1), Some("libvhost-user-glib.so.0"));
    assert!(text.contains("libglib-2.0.so"), "not linked with glib");
}

#[test]
fn static_library_links_the_core_api_alone() {
    // link-test.c takes the address of every function of the API and runs vu_init/vu_deinit.
    let source = std::fs::read_to_string(repo_root().join("link-test.c")).unwrap();
    let exe = compile_c("link_test_glib_a", &source);
    assert!(run_ok(&exe).contains("link-test: ok"));
}
