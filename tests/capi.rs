//! The C API from C and C++: the programs in capi-tests/ are compiled with gcc/g++ against the
//! checked-in header (`-Wall -Wextra -Werror`, gnu99 and gnu11), linked against the static
//! library and run. `layout` also prints the layout the C compiler computed, which is compared
//! here with the Rust definitions in `vhost_user::abi`.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use vhost_user::abi::*;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");
/// What `cargo rustc -- --print native-static-libs` lists for the staticlib on Linux.
const NATIVE_STATIC_LIBS: &[&str] =
    &["-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc"];
const COMPILE_TIMEOUT: Duration = Duration::from_secs(120);
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

/// target/<profile>, where cargo put libvhost_user.a.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().to_path_buf()
}

fn work_dir(name: &str) -> PathBuf {
    let dir = profile_dir().join("capi-tests").join(format!("{name}-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    dir
}

struct Outcome {
    success: bool,
    stdout: String,
    stderr: String,
}

/// Runs `cmd` with its output in files, killing it after `timeout`.
fn run_bounded(mut cmd: Command, dir: &Path, tag: &str, timeout: Duration) -> Outcome {
    let out_path = dir.join(format!("{tag}.stdout"));
    let err_path = dir.join(format!("{tag}.stderr"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out_path).unwrap())
        .stderr(File::create(&err_path).unwrap());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    let mut stderr = fs::read_to_string(&err_path).unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\n(killed after {timeout:?})"));
    }
    Outcome { success: status.is_some_and(|s| s.success()), stdout, stderr }
}

#[derive(Clone, Copy)]
enum Lang {
    C(&'static str),
    Cxx,
}

fn compiler(lang: Lang, include: &str) -> Command {
    let mut cmd = match lang {
        Lang::C(std) => {
            let mut c = Command::new("gcc");
            c.arg(format!("-std={std}"));
            c
        }
        Lang::Cxx => Command::new("g++"),
    };
    cmd.args(["-Wall", "-Wextra", "-Werror", "-g"]);
    cmd.arg(format!("-I{ROOT}/{include}")).arg(format!("-I{ROOT}/capi-tests"));
    cmd
}

/// Compiles `source` (capi-tests/...) to an object file; panics with the compiler's output.
fn compile(source: &str, lang: Lang, include: &str, dir: &Path) -> PathBuf {
    let obj = dir.join(format!("{source}.o"));
    let mut cmd = compiler(lang, include);
    cmd.arg("-c").arg(Path::new(ROOT).join("capi-tests").join(source)).arg("-o").arg(&obj);
    let out = run_bounded(cmd, dir, &format!("{source}.cc"), COMPILE_TIMEOUT);
    assert!(out.success, "compiling {source} failed:\n{}", out.stderr);
    obj
}

/// Links `obj` with the static library and runs it; returns its stdout.
fn link_and_run(obj: &Path, lang: Lang, dir: &Path) -> String {
    // `cargo test` rebuilds the archive in deps/ without copying it up: take the newer one.
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let lib =
        [profile_dir().join("deps").join("libvhost_user.a"), profile_dir().join("libvhost_user.a")]
            .into_iter()
            .filter(|p| p.is_file())
            .max_by_key(|p| mtime(p))
            .unwrap_or_else(|| {
                panic!("libvhost_user.a not built under {}", profile_dir().display())
            });
    let exe = obj.with_extension("bin");
    let mut cmd = Command::new(match lang {
        Lang::C(_) => "gcc",
        Lang::Cxx => "g++",
    });
    cmd.arg(obj).arg(&lib).args(NATIVE_STATIC_LIBS).arg("-o").arg(&exe);
    let name = obj.file_name().unwrap().to_string_lossy().to_string();
    let out = run_bounded(cmd, dir, &format!("{name}.link"), COMPILE_TIMEOUT);
    assert!(out.success, "linking {name} failed (missing library functions?):\n{}", out.stderr);
    let out = run_bounded(Command::new(&exe), dir, &format!("{name}.run"), RUN_TIMEOUT);
    assert!(out.success, "{name} failed:\n{}{}", out.stdout, out.stderr);
    out.stdout
}

fn check_program(source: &str, include: &str, langs: &[Lang], expect: &str) {
    let dir = work_dir(source);
    for &lang in langs {
        let obj = compile(source, lang, include, &dir);
        let stdout = link_and_run(&obj, lang, &dir);
        assert!(stdout.contains(expect), "{source}: expected {expect:?} in output:\n{stdout}");
    }
    let _ = fs::remove_dir_all(&dir);
}

const C_STDS: &[Lang] = &[Lang::C("gnu99"), Lang::C("gnu11")];

#[test]
fn every_program_compiles_in_every_language_mode() {
    // Compile-only, so a header problem shows up separately from missing library functions.
    let dir = work_dir("compile");
    for source in ["layout.c", "gen-seed.c", "gen-7.2.c", "gen-10.0.c", "additions.c"] {
        for &lang in C_STDS {
            compile(source, lang, "include", &dir);
        }
    }
    compile("cxx.cc", Lang::Cxx, "include", &dir);
    let _ = fs::remove_dir_all(&dir);
}

#[test]
fn seed_generation_backend_works_unchanged() {
    check_program("gen-seed.c", "include", C_STDS, "gen-seed: ok");
}

#[test]
fn qemu_7_2_generation_backend_works_unchanged() {
    check_program("gen-7.2.c", "include", C_STDS, "gen-7.2: ok");
}

#[test]
fn qemu_10_0_generation_backend_works_through_the_root_header() {
    // Through the repository-root forwarder, as QEMU includes it.
    check_program("gen-10.0.c", ".", C_STDS, "gen-10.0: ok");
}

#[test]
fn additions_to_the_10_0_api_work() {
    check_program("additions.c", "include", C_STDS, "additions: ok");
}

#[test]
fn cxx_program_works() {
    check_program("cxx.cc", "include", &[Lang::Cxx], "cxx: ok");
}

macro_rules! rust_layout {
    ($($ty:ident { $($field:ident),* $(,)? })*) => {{
        let mut sizes = HashMap::new();
        let mut offsets = HashMap::new();
        $(
            sizes.insert(
                stringify!($ty).to_string(),
                (core::mem::size_of::<$ty>(), core::mem::align_of::<$ty>()),
            );
            $(
                offsets.insert(
                    concat!(stringify!($ty), ".", stringify!($field)).to_string(),
                    core::mem::offset_of!($ty, $field),
                );
            )*
        )*
        (sizes, offsets)
    }};
}

#[test]
fn c_layout_equals_rust_layout() {
    let (sizes, offsets) = rust_layout! {
        VhostUserMemoryRegion { guest_phys_addr, memory_size, userspace_addr, mmap_offset }
        VhostUserMemory { nregions, padding, regions }
        VhostUserMemRegMsg { padding, region }
        VhostUserLog { mmap_size, mmap_offset }
        VhostUserConfig { offset, size, flags, region }
        VhostUserVringArea { u64, size, offset }
        VhostUserInflight { mmap_size, mmap_offset, num_queues, queue_size }
        VhostUserShared { uuid }
        VhostUserPayload {}
        VhostUserMsg { request, flags, size, payload, fds, fd_num, data }
        VuDevRegion { gpa, size, qva, mmap_offset, mmap_addr }
        VuDevIface {
            get_features, set_features, get_protocol_features, set_protocol_features,
            process_msg, queue_set_started, queue_is_processed_in_order, get_config,
            set_config, get_shared_object,
        }
        VuRing { num, desc, avail, used, log_guest_addr, flags }
        VuDescStateSplit { inflight, padding, next, counter }
        VuVirtqInflight { features, version, desc_num, last_batch_head, used_idx, desc }
        VuVirtqInflightDesc { index, counter }
        VuVirtq {
            vring, inflight, resubmit_list, resubmit_num, counter, last_avail_idx,
            shadow_avail_idx, used_idx, signalled_used, signalled_used_valid, notification,
            inuse, handler, call_fd, kick_fd, err_fd, enable, started, vra,
        }
        VuDevInflightInfo { fd, addr, size }
        VuDev {
            sock, nregions, regions, vq, inflight_info, log_call_fd, backend_mutex, backend_fd,
            log_size, log_table, features, protocol_features, broken, max_queues, read_msg,
            set_watch, remove_watch, panic, iface, postcopy_ufd, postcopy_listening,
        }
        VuVirtqElement { index, out_num, in_num, in_sg, out_sg }
        VhostSetConfigType {}
        VhostUserRequest {}
        VhostUserBackendRequest {}
    };
    let dir = work_dir("layout");
    let obj = compile("layout.c", Lang::C("gnu11"), "include", &dir);
    let stdout = link_and_run(&obj, Lang::C("gnu11"), &dir);
    let _ = fs::remove_dir_all(&dir);

    let mut c_sizes = HashMap::new();
    let mut c_offsets = HashMap::new();
    for line in stdout.lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["size", name @ .., size, align] => {
                c_sizes.insert(name.join(" "), (size.parse().unwrap(), align.parse().unwrap()));
            }
            ["offset", name, offset] => {
                c_offsets.insert(name.to_string(), offset.parse::<usize>().unwrap());
            }
            _ => panic!("unexpected layout line {line:?}"),
        }
    }
    let mut mismatches = Vec::new();
    for (name, rust) in &sizes {
        match c_sizes.get(name) {
            Some(c) if c == rust => {}
            c => mismatches.push(format!("size/align {name}: Rust {rust:?}, C {c:?}")),
        }
    }
    for (name, rust) in &offsets {
        match c_offsets.get(name) {
            Some(c) if c == rust => {}
            c => mismatches.push(format!("offset {name}: Rust {rust}, C {c:?}")),
        }
    }
    assert!(mismatches.is_empty(), "C and Rust layouts differ:\n{}", mismatches.join("\n"));
    // The C program checks more than Rust has names for (old field names, payload members).
    assert!(c_offsets.len() > offsets.len() && c_sizes.len() >= sizes.len());
}
