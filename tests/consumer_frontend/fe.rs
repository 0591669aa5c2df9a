// SPDX-License-Identifier: GPL-2.0-or-later
//! A generic vhost-user frontend for QEMU's consumers: rust-vmm `vhost`
//! 0.18 for the control plane (every call bounded by the shared watchdog),
//! memfd guest memory and split rings from tests/common.

use std::fs::File;
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserInflight, VhostUserProtocolFeatures,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::VhostBackend;

use crate::common::{GuestMemory, SplitQueue, Watchdog, CTRL_TIMEOUT};

pub const VIRTIO_RING_F_INDIRECT_DESC: u64 = 1 << 28;
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

pub struct Fe {
    pub fe: Frontend,
    pub watchdog: Watchdog,
    pub mem: Arc<GuestMemory>,
    pub qs: Vec<SplitQueue>,
    /// Offered by the backend.
    pub features: u64,
    pub protocol_offered: VhostUserProtocolFeatures,
    /// Negotiated.
    pub acked: u64,
    pub protocol: VhostUserProtocolFeatures,
    pub queue_num: Option<u64>,
}

impl Fe {
    /// SET_OWNER, GET_FEATURES, GET_PROTOCOL_FEATURES only.
    pub fn connect(
        stream: UnixStream,
        max_queues: u64,
        layout: &[(u64, u64)],
    ) -> Result<Self, String> {
        stream.set_read_timeout(Some(CTRL_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CTRL_TIMEOUT)).unwrap();
        let watchdog = Watchdog::new(stream.try_clone().unwrap());
        let fe = Frontend::from_stream(stream, max_queues);
        let mut s = Fe {
            fe,
            watchdog,
            mem: GuestMemory::new(layout),
            qs: Vec::new(),
            features: 0,
            protocol_offered: VhostUserProtocolFeatures::empty(),
            acked: 0,
            protocol: VhostUserProtocolFeatures::empty(),
            queue_num: None,
        };
        s.try_ctl("SET_OWNER", |fe| fe.set_owner())?;
        s.features = s.try_ctl("GET_FEATURES", |fe| fe.get_features())?;
        if s.features & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
            return Err(format!("backend lacks VHOST_USER_F_PROTOCOL_FEATURES: {:#x}", s.features));
        }
        Ok(s)
    }

    pub fn try_ctl<R>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Frontend) -> vhost::Result<R>,
    ) -> Result<R, String> {
        self.watchdog.arm(CTRL_TIMEOUT);
        let r = f(&mut self.fe);
        let fired = self.watchdog.disarm();
        match r {
            Ok(v) if !fired => Ok(v),
            Ok(_) => Err(format!("{what}: timed out")),
            Err(e) if fired => Err(format!("{what}: timed out after {CTRL_TIMEOUT:?} ({e:?})")),
            Err(e) => Err(format!("{what}: {e:?}")),
        }
    }

    /// SET_FEATURES(want & offered must equal want), GET/SET_PROTOCOL_FEATURES
    /// (`pwant` & offered; `pneed` must be offered), GET_QUEUE_NUM when MQ.
    pub fn negotiate(
        &mut self,
        want: u64,
        pwant: VhostUserProtocolFeatures,
        pneed: VhostUserProtocolFeatures,
    ) -> Result<(), String> {
        let want = want | VHOST_USER_F_PROTOCOL_FEATURES;
        if self.features & want != want {
            return Err(format!(
                "backend features {:#x} lack {:#x}",
                self.features,
                want & !self.features
            ));
        }
        self.try_ctl("SET_FEATURES", |fe| fe.set_features(want))?;
        self.acked = want;
        let pf = self.try_ctl("GET_PROTOCOL_FEATURES", |fe| fe.get_protocol_features())?;
        self.protocol_offered = pf;
        if !pf.contains(pneed) {
            return Err(format!("backend protocol features {pf:?} lack {:?}", pneed - pf));
        }
        let p = (pwant | pneed) & pf;
        self.try_ctl("SET_PROTOCOL_FEATURES", |fe| fe.set_protocol_features(p))?;
        self.protocol = p;
        if p.contains(VhostUserProtocolFeatures::REPLY_ACK) {
            self.fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        }
        if p.contains(VhostUserProtocolFeatures::MQ) {
            self.queue_num = Some(self.try_ctl("GET_QUEUE_NUM", |fe| fe.get_queue_num())?);
        }
        Ok(())
    }

    pub fn set_mem_table(&mut self) -> Result<(), String> {
        let regions = self.mem.region_infos();
        self.try_ctl("SET_MEM_TABLE", |fe| fe.set_mem_table(&regions)).map(|_| ())
    }

    /// Allocate `n` rings of `size` (in the first region with room).
    pub fn make_queues(&mut self, n: usize, size: u16, event_idx: bool) {
        self.qs = (0..n).map(|_| SplitQueue::new(&self.mem, size, event_idx, 0)).collect();
    }

    /// SET_VRING_NUM/BASE/ADDR/CALL/KICK/ENABLE with fresh eventfds.
    pub fn start_queue(&mut self, i: usize, base: u16) -> Result<(), String> {
        self.qs[i].renew_eventfds();
        let size = self.qs[i].size;
        let cfg = self.qs[i].config(0);
        let call = self.qs[i].call.try_clone().unwrap();
        let kick = self.qs[i].kick.try_clone().unwrap();
        self.try_ctl("SET_VRING_NUM", |fe| fe.set_vring_num(i, size))?;
        self.try_ctl("SET_VRING_BASE", |fe| fe.set_vring_base(i, base))?;
        self.try_ctl("SET_VRING_ADDR", |fe| fe.set_vring_addr(i, &cfg))?;
        self.try_ctl("SET_VRING_CALL", |fe| fe.set_vring_call(i, &call))?;
        self.try_ctl("SET_VRING_KICK", |fe| fe.set_vring_kick(i, &kick))?;
        if self.acked & VHOST_USER_F_PROTOCOL_FEATURES != 0 {
            self.try_ctl("SET_VRING_ENABLE", |fe| fe.set_vring_enable(i, true))?;
        }
        self.qs[i].take_calls();
        Ok(())
    }

    /// GET_VRING_BASE (stops queue i).
    pub fn get_vring_base(&mut self, i: usize) -> Result<u32, String> {
        self.try_ctl("GET_VRING_BASE", |fe| fe.get_vring_base(i))
    }

    pub fn get_config(&mut self, len: usize) -> Result<Vec<u8>, String> {
        let buf = vec![0u8; len];
        let (_, payload) = self.try_ctl("GET_CONFIG", |fe| {
            fe.get_config(0, len as u32, VhostUserConfigFlags::empty(), &buf)
        })?;
        Ok(payload.to_vec())
    }

    pub fn get_inflight(
        &mut self,
        num_queues: u16,
        queue_size: u16,
    ) -> Result<(VhostUserInflight, File), String> {
        let req = VhostUserInflight { mmap_size: 0, mmap_offset: 0, num_queues, queue_size };
        self.try_ctl("GET_INFLIGHT_FD", |fe| fe.get_inflight_fd(&req))
    }

    pub fn set_inflight(&mut self, info: &VhostUserInflight, fd: RawFd) -> Result<(), String> {
        self.try_ctl("SET_INFLIGHT_FD", |fe| fe.set_inflight_fd(info, fd))
    }

    /// SET_BACKEND_REQ_FD; returns our end of the backend channel.
    pub fn backend_channel(&mut self) -> Result<UnixStream, String> {
        let (ours, theirs) = UnixStream::pair().unwrap();
        self.try_ctl("SET_BACKEND_REQ_FD", |fe| fe.set_backend_request_fd(&theirs))?;
        drop(theirs);
        Ok(ours)
    }
}

/// A message received on the backend channel: (request, flags, payload).
pub fn recv_backend_msg(s: &UnixStream, timeout: Duration) -> Result<(u32, u32, Vec<u8>), String> {
    use std::io::Read;
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut hdr = [0u8; 12];
    let t0 = Instant::now();
    (&*s)
        .read_exact(&mut hdr)
        .map_err(|e| format!("no message on the backend channel after {:?}: {e}", t0.elapsed()))?;
    let req = u32::from_le_bytes(hdr[0..4].try_into().unwrap());
    let flags = u32::from_le_bytes(hdr[4..8].try_into().unwrap());
    let size = u32::from_le_bytes(hdr[8..12].try_into().unwrap()) as usize;
    if size > 4096 {
        return Err(format!("backend message {req} with size {size}"));
    }
    let mut p = vec![0u8; size];
    (&*s).read_exact(&mut p).map_err(|e| format!("backend message payload: {e}"))?;
    Ok((req, flags, p))
}

pub fn fd_of(f: &File) -> RawFd {
    f.as_raw_fd()
}
