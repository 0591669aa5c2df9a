// SPDX-License-Identifier: GPL-2.0-or-later
//! Rust-frontend stage of the consumer tier: QEMU's own libvhost-user
//! consumers (built by tests/consumers/run.sh against the C original and
//! against this library) driven by the rust-vmm `vhost` frontend.
#![allow(dead_code)]

pub mod blkio;
pub mod env;
pub mod fe;
pub mod proc;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub use env::Target;

/// What a run against one binary observed. `cmp` entries must be equal for
/// c-original and ours of the same generation.
#[derive(Default, Debug)]
pub struct Facts {
    pub cmp: BTreeMap<String, String>,
    pub info: Vec<String>,
}

impl Facts {
    pub fn cmp(&mut self, k: &str, v: impl std::fmt::Display) {
        self.cmp.insert(k.to_string(), v.to_string());
    }
    pub fn info(&mut self, s: impl Into<String>) {
        self.info.push(s.into());
    }
}

fn panic_text(e: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = e.downcast_ref::<String>() {
        s.clone()
    } else if let Some(s) = e.downcast_ref::<&str>() {
        s.to_string()
    } else {
        "panic".into()
    }
}

/// Run `f` against every built binary of each consumer in `consumers`
/// (essential: missing binaries fail under VU_REQUIRE_CONSUMERS=1), print a
/// line per target, compare c-original and ours, and panic on any failure.
pub fn run_all(
    test: &str,
    consumers: &[&str],
    essential: bool,
    f: impl Fn(&str, &Target) -> Result<Facts, String>,
) {
    let Some(envf) = env::load(test) else { return };
    let mut failures = Vec::new();
    let mut ran = 0;
    for consumer in consumers {
        let targets = envf.targets(consumer, essential, &mut failures);
        let mut facts: BTreeMap<(String, String), Facts> = BTreeMap::new();
        for t in &targets {
            let name = format!("{test}: {}", t.name(consumer));
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(consumer, t)))
                .unwrap_or_else(|e| Err(format!("panicked: {}", panic_text(e))));
            ran += 1;
            match r {
                Ok(fa) => {
                    println!("PASS {name}: {}", fa.info.join("; "));
                    facts.insert((t.gen.clone(), t.lib.clone()), fa);
                }
                Err(e) => {
                    println!("FAIL {name}: {e}");
                    failures.push(format!("{name}: {e}"));
                }
            }
        }
        for gen in ["7.2", "10.0"] {
            let (Some(c), Some(o)) = (
                facts.get(&(gen.into(), "c-original".into())),
                facts.get(&(gen.into(), "ours".into())),
            ) else {
                continue;
            };
            for (k, v) in &c.cmp {
                match o.cmp.get(k) {
                    Some(w) if w == v => {}
                    w => {
                        let m = format!(
                            "{test}: {consumer} {gen}: {k} differs: c-original {v}, ours {}",
                            w.map(|s| s.as_str()).unwrap_or("(not observed)")
                        );
                        println!("FAIL {m}");
                        failures.push(m);
                    }
                }
            }
        }
    }
    if ran == 0 && failures.is_empty() {
        crate::consumer_frontend::env::skip(&format!("{test}: none of {consumers:?} is built"));
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

/// A minimal QMP client over a unix socket.
pub struct Qmp {
    r: BufReader<UnixStream>,
    w: UnixStream,
}

impl Qmp {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, String> {
        let t0 = Instant::now();
        let s = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if t0.elapsed() > timeout => {
                    return Err(format!("QMP connect {}: {e}", path.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut q = Qmp { r: BufReader::new(s.try_clone().unwrap()), w: s };
        let greeting = q.line()?;
        if !greeting.contains("QMP") {
            return Err(format!("QMP greeting: {greeting}"));
        }
        q.execute(r#"{"execute":"qmp_capabilities"}"#)?;
        Ok(q)
    }
    fn line(&mut self) -> Result<String, String> {
        let mut l = String::new();
        self.r.read_line(&mut l).map_err(|e| format!("QMP read: {e}"))?;
        if l.is_empty() {
            return Err("QMP: connection closed".into());
        }
        Ok(l)
    }
    /// Send a command; return its "return" line (events are skipped).
    pub fn execute(&mut self, cmd: &str) -> Result<String, String> {
        self.w
            .write_all(cmd.as_bytes())
            .and_then(|_| self.w.write_all(b"\n"))
            .map_err(|e| format!("QMP write: {e}"))?;
        loop {
            let l = self.line()?;
            if l.contains("\"return\"") {
                return Ok(l);
            }
            if l.contains("\"error\"") {
                return Err(format!("QMP {cmd}: {l}"));
            }
        }
    }
}
