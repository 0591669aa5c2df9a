// SPDX-License-Identifier: GPL-2.0-or-later
//! A vhost-user frontend session driven by the rust-vmm `vhost` crate, with
//! our own guest memory and virtqueues.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::{Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;

use super::backend::Backend;
use super::blk::*;
use super::mem::GuestMemory;
use super::raw::{F_NEED_REPLY, SET_VRING_BASE, VERSION};
use super::ring::Driver;
use super::vring::SplitQueue;

/// Bound on every control-plane reply (vhost 0.18 would wait forever).
pub const CTRL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on every data-plane completion.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct SessionOpts {
    pub queues: u16,
    pub queue_size: u16,
    pub event_idx: bool,
    pub indirect: bool,
    /// Initial avail/used index (SET_VRING_BASE).
    pub base: u16,
    /// Guest memory regions (gpa, size).
    pub layout: Vec<(u64, u64)>,
    /// Set NEED_REPLY on every request (with REPLY_ACK negotiated).
    pub need_reply: bool,
    /// Start (and enable) the queues during setup.
    pub start_queues: bool,
}

impl Default for SessionOpts {
    fn default() -> Self {
        SessionOpts {
            queues: 1,
            queue_size: 256,
            event_idx: false,
            indirect: true,
            base: 0,
            layout: vec![(0, 4 << 20)],
            need_reply: true,
            start_queues: true,
        }
    }
}

/// Bounds control calls: vhost 0.18 retries EAGAIN from a socket read
/// timeout forever, so instead a watchdog thread shuts the socket down when
/// an armed deadline passes, which makes the pending call fail.
pub struct Watchdog {
    state: Arc<(Mutex<WatchState>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Default)]
struct WatchState {
    deadline: Option<Instant>,
    fired: bool,
    stop: bool,
}

impl Watchdog {
    pub fn new(sock: UnixStream) -> Self {
        let state = Arc::new((Mutex::new(WatchState::default()), Condvar::new()));
        let st = state.clone();
        let thread = std::thread::spawn(move || {
            let (m, cv) = &*st;
            let mut g = m.lock().unwrap();
            loop {
                if g.stop {
                    break;
                }
                match g.deadline {
                    Some(d) if Instant::now() >= d => {
                        let _ = sock.shutdown(std::net::Shutdown::Both);
                        g.fired = true;
                        g.deadline = None;
                    }
                    Some(d) => g = cv.wait_timeout(g, d - Instant::now()).unwrap().0,
                    None => g = cv.wait(g).unwrap(),
                }
            }
        });
        Watchdog { state, thread: Some(thread) }
    }

    pub fn arm(&self, t: Duration) {
        self.state.0.lock().unwrap().deadline = Some(Instant::now() + t);
        self.state.1.notify_all();
    }

    /// Disarm; true if the deadline had passed (the socket is shut down).
    pub fn disarm(&self) -> bool {
        let mut g = self.state.0.lock().unwrap();
        g.deadline = None;
        g.fired
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.state.0.lock().unwrap().stop = true;
        self.state.1.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A session whose queues use the ring layout `Q` (split by default).
pub struct Session<Q: Driver = SplitQueue> {
    pub fe: Frontend,
    pub watchdog: Watchdog,
    /// The same socket, for messages the `vhost` crate cannot express
    /// (a packed ring's 32-bit SET_VRING_BASE).
    raw: UnixStream,
    pub mem: Arc<GuestMemory>,
    pub qs: Vec<Q>,
    pub features: u64,
    pub acked: u64,
    pub protocol: VhostUserProtocolFeatures,
    pub opts: SessionOpts,
}

/// Panic with context if a control call fails.
#[track_caller]
pub fn ok<T, E: std::fmt::Debug>(r: Result<T, E>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{what} failed: {e:?}"),
    }
}

impl Session<SplitQueue> {
    pub fn connect(backend: &mut Backend, opts: SessionOpts) -> Self {
        Self::connect_as(backend, opts)
    }

    pub fn from_stream(stream: UnixStream, opts: SessionOpts) -> Self {
        Self::from_stream_as(stream, opts)
    }
}

impl<Q: Driver> Session<Q> {
    /// Connect with rings of layout `Q` (`Q::FEATURES` acked).
    pub fn connect_as(backend: &mut Backend, opts: SessionOpts) -> Self {
        let stream = backend.connect();
        Self::from_stream_as(stream, opts)
    }

