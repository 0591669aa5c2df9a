// SPDX-License-Identifier: GPL-2.0-or-later
//! Consumer tier, Rust-frontend stage: QEMU's own libvhost-user consumers
//! (contrib vhost-user-blk/-gpu/-input/-scsi and qemu-storage-daemon's
//! vhost-user-blk export, QEMU 7.2 and 10.0, each built against the C
//! original and against this library by tests/consumers/run.sh) driven by
//! the rust-vmm `vhost` frontend.
//!
//! Binaries come from `$VU_CONSUMERS_ENV` (default
//! `$VU_CACHE/consumers.env`). Without it every test prints `skipped: ...`;
//! with `VU_REQUIRE_CONSUMERS=1` (tests/consumers/rust-stage.sh) that is a
//! failure. Filters: VU_CONSUMER_GEN=7.2|10.0, VU_CONSUMER_LIB=c-original|ours.

mod common;
mod consumer_frontend;

use std::os::unix::io::AsRawFd;
use std::time::{Duration, Instant};

use vhost::vhost_user::message::VhostUserProtocolFeatures as P;

use consumer_frontend::blkio::{self, Arena};
use consumer_frontend::fe::*;
use consumer_frontend::proc::{make_image, Proc, WorkDir, EXIT_TIMEOUT};
use consumer_frontend::{run_all, Facts, Qmp, Target};
#[allow(unused_imports)]
use std::io::Write as _;

const VIRTIO_BLK_F_SEG_MAX: u64 = 1 << 2;
const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
const VIRTIO_BLK_F_CONFIG_WCE: u64 = 1 << 11;
const VIRTIO_BLK_F_MQ: u64 = 1 << 12;

const DISK: u64 = 8 << 20;
const BLK_CFG_LEN: usize = 60;

/// Guest memory: region 0 for rings/headers/tables, then data regions, the
/// first two adjacent (buffers cross between them), the last above 4 GiB.
const LAYOUT: &[(u64, u64)] =
    &[(0, 1 << 20), (0x10_0000, 4 << 20), (0x50_0000, 4 << 20), (0x1_0000_0000, 4 << 20)];

#[derive(Clone, Copy, PartialEq, Debug)]
enum Blk {
    Contrib,
    Qsd,
}

/// The offered features that must match the C original's: all but VIRTIO_F_IOMMU_PLATFORM
/// (bit 33) and VIRTIO_F_RING_PACKED (bit 34), which this library offers in addition (the
/// guest tier checks they are negotiated).
fn comparable_features(features: u64) -> u64 {
    features & !(1 << 33 | 1 << 34)
}

fn blk_kind(consumer: &str) -> Blk {
    if consumer == "qemu-storage-daemon" {
        Blk::Qsd
    } else {
        Blk::Contrib
    }
}

/// Start a blk backend on `img`; returns the process and its socket path.
fn start_blk(
    t: &Target,
    kind: Blk,
    w: &WorkDir,
    tag: &str,
    img: &std::path::Path,
    queues: u16,
    qmp: bool,
) -> (Proc, std::path::PathBuf) {
    let sock = w.path(&format!("{tag}.sock"));
    let args: Vec<String> = match kind {
        Blk::Contrib => {
            vec!["-s".into(), sock.display().to_string(), "-b".into(), img.display().to_string()]
        }
        Blk::Qsd => {
            let mut a = vec![
                "--blockdev".to_string(),
                format!("driver=file,node-name=f0,filename={}", img.display()),
                "--export".into(),
                format!("type=vhost-user-blk,id=e0,node-name=f0,addr.type=unix,addr.path={},writable=on,num-queues={queues}", sock.display()),
            ];
            if qmp {
                a.push("--chardev".into());
                a.push(format!(
                    "socket,id=m,path={},server=on,wait=off",
                    w.path("qmp.sock").display()
                ));
                a.push("--monitor".into());
                a.push("chardev=m".into());
            }
            a
        }
    };
    (Proc::spawn(t, w, tag, &args), sock)
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}

