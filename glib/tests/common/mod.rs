//! Helpers for the glib wrapper's tests: locate the build's artifacts and headers, compile C
//! programs against them, run them with a time limit.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The repository root (the glib crate lives in glib/).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// target/<profile>/deps/, where this test executable lives and where cargo writes the
/// libvhost_user_glib.{a,so} it built for this test run (`cargo test` does not copy them up
/// to target/<profile>/, where they may be stale).
pub fn deps_dir() -> PathBuf {
    std::env::current_exe().unwrap().parent().unwrap().to_path_buf()
}

/// target/<profile>/.
pub fn artifact_dir() -> PathBuf {
    deps_dir().parent().unwrap().to_path_buf()
}

pub fn static_lib() -> PathBuf {
    let p = deps_dir().join("libvhost_user_glib.a");
    assert!(p.exists(), "{} missing: cargo builds it with the crate's lib target", p.display());
    p
}

pub fn shared_lib() -> PathBuf {
    let p = deps_dir().join("libvhost_user_glib.so");
    assert!(p.exists(), "{} missing: cargo builds it with the crate's lib target", p.display());
    p
}

fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config").args(args).output().expect("run pkg-config");
    assert!(out.status.success(), "pkg-config {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().split_whitespace().map(str::to_string).collect()
}

/// The native libraries a Rust static library needs on Linux (rustc --print native-static-libs).
pub const RUST_NATIVE_LIBS: &[&str] =
    &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];

/// A scratch directory under the target dir, emptied first.
pub fn scratch(name: &str) -> PathBuf {
    let d = artifact_dir().join("glib-test-scratch").join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Compiles `source` into an executable linked with the static glib wrapper (which contains
/// the core) and glib. Panics with the compiler's output if that fails.
pub fn compile_c(name: &str, source: &str) -> PathBuf {
    let dir = scratch(name);
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let exe = dir.join(name);
    let mut cmd = Command::new(std::env::var("CC").unwrap_or_else(|_| "cc".into()));
    cmd.args(["-std=gnu99", "-Wall", "-Werror", "-g", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(repo_root().join("include"))
        .args(pkg_config(&["--cflags", "glib-2.0"]))
        .arg(static_lib())
        .args(pkg_config(&["--libs", "glib-2.0"]))
        .args(RUST_NATIVE_LIBS);
    let out = run_bounded(&mut cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "compiling {name}.c failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    exe
}

/// Runs `cmd` to completion, killing it (and failing the test) after `limit`.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let start = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{cmd:?} did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs a compiled test program; returns its stdout, failing the test on a non-zero exit.
pub fn run_ok(exe: &Path) -> String {
    let out = run_bounded(&mut Command::new(exe), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        exe.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Names of the non-static functions a C header declares whose names start with `prefix`
/// (skipping comments, preprocessor lines and `#ifdef __cplusplus` blocks).
pub fn header_functions(header: &str, prefix: &str) -> Vec<String> {
    // Strip comments.
    let mut text = String::new();
    let mut rest = header;
    while let Some(i) = rest.find("/*") {
        text.push_str(&rest[..i]);
        rest = match rest[i + 2..].find("*/") {
            Some(j) => &rest[i + 2 + j + 2..],
            None => "",
        };
    }
    text.push_str(rest);
    // Drop preprocessor directives (with continuation lines) and C++-only blocks.
    let mut code = String::new();
    let mut continued = false;
    let mut cxx_depth = 0usize;
    for line in text.lines() {
        let line = match line.find("//") {
            Some(i) => &line[..i],
            None => line,
        };
        let t = line.trim_start();
        if continued || t.starts_with('#') {
            continued = line.trim_end().ends_with('\\');
            let word = t.trim_start_matches('#').trim_start();
            if cxx_depth > 0 {
                if word.starts_with("if") {
                    cxx_depth += 1;
                } else if word.starts_with("endif") {
                    cxx_depth -= 1;
                }
            } else if word.starts_with("ifdef __cplusplus")
                || word.starts_with("if defined(__cplusplus)")
            {
                cxx_depth = 1;
            }
            continue;
        }
        if cxx_depth == 0 {
            code.push_str(line);
            code.push('\n');
        }
    }
    // Top-level declarations end at ';' or at a '{' (whose body is skipped).
    let mut names = Vec::new();
    let mut depth = 0usize;
    let mut decl = String::new();
    let mut consider = |decl: &str| {
        let d = decl.trim();
        if d.starts_with("typedef") || d.split_whitespace().any(|w| w == "static") {
            return;
        }
        let Some(open) = d.find('(') else { return };
        let before = d[..open].trim_end();
        let start =
            before.rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).map_or(0, |i| i + 1);
        let name = &before[start..];
        if name.starts_with(prefix) && !before[..start].trim_end().ends_with('(') {
            names.push(name.to_string());
        }
    };
    for c in code.chars() {
        match c {
            '{' => {
                if depth == 0 {
                    consider(&decl);
                    decl.clear();
                }
                depth += 1;
            }
            '}' => depth = depth.saturating_sub(1),
            ';' if depth == 0 => {
                consider(&decl);
                decl.clear();
            }
            _ if depth == 0 => decl.push(c),
            _ => {}
        }
    }
    names.sort();
    names.dedup();
    names
}
