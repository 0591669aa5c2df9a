//! The standalone meson build installed like a C library: `meson setup --prefix=/usr`
//! (meson's default libdir, Debian's multiarch `lib/<triplet>`), `meson compile`,
//! `meson install --destdir STAGE`. Then:
//! - the layout: libraries, headers and `.pc` files where the dynamic loader and pkg-config
//!   look by default (their search paths are asked, not assumed);
//! - the static libraries are ordinary archives: no member carries LLVM bitcode, and `nm`
//!   lists every function the headers declare, also with an LLVM linker plugin in bfd-plugins
//!   (scripts/install-deps.sh installs llvm-14-linker-tools, whose plugin fails on rustc's
//!   bitcode);
//! - out-of-tree C programs taking the address of every declared function, built with nothing
//!   but `pkg-config --cflags --libs libvhost-user` (and `libvhost-user-glib`): dynamically,
//!   statically, and statically with `gcc -flto`; and run. As root, they are built and run in a
//!   private mount namespace whose /usr is the staged tree laid over the real /usr (a real
//!   `/usr` install that no other process sees), with no PKG_CONFIG_* or LD_LIBRARY_PATH;
//!   otherwise with PKG_CONFIG_PATH and -I/-L/LD_LIBRARY_PATH pointing into the stage.
//!
//! Needs meson, ninja, pkg-config, gcc, binutils and glib's development files (CI installs
//! them). Set VHOST_USER_SKIP_MESON_TEST=1 to skip it explicitly.

#[path = "common/header.rs"]
mod header;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `cmd` (bounded by `limit`, killed after it); the output, whatever the exit status.
fn run_status(cmd: &mut Command, limit: Duration) -> Output {
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
    Output { status, stdout: t_out.join().unwrap(), stderr: t_err.join().unwrap() }
}