/// Connect and negotiate a blk session.
fn blk_session(
    p: &mut Proc,
    sock: &std::path::Path,
    queues: u16,
    event_idx: bool,
    indirect: bool,
    extra_p: P,
) -> Result<Fe, String> {
    let stream = p.connect(sock);
    let mut fe = Fe::connect(stream, 8, LAYOUT)?;
    let mut want = VIRTIO_F_VERSION_1
        | VIRTIO_BLK_F_SEG_MAX
        | VIRTIO_BLK_F_BLK_SIZE
        | VIRTIO_BLK_F_FLUSH
        | VIRTIO_BLK_F_CONFIG_WCE;
    if event_idx {
        want |= VIRTIO_RING_F_EVENT_IDX;
    }
    if indirect {
        want |= VIRTIO_RING_F_INDIRECT_DESC;
    }
    if fe.features & VIRTIO_BLK_F_MQ != 0 {
        want |= VIRTIO_BLK_F_MQ;
    }
    fe.negotiate(want, P::REPLY_ACK | P::MQ | extra_p, P::CONFIG)?;
    if let Some(n) = fe.queue_num {
        if n < queues as u64 {
            return Err(format!("GET_QUEUE_NUM {n} < {queues}"));
        }
    } else if queues > 1 {
        return Err("no MQ protocol feature".into());
    }
    Ok(fe)
}

/// Check the config space: capacity, block size, queue count.
fn check_blk_config(
    fe: &mut Fe,
    kind: Blk,
    queues: u16,
    sectors: u64,
    facts: &mut Facts,
) -> Result<(), String> {
    let cfg = fe.get_config(BLK_CFG_LEN)?;
    if cfg.len() != BLK_CFG_LEN {
        return Err(format!("GET_CONFIG returned {} bytes", cfg.len()));
    }
    let cap = le64(&cfg, 0);
    if cap != sectors {
        return Err(format!("config capacity {cap}, want {sectors}"));
    }
    let bs = le32(&cfg, 20);
    if bs != 512 {
        return Err(format!("config blk_size {bs}"));
    }
    let nq = le16(&cfg, 34);
    let want_nq = if kind == Blk::Qsd { queues } else { 1 };
    if nq != want_nq {
        return Err(format!("config num_queues {nq}, want {want_nq}"));
    }
    facts.cmp("config", format!("{cfg:02x?}"));
    Ok(())
}

fn start_all(fe: &mut Fe, n: usize, event_idx: bool) -> Result<(), String> {
    fe.set_mem_table()?;
    fe.make_queues(n, 256, event_idx);
    for i in 0..n {
        fe.start_queue(i, 0)?;
    }
    Ok(())
}

