// SPDX-License-Identifier: GPL-2.0-or-later
//! Build the C example backends from examples-c/ against a libvhost-user
//! build, and run them as bounded, reaped child processes.
//!
//! Library selection:
//! - default: this crate's static library, `<target>/<profile>/libvhost_user.a`
//!   (built by cargo together with the rlib) and the header in `include/`;
//! - `VU_LIB_DIR=<dir>` (holding `libvhost_user.a` or `libvhost-user.a`) and
//!   `VU_INCLUDE_DIR=<dir>` (holding `libvhost-user.h`): another build, e.g.
//!   the C original, for comparison.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::blk::SECTOR;

pub const START_TIMEOUT: Duration = Duration::from_secs(10);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `<target>/<profile>`: the test binary lives in `<target>/<profile>/deps`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let deps = exe.parent().expect("test binary dir");
    if deps.file_name().map(|n| n == "deps").unwrap_or(false) {
        deps.parent().unwrap().to_path_buf()
    } else {
        deps.to_path_buf()
    }
}

/// The library archive and header directory the examples are built with.
pub fn library() -> (PathBuf, PathBuf) {
    if let Ok(dir) = std::env::var("VU_LIB_DIR") {
        let dir = PathBuf::from(dir);
        let lib = ["libvhost_user.a", "libvhost-user.a"]
            .iter()
            .map(|n| dir.join(n))
            .find(|p| p.exists())
            .unwrap_or_else(|| {
                panic!("VU_LIB_DIR={} holds no libvhost_user.a / libvhost-user.a", dir.display())
            });
        let inc = PathBuf::from(
            std::env::var("VU_INCLUDE_DIR").expect("VU_LIB_DIR is set: set VU_INCLUDE_DIR too"),
        );
        (lib, inc)
    } else {
        // `cargo test` rebuilds the archive in deps/ without copying it up (only `cargo build`
        // does): take the newer of the two, so a stale copy is never linked.
        let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        let lib = [
            profile_dir().join("deps").join("libvhost_user.a"),
            profile_dir().join("libvhost_user.a"),
        ]
        .into_iter()
        .filter(|p| p.exists())
        .max_by_key(|p| mtime(p))
        .unwrap_or_else(|| {
            panic!(
                "no libvhost_user.a under {} (is staticlib in crate-type?)",
                profile_dir().display()
            )
        });
        (lib, manifest_dir().join("include"))
    }
}

/// True when testing another build than this crate's (VU_LIB_DIR set).
pub fn using_external_library() -> bool {
    std::env::var_os("VU_LIB_DIR").is_some()
}

fn build_example(name: &str) -> PathBuf {
    let (lib, inc) = library();
    assert!(inc.join("libvhost-user.h").exists(), "no libvhost-user.h in {}", inc.display());
    let src = manifest_dir().join("examples-c").join(format!("{name}.c"));
    let outdir = profile_dir().join("examples-c");
    std::fs::create_dir_all(&outdir).unwrap();
    // One binary per library build; built to a private name, then renamed.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in lib.to_string_lossy().bytes().chain(inc.to_string_lossy().bytes()) {
        h = (h ^ b as u64).wrapping_mul(0x100000001b3);
    }
    let out = outdir.join(format!("{name}-{h:016x}"));
    let tmp = outdir.join(format!("{name}-{h:016x}.{}.tmp", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "gcc".into());
    let output = Command::new(&cc)
        .args(["-std=gnu11", "-O2", "-g", "-Wall", "-o"])
        .arg(&tmp)
        .arg(format!("-I{}", inc.display()))
        .arg(&src)
        .arg(&lib)
        .args(["-lpthread", "-ldl", "-lm", "-lrt", "-lutil", "-lgcc_s"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        panic!("building {} failed:\n{stderr}", src.display());
    }
    if !stderr.trim().is_empty() {
        eprintln!("warnings building {}:\n{stderr}", src.display());
    }
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// Path of a built example (compiled once per test process).
pub fn example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let m = BUILT.get_or_init(|| Mutex::new(HashMap::new()));
    let mut m = m.lock().unwrap_or_else(|e| e.into_inner());
    m.entry(name.to_string()).or_insert_with(|| build_example(name)).clone()
}

/// A private temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "vu-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Clone, Debug)]
pub struct BackendOpts {
    pub queues: u16,
    /// Image size in bytes; None = --null mode.
    pub image_size: Option<u64>,
    pub null_size: u64,
    pub threads: bool,
    pub one_shot: bool,
    pub serial: Option<String>,
    pub writethrough: bool,
    /// Extra environment variables for the backend process.
    pub env: Vec<(String, String)>,
}

impl Default for BackendOpts {
    fn default() -> Self {
        BackendOpts {
            queues: 1,
            image_size: Some(1 << 20),
            null_size: 1 << 30,
            threads: false,
            one_shot: false,
            serial: None,
            writethrough: false,
            env: Vec::new(),
        }
    }
}

/// Byte `i` of the initial image content (so reads before any write are
/// verifiable too).
pub fn initial_byte(i: u64) -> u8 {
    let s = i / SECTOR;
    ((i % SECTOR) as u8) ^ (s as u8).wrapping_mul(31) ^ ((s >> 8) as u8).wrapping_mul(7) ^ 0x5a
}

pub fn initial_image(size: u64) -> Vec<u8> {
    (0..size).map(initial_byte).collect()
}

/// Collects a child's output on a thread.
pub fn collect(mut r: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(String::new()));
    let b2 = buf.clone();
    let h = std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match r.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => b2.lock().unwrap().push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    });
    (buf, h)
}