/// Runs `cmd` (bounded by `limit`) and fails the test unless it succeeds.
fn run(cmd: &mut Command, limit: Duration) -> Output {
    let desc = format!("{cmd:?}");
    let out = run_status(cmd, limit);
    assert!(
        out.status.success(),
        "{desc} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout_of(cmd: &mut Command) -> String {
    String::from_utf8(run(cmd, Duration::from_secs(60)).stdout).unwrap()
}

/// Where the staged install is seen from: the real /usr (overlaid, as root) or the stage.
struct Installed {
    /// The DESTDIR meson installed into.
    stage: PathBuf,
    /// The libdir as installed, e.g. /usr/lib/x86_64-linux-gnu.
    libdir: PathBuf,
    /// Commands run in a private mount namespace with the stage laid over /usr.
    overlay: bool,
}

/// The overlay: a read-only overlayfs of `$0/usr` over the real /usr, mounted on /usr in a
/// new mount namespace (private propagation: nothing outside sees it), then the command.
const OVERLAY_SCRIPT: &str =
    r#"mount -t overlay overlay -o "lowerdir=$0/usr:/usr" /usr && exec "$@""#;

impl Installed {
    fn staged(&self, path: &Path) -> PathBuf {
        self.stage.join(path.strip_prefix("/").unwrap())
    }

    /// `program args...` as a process sees it after a real install into /usr.
    fn command(&self, program: &str) -> Command {
        let mut cmd = if self.overlay {
            let mut c = Command::new("unshare");
            c.args(["--mount", "--propagation", "private", "--", "sh", "-c", OVERLAY_SCRIPT])
                .arg(&self.stage)
                .arg(program);
            c
        } else {
            Command::new(program)
        };
        for var in
            ["PKG_CONFIG_PATH", "PKG_CONFIG_LIBDIR", "PKG_CONFIG_SYSROOT_DIR", "LD_LIBRARY_PATH"]
        {
            cmd.env_remove(var);
        }
        if !self.overlay {
            cmd.env("PKG_CONFIG_PATH", self.staged(&self.libdir.join("pkgconfig")));
            cmd.env("LD_LIBRARY_PATH", self.staged(&self.libdir));
        }
        cmd
    }

    /// Compiler flags a real install would not need: the staged include and lib dirs.
    fn stage_flags(&self) -> Vec<OsString> {
        if self.overlay {
            return Vec::new();
        }
        let mut inc = OsString::from("-I");
        inc.push(self.staged(Path::new("/usr/include")));
        let mut lib = OsString::from("-L");
        lib.push(self.staged(&self.libdir));
        vec![inc, lib]
    }

    fn pkg_config(&self, args: &[&str]) -> Vec<String> {
        let out = stdout_of(self.command("pkg-config").args(args));
        out.split_whitespace().map(str::to_string).collect()
    }
}

/// Whether this process may run commands in a private mount namespace with an overlay on /usr.
fn overlay_works(stage: &Path) -> bool {
    let probe = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c", OVERLAY_SCRIPT])
        .arg(stage)
        .args(["test", "-d", "/usr/include"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    matches!(probe, Ok(s) if s.success())
}

/// The program every build links: a table holding the address of every function the
/// header(s) declare (the link fails if one is missing), then `@BODY@`.
fn api_program(header: &str, functions: &BTreeSet<String>, body: &str) -> String {
    let mut table = String::new();
    for f in functions {
        table.push_str(&format!("    (void (*)(void))&{f},\n"));
    }
    format!(
        r#"
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include "{header}"

/* Kept by the compiler and by LTO: every entry is a relocation the link must resolve. */
__attribute__((used)) void (*api_table[])(void) = {{
{table}}};

static void on_panic(VuDev *dev, const char *msg) {{ (void)dev; fprintf(stderr, "panic: %s\n", msg); }}
static void set_watch(VuDev *dev, int fd, int cond, vu_watch_cb cb, void *data)
{{ (void)dev; (void)fd; (void)cond; (void)cb; (void)data; }}
static void remove_watch(VuDev *dev, int fd) {{ (void)dev; (void)fd; }}
static const VuDevIface iface;

int main(void)
{{
    volatile size_t n = sizeof(api_table) / sizeof(api_table[0]);
    size_t i, resolved = 0;
    int sv[2];
    (void)set_watch; (void)remove_watch;
    for (i = 0; i < n; i++) {{
        void (*volatile f)(void) = api_table[i];
        resolved += f != NULL;
    }}
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) return 1;
{body}
    close(sv[1]);
    printf("ok: %zu functions\n", resolved);
    return 0;
}}
"#
    )
}

const CORE_BODY: &str = r#"
    VuDev dev;
    memset(&dev, 0, sizeof(dev));
    if (!vu_init(&dev, 1, sv[0], on_panic, NULL, set_watch, remove_watch, &iface)) return 2;
    if (dev.sock != sv[0]) return 3;
    vu_deinit(&dev);
"#;

const GLIB_BODY: &str = r#"
    VugDev dev;
    memset(&dev, 0, sizeof(dev));
    if (!vug_init(&dev, 1, sv[0], on_panic, &iface)) return 2;
    if (dev.parent.sock != sv[0] || dev.src == NULL || dev.fdmap == NULL) return 3;
    while (g_main_context_iteration(NULL, FALSE)) {
    }
    vug_deinit(&dev);
    vu_deinit(&dev.parent);
"#;

/// Compiles `source` with `flags` into `dir/name` (as the installed system sees it) and runs it;
/// it must report `functions` resolved functions.
fn build_and_run(
    inst: &Installed,
    dir: &Path,
    name: &str,
    source: &str,
    flags: &[String],
    functions: usize,
) {
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let exe = dir.join(name);
    run(
        inst.command("gcc")
            .args(["-std=gnu99", "-Wall", "-Werror", "-o"])
            .arg(&exe)
            .arg(&src)
            .args(inst.stage_flags())
            .args(flags),
        Duration::from_secs(300),
    );
    let out = run(&mut inst.command(exe.to_str().unwrap()), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.trim(), format!("ok: {functions} functions"), "{name}");
}

/// The shared objects `exe` needs (DT_NEEDED).
fn needed(exe: &Path) -> Vec<String> {
    let out = stdout_of(Command::new("objdump").arg("-p").arg(exe));
    out.lines()
        .filter(|l| l.trim_start().starts_with("NEEDED"))
        .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string))
        .collect()
}

/// The archive is ordinary: no member has an LLVM bitcode section, and `nm` (which hands
/// objects to any plugin in bfd-plugins) lists every function in `functions` as defined text,
/// without a word on stderr. Returns the number of global text symbols nm lists.
fn check_archive(archive: &Path, functions: &BTreeSet<String>) -> usize {
    // readelf reads every member itself (no plugins).
    let sections = stdout_of(Command::new("readelf").args(["-S", "-W"]).arg(archive));
    let members = sections.lines().filter(|l| l.starts_with("File: ")).count();
    assert!(members > 1, "readelf saw {members} members in {}", archive.display());
    let bitcode: Vec<&str> =
        sections.lines().filter(|l| l.contains(".llvmbc") || l.contains(".llvmcmd")).collect();
    assert!(
        bitcode.is_empty(),
        "{} carries bitcode ({} sections, e.g. {:?})",
        archive.display(),
        bitcode.len(),
        &bitcode[..bitcode.len().min(2)]
    );

    let out = run(
        Command::new("nm").args(["-g", "--defined-only"]).arg(archive),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.trim().is_empty(), "nm {}: {stderr}", archive.display());
    let text: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some(_addr), Some("T"), Some(sym)) => Some(sym.to_string()),
                _ => None,
            }
        })
        .collect();
    let missing: Vec<_> = functions.difference(&text).collect();
    assert!(missing.is_empty(), "nm {} does not list {missing:?}", archive.display());
    text.len()
}