/// The data test against one blk backend binary.
fn blk_data(consumer: &str, t: &Target) -> Result<Facts, String> {
    let kind = blk_kind(consumer);
    let mut facts = Facts::default();
    let w = WorkDir::new(&t.name(consumer));
    let img = w.path("disk.img");
    let initial = make_image(&img, DISK, 0x1111);
    let queues = 2u16;
    let (mut p, sock) = start_blk(t, kind, &w, "a", &img, queues, false);

    // Session A: 2 queues, EVENT_IDX, indirect + direct chains, 4 regions.
    let mut fe = blk_session(&mut p, &sock, queues, true, true, P::empty())?;
    facts.cmp("features", format!("{:#x}", comparable_features(fe.features)));
    facts.info(format!("features {:#x} protocol {:#x}", fe.features, fe.protocol_offered.bits()));
    facts.cmp("queue_num", format!("{:?}", fe.queue_num));
    check_blk_config(&mut fe, kind, queues, DISK / 512, &mut facts)?;
    start_all(&mut fe, queues as usize, true)?;
    let mut arena = Arena::new(&fe.mem);
    let n1 = blkio::sweep(&mut fe, &mut arena, false, 0, DISK, &initial, 24, true)?;
    let second = common::pattern(0x2222, DISK as usize);
    let n2 = blkio::sweep(&mut fe, &mut arena, true, 0, DISK, &second, 24, true)?;
    let (st, _, _) = blkio::simple(&mut fe, &mut arena, 1, blkio::T_FLUSH, 0)?;
    if st != 0 {
        return Err(format!("FLUSH status {st}"));
    }
    let n3 = blkio::sweep(&mut fe, &mut arena, false, 0, DISK, &second, 24, true)?;
    let (st, _, id) = blkio::simple(&mut fe, &mut arena, 0, blkio::T_GET_ID, 20)?;
    if st != 0 || !id.starts_with(b"vhost_user_blk") {
        return Err(format!("GET_ID status {st} id {:?}", String::from_utf8_lossy(&id)));
    }
    // Stop and restart every queue at the base the backend reports.
    let mut bases = Vec::new();
    for i in 0..queues as usize {
        let b = fe.get_vring_base(i)?;
        if b != fe.qs[i].next_avail as u32 {
            return Err(format!(
                "GET_VRING_BASE({i}) = {b}, frontend published {}",
                fe.qs[i].next_avail
            ));
        }
        bases.push(b);
    }
    // A request published while stopped must wait for the restart.
    let third = {
        let mut v = second.clone();
        v[..1 << 20].copy_from_slice(&common::pattern(0x3333, 1 << 20));
        v
    };
    for i in 0..queues as usize {
        fe.start_queue(i, bases[i] as u16)?;
    }
    let n4 = blkio::sweep(&mut fe, &mut arena, true, 0, 1 << 20, &third, 16, true)?;
    let n5 = blkio::sweep(&mut fe, &mut arena, false, 0, DISK, &third, 24, true)?;
    facts.info(format!(
        "session A: {} requests over 2 queues, bases after stop {bases:?}",
        n1 + n2 + n3 + n4 + n5 + 2
    ));
    drop(fe);

    // Session B: 1 queue, no EVENT_IDX, direct chains only, on a fresh
    // contrib process (it exits when its frontend leaves) or a reconnect
    // to the same qemu-storage-daemon.
    let (mut pb, sockb) = match kind {
        Blk::Contrib => {
            let st = p.wait_exit(EXIT_TIMEOUT).ok_or_else(|| format!("{consumer} did not exit within {EXIT_TIMEOUT:?} after the frontend disconnected"))?;
            facts.cmp("exit after disconnect", format!("{st:?}"));
            facts.info(format!("exit after disconnect: {st}"));
            let (pb, s) = start_blk(t, kind, &w, "b", &img, 1, false);
            (Some(pb), s)
        }
        Blk::Qsd => (None, sock.clone()),
    };
    {
        let pp = pb.as_mut().unwrap_or(&mut p);
        let mut fe = blk_session(pp, &sockb, 1, false, false, P::empty())?;
        start_all(&mut fe, 1, false)?;
        let mut arena = Arena::new(&fe.mem);
        let n = blkio::sweep(&mut fe, &mut arena, false, 0, DISK, &third, 8, false)?;
        facts.info(format!("session B: {n} reads"));
    }
    let last = pb.as_mut().unwrap_or(&mut p);
    match kind {
        Blk::Contrib => {
            last.wait_exit(EXIT_TIMEOUT)
                .ok_or("second vhost-user-blk did not exit after disconnect")?;
        }
        Blk::Qsd => {
            let (st, by_term) = last.terminate(EXIT_TIMEOUT);
            if !by_term || !st.success() {
                return Err(format!(
                    "qemu-storage-daemon SIGTERM: {st} (ended by TERM: {by_term}); output:\n{}",
                    last.output()
                ));
            }
        }
    }
    let on_disk = std::fs::read(&img).map_err(|e| e.to_string())?;
    if on_disk != third {
        let i = on_disk
            .iter()
            .zip(&third)
            .position(|(a, b)| a != b)
            .unwrap_or(on_disk.len().min(third.len()));
        return Err(format!("image file differs from the written data at offset {i}"));
    }
    Ok(facts)
}

#[test]
fn blk_data_queues_regions_indirect_event_idx_restart() {
    run_all("blk_data", &["vhost-user-blk", "qemu-storage-daemon"], true, blk_data);
}

// ---- inflight tracking (contrib vhost-user-blk offers INFLIGHT_SHMFD)