pub struct Backend {
    child: Option<Child>,
    pub status: Option<ExitStatus>,
    pub socket: PathBuf,
    pub image: Option<PathBuf>,
    pub opts: BackendOpts,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    dir: TempDir,
}

impl Backend {
    pub fn start(opts: BackendOpts) -> Self {
        Self::start_example("vhost-user-blk", opts)
    }

    pub fn start_example(name: &str, opts: BackendOpts) -> Self {
        let bin = example(name);
        let dir = TempDir::new();
        let socket = dir.0.join("vu.sock");
        // VU_BACKEND_WRAPPER (e.g. a valgrind or strace script) runs the
        // backend under a wrapper command, for debugging.
        let mut cmd = match std::env::var_os("VU_BACKEND_WRAPPER") {
            Some(w) => {
                let mut c = Command::new(w);
                c.arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("-s").arg(&socket).arg("-q").arg(opts.queues.to_string());
        let image = match opts.image_size {
            Some(size) => {
                let p = dir.0.join("disk.img");
                std::fs::write(&p, initial_image(size)).unwrap();
                cmd.arg("-b").arg(&p);
                Some(p)
            }
            None => {
                cmd.arg("--null").arg("-S").arg(opts.null_size.to_string());
                None
            }
        };
        if opts.threads {
            cmd.arg("-T");
        }
        if opts.one_shot {
            cmd.arg("-1");
        }
        if opts.writethrough {
            cmd.arg("-w");
        }
        if let Some(s) = &opts.serial {
            cmd.arg("-i").arg(s);
        }
        cmd.envs(opts.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let (stdout, h1) = collect(child.stdout.take().unwrap());
        let (stderr, h2) = collect(child.stderr.take().unwrap());
        Backend {
            child: Some(child),
            status: None,
            socket,
            image,
            opts,
            stdout,
            stderr,
            readers: vec![h1, h2],
            dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
    pub fn stdout(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    /// Has the process exited? (reaps it if so)
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.status = Some(st);
                }
            }
        }
        self.status
    }

    /// Panic unless the backend is still running.
    pub fn assert_alive(&mut self) {
        if let Some(st) = self.exited() {
            panic!("backend died: {}\nstderr:\n{}", describe(st), self.stderr());
        }
    }

    /// Connect to the backend's socket, retrying (bounded) until it listens.
    pub fn connect(&mut self) -> UnixStream {
        let t0 = Instant::now();
        loop {
            match UnixStream::connect(&self.socket) {
                Ok(s) => return s,
                Err(e) => {
                    if let Some(st) = self.exited() {
                        panic!(
                            "backend exited ({}) before accepting: {e}\nstderr:\n{}",
                            describe(st),
                            self.stderr()
                        );
                    }
                    if t0.elapsed() > START_TIMEOUT {
                        panic!(
                            "cannot connect to {}: {e}\nstderr:\n{}",
                            self.socket.display(),
                            self.stderr()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }

    /// Wait (bounded) until stderr contains `pat`.
    pub fn wait_stderr(&self, pat: &str, timeout: Duration) -> bool {
        let t0 = Instant::now();
        loop {
            if self.stderr().contains(pat) {
                return true;
            }
            if t0.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Wait (bounded) for the process to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                self.join_readers();
                return Some(st);
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGTERM, then wait (bounded; SIGKILL after the timeout). Returns the
    /// exit status; stdout/stderr are complete afterwards.
    pub fn terminate(&mut self) -> ExitStatus {
        if let Some(st) = self.exited() {
            self.join_readers();
            return st;
        }
        // SAFETY: signalling our own child by its PID (not yet reaped).
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        if let Some(st) = self.wait_exit(EXIT_TIMEOUT) {
            return st;
        }
        self.kill();
        panic!(
            "backend did not exit within {EXIT_TIMEOUT:?} of SIGTERM\nstderr:\n{}",
            self.stderr()
        );
    }

    fn kill(&mut self) {
        if self.exited().is_none() {
            if let Some(c) = self.child.as_mut() {
                let _ = c.kill();
                if let Ok(st) = c.wait() {
                    self.status = Some(st);
                }
            }
        }
        self.join_readers();
    }

    fn join_readers(&mut self) {
        for h in self.readers.drain(..) {
            let _ = h.join();
        }
    }

    /// Current content of the image file.
    pub fn image_content(&self) -> Vec<u8> {
        std::fs::read(self.image.as_ref().expect("null backend has no image")).unwrap()
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- backend stderr ---\n{}--- end ---", self.stderr());
        }
    }
}

pub fn describe(st: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (st.code(), st.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (_, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{st:?}"),
    }
}

/// Parse the backend's summary line: (requests, bytes read, bytes written, errors).
pub fn parse_summary(stdout: &str) -> Option<(u64, u64, u64, u64)> {
    let line = stdout.lines().find(|l| l.contains(" requests, "))?;
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    if nums.len() == 4 {
        Some((nums[0], nums[1], nums[2], nums[3]))
    } else {
        None
    }
}