/// Whether binutils loads an LLVM plugin here (what the archive check is about).
fn llvm_plugin() -> Option<PathBuf> {
    let dir = Path::new("/usr/lib/bfd-plugins");
    std::fs::read_dir(dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("LLVMgold")))
}

/// The Debian multiarch libdir meson picks for --prefix=/usr, or lib64/lib elsewhere.
fn expected_libdir(stage: &Path) -> PathBuf {
    let triplet = Command::new("gcc").arg("-print-multiarch").output().ok();
    let triplet = triplet.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    match triplet {
        Some(t) if !t.is_empty() => PathBuf::from("/usr/lib").join(t),
        _ if stage.join("usr/lib64").is_dir() => PathBuf::from("/usr/lib64"),
        _ => PathBuf::from("/usr/lib"),
    }
}

#[test]
fn meson_install_to_usr_and_pkg_config() {
    if std::env::var("VHOST_USER_SKIP_MESON_TEST").as_deref() == Ok("1") {
        println!("skipped: VHOST_USER_SKIP_MESON_TEST=1");
        return;
    }
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("meson-usr");
    let build = work.join("build");
    let stage = work.join("stage");
    let _ = std::fs::remove_dir_all(&stage);
    let progs = work.join("progs");
    let _ = std::fs::remove_dir_all(&progs);
    std::fs::create_dir_all(&progs).unwrap();

    // The build directory (and the cargo target dir inside it) is kept between runs.
    let mut setup = Command::new("meson");
    setup.arg("setup");
    if build.join("build.ninja").exists() {
        setup.arg("--reconfigure");
    }
    setup.arg(&build).arg(repo_root()).arg("--prefix=/usr");
    run(&mut setup, Duration::from_secs(300));
    run(Command::new("meson").arg("compile").arg("-C").arg(&build), Duration::from_secs(1800));
    run(
        Command::new("meson").args(["install", "--destdir"]).arg(&stage).arg("-C").arg(&build),
        Duration::from_secs(300),
    );

    // link-test, built by meson against the core alone.
    let lt = run(&mut Command::new(build.join("link-test")), Duration::from_secs(60));
    assert!(String::from_utf8_lossy(&lt.stdout).contains("link-test: ok"));
    assert!(
        !needed(&build.join("link-test")).iter().any(|n| n.contains("glib")),
        "link-test needs glib"
    );

    // Layout: the default search paths of the dynamic loader and of pkg-config.
    let libdir = expected_libdir(&stage);
    let pcdir = libdir.join("pkgconfig");
    let inst = Installed { overlay: overlay_works(&stage), stage, libdir };
    let lib = inst.staged(&inst.libdir);
    for f in [
        "libvhost-user.a",
        "libvhost-user.so.0",
        "libvhost-user-glib.a",
        "libvhost-user-glib.so.0",
        "pkgconfig/libvhost-user.pc",
        "pkgconfig/libvhost-user-glib.pc",
    ] {
        assert!(lib.join(f).is_file(), "{f} not installed in {}", inst.libdir.display());
    }
    for (link, target) in [
        ("libvhost-user.so", "libvhost-user.so.0"),
        ("libvhost-user-glib.so", "libvhost-user-glib.so.0"),
    ] {
        assert_eq!(std::fs::read_link(lib.join(link)).unwrap(), Path::new(target), "{link}");
    }
    for h in ["libvhost-user.h", "libvhost-user-glib.h"] {
        let installed = std::fs::read(inst.staged(Path::new("/usr/include")).join(h)).unwrap();
        assert_eq!(
            installed,
            std::fs::read(repo_root().join("include").join(h)).unwrap(),
            "{h} differs"
        );
    }
    let pc_path =
        stdout_of(Command::new("pkg-config").args(["--variable", "pc_path", "pkg-config"]));
    assert!(
        pc_path.trim().split(':').any(|d| Path::new(d) == pcdir),
        "{} is not in pkg-config's search path {pc_path}",
        pcdir.display()
    );
    // ldconfig -v lists the directories the loader searches (-N -X: changes nothing); it
    // names each directory once, /lib/<triplet> for /usr/lib/<triplet> on merged-/usr.
    let loader = stdout_of(Command::new("ldconfig").args(["-v", "-N", "-X"]));
    let real_libdir = std::fs::canonicalize(&inst.libdir).ok();
    assert!(
        loader
            .lines()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .filter_map(|l| l.split(':').next())
            .any(|d| std::fs::canonicalize(d).ok().is_some_and(|d| Some(d) == real_libdir)),
        "{} is not searched by the dynamic loader:\n{loader}",
        inst.libdir.display()
    );
    for pc in ["libvhost-user", "libvhost-user-glib"] {
        let libdir_var = inst.pkg_config(&["--variable", "libdir", pc]);
        assert_eq!(libdir_var, [inst.libdir.display().to_string()], "{pc} libdir");
    }

    // Ordinary archives.
    let read_header =
        |h: &str| std::fs::read_to_string(repo_root().join("include").join(h)).unwrap();
    let core_api = header::declared_functions(&read_header("libvhost-user.h"));
    let mut glib_api = core_api.clone();
    glib_api.extend(header::declared_functions(&read_header("libvhost-user-glib.h")));
    assert!(core_api.len() >= 26 && glib_api.len() >= core_api.len() + 4, "{glib_api:?}");
    match llvm_plugin() {
        Some(p) => println!("LLVM linker plugin present: {}", p.display()),
        None => {
            println!("no LLVM linker plugin in /usr/lib/bfd-plugins (install-deps.sh installs one)")
        }
    }
    for (archive, api) in [("libvhost-user.a", &core_api), ("libvhost-user-glib.a", &glib_api)] {
        let n = check_archive(&lib.join(archive), api);
        println!("nm {archive}: {} API functions among {n} global text symbols", api.len());
    }

    if inst.overlay {
        println!("C programs see the install as /usr (private mount namespace)");
    } else {
        println!("C programs use PKG_CONFIG_PATH, -I/-L and LD_LIBRARY_PATH into the stage");
    }
    let core_src = api_program("libvhost-user.h", &core_api, CORE_BODY);
    let glib_src = api_program("libvhost-user-glib.h", &glib_api, GLIB_BODY);

    // Dynamic linking, as pkg-config says.
    let core_flags = inst.pkg_config(&["--cflags", "--libs", "libvhost-user"]);
    build_and_run(&inst, &progs, "core_dyn", &core_src, &core_flags, core_api.len());
    let n = needed(&progs.join("core_dyn"));
    assert!(n.contains(&"libvhost-user.so.0".to_string()), "core_dyn needs {n:?}");
    assert!(!n.iter().any(|x| x.contains("glib")), "core_dyn needs {n:?}");

    let glib_flags = inst.pkg_config(&["--cflags", "--libs", "libvhost-user-glib"]);
    build_and_run(&inst, &progs, "glib_dyn", &glib_src, &glib_flags, glib_api.len());
    let n = needed(&progs.join("glib_dyn"));
    assert!(n.contains(&"libvhost-user-glib.so.0".to_string()), "glib_dyn needs {n:?}");
    assert!(!n.contains(&"libvhost-user.so.0".to_string()), "glib_dyn needs {n:?}");

    // Static linking, with and without LTO: the archive plus Libs.private.
    for (pc, archive, name, source, functions) in [
        ("libvhost-user", "libvhost-user.a", "core_static", &core_src, core_api.len()),
        ("libvhost-user-glib", "libvhost-user-glib.a", "glib_static", &glib_src, glib_api.len()),
    ] {
        let installed_archive = inst.libdir.join(archive);
        let archive_arg =
            if inst.overlay { installed_archive } else { inst.staged(&installed_archive) };
        let flags: Vec<String> = inst
            .pkg_config(&["--static", "--cflags", "--libs", pc])
            .into_iter()
            .map(|f| {
                if f == format!("-l{}", &pc["lib".len()..]) {
                    archive_arg.display().to_string()
                } else {
                    f
                }
            })
            .collect();
        assert!(flags.iter().any(|f| f.ends_with(archive)), "{pc}: {flags:?}");
        for (suffix, extra) in [("", &[][..]), ("_lto", &["-O2", "-flto"][..])] {
            let exe = format!("{name}{suffix}");
            let mut all: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
            all.extend(flags.iter().cloned());
            build_and_run(&inst, &progs, &exe, source, &all, functions);
            assert!(
                !needed(&progs.join(&exe)).iter().any(|n| n.starts_with("libvhost-user")),
                "{exe} is not static"
            );
        }
    }
}
