// SPDX-License-Identifier: GPL-2.0-or-later
//! Raw vhost-user messages, for input the `vhost` crate refuses to send.

use std::io::{ErrorKind, Read};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::backend::Backend;
use super::mem::GuestMemory;
use super::session::{smoke, CTRL_TIMEOUT};

pub const VERSION: u32 = 1;
pub const F_REPLY: u32 = 4;
pub const F_NEED_REPLY: u32 = 8;

pub const GET_FEATURES: u32 = 1;
pub const SET_FEATURES: u32 = 2;
pub const SET_OWNER: u32 = 3;
pub const SET_MEM_TABLE: u32 = 5;
pub const SET_VRING_NUM: u32 = 8;
pub const SET_VRING_ADDR: u32 = 9;
pub const SET_VRING_BASE: u32 = 10;
pub const GET_VRING_BASE: u32 = 11;
pub const SET_VRING_KICK: u32 = 12;
pub const SET_VRING_CALL: u32 = 13;
pub const SET_VRING_ERR: u32 = 14;
pub const GET_PROTOCOL_FEATURES: u32 = 15;
pub const SET_PROTOCOL_FEATURES: u32 = 16;
pub const GET_QUEUE_NUM: u32 = 17;
pub const SET_VRING_ENABLE: u32 = 18;
pub const GET_CONFIG: u32 = 24;
pub const SET_CONFIG: u32 = 25;
pub const GET_MAX_MEM_SLOTS: u32 = 36;
pub const ADD_MEM_REG: u32 = 37;
pub const REM_MEM_REG: u32 = 38;

pub const PROTO_MQ: u64 = 1 << 0;
pub const PROTO_REPLY_ACK: u64 = 1 << 3;
pub const PROTO_CONFIG: u64 = 1 << 9;
pub const PROTO_CONFIGURE_MEM_SLOTS: u64 = 1 << 15;

pub const VRING_NOFD: u64 = 1 << 8;

/// What the backend did with a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Reaction {
    /// A reply (request code, flags, payload).
    Reply(u32, u32, Vec<u8>),
    /// The backend closed the connection.
    Closed,
    /// Nothing within the timeout.
    Timeout,
}

pub struct RawConn {
    pub s: UnixStream,
}

pub fn u64_payload(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

pub fn state_payload(index: u32, num: u32) -> Vec<u8> {
    let mut v = index.to_le_bytes().to_vec();
    v.extend_from_slice(&num.to_le_bytes());
    v
}

pub fn addr_payload(index: u32, flags: u32, desc: u64, used: u64, avail: u64, log: u64) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&index.to_le_bytes());
    v.extend_from_slice(&flags.to_le_bytes());
    for x in [desc, used, avail, log] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

/// (gpa, size, userspace_addr, mmap_offset)
pub fn region_bytes(r: (u64, u64, u64, u64)) -> Vec<u8> {
    let mut v = Vec::new();
    for x in [r.0, r.1, r.2, r.3] {
        v.extend_from_slice(&x.to_le_bytes());
    }
    v
}

pub fn mem_table_payload(nregions: u32, regions: &[(u64, u64, u64, u64)]) -> Vec<u8> {
    let mut v = nregions.to_le_bytes().to_vec();
    v.extend_from_slice(&0u32.to_le_bytes());
    for r in regions {
        v.extend(region_bytes(*r));
    }
    v
}

impl RawConn {
    pub fn connect(b: &mut Backend) -> Self {
        let s = b.connect();
        s.set_read_timeout(Some(CTRL_TIMEOUT)).unwrap();
        s.set_write_timeout(Some(CTRL_TIMEOUT)).unwrap();
        RawConn { s }
    }

    /// sendmsg() the bytes with the fds attached as SCM_RIGHTS.
    pub fn send_bytes(&self, bytes: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        let mut iov =
            libc::iovec { iov_base: bytes.as_ptr() as *mut libc::c_void, iov_len: bytes.len() };
        // SAFETY: plain FFI; buffers outlive the call; the cmsg buffer is
        // sized with CMSG_SPACE for the fds.
        unsafe {
            let space = libc::CMSG_SPACE((fds.len() * 4) as u32) as usize;
            let mut cbuf = vec![0u64; space.div_ceil(8).max(1)];
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            if !fds.is_empty() {
                msg.msg_control = cbuf.as_mut_ptr() as *mut libc::c_void;
                msg.msg_controllen = space;
                let c = libc::CMSG_FIRSTHDR(&msg);
                (*c).cmsg_level = libc::SOL_SOCKET;
                (*c).cmsg_type = libc::SCM_RIGHTS;
                (*c).cmsg_len = libc::CMSG_LEN((fds.len() * 4) as u32) as usize;
                std::ptr::copy_nonoverlapping(
                    fds.as_ptr(),
                    libc::CMSG_DATA(c) as *mut RawFd,
                    fds.len(),
                );
            }
            let r = libc::sendmsg(self.s.as_raw_fd(), &msg, libc::MSG_NOSIGNAL);
            if r < 0 {
                return Err(std::io::Error::last_os_error());
            }
            assert_eq!(r as usize, bytes.len(), "short sendmsg");
        }
        Ok(())
    }

    /// Header with an explicit size field, then `payload` (whatever its length).
    pub fn send_sized(
        &self,
        req: u32,
        flags: u32,
        size: u32,
        payload: &[u8],
        fds: &[RawFd],
    ) -> std::io::Result<()> {
        let mut m = Vec::new();
        m.extend_from_slice(&req.to_le_bytes());
        m.extend_from_slice(&(flags | VERSION).to_le_bytes());
        m.extend_from_slice(&size.to_le_bytes());
        m.extend_from_slice(payload);
        self.send_bytes(&m, fds)
    }

