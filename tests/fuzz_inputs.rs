// SPDX-License-Identifier: GPL-2.0-or-later
//! The fuzz targets' committed inputs, replayed without the fuzzer: every seed and corpus
//! input (fuzz/corpus/<target>/) and every crash input ever found (fuzz/regressions/<target>/)
//! runs through the same harness as under libFuzzer (an in-process device driven through the
//! C API; leak checks after each input). The seed corpora must match what the harness's seed
//! generators write (`cargo run --example write_seeds` in fuzz/ regenerates them).
//!
//! The harness is the fuzz crate's library, compiled into this test by path (the fuzz crate
//! is its own workspace and links libFuzzer, so it cannot be a dependency).
#![allow(dead_code)]

#[path = "../fuzz/src/capi.rs"]
mod capi;
#[path = "../fuzz/src/device.rs"]
mod device;
#[path = "../fuzz/src/engine.rs"]
mod engine;
#[path = "../fuzz/src/input.rs"]
mod input;
#[path = "../fuzz/src/proto.rs"]
mod proto;
#[path = "../fuzz/src/ring.rs"]
mod ring;
#[path = "../fuzz/src/sys.rs"]
mod sys;
#[path = "../fuzz/src/targets/mod.rs"]
mod targets;

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The harness checks this process's fds and mappings around each input: one at a time, and
/// every test here that opens a file (even to read a seed) holds this lock, or the count races.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn inputs(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    v.retain(|p| p.is_file() && !p.file_name().unwrap().to_string_lossy().starts_with('.'));
    v.sort();
    v
}

fn replay(target: &str, kind: &str) -> usize {
    let _g = serial();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target);
    let files = inputs(&dir);
    for f in &files {
        let data = std::fs::read(f).unwrap();
        let r = std::panic::catch_unwind(|| targets::run(target, &data));
        assert!(r.is_ok(), "{target}: input {} fails", f.display());
    }
    files.len()
}

fn corpus(target: &str) {
    let n = replay(target, "corpus");
    let seeds = targets::TARGETS.iter().find(|t| t.name == target).map(|t| (t.seeds)().len());
    assert!(n >= seeds.unwrap(), "{target}: {n} corpus inputs, fewer than its seeds");
}

#[test]
fn corpus_dispatch() {
    corpus("dispatch");
}

#[test]
fn corpus_split_ring() {
    corpus("split_ring");
}

#[test]
fn corpus_mem_table() {
    corpus("mem_table");
}

#[test]
fn corpus_inflight() {
    corpus("inflight");
}

#[test]
fn corpus_packed_ring() {
    corpus("packed_ring");
}

#[test]
fn corpus_iotlb() {
    corpus("iotlb");
}

#[test]
fn regression_inputs_still_pass() {
    for t in &targets::TARGETS {
        replay(t.name, "regressions");
    }
}

#[test]
fn seed_corpora_are_up_to_date() {
    let _g = serial();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for t in &targets::TARGETS {
        for (name, bytes) in (t.seeds)() {
            let p = root.join(t.name).join(format!("seed-{name}"));
            let committed = std::fs::read(&p).unwrap_or_default();
            assert!(
                committed == bytes,
                "{} differs from its generator: run `cargo run --example write_seeds` in fuzz/",
                p.display()
            );
        }
    }
}
