// SPDX-License-Identifier: GPL-2.0-or-later
//! Control-plane behaviour through the vhost-user-blk example: config
//! space, multiqueue, reconnection, one-shot mode.

mod common;
use common::*;
use vhost::vhost_user::message::VhostUserConfigFlags;
use vhost::vhost_user::VhostUserFrontend;

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes(b[..8].try_into().unwrap())
}
fn le32(b: &[u8]) -> u32 {
    u32::from_le_bytes(b[..4].try_into().unwrap())
}
fn le16(b: &[u8]) -> u16 {
    u16::from_le_bytes(b[..2].try_into().unwrap())
}

#[test]
fn config_space_read_and_wce_write() {
    let mut b =
        Backend::start(BackendOpts { image_size: Some(3 << 20), queues: 3, ..Default::default() });
    let mut s = Session::connect(&mut b, SessionOpts::default());
    let f = s.features;
    for (bit, name) in [
        (VIRTIO_BLK_F_SEG_MAX, "SEG_MAX"),
        (VIRTIO_BLK_F_BLK_SIZE, "BLK_SIZE"),
        (VIRTIO_BLK_F_FLUSH, "FLUSH"),
        (VIRTIO_BLK_F_CONFIG_WCE, "CONFIG_WCE"),
        (VIRTIO_BLK_F_MQ, "MQ"),
        (VIRTIO_RING_F_INDIRECT_DESC, "INDIRECT_DESC"),
        (VIRTIO_RING_F_EVENT_IDX, "EVENT_IDX"),
        (VIRTIO_F_VERSION_1, "VERSION_1"),
    ] {
        assert!(f & bit != 0, "feature {name} not offered ({f:#x})");
    }
    let cfg = s.get_config(CFG_LEN);
    assert_eq!(cfg.len(), CFG_LEN);
    assert_eq!(le64(&cfg[CFG_CAPACITY..]), (3 << 20) / 512, "capacity");
    assert_eq!(le32(&cfg[CFG_SEG_MAX..]), 126, "seg_max");
    assert_eq!(le32(&cfg[CFG_BLK_SIZE..]), 512, "blk_size");
    assert_eq!(cfg[CFG_WCE], 1, "wce");
    assert_eq!(le16(&cfg[CFG_NUM_QUEUES..]), 3, "num_queues");
    // A partial read at offset 0 gives the same prefix.
    assert_eq!(s.get_config(8), cfg[..8].to_vec());
    // Switch to writethrough and back.
    s.ctl("SET_CONFIG wce=0", |fe| {
        fe.set_config(CFG_WCE as u32, VhostUserConfigFlags::empty(), &[0])
    });
    assert_eq!(s.get_config(CFG_LEN)[CFG_WCE], 0, "wce after writing 0");
    let data = pattern(77, 4096);
    s.write(0, 16, &data, Layout::default());
    assert!(b.image_content()[16 * 512..16 * 512 + 4096] == data[..]);
    s.ctl("SET_CONFIG wce=1", |fe| {
        fe.set_config(CFG_WCE as u32, VhostUserConfigFlags::empty(), &[1])
    });
    assert_eq!(s.get_config(CFG_LEN)[CFG_WCE], 1, "wce after writing 1");
    // Writing a read-only field is refused (error reply or dropped
    // connection, depending on the library), and changes nothing.
    let r =
        s.try_ctl(|fe| fe.set_config(CFG_CAPACITY as u32, VhostUserConfigFlags::empty(), &[0; 8]));
    if r.is_ok() {
        // libvhost-user acks SET_CONFIG before the device's refusal takes
        // effect: then the device must have given up on this connection.
        assert!(
            b.wait_stderr("vhost-user panic:", CTRL_TIMEOUT),
            "writing the capacity was accepted"
        );
        assert!(s.get_config_raw(CFG_LEN).is_err(), "connection still served after the refusal");
    }
    drop(s);
    let mut s = Session::connect(&mut b, SessionOpts::default());
    assert_eq!(le64(&s.get_config(CFG_LEN)[CFG_CAPACITY..]), (3 << 20) / 512);
}

