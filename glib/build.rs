//! Generates include/libvhost-user-glib.h with cbindgen, links glib-2.0, and gives the shared
//! library its soname.
//!
//! The header is always written to OUT_DIR (the tests compare it with the checked-in copy);
//! it is copied into include/ only when VHOST_USER_UPDATE_HEADER=1.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let repo = manifest_dir.parent().unwrap().to_path_buf();
    let include = repo.join("include");

    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=VHOST_USER_UPDATE_HEADER");

    // 1. The header.
    let config = cbindgen::Config::from_file(manifest_dir.join("cbindgen.toml"))
        .expect("glib/cbindgen.toml");
    let bindings = cbindgen::Builder::new()
        .with_crate(&manifest_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen failed on glib/src");
    let mut text = Vec::new();
    bindings.write(&mut text);
    let generated = out_dir.join("libvhost-user-glib.h");
    write_if_changed(&generated, &text);
    println!("cargo:rustc-env=VUG_GENERATED_HEADER={}", generated.display());
    if env::var("VHOST_USER_UPDATE_HEADER").as_deref() == Ok("1") {
        fs::create_dir_all(&include).unwrap();
        if write_if_changed(&include.join("libvhost-user-glib.h"), &text) {
            println!("cargo:warning=updated include/libvhost-user-glib.h");
        }
    }

    // 2. glib.
    for lib in glib_libs() {
        println!("cargo:rustc-link-lib={lib}");
    }

    // 3. The shared library's soname. Its exports are rustc's: exactly the `#[no_mangle]`
    // functions of this crate and of the core (a second version script cannot narrow
    // rustc's); tests/glib_exports.rs checks them against the two headers.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libvhost-user-glib.so.0");
    }
}

/// Writes `text` to `path` unless it already holds exactly that; true if it wrote.
fn write_if_changed(path: &Path, text: &[u8]) -> bool {
    if fs::read(path).is_ok_and(|old| old == text) {
        return false;
    }
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    true
}

/// The library names `pkg-config --libs glib-2.0` gives, or just glib-2.0 without pkg-config.
fn glib_libs() -> Vec<String> {
    let out = Command::new("pkg-config").args(["--libs-only-l", "glib-2.0"]).output();
    if let Ok(out) = out {
        if out.status.success() {
            let libs: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|w| w.strip_prefix("-l").map(str::to_string))
                .collect();
            if !libs.is_empty() {
                let dirs = Command::new("pkg-config").args(["--libs-only-L", "glib-2.0"]).output();
                if let Ok(d) = dirs {
                    for w in String::from_utf8_lossy(&d.stdout).split_whitespace() {
                        if let Some(dir) = w.strip_prefix("-L") {
                            println!("cargo:rustc-link-search=native={dir}");
                        }
                    }
                }
                return libs;
            }
        }
    }
    vec!["glib-2.0".to_string()]
}
