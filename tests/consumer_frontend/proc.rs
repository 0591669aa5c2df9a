// SPDX-License-Identifier: GPL-2.0-or-later
//! Consumer processes: started with their output in files, bounded in time,
//! ended by PID and reaped.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::env::Target;

pub const START_TIMEOUT: Duration = Duration::from_secs(15);
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A private directory for one test run (removed on drop). Images go to
/// /dev/shm when it takes O_DIRECT (contrib vhost-user-blk opens with it),
/// else to the system temp directory.
pub struct WorkDir(pub PathBuf);

fn o_direct_ok(dir: &Path) -> bool {
    let p = dir.join(format!(".odirect-probe-{}", std::process::id()));
    if std::fs::write(&p, vec![0u8; 4096]).is_err() {
        return false;
    }
    use std::os::unix::fs::OpenOptionsExt;
    let ok = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p)
        .is_ok();
    let _ = std::fs::remove_file(&p);
    ok
}

impl WorkDir {
    pub fn new(tag: &str) -> Self {
        let shm = Path::new("/dev/shm");
        let base =
            if shm.is_dir() && o_direct_ok(shm) { shm.to_path_buf() } else { std::env::temp_dir() };
        Self::under(&base, tag)
    }

    /// On a disk file system (/var/tmp), where direct I/O takes real time.
    pub fn on_disk(tag: &str) -> Self {
        let v = Path::new("/var/tmp");
        let base =
            if v.is_dir() && o_direct_ok(v) { v.to_path_buf() } else { std::env::temp_dir() };
        Self::under(&base, tag)
    }

    fn under(base: &Path, tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let tag: String =
            tag.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
        let d = base.join(format!(
            "vu-cfe-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        WorkDir(d)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Start `t.bin args`, output to `<dir>/<name>.log`.
    pub fn spawn(t: &Target, dir: &WorkDir, name: &str, args: &[String]) -> Self {
        let log = dir.path(&format!("{name}.log"));
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(&t.bin);
        cmd.args(args).stdin(Stdio::null()).stdout(f.try_clone().unwrap()).stderr(f);
        if let Some(lp) = &t.lib_path {
            let mut v = lp.as_os_str().to_owned();
            if let Some(old) = std::env::var_os("LD_LIBRARY_PATH") {
                v.push(":");
                v.push(old);
            }
            cmd.env("LD_LIBRARY_PATH", v);
        }
        let child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {}: {e}", t.bin.display()));
        Proc { name: name.to_string(), child: Some(child), log, status: None }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(-1)
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Exit status if it has ended (reaped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    self.status = Some(st);
                    self.child = None;
                }
            }
        }
        self.status
    }

    /// Connect to its listening socket (bounded; fails if it dies).
    pub fn connect(&mut self, sock: &Path) -> UnixStream {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                panic!(
                    "{} exited ({st}) before accepting a connection; output:\n{}",
                    self.name,
                    self.output()
                );
            }
            if sock.exists() {
                if let Ok(s) = UnixStream::connect(sock) {
                    return s;
                }
            }
            if t0.elapsed() > START_TIMEOUT {
                panic!(
                    "{}: no socket {} after {START_TIMEOUT:?}; output:\n{}",
                    self.name,
                    sock.display(),
                    self.output()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Wait (bounded) for the process to end by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let t0 = Instant::now();
        loop {
            if let Some(st) = self.exited() {
                return Some(st);
            }
            if t0.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn signal(&mut self, sig: i32) {
        if self.exited().is_none() {
            // SAFETY: signalling our own child, which has not been reaped.
            unsafe { libc::kill(self.pid(), sig) };
        }
    }

    /// SIGKILL by PID and reap.
    pub fn kill(&mut self) -> ExitStatus {
        if let Some(st) = self.exited() {
            return st;
        }
        let mut c = self.child.take().unwrap();
        let _ = c.kill();
        let st = c.wait().unwrap();
        self.status = Some(st);
        st
    }

    /// SIGTERM, then SIGKILL after `timeout`; returns (status, ended by TERM).
    pub fn terminate(&mut self, timeout: Duration) -> (ExitStatus, bool) {
        if let Some(st) = self.exited() {
            return (st, true);
        }
        self.signal(libc::SIGTERM);
        match self.wait_exit(timeout) {
            Some(st) => (st, true),
            None => (self.kill(), false),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Write the initial image: byte i of the disk is a function of i and seed.
pub fn make_image(path: &Path, size: u64, seed: u64) -> Vec<u8> {
    let data = crate::common::pattern(seed, size as usize);
    std::fs::write(path, &data).unwrap();
    data
}
