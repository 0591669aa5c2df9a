//! The standalone meson build: `meson setup`, `meson compile`, `meson install` into a
//! temporary prefix, then C programs built with `pkg-config --cflags --libs` against the
//! installed libvhost-user and libvhost-user-glib, linked dynamically and statically, run.
//!
//! Needs meson, ninja, pkg-config, a C compiler and glib's development files (CI installs
//! them). Set VHOST_USER_SKIP_MESON_TEST=1 to skip it explicitly.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` (bounded by `limit`, killed after it) and fails the test unless it succeeds.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {desc}: {e}"));
    // Drain the pipes in threads so a chatty child cannot block on a full pipe.
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t_out = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut so, &mut v).ok();
        v
    });
    let t_err = std::thread::spawn(move || {
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut se, &mut v).ok();
        v
    });
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let out = String::from_utf8_lossy(&t_out.join().unwrap()).into_owned();
            let err = String::from_utf8_lossy(&t_err.join().unwrap()).into_owned();
            panic!("{desc} did not finish within {limit:?}\n{out}\n{err}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let out = Output { status, stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() };
    assert!(
        out.status.success(),
        "{desc} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn pkg_config(prefix: &Path, args: &[&str]) -> Vec<String> {
    let out = run(
        Command::new("pkg-config").args(args).env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")),
        Duration::from_secs(30),
    );
    String::from_utf8(out.stdout).unwrap().split_whitespace().map(str::to_string).collect()
}

const CORE_PROGRAM: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "libvhost-user.h"

static void on_panic(VuDev *dev, const char *msg) { (void)dev; fprintf(stderr, "panic: %s\n", msg); }
static void set_watch(VuDev *dev, int fd, int cond, vu_watch_cb cb, void *data)
{ (void)dev; (void)fd; (void)cond; (void)cb; (void)data; }
static void remove_watch(VuDev *dev, int fd) { (void)dev; (void)fd; }
static const VuDevIface iface;

int main(void)
{
    VuDev dev;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return 1;
    memset(&dev, 0, sizeof(dev));
    if (!vu_init(&dev, 1, sv[0], on_panic, NULL, set_watch, remove_watch, &iface)) return 2;
    if (dev.sock != sv[0]) return 3;
    vu_deinit(&dev);
    close(sv[1]);
    printf("core ok\n");
    return 0;
}
"#;

const GLIB_PROGRAM: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "libvhost-user-glib.h"

static void on_panic(VuDev *dev, const char *msg) { (void)dev; fprintf(stderr, "panic: %s\n", msg); }
static const VuDevIface iface;

int main(void)
{
    VugDev dev;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return 1;
    memset(&dev, 0, sizeof(dev));
    if (!vug_init(&dev, 1, sv[0], on_panic, &iface)) return 2;
    if (dev.parent.sock != sv[0] || dev.src == NULL || dev.fdmap == NULL) return 3;
    while (g_main_context_iteration(NULL, FALSE)) {
    }
    vug_deinit(&dev);
    vu_deinit(&dev.parent);
    close(sv[1]);
    printf("glib ok\n");
    return 0;
}
"#;

/// Compiles `source` with `flags` (pkg-config output) into `dir/name` and runs it.
fn build_and_run(
    dir: &Path,
    name: &str,
    source: &str,
    flags: &[String],
    libdir: &Path,
    expect: &str,
) {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let exe = dir.join(name);
    run(
        Command::new("cc")
            .args(["-std=gnu99", "-Wall", "-Werror", "-o"])
            .arg(&exe)
            .arg(&src)
            .args(flags),
        Duration::from_secs(120),
    );
    let out = run(Command::new(&exe).env("LD_LIBRARY_PATH", libdir), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(expect), "{name} printed {stdout:?}");
}

/// The shared objects `exe` needs (DT_NEEDED).
fn needed(exe: &Path) -> Vec<String> {
    let out = run(Command::new("objdump").arg("-p").arg(exe), Duration::from_secs(30));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("NEEDED"))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

#[test]
fn meson_build_install_and_pkg_config() {
    if std::env::var("VHOST_USER_SKIP_MESON_TEST").as_deref() == Ok("1") {
        println!("skipped: VHOST_USER_SKIP_MESON_TEST=1");
        return;
    }
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("meson-install");
    let build = work.join("build");
    let prefix = work.join("prefix");
    let _ = std::fs::remove_dir_all(&prefix);
    let progs = work.join("progs");
    let _ = std::fs::remove_dir_all(&progs);
    std::fs::create_dir_all(&progs).unwrap();

    // The build directory (and the cargo target dir inside it) is kept between runs.
    let mut setup = Command::new("meson");
    setup.arg("setup");
    if build.join("build.ninja").exists() {
        setup.arg("--reconfigure");
    }
    setup
        .arg(&build)
        .arg(repo_root())
        .arg(format!("--prefix={}", prefix.display()))
        .arg("--libdir=lib");
    run(&mut setup, Duration::from_secs(300));
    run(Command::new("meson").arg("compile").arg("-C").arg(&build), Duration::from_secs(1800));
    run(Command::new("meson").arg("install").arg("-C").arg(&build), Duration::from_secs(300));

    // link-test, built by meson against the core alone.
    let lt = run(&mut Command::new(build.join("link-test")), Duration::from_secs(60));
    assert!(String::from_utf8_lossy(&lt.stdout).contains("link-test: ok"));
    assert!(
        !needed(&build.join("link-test")).iter().any(|n| n.contains("glib")),
        "link-test needs glib"
    );

    let lib = prefix.join("lib");
    for f in [
        "libvhost-user.a",
        "libvhost-user.so.0",
        "libvhost-user-glib.a",
        "libvhost-user-glib.so.0",
        "pkgconfig/libvhost-user.pc",
        "pkgconfig/libvhost-user-glib.pc",
    ] {
        assert!(lib.join(f).is_file(), "{f} not installed");
    }
    for (link, target) in [
        ("libvhost-user.so", "libvhost-user.so.0"),
        ("libvhost-user-glib.so", "libvhost-user-glib.so.0"),
    ] {
        assert_eq!(std::fs::read_link(lib.join(link)).unwrap(), Path::new(target), "{link}");
    }
    for h in ["libvhost-user.h", "libvhost-user-glib.h"] {
        let installed = std::fs::read(prefix.join("include").join(h)).unwrap();
        assert_eq!(
            installed,
            std::fs::read(repo_root().join("include").join(h)).unwrap(),
            "{h} differs"
        );
    }

    // Dynamic linking, as pkg-config says.
    let core_flags = pkg_config(&prefix, &["--cflags", "--libs", "libvhost-user"]);
    build_and_run(&progs, "core_dyn", CORE_PROGRAM, &core_flags, &lib, "core ok");
    let n = needed(&progs.join("core_dyn"));
    assert!(n.contains(&"libvhost-user.so.0".to_string()), "core_dyn needs {n:?}");
    assert!(!n.iter().any(|x| x.contains("glib")), "core_dyn needs {n:?}");

    let glib_flags = pkg_config(&prefix, &["--cflags", "--libs", "libvhost-user-glib"]);
    build_and_run(&progs, "glib_dyn", GLIB_PROGRAM, &glib_flags, &lib, "glib ok");
    let n = needed(&progs.join("glib_dyn"));
    assert!(n.contains(&"libvhost-user-glib.so.0".to_string()), "glib_dyn needs {n:?}");
    assert!(!n.contains(&"libvhost-user.so.0".to_string()), "glib_dyn needs {n:?}");

    // Static linking: the archive plus Libs.private.
    for (pc, archive, name, program, expect) in [
        ("libvhost-user", "libvhost-user.a", "core_static", CORE_PROGRAM, "core ok"),
        ("libvhost-user-glib", "libvhost-user-glib.a", "glib_static", GLIB_PROGRAM, "glib ok"),
    ] {
        let flags: Vec<String> = pkg_config(&prefix, &["--static", "--cflags", "--libs", pc])
            .into_iter()
            .map(|f| {
                if f == format!("-l{}", &pc["lib".len()..]) {
                    lib.join(archive).display().to_string()
                } else {
                    f
                }
            })
            .collect();
        assert!(flags.iter().any(|f| f.ends_with(archive)), "{pc}: {flags:?}");
        build_and_run(&progs, name, program, &flags, &lib, expect);
        assert!(
            !needed(&progs.join(name)).iter().any(|n| n.starts_with("libvhost-user")),
            "{name} is not static"
        );
    }
}
