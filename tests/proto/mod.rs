// SPDX-License-Identifier: GPL-2.0-or-later
//! Protocol-parity test helpers: the examples-c/vhost-user-proto-test.c
//! backend (spawned with its own options), and a raw vhost-user frontend that
//! can send any message with any fds (the `vhost` crate frontend cannot
//! express inflight reconnects, in-band notifications, hostile messages...).
//! Guest memory, split rings and virtio-blk request layout come from
//! tests/common.
#![allow(dead_code)]

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::common::{self, Buf, Driver, GuestMemory, Prepared, SplitQueue};

pub const TIMEOUT: Duration = Duration::from_secs(10);

// Front-end requests (the common ones are shared with tests/common/raw.rs).
#[allow(unused_imports)] // each test file uses a different subset
pub use crate::common::raw::{
    ADD_MEM_REG, GET_CONFIG, GET_FEATURES, GET_MAX_MEM_SLOTS, GET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
    GET_VRING_BASE, REM_MEM_REG, SET_FEATURES, SET_MEM_TABLE, SET_OWNER, SET_PROTOCOL_FEATURES,
    SET_VRING_ADDR, SET_VRING_BASE, SET_VRING_CALL, SET_VRING_ENABLE, SET_VRING_ERR,
    SET_VRING_KICK, SET_VRING_NUM,
};
pub const RESET_OWNER: u32 = 4;
pub const SET_LOG_BASE: u32 = 6;
pub const SET_LOG_FD: u32 = 7;
pub const SET_BACKEND_REQ_FD: u32 = 21;
pub const POSTCOPY_ADVISE: u32 = 28;
pub const POSTCOPY_LISTEN: u32 = 29;
pub const POSTCOPY_END: u32 = 30;
pub const GET_INFLIGHT_FD: u32 = 31;
pub const SET_INFLIGHT_FD: u32 = 32;
pub const GPU_SET_SOCKET: u32 = 33;
pub const VRING_KICK: u32 = 35;
pub const GET_SHARED_OBJECT: u32 = 41;

// Back-end requests.
pub const B_CONFIG_CHANGE_MSG: u32 = 2;
pub const B_VRING_HOST_NOTIFIER_MSG: u32 = 3;
pub const B_VRING_CALL: u32 = 4;
pub const B_SHARED_OBJECT_ADD: u32 = 6;
pub const B_SHARED_OBJECT_REMOVE: u32 = 7;
pub const B_SHARED_OBJECT_LOOKUP: u32 = 8;

// Protocol features.
pub const PF_MQ: u64 = 1 << 0;
pub const PF_LOG_SHMFD: u64 = 1 << 1;
pub const PF_REPLY_ACK: u64 = 1 << 3;
pub const PF_BACKEND_REQ: u64 = 1 << 5;
pub const PF_PAGEFAULT: u64 = 1 << 8;
pub const PF_CONFIG: u64 = 1 << 9;
pub const PF_BACKEND_SEND_FD: u64 = 1 << 10;
pub const PF_HOST_NOTIFIER: u64 = 1 << 11;
pub const PF_INFLIGHT_SHMFD: u64 = 1 << 12;
pub const PF_INBAND_NOTIFICATIONS: u64 = 1 << 14;
pub const PF_CONFIGURE_MEM_SLOTS: u64 = 1 << 15;
pub const PF_SHARED_OBJECT: u64 = 1 << 18;

// Virtio features.
pub const F_LOG_ALL: u64 = 1 << 26;
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
pub const F_VERSION_1: u64 = 1 << 32;

pub const FLAG_VERSION: u32 = 1;
pub const FLAG_REPLY: u32 = 1 << 2;
pub const FLAG_NEED_REPLY: u32 = 1 << 3;
pub const NOFD: u64 = 1 << 8;

// Device commands of the proto-test backend (virtio-blk header type).
pub const CMD_CONFIG_CHANGE: u32 = 0x1000;
pub const CMD_HOST_NOTIFIER: u32 = 0x1001;
pub const CMD_SHOBJ_ADD: u32 = 0x1002;
pub const CMD_SHOBJ_RM: u32 = 0x1003;
pub const CMD_SHOBJ_LOOKUP: u32 = 0x1004;
pub const CMD_QUEUE_ENABLED: u32 = 0x1005;