    pub fn from_stream_as(stream: UnixStream, opts: SessionOpts) -> Self {
        stream.set_read_timeout(Some(CTRL_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CTRL_TIMEOUT)).unwrap();
        let watchdog = Watchdog::new(stream.try_clone().unwrap());
        let raw = stream.try_clone().unwrap();
        let fe = Frontend::from_stream(stream, opts.queues as u64);
        let mem = GuestMemory::new(&opts.layout);
        let mut s = Session {
            fe,
            watchdog,
            raw,
            mem,
            qs: Vec::new(),
            features: 0,
            acked: 0,
            protocol: VhostUserProtocolFeatures::empty(),
            opts,
        };
        s.ctl("SET_OWNER", |fe| fe.set_owner());
        let features = s.ctl("GET_FEATURES", |fe| fe.get_features());
        assert!(
            features & VHOST_USER_F_PROTOCOL_FEATURES != 0,
            "backend lacks PROTOCOL_FEATURES: {features:#x}"
        );
        let mut want = Q::FEATURES
            | VIRTIO_F_VERSION_1
            | VHOST_USER_F_PROTOCOL_FEATURES
            | VIRTIO_BLK_F_SEG_MAX
            | VIRTIO_BLK_F_BLK_SIZE
            | VIRTIO_BLK_F_FLUSH
            | VIRTIO_BLK_F_CONFIG_WCE;
        if s.opts.queues > 1 {
            want |= VIRTIO_BLK_F_MQ;
        }
        if s.opts.event_idx {
            want |= VIRTIO_RING_F_EVENT_IDX;
        }
        if s.opts.indirect {
            want |= VIRTIO_RING_F_INDIRECT_DESC;
        }
        assert_eq!(features & want, want, "backend features {features:#x} lack some of {want:#x}");
        s.ctl("SET_FEATURES", |fe| fe.set_features(want));
        let pf = s.ctl("GET_PROTOCOL_FEATURES", |fe| fe.get_protocol_features());
        let need = VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK;
        assert!(pf.contains(need), "backend protocol features {pf:?} lack {need:?}");
        s.ctl("SET_PROTOCOL_FEATURES", |fe| fe.set_protocol_features(need));
        if s.opts.need_reply {
            s.fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        let nq = s.ctl("GET_QUEUE_NUM", |fe| fe.get_queue_num());
        assert!(nq >= s.opts.queues as u64, "backend has {nq} queues, want {}", s.opts.queues);
        let regions = s.mem.region_infos();
        s.ctl("SET_MEM_TABLE", |fe| fe.set_mem_table(&regions));
        s.qs = (0..s.opts.queues)
            .map(|_| Q::create(&s.mem, s.opts.queue_size, s.opts.event_idx, s.opts.base))
            .collect();
        s.features = features;
        s.acked = want;
        s.protocol = need;
        if s.opts.start_queues {
            for i in 0..s.qs.len() {
                s.start_queue(i);
            }
        }
        s
    }

    /// Run one control call under the watchdog; Err on failure or timeout.
    pub fn try_ctl<R>(
        &mut self,
        f: impl FnOnce(&mut Frontend) -> vhost::Result<R>,
    ) -> Result<R, String> {
        self.watchdog.arm(CTRL_TIMEOUT);
        let r = f(&mut self.fe);
        let fired = self.watchdog.disarm();
        match r {
            Ok(v) if !fired => Ok(v),
            Ok(_) => Err("timed out".into()),
            Err(e) if fired => Err(format!("timed out after {CTRL_TIMEOUT:?} ({e:?})")),
            Err(e) => Err(format!("{e:?}")),
        }
    }

    /// Like try_ctl, panicking with context on failure.
    #[track_caller]
    pub fn ctl<R>(&mut self, what: &str, f: impl FnOnce(&mut Frontend) -> vhost::Result<R>) -> R {
        match self.try_ctl(f) {
            Ok(v) => v,
            Err(e) => panic!("{what} failed: {e}"),
        }
    }

    /// SET_VRING_NUM/BASE/ADDR/CALL/KICK/ENABLE for queue i.
    pub fn start_queue(&mut self, i: usize) {
        let base = self.qs[i].ring_state();
        self.start_queue_at(i, base);
    }

    /// Like start_queue, with an explicit SET_VRING_BASE value and fresh
    /// kick/call eventfds.
    pub fn restart_queue(&mut self, i: usize, base: u32) {
        self.qs[i].renew_eventfds();
        self.start_queue_at(i, base);
    }

    /// SET_VRING_BASE with any 32-bit value (the `vhost` crate only sends
    /// 16 bits); Err if the backend refuses or fails to answer.
    pub fn set_vring_base(&mut self, i: usize, base: u32) -> Result<(), String> {
        if let Ok(b) = u16::try_from(base) {
            return self.try_ctl(|fe| fe.set_vring_base(i, b));
        }
        let flags = VERSION | if self.opts.need_reply { F_NEED_REPLY } else { 0 };
        let mut m = Vec::new();
        for v in [SET_VRING_BASE, flags, 8, i as u32, base] {
            m.extend_from_slice(&v.to_le_bytes());
        }
        (&self.raw).write_all(&m).map_err(|e| format!("sending SET_VRING_BASE: {e}"))?;
        if self.opts.need_reply {
            let mut r = [0u8; 20];
            (&self.raw).read_exact(&mut r).map_err(|e| format!("SET_VRING_BASE reply: {e}"))?;
            let req = u32::from_le_bytes(r[0..4].try_into().unwrap());
            let size = u32::from_le_bytes(r[8..12].try_into().unwrap());
            let v = u64::from_le_bytes(r[12..20].try_into().unwrap());
            if req != SET_VRING_BASE || size != 8 || v != 0 {
                return Err(format!("SET_VRING_BASE reply: request {req} size {size} value {v}"));
            }
        }
        Ok(())
    }

    fn start_queue_at(&mut self, i: usize, base: u32) {
        let size = self.qs[i].size();
        let cfg = self.qs[i].config(0);
        let call = self.qs[i].call_fd().try_clone().unwrap();
        let kick = self.qs[i].kick_fd().try_clone().unwrap();
        self.ctl("SET_VRING_NUM", |fe| fe.set_vring_num(i, size));
        if let Err(e) = self.set_vring_base(i, base) {
            panic!("SET_VRING_BASE {base:#x} failed: {e}");
        }
        self.ctl("SET_VRING_ADDR", |fe| fe.set_vring_addr(i, &cfg));
        self.ctl("SET_VRING_CALL", |fe| fe.set_vring_call(i, &call));
        self.ctl("SET_VRING_KICK", |fe| fe.set_vring_kick(i, &kick));
        self.ctl("SET_VRING_ENABLE", |fe| fe.set_vring_enable(i, true));
        // libvhost-user signals a new call fd once (in case a reconnecting
        // driver missed an interrupt): start counting from zero.
        self.qs[i].take_calls();
    }

    /// GET_VRING_BASE: stops queue i, returns the backend's next avail index.
    pub fn stop_queue(&mut self, i: usize) -> u32 {
        self.ctl("GET_VRING_BASE", |fe| fe.get_vring_base(i))
    }

    pub fn get_config_raw(&mut self, len: usize) -> Result<Vec<u8>, String> {
        let buf = vec![0u8; len];
        let (_, payload) =
            self.try_ctl(|fe| fe.get_config(0, len as u32, VhostUserConfigFlags::empty(), &buf))?;
        Ok(payload.to_vec())
    }

    #[track_caller]
    pub fn get_config(&mut self, len: usize) -> Vec<u8> {
        match self.get_config_raw(len) {
            Ok(v) => v,
            Err(e) => panic!("GET_CONFIG failed: {e}"),
        }
    }

    /// Submit a prepared request on queue q (kicking per EVENT_IDX/NO_NOTIFY).
    pub fn submit(&mut self, q: usize, p: &Prepared) -> u16 {
        let vq = &mut self.qs[q];
        let head = if p.indirect { vq.add_indirect(&p.bufs) } else { vq.add(&p.bufs) };
        vq.publish(head);
        vq.kick_if_needed();
        head
    }

    /// One synchronous request on queue q.
    pub fn io(
        &mut self,
        q: usize,
        ty: u32,
        sector: u64,
        out: &[u8],
        in_len: u32,
        l: Layout,
    ) -> Completion {
        let mark = self.mem.mark();
        let p = prepare(&self.mem, ty, sector, out, in_len, l);
        let head = self.submit(q, &p);
        let (id, len) = self.qs[q].wait_used(IO_TIMEOUT);
        assert_eq!(id, head, "completion for an unexpected head");
        let c = finish(&self.mem, &p, len);
        self.mem.release(mark);
        c
    }

    pub fn write(&mut self, q: usize, sector: u64, data: &[u8], l: Layout) {
        let c = self.io(q, VIRTIO_BLK_T_OUT, sector, data, 0, l);
        assert_eq!(
            c.status,
            VIRTIO_BLK_S_OK,
            "write of {} bytes at sector {sector} failed",
            data.len()
        );
    }

    pub fn read(&mut self, q: usize, sector: u64, len: u32, l: Layout) -> Vec<u8> {
        let c = self.io(q, VIRTIO_BLK_T_IN, sector, &[], len, l);
        assert_eq!(c.status, VIRTIO_BLK_S_OK, "read of {len} bytes at sector {sector} failed");
        assert_eq!(c.used_len, len + 1, "used length of a {len}-byte read");
        c.data
    }
}

/// Check that a backend works: fresh connection, write, read back.
pub fn smoke(backend: &mut Backend) {
    let mut s = Session::connect(backend, SessionOpts::default());
    let data = pattern(0x5eed, 4096);
    s.write(0, 8, &data, Layout::default());
    let back = s.read(0, 8, 4096, Layout::default());
    assert!(back == data, "smoke test: data read back differs");
}
