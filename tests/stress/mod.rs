// SPDX-License-Identifier: GPL-2.0-or-later
//! Shared pieces of the seeded random-input stress tests (stress_messages.rs,
//! stress_rings.rs): a deterministic PRNG, the run loop with its environment
//! knobs, and the health checks on the backend process (alive, serves a new
//! frontend, no fd / mapping / thread leak, bounded RSS).
//!
//! Knobs: `VU_STRESS_SEED` (u64, default fixed), `VU_STRESS_ITERS` (number of
//! iterations), `VU_STRESS_ONLY` (replay one iteration index),
//! `VU_STRESS_BUDGET_SECS` (stop starting new iterations after this long;
//! default 18 s, ignored when VU_STRESS_ITERS is set).
#![allow(dead_code)]

use std::os::unix::process::ExitStatusExt;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crate::common::{describe, smoke, Backend};

pub const DEFAULT_SEED: u64 = 0x5eed_cafe_f00d_0001;

#[path = "../rng/mod.rs"]
mod rng;
pub use rng::Rng;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    let r = if let Some(h) = v.strip_prefix("0x") { u64::from_str_radix(h, 16) } else { v.parse() };
    Some(r.unwrap_or_else(|_| panic!("{name}={v}: not a number")))
}

/// Per-iteration seed, so that any iteration can be replayed alone.
pub fn iter_seed(seed: u64, iter: u64) -> u64 {
    let mut r = Rng::new(seed ^ iter.wrapping_mul(0xd6e8_feb8_6659_fd93));
    r.u64()
}

/// Process statistics of the backend.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcStats {
    pub fds: usize,
    pub maps: usize,
    pub rss_kib: u64,
    pub threads: u64,
}

pub fn proc_stats(pid: u32) -> Option<ProcStats> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count();
    // File-backed mappings only (guest memory, log, inflight areas: memfds).
    // Anonymous ones come and go with glibc's per-thread arenas and cached
    // thread stacks (-T mode); the RSS bound covers those.
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .ok()?
        .lines()
        .filter(|l| l.split_whitespace().nth(4).map(|ino| ino != "0").unwrap_or(false))
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(ProcStats { fds, maps, rss_kib: field("VmRSS:"), threads: field("Threads:") })
}

pub fn under_wrapper() -> bool {
    std::env::var_os("VU_BACKEND_WRAPPER").is_some()
}

/// RSS bound for the backend (valgrind's own footprint is far larger).
pub fn rss_limit_kib() -> u64 {
    if under_wrapper() {
        u64::MAX
    } else {
        256 * 1024
    }
}

/// Health checks between iterations.
pub struct Health {
    pub base: ProcStats,
    base_maps: String,
}