// ---------------------------------------------------------------- backend

use crate::common::backend::collect;

/// One run of the proto-test backend (killed and reaped on drop).
pub struct ProtoBackend {
    child: Child,
    pub socket: PathBuf,
    stderr: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    pub status: Option<ExitStatus>,
}

impl ProtoBackend {
    /// Start the backend serving `socket` with the image file `image`.
    pub fn spawn(socket: &Path, image: &Path, args: &[&str]) -> Self {
        Self::spawn_logging(socket, image, args, None)
    }

    /// `spawn`, with LIBVHOST_USER_LOG set to `log` (removed if None).
    pub fn spawn_logging(socket: &Path, image: &Path, args: &[&str], log: Option<&str>) -> Self {
        let bin = common::example("vhost-user-proto-test");
        let mut cmd = Command::new(&bin);
        match log {
            Some(level) => cmd.env("LIBVHOST_USER_LOG", level),
            None => cmd.env_remove("LIBVHOST_USER_LOG"),
        };
        let mut child = cmd
            .arg("-s")
            .arg(socket)
            .arg("-b")
            .arg(image)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        let (stderr, h) = collect(child.stderr.take().unwrap());
        ProtoBackend { child, socket: socket.to_path_buf(), stderr, reader: Some(h), status: None }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            if let Ok(Some(st)) = self.child.try_wait() {
                self.status = Some(st);
            }
        }
        self.status
    }

    pub fn assert_alive(&mut self) {
        if let Some(st) = self.exited() {
            panic!("backend died: {}\nstderr:\n{}", common::describe(st), self.stderr());
        }
    }

    /// Connect (bounded retries until the backend listens).
    pub fn connect(&mut self) -> Conn {
        let t0 = Instant::now();
        loop {
            match UnixStream::connect(&self.socket) {
                Ok(s) => return Conn::new(s),
                Err(e) => {
                    if let Some(st) = self.exited() {
                        panic!(
                            "backend exited ({}) before accepting: {e}\n{}",
                            common::describe(st),
                            self.stderr()
                        );
                    }
                    assert!(t0.elapsed() < TIMEOUT, "cannot connect: {e}\n{}", self.stderr());
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    /// Wait (bounded) until stderr contains `pat`.
    pub fn wait_stderr(&self, pat: &str, timeout: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if self.stderr().contains(pat) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        self.stderr().contains(pat)
    }

    /// SIGKILL by PID and reap.
    pub fn sigkill(&mut self) -> ExitStatus {
        if self.exited().is_none() {
            // SAFETY: our own unreaped child.
            unsafe { libc::kill(self.pid(), libc::SIGKILL) };
            self.status = Some(self.child.wait().unwrap());
        }
        self.join();
        self.status.unwrap()
    }

    /// Wait (bounded) for the process to exit by itself.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(st) = self.exited() {
                self.join();
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    fn join(&mut self) {
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ProtoBackend {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        self.join();
        if std::thread::panicking() {
            eprintln!("--- proto backend stderr ---\n{}--- end ---", self.stderr());
        }
    }
}

/// A temporary directory with an image file of `size` bytes (initial content
/// as tests/common's initial_image).
pub fn workdir(size: u64) -> (common::TempDir, PathBuf, PathBuf) {
    let dir = common::TempDir::new();
    let image = dir.0.join("disk.img");
    std::fs::write(&image, common::initial_image(size)).unwrap();
    let sock = dir.0.join("vu.sock");
    (dir, sock, image)
}

// ---------------------------------------------------------------- raw messages

pub struct Msg {
    pub request: u32,
    pub flags: u32,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Msg {
    pub fn u64(&self) -> u64 {
        assert!(self.payload.len() >= 8, "payload of {} bytes has no u64", self.payload.len());
        u64::from_le_bytes(self.payload[..8].try_into().unwrap())
    }
    pub fn u32_at(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.payload[off..off + 4].try_into().unwrap())
    }
    pub fn u64_at(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.payload[off..off + 8].try_into().unwrap())
    }
}

/// One end of a vhost-user socket (front-end connection or back-end channel).
pub struct Conn {
    pub sock: UnixStream,
}

impl Conn {
    pub fn new(sock: UnixStream) -> Self {
        sock.set_read_timeout(Some(TIMEOUT)).unwrap();
        sock.set_write_timeout(Some(TIMEOUT)).unwrap();
        Conn { sock }
    }

    pub fn send(&self, request: u32, flags: u32, payload: &[u8], fds: &[RawFd]) {
        let mut bytes = Vec::with_capacity(12 + payload.len());
        bytes.extend_from_slice(&request.to_le_bytes());
        bytes.extend_from_slice(&flags.to_le_bytes());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(payload);
        send_with_fds(self.sock.as_raw_fd(), &bytes, fds)
            .unwrap_or_else(|e| panic!("send request {request}: {e}"));
    }

    /// Receive one message (bounded by the socket timeout).
    pub fn try_recv(&self) -> std::io::Result<Msg> {
        let mut hdr = [0u8; 12];
        let fds = recv_with_fds(self.sock.as_raw_fd(), &mut hdr)?;
        let request = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
        let flags = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
        let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap()) as usize;
        assert!(size <= 4096 + 64, "message size {size}");
        let mut payload = vec![0u8; size];
        (&self.sock).read_exact(&mut payload)?;
        Ok(Msg { request, flags, payload, fds })
    }

    pub fn recv(&self) -> Msg {
        self.try_recv().unwrap_or_else(|e| panic!("receiving a message: {e}"))
    }

    /// Is there something to read within `timeout`?
    pub fn readable(&self, timeout: Duration) -> bool {
        common::wait_readable(self.sock.as_raw_fd(), timeout)
    }

    /// Send a request that has a reply of its own and return that reply.
    pub fn call(&self, request: u32, payload: &[u8], fds: &[RawFd]) -> Msg {
        self.send(request, FLAG_VERSION, payload, fds);
        let r = self.recv();
        assert_eq!(r.request, request, "reply to request {request} has request {}", r.request);
        assert_eq!(r.flags & 3, 1, "reply version");
        assert!(r.flags & FLAG_REPLY != 0, "reply flag missing");
        r
    }

    /// Send with NEED_REPLY and return the ack value.
    pub fn ack(&self, request: u32, payload: &[u8], fds: &[RawFd]) -> u64 {
        self.send(request, FLAG_VERSION | FLAG_NEED_REPLY, payload, fds);
        let r = self.recv();
        assert_eq!(r.request, request, "ack for request {request} has request {}", r.request);
        assert!(r.flags & FLAG_REPLY != 0, "reply flag missing");
        assert_eq!(r.payload.len(), 8, "ack payload size");
        r.u64()
    }

    /// Send with NEED_REPLY and require a zero ack.
    #[track_caller]
    pub fn ok(&self, request: u32, payload: &[u8], fds: &[RawFd]) {
        let v = self.ack(request, payload, fds);
        assert_eq!(v, 0, "request {request} acked with {v}");
    }

    /// A reply to a back-end request (on the back-end channel).
    pub fn reply_u64(&self, to: &Msg, v: u64, fds: &[RawFd]) {
        self.send(to.request, FLAG_VERSION | FLAG_REPLY, &v.to_le_bytes(), fds);
    }
}

fn send_with_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let mut iov =
        libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
    let mut cbuf = vec![0u64; 64];
    // SAFETY: msghdr filled with valid pointers into live buffers; CMSG macros
    // stay within cbuf (64 * 8 bytes is room for far more than 8 fds).
    unsafe {
        let mut mh: libc::msghdr = std::mem::zeroed();
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        if !fds.is_empty() {
            let len = libc::CMSG_SPACE((fds.len() * 4) as u32) as usize;
            assert!(len <= cbuf.len() * 8);
            mh.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
            mh.msg_controllen = len;
            let c = libc::CMSG_FIRSTHDR(&mh);
            (*c).cmsg_level = libc::SOL_SOCKET;
            (*c).cmsg_type = libc::SCM_RIGHTS;
            (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr(),
                libc::CMSG_DATA(c) as *mut RawFd,
                fds.len(),
            );
        }
        let n = libc::sendmsg(sock, &mh, libc::MSG_NOSIGNAL);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n as usize != bytes.len() {
            return Err(std::io::Error::other(format!("short send {n}")));
        }
    }
    Ok(())
}

fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> std::io::Result<Vec<OwnedFd>> {
    let mut iov =
        libc::iovec { iov_base: buf.as_mut_ptr() as *mut libc::c_void, iov_len: buf.len() };
    let mut cbuf = vec![0u64; 64];
    let mut fds = Vec::new();
    // SAFETY: as in send_with_fds; received fds are owned by us from here on.
    unsafe {
        let mut mh: libc::msghdr = std::mem::zeroed();
        mh.msg_iov = &mut iov;
        mh.msg_iovlen = 1;
        mh.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
        mh.msg_controllen = cbuf.len() * 8;
        let n = libc::recvmsg(sock, &mut mh, libc::MSG_CMSG_CLOEXEC | libc::MSG_WAITALL);
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if n == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "peer closed"));
        }
        let mut c = libc::CMSG_FIRSTHDR(&mh);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let n = ((*c).cmsg_len - libc::CMSG_LEN(0) as usize) / 4;
                let p = libc::CMSG_DATA(c) as *const RawFd;
                for i in 0..n {
                    fds.push(OwnedFd::from_raw_fd(*p.add(i)));
                }
            }
            c = libc::CMSG_NXTHDR(&mh, c);
        }
        if (n as usize) < buf.len() {
            return Err(std::io::Error::other(format!("short header: {n} bytes")));
        }
    }
    Ok(fds)
}

