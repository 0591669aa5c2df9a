// SPDX-License-Identifier: GPL-2.0-or-later
//! A vhost-user frontend session driven by the rust-vmm `vhost` crate, with
//! our own guest memory and virtqueues.

use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;

use super::backend::Backend;
use super::blk::*;
use super::mem::GuestMemory;
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

pub struct Session {
    pub fe: Frontend,
    pub mem: Arc<GuestMemory>,
    pub qs: Vec<SplitQueue>,
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

impl Session {
    pub fn connect(backend: &mut Backend, opts: SessionOpts) -> Self {
        let stream = backend.connect();
        Self::from_stream(stream, opts)
    }

    pub fn from_stream(stream: UnixStream, opts: SessionOpts) -> Self {
        stream.set_read_timeout(Some(CTRL_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CTRL_TIMEOUT)).unwrap();
        let mut fe = Frontend::from_stream(stream, opts.queues as u64);
        ok(fe.set_owner(), "SET_OWNER");
        let features = ok(fe.get_features(), "GET_FEATURES");
        assert!(features & VHOST_USER_F_PROTOCOL_FEATURES != 0, "backend lacks PROTOCOL_FEATURES: {features:#x}");
        let mut want = VIRTIO_F_VERSION_1
            | VHOST_USER_F_PROTOCOL_FEATURES
            | VIRTIO_BLK_F_SEG_MAX
            | VIRTIO_BLK_F_BLK_SIZE
            | VIRTIO_BLK_F_FLUSH
            | VIRTIO_BLK_F_CONFIG_WCE;
        if opts.queues > 1 {
            want |= VIRTIO_BLK_F_MQ;
        }
        if opts.event_idx {
            want |= VIRTIO_RING_F_EVENT_IDX;
        }
        if opts.indirect {
            want |= VIRTIO_RING_F_INDIRECT_DESC;
        }
        assert_eq!(features & want, want, "backend features {features:#x} lack some of {want:#x}");
        ok(fe.set_features(want), "SET_FEATURES");
        let pf = ok(fe.get_protocol_features(), "GET_PROTOCOL_FEATURES");
        let need = VhostUserProtocolFeatures::CONFIG | VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::REPLY_ACK;
        assert!(pf.contains(need), "backend protocol features {pf:?} lack {need:?}");
        ok(fe.set_protocol_features(need), "SET_PROTOCOL_FEATURES");
        if opts.need_reply {
            fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        let nq = ok(fe.get_queue_num(), "GET_QUEUE_NUM");
        assert!(nq >= opts.queues as u64, "backend has {nq} queues, want {}", opts.queues);

        let mem = GuestMemory::new(&opts.layout);
        ok(fe.set_mem_table(&mem.region_infos()), "SET_MEM_TABLE");
        let qs = (0..opts.queues)
            .map(|_| SplitQueue::new(&mem, opts.queue_size, opts.event_idx, opts.base))
            .collect();
        let mut s = Session { fe, mem, qs, features, acked: want, protocol: need, opts };
        if s.opts.start_queues {
            for i in 0..s.qs.len() {
                s.start_queue(i);
            }
        }
        s
    }

    /// SET_VRING_NUM/BASE/ADDR/CALL/KICK/ENABLE for queue i.
    pub fn start_queue(&mut self, i: usize) {
        let base = self.qs[i].next_avail;
        self.start_queue_at(i, base);
    }

    /// Like start_queue, with an explicit SET_VRING_BASE value and fresh
    /// kick/call eventfds.
    pub fn restart_queue(&mut self, i: usize, base: u16) {
        self.qs[i].renew_eventfds();
        self.start_queue_at(i, base);
    }

    fn start_queue_at(&mut self, i: usize, base: u16) {
        let q = &self.qs[i];
        ok(self.fe.set_vring_num(i, q.size), "SET_VRING_NUM");
        ok(self.fe.set_vring_base(i, base), "SET_VRING_BASE");
        ok(self.fe.set_vring_addr(i, &q.config(0)), "SET_VRING_ADDR");
        ok(self.fe.set_vring_call(i, &q.call), "SET_VRING_CALL");
        ok(self.fe.set_vring_kick(i, &q.kick), "SET_VRING_KICK");
        ok(self.fe.set_vring_enable(i, true), "SET_VRING_ENABLE");
        // libvhost-user signals a new call fd once (in case a reconnecting
        // driver missed an interrupt): start counting from zero.
        self.qs[i].take_calls();
    }

    /// GET_VRING_BASE: stops queue i, returns the backend's next avail index.
    pub fn stop_queue(&mut self, i: usize) -> u32 {
        ok(self.fe.get_vring_base(i), "GET_VRING_BASE")
    }

    pub fn get_config_raw(&mut self, len: usize) -> vhost::Result<Vec<u8>> {
        let buf = vec![0u8; len];
        let (_, payload) = self.fe.get_config(0, len as u32, VhostUserConfigFlags::empty(), &buf)?;
        Ok(payload.to_vec())
    }

    pub fn get_config(&mut self, len: usize) -> Vec<u8> {
        let buf = vec![0u8; len];
        let (_, payload) = ok(
            self.fe.get_config(0, len as u32, VhostUserConfigFlags::empty(), &buf),
            "GET_CONFIG",
        );
        payload.to_vec()
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
    pub fn io(&mut self, q: usize, ty: u32, sector: u64, out: &[u8], in_len: u32, l: Layout) -> Completion {
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
        assert_eq!(c.status, VIRTIO_BLK_S_OK, "write of {} bytes at sector {sector} failed", data.len());
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