    pub fn send(&self, req: u32, flags: u32, payload: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
        self.send_sized(req, flags, payload.len() as u32, payload, fds)
    }

    fn read_exact_or(&self, buf: &mut [u8]) -> Result<(), Reaction> {
        let mut got = 0;
        while got < buf.len() {
            match (&self.s).read(&mut buf[got..]) {
                Ok(0) => return Err(Reaction::Closed),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {
                    return Err(Reaction::Timeout)
                }
                // ECONNRESET etc.: the backend went away.
                Err(_) => return Err(Reaction::Closed),
            }
        }
        Ok(())
    }

    /// Read one reply (bounded by the socket's read timeout).
    pub fn recv(&self) -> Reaction {
        let mut hdr = [0u8; 12];
        if let Err(r) = self.read_exact_or(&mut hdr) {
            return r;
        }
        let req = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
        let flags = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
        let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap());
        assert!(size <= 4096, "reply with absurd size {size}");
        let mut payload = vec![0u8; size as usize];
        if let Err(r) = self.read_exact_or(&mut payload) {
            return r;
        }
        Reaction::Reply(req, flags, payload)
    }

    pub fn set_timeout(&self, t: Duration) {
        self.s.set_read_timeout(Some(t)).unwrap();
    }

    /// Send and expect a successful reply; returns its payload.
    #[track_caller]
    pub fn call(&self, req: u32, payload: &[u8], fds: &[RawFd]) -> Vec<u8> {
        self.send(req, F_NEED_REPLY, payload, fds).expect("send");
        match self.recv() {
            Reaction::Reply(r, f, p) => {
                assert_eq!(r, req, "reply to another request");
                assert!(f & F_REPLY != 0, "reply without the REPLY flag");
                p
            }
            other => panic!("request {req}: {other:?}"),
        }
    }

    /// Send a request that must be acked with 0.
    #[track_caller]
    pub fn call_ack(&self, req: u32, payload: &[u8], fds: &[RawFd]) {
        let p = self.call(req, payload, fds);
        assert_eq!(p, 0u64.to_le_bytes(), "request {req} failed");
    }

    /// Feature negotiation with REPLY_ACK (NEED_REPLY is used only once
    /// REPLY_ACK is negotiated). Returns the device features.
    pub fn handshake(&self) -> u64 {
        let f = u64::from_le_bytes(self.call(GET_FEATURES, &[], &[])[..8].try_into().unwrap());
        let want = f & ((1 << 32) | (1 << 30) | (1 << 28) | (1 << 29));
        self.send(SET_FEATURES, 0, &u64_payload(want), &[]).unwrap();
        let pf =
            u64::from_le_bytes(self.call(GET_PROTOCOL_FEATURES, &[], &[])[..8].try_into().unwrap());
        let want_pf = PROTO_REPLY_ACK | PROTO_MQ | PROTO_CONFIG | PROTO_CONFIGURE_MEM_SLOTS;
        assert_eq!(pf & want_pf, want_pf, "protocol features {pf:#x}");
        self.send(SET_PROTOCOL_FEATURES, 0, &u64_payload(want_pf), &[]).unwrap();
        self.call_ack(SET_OWNER, &[], &[]);
        f
    }

    /// A valid SET_MEM_TABLE for `mem`.
    pub fn mem_table(&self, mem: &GuestMemory) {
        let infos = mem.region_infos();
        let regions: Vec<_> = infos
            .iter()
            .map(|r| (r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset))
            .collect();
        let fds: Vec<RawFd> = infos.iter().map(|r| r.mmap_handle).collect();
        self.call_ack(SET_MEM_TABLE, &mem_table_payload(regions.len() as u32, &regions), &fds);
    }
}

fn reply_u64(p: &[u8]) -> Option<u64> {
    if p.len() == 8 {
        Some(u64::from_le_bytes(p.try_into().unwrap()))
    } else {
        None
    }
}

/// After a hostile message (sent with NEED_REPLY): the backend must reject
/// it — an error reply, or the panic callback firing and the connection
/// being dropped — without crashing or hanging; then it must still serve a
/// new frontend. `ack_reply` says whether the request's normal reply is a
/// u64 status (so that a non-zero one is an error reply).
#[track_caller]
pub fn expect_rejected(b: &mut Backend, c: &RawConn, what: &str, ack_reply: bool) {
    match c.recv() {
        Reaction::Reply(_, _, p) if ack_reply && reply_u64(&p).map(|v| v != 0).unwrap_or(false) => {
        }
        Reaction::Reply(_, _, p) => {
            // Acked (or answered): acceptable only if the device then gave up.
            if !b.wait_stderr("vhost-user panic:", Duration::from_secs(2)) {
                b.assert_alive();
                panic!("{what}: accepted (reply payload {p:?}), no panic, no error");
            }
            match c.recv() {
                Reaction::Closed => {}
                Reaction::Timeout => panic!("{what}: panicked but the connection stayed open"),
                r => panic!("{what}: unexpected further reply {r:?}"),
            }
        }
        Reaction::Closed => {}
        Reaction::Timeout => {
            b.assert_alive();
            panic!("{what}: no reply and no disconnect within {CTRL_TIMEOUT:?} (hang)");
        }
    }
    b.assert_alive();
    // Leave this connection, so that the backend can take the next one.
    let _ = c.s.shutdown(std::net::Shutdown::Both);
    smoke(b);
    b.assert_alive();
}