// ---------------------------------------------------------------- payloads

pub fn state(index: u32, num: u32) -> Vec<u8> {
    let mut v = index.to_le_bytes().to_vec();
    v.extend_from_slice(&num.to_le_bytes());
    v
}

pub fn u64p(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub fn region_bytes(gpa: u64, size: u64, uaddr: u64, offset: u64) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [gpa, size, uaddr, offset] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// ADD_MEM_REG / REM_MEM_REG payload (u64 padding + region).
pub fn memreg(gpa: u64, size: u64, uaddr: u64, offset: u64) -> Vec<u8> {
    let mut v = vec![0u8; 8];
    v.extend_from_slice(&region_bytes(gpa, size, uaddr, offset));
    v
}

pub fn inflight(mmap_size: u64, mmap_offset: u64, num_queues: u16, queue_size: u16) -> Vec<u8> {
    let mut v = mmap_size.to_le_bytes().to_vec();
    v.extend_from_slice(&mmap_offset.to_le_bytes());
    v.extend_from_slice(&num_queues.to_le_bytes());
    v.extend_from_slice(&queue_size.to_le_bytes());
    v.extend_from_slice(&[0u8; 4]); // struct padding (sizeof == 24)
    v
}

pub fn memfd(name: &str, size: u64) -> std::fs::File {
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: plain syscall with a valid C string.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd we own.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    f.set_len(size).unwrap();
    f
}

/// Number of open fds of a process.
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

pub fn eventfd() -> OwnedFd {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
    assert!(fd >= 0);
    // SAFETY: fresh fd.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Read (and reset) an eventfd counter; 0 if not signalled.
pub fn eventfd_take(fd: RawFd) -> u64 {
    let mut v = 0u64;
    // SAFETY: 8-byte read into a u64.
    let n = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    if n == 8 {
        v
    } else {
        0
    }
}

// ---------------------------------------------------------------- front-end

/// A raw front-end: connection, guest memory, queues of layout `Q`.
pub struct Front<Q: Driver = SplitQueue> {
    pub c: Conn,
    pub mem: Arc<GuestMemory>,
    pub qs: Vec<Q>,
    pub features: u64,
    pub pf: u64,
}

/// SET_OWNER, feature negotiation. `features`/`pf` must be offered.
pub fn handshake(c: &Conn, features: u64, pf: u64) -> (u64, u64) {
    c.send(SET_OWNER, FLAG_VERSION, &[], &[]);
    let offered = c.call(GET_FEATURES, &[], &[]).u64();
    assert_eq!(
        offered & features,
        features,
        "backend offers features {offered:#x}, want {features:#x}"
    );
    c.send(SET_FEATURES, FLAG_VERSION, &u64p(features), &[]);
    let poffered = c.call(GET_PROTOCOL_FEATURES, &[], &[]).u64();
    assert_eq!(poffered & pf, pf, "backend offers protocol features {poffered:#x}, want {pf:#x}");
    c.send(SET_PROTOCOL_FEATURES, FLAG_VERSION, &u64p(pf), &[]);
    (offered, poffered)
}

impl Front<SplitQueue> {
    /// SET_OWNER, feature negotiation. `features`/`pf` must be offered.
    pub fn handshake(c: &Conn, features: u64, pf: u64) -> (u64, u64) {
        handshake(c, features, pf)
    }

    /// Connect, negotiate, and install `mem` with SET_MEM_TABLE (acked if REPLY_ACK).
    pub fn new(c: Conn, mem: Arc<GuestMemory>, features: u64, pf: u64) -> Self {
        Self::new_as(c, mem, features, pf)
    }

    /// Connect and negotiate, without sending a memory table.
    pub fn without_table(c: Conn, mem: Arc<GuestMemory>, features: u64, pf: u64) -> Self {
        Self::without_table_as(c, mem, features, pf)
    }
}

impl<Q: Driver> Front<Q> {
    /// Like `new`, with rings of layout `Q` (`Q::FEATURES` added to `features`).
    pub fn new_as(c: Conn, mem: Arc<GuestMemory>, features: u64, pf: u64) -> Self {
        let f = Self::without_table_as(c, mem, features, pf);
        f.set_mem_table();
        f
    }

    pub fn without_table_as(c: Conn, mem: Arc<GuestMemory>, features: u64, pf: u64) -> Self {
        let features = features | Q::FEATURES;
        handshake(&c, features, pf);
        Front { c, mem, qs: Vec::new(), features, pf }
    }

    /// ADD_MEM_REG for region `i` of the guest memory.
    pub fn add_region(&self, i: usize) {
        let r = &self.mem.regions[i];
        self.req(ADD_MEM_REG, &memreg(r.gpa, r.size, r.host as u64, 0), &[r.file.as_raw_fd()]);
    }

    /// REM_MEM_REG for region `i` of the guest memory (with its fd, as QEMU sends).
    pub fn rem_region(&self, i: usize) {
        let r = &self.mem.regions[i];
        self.req(REM_MEM_REG, &memreg(r.gpa, r.size, r.host as u64, 0), &[r.file.as_raw_fd()]);
    }

    pub fn reply_ack(&self) -> bool {
        self.pf & PF_REPLY_ACK != 0
    }

    /// Send a request that has no reply of its own, acked when REPLY_ACK is on.
    #[track_caller]
    pub fn req(&self, request: u32, payload: &[u8], fds: &[RawFd]) {
        if self.reply_ack() {
            self.c.ok(request, payload, fds);
        } else {
            self.c.send(request, FLAG_VERSION, payload, fds);
        }
    }

    pub fn set_mem_table(&self) {
        let mut p = (self.mem.regions.len() as u32).to_le_bytes().to_vec();
        p.extend_from_slice(&[0u8; 4]);
        let mut fds = Vec::new();
        for r in &self.mem.regions {
            p.extend_from_slice(&region_bytes(r.gpa, r.size, r.host as u64, 0));
            fds.push(r.file.as_raw_fd());
        }
        self.req(SET_MEM_TABLE, &p, &fds);
    }

    /// Allocate queue i (size `size`, `base` slots after a reset).
    pub fn add_queue(&mut self, size: u16, base: u16) -> usize {
        self.qs.push(Q::create(&self.mem, size, false, base));
        self.qs.len() - 1
    }

    pub fn vring_addr(&self, i: usize, log_addr: Option<u64>) -> Vec<u8> {
        let cfg = self.qs[i].config(0);
        let mut p = (i as u32).to_le_bytes().to_vec();
        p.extend_from_slice(&(if log_addr.is_some() { 1u32 } else { 0 }).to_le_bytes());
        for a in
            [cfg.desc_table_addr, cfg.used_ring_addr, cfg.avail_ring_addr, log_addr.unwrap_or(0)]
        {
            p.extend_from_slice(&a.to_le_bytes());
        }
        p
    }

    /// SET_VRING_NUM/BASE/ADDR/CALL/KICK/ENABLE. `call`/`kick` false: NOFD.
    pub fn start_queue_with(
        &mut self,
        i: usize,
        base: u32,
        log_addr: Option<u64>,
        call: bool,
        kick: bool,
    ) {
        let q = &self.qs[i];
        self.req(SET_VRING_NUM, &state(i as u32, q.size() as u32), &[]);
        self.req(SET_VRING_BASE, &state(i as u32, base), &[]);
        self.req(SET_VRING_ADDR, &self.vring_addr(i, log_addr), &[]);
        if call {
            self.req(SET_VRING_CALL, &u64p(i as u64), &[q.call_fd().as_raw_fd()]);
        } else {
            self.req(SET_VRING_CALL, &u64p(i as u64 | NOFD), &[]);
        }
        if kick {
            self.req(SET_VRING_KICK, &u64p(i as u64), &[q.kick_fd().as_raw_fd()]);
        } else {
            self.req(SET_VRING_KICK, &u64p(i as u64 | NOFD), &[]);
        }
        self.req(SET_VRING_ENABLE, &state(i as u32, 1), &[]);
        self.qs[i].take_calls();
    }

    pub fn start_queue(&mut self, i: usize, base: u32, log_addr: Option<u64>) {
        self.start_queue_with(i, base, log_addr, true, true)
    }

    /// Publish a prepared request on queue q and kick; returns its head.
    pub fn submit(&mut self, q: usize, p: &Prepared) -> u16 {
        self.submit_nokick(q, p, true)
    }

    pub fn submit_nokick(&mut self, q: usize, p: &Prepared, kick: bool) -> u16 {
        let vq = &mut self.qs[q];
        let head = if p.indirect { vq.add_indirect(&p.bufs) } else { vq.add(&p.bufs) };
        vq.publish(head);
        if kick {
            vq.kick_now();
        }
        head
    }

    /// Submit, wait for the completion (bounded), return the status byte and used length.
    pub fn io(&mut self, q: usize, p: &Prepared) -> (u8, u32) {
        let head = self.submit(q, p);
        let (id, len) = self.qs[q].wait_used(TIMEOUT);
        assert_eq!(id, head, "completion for an unexpected head");
        (self.mem.read(p.status_gpa, 1)[0], len)
    }
}

/// A virtio-blk style request with every buffer at a chosen guest address:
/// header at `hdr`, data at `data` (split into `seg`-byte descriptors), status
/// at `status`. `out` non-empty: a write of `out`; else a read of `in_len`.
#[allow(clippy::too_many_arguments)]
pub fn prepare_at(
    mem: &GuestMemory,
    ty: u32,
    sector: u64,
    out: &[u8],
    in_len: u32,
    hdr: u64,
    data: u64,
    status: u64,
    seg: u32,
) -> Prepared {
    mem.write_u32(hdr, ty);
    mem.write_u32(hdr + 4, 0);
    mem.write_u64(hdr + 8, sector);
    let (len, write) = if out.is_empty() { (in_len, true) } else { (out.len() as u32, false) };
    if write {
        mem.fill(data, len as usize, 0xee);
    } else {
        mem.write(data, out);
    }
    let mut bufs = vec![Buf::out(hdr, 16)];
    let mut off = 0u32;
    while off < len {
        let n = (len - off).min(seg);
        bufs.push(Buf { gpa: data + off as u64, len: n, write });
        off += n;
    }
    bufs.push(Buf::inb(status, 1));
    mem.write(status, &[0xff]);
    Prepared { ty, bufs, data_gpa: data, data_len: len, status_gpa: status, indirect: false }
}

/// A device command request (header type `cmd`, `arg` as out data, `in_len`
/// device-writable bytes before the status), allocated from `mem`.
pub fn command(mem: &GuestMemory, cmd: u32, arg: &[u8], in_len: u32) -> Prepared {
    let hdr = mem.alloc(16, 16);
    mem.write_u32(hdr, cmd);
    mem.write_u32(hdr + 4, 0);
    mem.write_u64(hdr + 8, 0);
    let mut bufs = vec![Buf::out(hdr, 16)];
    let mut data_gpa = 0;
    if !arg.is_empty() {
        let a = mem.alloc(arg.len() as u64, 8);
        mem.write(a, arg);
        bufs.push(Buf::out(a, arg.len() as u32));
    }
    if in_len > 0 {
        data_gpa = mem.alloc(in_len as u64, 8);
        bufs.push(Buf::inb(data_gpa, in_len));
    }
    let status = mem.alloc(1, 1);
    mem.write(status, &[0xff]);
    bufs.push(Buf::inb(status, 1));
    Prepared { ty: cmd, bufs, data_gpa, data_len: in_len, status_gpa: status, indirect: false }
}