impl Health {
    /// Call once the backend has served a first frontend and is idle.
    pub fn baseline(b: &mut Backend) -> Self {
        // The previous connection's teardown may still be running: take the
        // minimum over a short window.
        let mut base = proc_stats(b.pid()).expect("backend /proc entry");
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(10));
            let s = proc_stats(b.pid()).expect("backend /proc entry");
            base.fds = base.fds.min(s.fds);
            base.maps = base.maps.min(s.maps);
            base.threads = base.threads.min(s.threads);
        }
        let base_maps =
            std::fs::read_to_string(format!("/proc/{}/maps", b.pid())).unwrap_or_default();
        Health { base, base_maps }
    }

    /// The backend is alive, serves a new frontend, and once idle holds no
    /// more fds, mappings or threads than at the baseline, and bounded RSS.
    pub fn check(&self, b: &mut Backend) {
        if let Some(st) = b.exited() {
            panic!("backend died: {}\nstderr tail:\n{}", describe(st), tail(&b.stderr()));
        }
        smoke(b);
        b.assert_alive();
        // Idle again (the smoke connection torn down): wait, bounded.
        let t0 = Instant::now();
        loop {
            let s = proc_stats(b.pid()).expect("backend /proc entry");
            let ok = s.fds <= self.base.fds
                && s.maps <= self.base.maps
                && s.threads <= self.base.threads;
            assert!(s.rss_kib < rss_limit_kib(), "backend RSS {} KiB exceeds the bound", s.rss_kib);
            if ok {
                return;
            }
            if t0.elapsed() > Duration::from_secs(5) {
                let fds = list_fds(b.pid());
                let maps =
                    std::fs::read_to_string(format!("/proc/{}/maps", b.pid())).unwrap_or_default();
                let new: Vec<&str> = maps
                    .lines()
                    .filter(|l| l.split_whitespace().nth(4).map(|i| i != "0").unwrap_or(false))
                    .filter(|l| !self.base_maps.lines().any(|x| x == *l))
                    .collect();
                panic!(
                    "backend leaks: now {s:?}, baseline {:?}\nfds:\n{fds}mappings not in the baseline:\n  {}",
                    self.base,
                    new.join("\n  ")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

pub fn list_fds(pid: u32) -> String {
    let mut out = String::new();
    if let Ok(rd) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for e in rd.flatten() {
            let t =
                std::fs::read_link(e.path()).map(|p| p.display().to_string()).unwrap_or_default();
            out.push_str(&format!("  {} -> {t}\n", e.file_name().to_string_lossy()));
        }
    }
    out
}

pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Run `iter(rng, index, log)` for the configured iterations; on a failure,
/// report the seed, the iteration and its log (what was sent), then fail.
pub fn run(name: &str, default_iters: u64, mut iter: impl FnMut(&mut Rng, u64, &mut Vec<String>)) {
    let seed = env_u64("VU_STRESS_SEED").unwrap_or(DEFAULT_SEED);
    let explicit = env_u64("VU_STRESS_ITERS");
    let iters = explicit.unwrap_or(default_iters);
    let only = env_u64("VU_STRESS_ONLY");
    let budget = Duration::from_secs(env_u64("VU_STRESS_BUDGET_SECS").unwrap_or(18));
    let t0 = Instant::now();
    let mut done = 0;
    for i in 0..iters {
        if only.map(|o| o != i).unwrap_or(false) {
            continue;
        }
        if explicit.is_none() && only.is_none() && t0.elapsed() > budget {
            eprintln!("{name}: time budget reached after {done} of {iters} iterations");
            break;
        }
        let mut rng = Rng::new(iter_seed(seed, i));
        let mut log = Vec::new();
        let r = catch_unwind(AssertUnwindSafe(|| iter(&mut rng, i, &mut log)));
        if let Err(e) = r {
            eprintln!(
                "{name}: FAILED at iteration {i} (replay: VU_STRESS_SEED={seed:#x} VU_STRESS_ONLY={i})\nlog of the iteration:\n  {}",
                log.join("\n  ")
            );
            resume_unwind(e);
        }
        done += 1;
    }
    eprintln!("{name}: {done} iterations, seed {seed:#x}, {:.1} s", t0.elapsed().as_secs_f64());
    assert!(done > 0 || only.is_some(), "no iteration ran");
}

/// End of a test: SIGTERM the backend; it must exit 0 (under a valgrind
/// wrapper with --error-exitcode, a memory error makes this fail).
pub fn finish(mut b: Backend) {
    let st = b.terminate();
    let err = b.stderr();
    // What the library refused, for whoever runs with --nocapture.
    let mut hist: std::collections::BTreeMap<String, usize> = Default::default();
    for l in err.lines().filter(|l| l.starts_with("vhost-user panic:")) {
        let k: String =
            l.chars().map(|c| if c.is_ascii_digit() { '#' } else { c }).take(90).collect();
        *hist.entry(k).or_default() += 1;
    }
    let mut hist: Vec<_> = hist.into_iter().collect();
    hist.sort_by_key(|h| std::cmp::Reverse(h.1));
    for (k, n) in hist.iter().take(40) {
        eprintln!("{n:6} {k}");
    }
    assert!(
        st.signal().is_none() && st.code() == Some(0),
        "backend exit: {}\nstderr tail:\n{}",
        describe(st),
        tail(&err)
    );
    for pat in ["Invalid read", "Invalid write", "uninitialised", "Invalid free", "Mismatched free"]
    {
        assert!(!err.contains(pat), "memcheck reported '{pat}':\n{}", err);
    }
}