const QSIZE: u16 = 256;

/// Inflight region (split ring) of queue 0: (entries marked inflight, used_idx).
fn inflight_state(map: &[u8], qsize: u16) -> (Vec<u16>, u16) {
    let used_idx = le16(map, 14);
    let desc_num = le16(map, 10);
    assert_eq!(desc_num, qsize, "inflight desc_num");
    let v = (0..qsize).filter(|&i| map[16 + 16 * i as usize] == 1).collect();
    (v, used_idx)
}

fn blk_inflight(consumer: &str, t: &Target) -> Result<Facts, String> {
    let mut facts = Facts::default();
    let w = WorkDir::on_disk(&t.name(consumer));
    let img = w.path("disk.img");
    make_image(&img, DISK, 0x4444);
    let (mut p, sock) = start_blk(t, Blk::Contrib, &w, "k0", &img, 1, false);
    let mut fe = blk_session(&mut p, &sock, 1, true, true, P::INFLIGHT_SHMFD)?;
    if !fe.protocol.contains(P::INFLIGHT_SHMFD) {
        return Err(format!("INFLIGHT_SHMFD not offered: {:?}", fe.protocol_offered));
    }
    // As QEMU's vhost-user-blk: GET_INFLIGHT_FD, SET_INFLIGHT_FD, then start.
    let (info, file) = fe.get_inflight(1, QSIZE)?;
    let want_size = ((16 * QSIZE as u64 + 2) + 63) / 64 * 64;
    if info.mmap_size < want_size {
        return Err(format!("inflight mmap_size {} < {want_size}", info.mmap_size));
    }
    facts.cmp("inflight mmap_size", info.mmap_size);
    fe.set_inflight(&info, file.as_raw_fd())?;
    start_all(&mut fe, 1, true)?;
    // SAFETY: mapping the inflight fd the backend handed us, read-only, its full size.
    let map = unsafe {
        let a = libc::mmap(
            std::ptr::null_mut(),
            info.mmap_size as usize,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            info.mmap_offset as i64,
        );
        if a == libc::MAP_FAILED {
            return Err(format!("mmap inflight: {}", std::io::Error::last_os_error()));
        }
        std::slice::from_raw_parts(a as *const u8, info.mmap_size as usize)
    };
    let mut arena = Arena::new(&fe.mem);
    let mut expect = std::fs::read(&img).unwrap();
    // warm-up: a few writes, all completed: nothing may remain in flight.
    let warm = common::pattern(0x5555, 1 << 20);
    expect[..1 << 20].copy_from_slice(&warm);
    blkio::sweep(&mut fe, &mut arena, true, 0, 1 << 20, &expect, 16, true)?;
    let (inf, uidx) = inflight_state(map, QSIZE);
    if !inf.is_empty() || uidx != fe.qs[0].used_idx() {
        return Err(format!("after completed I/O the inflight region shows {inf:?} in flight, used_idx {uidx} (ring {})", fe.qs[0].used_idx()));
    }
    let kept_mem = fe.mem.clone();

    // Rounds: publish a batch of writes, SIGKILL the backend while it works
    // on them, start a new backend on the same inflight fd, guest memory and
    // rings; every request must complete exactly once.
    let mut caught = 0usize;
    let rounds = 4;
    let mut total = 0;
    for round in 0..rounds {
        let mark = fe.mem.mark();
        arena.reset();
        let data = common::pattern(0x6000 + round as u64, 3 << 20);
        let mut reqs = Vec::new();
        let per = 32768usize;
        for k in 0..(data.len() / per) {
            let off = (1 << 20) + k * per;
            let sh =
                blkio::Shape { seg: 16384, indirect: k % 2 == 0, region: k % 3, spanning: false };
            reqs.push(blkio::submit(
                &mut fe,
                &mut arena,
                0,
                blkio::T_OUT,
                off as u64 / 512,
                &data[k * per..(k + 1) * per],
                0,
                sh,
            ));
            expect[off..off + per].copy_from_slice(&data[k * per..(k + 1) * per]);
        }
        // kill once the backend has completed a few of them
        let target_done = 1 + (round * 17) % (reqs.len() / 2);
        let start_used = fe.qs[0].last_used;
        let t0 = Instant::now();
        while fe.qs[0].used_idx().wrapping_sub(start_used) < target_done as u16
            && t0.elapsed() < Duration::from_secs(10)
        {
            std::hint::spin_loop();
        }
        p.kill();
        let (inf, _) = inflight_state(map, QSIZE);
        let done_before = fe.qs[0].used_idx().wrapping_sub(start_used);
        caught += inf.len();
        facts.info(format!(
            "round {round}: killed after {done_before}/{} completions, {} in flight",
            reqs.len(),
            inf.len()
        ));

        // reconnect: new process, same inflight fd, same memory and rings
        let qs = std::mem::take(&mut fe.qs);
        drop(fe);
        let (np, nsock) =
            start_blk(t, Blk::Contrib, &w, &format!("k{}", round + 1), &img, 1, false);
        p = np;
        let stream = p.connect(&nsock);
        let mut nfe = Fe::connect(stream, 8, &[(0, 4096)])?;
        nfe.mem = kept_mem.clone();
        let want = VIRTIO_F_VERSION_1
            | VIRTIO_BLK_F_SEG_MAX
            | VIRTIO_BLK_F_BLK_SIZE
            | VIRTIO_BLK_F_FLUSH
            | VIRTIO_BLK_F_CONFIG_WCE
            | VIRTIO_RING_F_EVENT_IDX
            | VIRTIO_RING_F_INDIRECT_DESC;
        nfe.negotiate(want, P::REPLY_ACK | P::MQ, P::CONFIG | P::INFLIGHT_SHMFD)?;
        nfe.set_inflight(&info, file.as_raw_fd())?;
        nfe.set_mem_table()?;
        nfe.qs = qs;
        // as QEMU after a backend crash: restart at the ring's used index
        let base = nfe.qs[0].used_idx();
        nfe.start_queue(0, base)?;
        fe = nfe;
        blkio::complete(&mut fe, &reqs)
            .map_err(|e| format!("round {round}, after restart: {e}"))?;
        for r in &reqs {
            let st = blkio::status_of(&fe, r);
            if st != 0 {
                return Err(format!("round {round}: write at sector {} status {st}", r.sector));
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        if fe.qs[0].used_idx() != fe.qs[0].next_avail {
            return Err(format!(
                "round {round}: used idx {} beyond published {} (a request completed twice)",
                fe.qs[0].used_idx(),
                fe.qs[0].next_avail
            ));
        }
        let (inf, uidx) = inflight_state(map, QSIZE);
        if !inf.is_empty() || uidx != fe.qs[0].used_idx() {
            return Err(format!("round {round}: after recovery the inflight region shows {inf:?}, used_idx {uidx} (ring {})", fe.qs[0].used_idx()));
        }
        total += reqs.len();
        fe.mem.release(mark);
    }
    // all data is on the disk
    arena.reset();
    blkio::sweep(&mut fe, &mut arena, false, 0, DISK, &expect, 24, true)?;
    drop(fe);
    p.wait_exit(EXIT_TIMEOUT).ok_or("vhost-user-blk did not exit after disconnect")?;
    if std::fs::read(&img).unwrap() != expect {
        return Err("image file differs from the written data".into());
    }
    // SAFETY: unmapping the mapping made above.
    unsafe { libc::munmap(map.as_ptr() as *mut libc::c_void, map.len()) };
    facts.info(format!(
        "{rounds} SIGKILL rounds, {total} writes, {caught} caught in flight, each completed once"
    ));
    if caught == 0 {
        facts.info("note: no kill landed while a request was in flight");
    }
    Ok(facts)
}

#[test]
fn blk_inflight_sigkill_reconnect() {
    run_all("blk_inflight", &["vhost-user-blk"], true, blk_inflight);
}

// ---- config change notification (qemu-storage-daemon 10.0 on block_resize)

const BACKEND_CONFIG_CHANGE_MSG: u32 = 2;

fn qsd_config_change(consumer: &str, t: &Target) -> Result<Facts, String> {
    let mut facts = Facts::default();
    if t.gen == "7.2" {
        // QEMU 7.2's export has no resize callback (vu_config_change_msg came later).
        crate::consumer_frontend::env::skip(&format!(
            "blk_config_change: {}: QEMU 7.2's vhost-user-blk export sends no config change",
            t.name(consumer)
        ));
        facts.info("not applicable to 7.2");
        return Ok(facts);
    }
    let w = WorkDir::new(&t.name(consumer));
    let img = w.path("disk.img");
    make_image(&img, DISK, 0x7777);
    let (mut p, sock) = start_blk(t, Blk::Qsd, &w, "r", &img, 1, true);
    let mut fe = blk_session(&mut p, &sock, 1, true, true, P::BACKEND_REQ)?;
    if !fe.protocol.contains(P::BACKEND_REQ) {
        return Err(format!("BACKEND_REQ not offered: {:?}", fe.protocol_offered));
    }
    let chan = fe.backend_channel()?;
    start_all(&mut fe, 1, true)?;
    check_blk_config(&mut fe, Blk::Qsd, 1, DISK / 512, &mut facts)?;
    let mut qmp = Qmp::connect(&w.path("qmp.sock"), Duration::from_secs(10))?;
    let new_size = 2 * DISK;
    qmp.execute(&format!(
        r#"{{"execute":"block_resize","arguments":{{"node-name":"f0","size":{new_size}}}}}"#
    ))?;
    let (req, flags, payload) = recv_backend_msg(&chan, Duration::from_secs(10))?;
    if req != BACKEND_CONFIG_CHANGE_MSG {
        return Err(format!(
            "backend channel: request {req} (flags {flags:#x}, {} bytes), want CONFIG_CHANGE_MSG",
            payload.len()
        ));
    }
    facts.cmp("config change msg", format!("req {req} flags {flags:#x} size {}", payload.len()));
    let cfg = fe.get_config(BLK_CFG_LEN)?;
    let cap = le64(&cfg, 0);
    if cap != new_size / 512 {
        return Err(format!("capacity after resize {cap}, want {}", new_size / 512));
    }
    // the new area is readable (zeros), the old one unchanged
    let mut arena = Arena::new(&fe.mem);
    let mut expect = std::fs::read(&img).map_err(|e| e.to_string())?;
    expect.resize(new_size as usize, 0);
    let n =
        blkio::sweep(&mut fe, &mut arena, false, DISK - (1 << 20), new_size, &expect, 16, true)?;
    facts.info(format!("CONFIG_CHANGE_MSG received (flags {flags:#x}), capacity {} -> {cap} sectors, {n} reads across the old end", DISK / 512));
    drop(fe);
    drop(qmp);
    let (st, by_term) = p.terminate(EXIT_TIMEOUT);
    if !by_term || !st.success() {
        return Err(format!("qemu-storage-daemon SIGTERM: {st}; output:\n{}", p.output()));
    }
    Ok(facts)
}

#[test]
fn blk_config_change_on_resize() {
    run_all("blk_config_change", &["qemu-storage-daemon"], true, qsd_config_change);
}

// ---- gpu / input / scsi: the control plane

/// Negotiation, protocol features, config space (when CONFIG is offered),
/// queue setup on every queue, GET_VRING_BASE, restart, and the backend's
/// reaction to the frontend leaving.
fn control_plane(
    consumer: &str,
    t: &Target,
    args: &[String],
    sock: &std::path::Path,
    w: &WorkDir,
    nq: usize,
    cfg_len: usize,
    dev_features: u64,
) -> Result<Facts, String> {
    let mut facts = Facts::default();
    let mut p = Proc::spawn(t, w, consumer, args);
    let stream = p.connect(sock);
    let mut fe = Fe::connect(stream, nq as u64, &[(0, 1 << 20)])?;
    facts.cmp("features", format!("{:#x}", comparable_features(fe.features)));
    let want = VIRTIO_F_VERSION_1
        | VIRTIO_RING_F_EVENT_IDX
        | VIRTIO_RING_F_INDIRECT_DESC
        | (fe.features & dev_features);
    fe.negotiate(want, P::REPLY_ACK | P::MQ | P::CONFIG, P::empty())?;
    facts.info(format!(
        "features {:#x} protocol {:#x} queue_num {:?}",
        fe.features,
        fe.protocol_offered.bits(),
        fe.queue_num
    ));
    facts.cmp("queue_num", format!("{:?}", fe.queue_num));
    if let Some(n) = fe.queue_num {
        if n < nq as u64 {
            return Err(format!("GET_QUEUE_NUM {n} < {nq}"));
        }
    }
    if fe.protocol.contains(P::CONFIG) && cfg_len > 0 {
        let cfg = fe.get_config(cfg_len)?;
        if cfg.len() != cfg_len {
            return Err(format!("GET_CONFIG: {} bytes, want {cfg_len}", cfg.len()));
        }
        facts.cmp("config", format!("{cfg:02x?}"));
        facts.info(format!("config {cfg:02x?}"));
    }
    start_all(&mut fe, nq, true)?;
    for i in 0..nq {
        let b = fe.get_vring_base(i)?;
        if b != 0 {
            return Err(format!("GET_VRING_BASE({i}) = {b} with nothing submitted"));
        }
        fe.start_queue(i, 5)?;
        let b = fe.get_vring_base(i)?;
        if b != 5 {
            return Err(format!("GET_VRING_BASE({i}) after a restart at 5 = {b}"));
        }
    }
    drop(fe);
    let st = p.wait_exit(EXIT_TIMEOUT);
    facts.cmp("after disconnect", format!("{st:?}"));
    facts.info(format!(
        "after disconnect: {}",
        st.map(|s| s.to_string()).unwrap_or("still running (killed)".into())
    ));
    p.kill();
    Ok(facts)
}

const VIRTIO_GPU_F_EDID: u64 = 1 << 1;

#[test]
fn gpu_control_plane() {
    run_all("gpu_control", &["vhost-user-gpu"], false, |c, t| {
        let w = WorkDir::new(&t.name(c));
        let sock = w.path("gpu.sock");
        control_plane(
            c,
            t,
            &["-s".into(), sock.display().to_string()],
            &sock,
            &w,
            2,
            16,
            VIRTIO_GPU_F_EDID,
        )
    });
}

/// vhost-user-input needs an evdev device: a uinput one when /dev/uinput
/// exists (not created here: it needs the uinput module), else skipped.
#[test]
fn input_control_plane() {
    let evdev = std::env::var("VU_EVDEV").ok().filter(|p| std::path::Path::new(p).exists());
    let Some(evdev) = evdev else {
        crate::consumer_frontend::env::skip(&format!("input_control: vhost-user-input needs an evdev device (set VU_EVDEV=/dev/input/eventN; none given)"));
        return;
    };
    run_all("input_control", &["vhost-user-input"], false, |c, t| {
        let w = WorkDir::new(&t.name(c));
        let sock = w.path("input.sock");
        let args = vec![
            "--no-grab".into(),
            "-p".into(),
            evdev.clone(),
            "-s".into(),
            sock.display().to_string(),
        ];
        control_plane(c, t, &args, &sock, &w, 2, 0, 0)
    });
}

/// vhost-user-scsi connects to an iSCSI target before serving.
#[test]
fn scsi_control_plane() {
    let Some(uri) = std::env::var("VU_ISCSI_URI").ok().filter(|s| !s.is_empty()) else {
        crate::consumer_frontend::env::skip(&format!("scsi_control: vhost-user-scsi needs an iSCSI target (set VU_ISCSI_URI=iscsi://127.0.0.1/iqn.../0; none given)"));
        return;
    };
    run_all("scsi_control", &["vhost-user-scsi"], false, |c, t| {
        let w = WorkDir::new(&t.name(c));
        let sock = w.path("scsi.sock");
        let args = vec!["-i".into(), uri.clone(), "-s".into(), sock.display().to_string()];
        control_plane(c, t, &args, &sock, &w, 3, 0, 0)
    });
}
