//! include/libvhost-user-glib.h: equal to what glib/build.rs generates, declares the original
//! API, compiles as C and C++ against the system's glib, and matches the Rust layout.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

fn checked_in() -> String {
    std::fs::read_to_string(repo_root().join("include/libvhost-user-glib.h"))
        .expect("include/libvhost-user-glib.h")
}

#[test]
fn checked_in_header_equals_fresh_generation() {
    let fresh = std::fs::read_to_string(env!("VUG_GENERATED_HEADER")).unwrap();
    assert!(
        fresh == checked_in(),
        "include/libvhost-user-glib.h is stale: regenerate it with \
         VHOST_USER_UPDATE_HEADER=1 cargo build -p vhost-user-glib (fresh copy: {})",
        env!("VUG_GENERATED_HEADER")
    );
}

#[test]
fn header_declares_the_original_functions() {
    let h = checked_in();
    assert_eq!(
        header_functions(&h, "vug_"),
        ["vug_deinit", "vug_init", "vug_source_destroy", "vug_source_new"]
    );
    assert!(h.contains("#include <glib.h>") && h.contains("#include \"libvhost-user.h\""));
    // glib's own types are used, never redefined.
    for t in ["GSource", "GHashTable", "GIOCondition", "gpointer"] {
        assert!(
            !h.contains(&format!("typedef struct {t}")) && !h.contains(&format!("}} {t};")),
            "{t} redefined"
        );
    }
}

fn compile(lang: &str, std: &str, source: &str, name: &str) {
    let dir = scratch(name);
    let ext = if lang == "c" { "c" } else { "cc" };
    let src = dir.join(format!("{name}.{ext}"));
    std::fs::write(&src, source).unwrap();
    let compiler = if lang == "c" { "cc" } else { "c++" };
    let glib_cflags = String::from_utf8(
        Command::new("pkg-config").args(["--cflags", "glib-2.0"]).output().unwrap().stdout,
    )
    .unwrap();
    let mut cmd = Command::new(compiler);
    cmd.arg(format!("-std={std}"))
        .args(["-Wall", "-Wextra", "-Werror", "-fsyntax-only"])
        .arg("-I")
        .arg(repo_root().join("include"))
        .args(glib_cflags.split_whitespace())
        .arg(&src);
    let out = run_bounded(&mut cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{compiler} -std={std} failed on the header:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const USE_HEADER: &str = r#"
#include "libvhost-user-glib.h"
#include <stddef.h>

_Static_assert(sizeof(VugDev) == 208, "VugDev size");
_Static_assert(offsetof(VugDev, parent) == 0, "parent");
_Static_assert(offsetof(VugDev, fdmap) == 192, "fdmap");
_Static_assert(offsetof(VugDev, src) == 200, "src");
/* The wrapper places its data after a GSource and relies on glib's GPollFD layout. */
_Static_assert(sizeof(GSource) == 96, "GSource");
_Static_assert(sizeof(GPollFD) == 8 && offsetof(GPollFD, events) == 4 && offsetof(GPollFD, revents) == 6, "GPollFD");
_Static_assert((int)G_IO_IN == (int)VU_WATCH_IN && (int)G_IO_OUT == (int)VU_WATCH_OUT, "IN/OUT");
_Static_assert((int)G_IO_PRI == (int)VU_WATCH_PRI && (int)G_IO_ERR == (int)VU_WATCH_ERR, "PRI/ERR");
_Static_assert((int)G_IO_HUP == (int)VU_WATCH_HUP, "HUP");

/* The prototypes, as the original declares them. */
bool (*p_init)(VugDev *, uint16_t, int, vu_panic_cb, const VuDevIface *) = vug_init;
void (*p_deinit)(VugDev *) = vug_deinit;
GSource *(*p_new)(VugDev *, int, GIOCondition, vu_watch_cb, gpointer) = vug_source_new;
void (*p_destroy)(GSource *) = vug_source_destroy;

int use_it(void);
int use_it(void) { return p_init && p_deinit && p_new && p_destroy; }
"#;

#[test]
fn header_compiles_as_gnu99_and_gnu11_with_the_original_layout() {
    compile("c", "gnu99", USE_HEADER, "hdr_gnu99");
    compile("c", "gnu11", USE_HEADER, "hdr_gnu11");
}

#[test]
fn header_compiles_as_cxx() {
    let src = USE_HEADER.replace("_Static_assert", "static_assert");
    compile("c++", "gnu++17", &src, "hdr_cxx");
}
