// SPDX-License-Identifier: GPL-2.0-or-later
//! Which consumer binaries exist: `$VU_CONSUMERS_ENV` (default
//! `$VU_CACHE/consumers.env`, VU_CACHE defaulting to /var/tmp/vu-consumers),
//! as written by tests/consumers/run.sh.
//!
//! Without that file the tests print `skipped: ...` and pass, unless
//! `VU_REQUIRE_CONSUMERS=1` (set by tests/consumers/rust-stage.sh), where a
//! missing file or a missing blk consumer is a failure.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug)]
pub struct Target {
    /// "7.2" / "10.0"
    pub gen: String,
    /// "c-original" / "ours"
    pub lib: String,
    pub bin: PathBuf,
    /// LD_LIBRARY_PATH for it (may not exist).
    pub lib_path: Option<PathBuf>,
}

impl Target {
    pub fn name(&self, consumer: &str) -> String {
        format!("{consumer} {} {}", self.gen, self.lib)
    }
}

pub fn required() -> bool {
    std::env::var("VU_REQUIRE_CONSUMERS").map(|v| v == "1").unwrap_or(false)
}

pub fn env_path() -> PathBuf {
    if let Ok(p) = std::env::var("VU_CONSUMERS_ENV") {
        return PathBuf::from(p);
    }
    let cache = std::env::var("VU_CACHE").unwrap_or_else(|_| "/var/tmp/vu-consumers".into());
    PathBuf::from(cache).join("consumers.env")
}

pub struct ConsumersEnv {
    pub vars: BTreeMap<String, String>,
    /// (gen key e.g. "7_2", lib key e.g. "C_ORIGINAL") -> (gen, lib)
    pub pairs: Vec<(String, String)>,
}

fn key(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            '.' | '-' => '_',
            c => c,
        })
        .collect()
}

/// Load the env file; None (after printing why) when the tier is not built
/// and not required. Panics when required and absent.
pub fn load(test: &str) -> Option<ConsumersEnv> {
    let p = env_path();
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) => {
            let why = format!(
                "{test}: consumer binaries not built ({}: {e}); run tests/consumers/run.sh (or set VU_CONSUMERS_ENV)",
                p.display()
            );
            if required() {
                panic!("VU_REQUIRE_CONSUMERS=1 but {why}");
            }
            crate::consumer_frontend::env::skip(&format!("{why}"));
            return None;
        }
    };
    let mut vars = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            vars.insert(k.trim().to_string(), v.trim().to_string());
        }
    }
    let want_gen = std::env::var("VU_CONSUMER_GEN").ok().filter(|s| !s.is_empty());
    let want_lib = std::env::var("VU_CONSUMER_LIB").ok().filter(|s| !s.is_empty());
    let mut pairs = Vec::new();
    for gen in ["7.2", "10.0"] {
        for lib in ["c-original", "ours"] {
            if want_gen.as_deref().map(|g| g != gen).unwrap_or(false)
                || want_lib.as_deref().map(|l| l != lib).unwrap_or(false)
            {
                continue;
            }
            if vars.contains_key(&format!("VU_CONSUMER_BIN_DIR_{}_{}", key(gen), key(lib))) {
                pairs.push((gen.to_string(), lib.to_string()));
            }
        }
    }
    if pairs.is_empty() {
        let why = format!("{test}: {} lists no (generation, library) pair (filters: gen {want_gen:?}, lib {want_lib:?})", p.display());
        if required() {
            panic!("VU_REQUIRE_CONSUMERS=1 but {why}");
        }
        crate::consumer_frontend::env::skip(&format!("{why}"));
        return None;
    }
    Some(ConsumersEnv { vars, pairs })
}

impl ConsumersEnv {
    /// Every built binary of `consumer` ("vhost-user-blk", ...). A pair that
    /// lacks it is reported: a failure message in `missing` when `essential`
    /// and required, else a printed skip.
    pub fn targets(
        &self,
        consumer: &str,
        essential: bool,
        missing: &mut Vec<String>,
    ) -> Vec<Target> {
        let mut v = Vec::new();
        for (gen, lib) in &self.pairs {
            let pk = format!("{}_{}", key(gen), key(lib));
            let bin = self.vars.get(&format!("VU_CONSUMER_{pk}_{}", key(consumer)));
            match bin {
                Some(b) if std::path::Path::new(b).is_file() => v.push(Target {
                    gen: gen.clone(),
                    lib: lib.clone(),
                    bin: PathBuf::from(b),
                    lib_path: self
                        .vars
                        .get(&format!("VU_CONSUMER_LIB_PATH_{pk}"))
                        .map(PathBuf::from),
                }),
                _ => {
                    let why = format!(
                        "{consumer} {gen} {lib}: not built (no binary listed in {})",
                        env_path().display()
                    );
                    if essential && required() {
                        missing.push(why);
                    } else {
                        crate::consumer_frontend::env::skip(&format!("{why}"));
                    }
                }
            }
        }
        v
    }
}

/// Print a skip reason where it is seen even when libtest captures output
/// (direct writes to stderr bypass the capture).
pub fn skip(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipped: {msg}");
}