#[test]
fn two_queues() {
    let mut b = Backend::start(BackendOpts {
        queues: 2,
        image_size: Some(512 * 1024),
        ..Default::default()
    });
    let mut s =
        Session::connect(&mut b, SessionOpts { queues: 2, event_idx: true, ..Default::default() });
    assert_eq!(s.ctl("GET_QUEUE_NUM", |fe| fe.get_queue_num()), 2);
    assert_eq!(le16(&s.get_config(CFG_LEN)[CFG_NUM_QUEUES..]), 2);
    // Each queue works on its own.
    for q in 0..2 {
        let data = pattern(q as u64, 8192);
        s.write(q, 100 * q as u64, &data, Layout::default());
        assert!(s.read(q, 100 * q as u64, 8192, Layout::default()) == data);
    }
    // Traffic on queue 1 only leaves queue 0 untouched.
    let u0 = s.qs[0].used_idx();
    for i in 0..5 {
        s.write(1, 300 + i, &pattern(i, 512), Layout::default());
    }
    assert_eq!(s.qs[0].used_idx(), u0, "queue 1 traffic completed on queue 0");
    // Both queues busy at once; completions land on the right ring.
    for round in 0..10u64 {
        let mark = s.mem.mark();
        let p0 = prepare(
            &s.mem,
            VIRTIO_BLK_T_OUT,
            400 + round,
            &pattern(round, 512),
            0,
            Layout::default(),
        );
        let p1 = prepare(
            &s.mem,
            VIRTIO_BLK_T_OUT,
            500 + round,
            &pattern(round + 50, 512),
            0,
            Layout::default(),
        );
        let h0 = s.submit(0, &p0);
        let h1 = s.submit(1, &p1);
        assert_eq!(s.qs[1].wait_used(IO_TIMEOUT).0, h1);
        assert_eq!(s.qs[0].wait_used(IO_TIMEOUT).0, h0);
        assert_eq!(finish(&s.mem, &p0, 0).status, VIRTIO_BLK_S_OK);
        assert_eq!(finish(&s.mem, &p1, 0).status, VIRTIO_BLK_S_OK);
        s.mem.release(mark);
    }
    let img = b.image_content();
    for round in 0..10u64 {
        let a = ((400 + round) * 512) as usize;
        let c = ((500 + round) * 512) as usize;
        assert!(img[a..a + 512] == pattern(round, 512)[..]);
        assert!(img[c..c + 512] == pattern(round + 50, 512)[..]);
    }
    assert_eq!(s.stop_queue(0), 12);
    assert_eq!(s.stop_queue(1), 17);
}

#[test]
fn next_frontend_after_disconnect() {
    let mut b = Backend::start(BackendOpts::default());
    let first = pattern(1, 8192);
    {
        let mut s = Session::connect(&mut b, SessionOpts { event_idx: true, ..Default::default() });
        s.write(0, 0, &first, Layout::default());
    }
    // A second frontend, while a third one already waits in the backlog.
    let mut s2 = Session::connect(&mut b, SessionOpts::default());
    let waiting = b.connect();
    assert!(s2.read(0, 0, 8192, Layout::default()) == first, "data lost across reconnect");
    let second = pattern(2, 4096);
    s2.write(0, 32, &second, Layout { indirect: true, ..Default::default() });
    drop(s2);
    let mut s3 = Session::from_stream(
        waiting,
        SessionOpts { queue_size: 32, base: 7, ..Default::default() },
    );
    assert!(s3.read(0, 32, 4096, Layout::default()) == second);
    assert!(s3.read(0, 0, 8192, Layout::default()) == first);
    drop(s3);
    b.assert_alive();
    let st = b.terminate();
    assert!(st.success(), "exit: {}", describe(st));
    let (reqs, rd, wr, errs) = parse_summary(&b.stdout()).expect("summary line");
    assert_eq!((reqs, rd, wr, errs), (5, 8192 * 2 + 4096, 8192 + 4096, 0));
}

#[test]
fn one_shot_exits_after_the_frontend_leaves() {
    let mut b = Backend::start(BackendOpts { one_shot: true, ..Default::default() });
    {
        let mut s = Session::connect(&mut b, SessionOpts::default());
        s.write(0, 0, &pattern(5, 512), Layout::default());
    }
    let st = b.wait_exit(EXIT_TIMEOUT).expect("one-shot backend did not exit");
    assert!(st.success(), "exit: {}", describe(st));
    assert_eq!(parse_summary(&b.stdout()), Some((1, 0, 512, 0)));
}
