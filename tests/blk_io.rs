// SPDX-License-Identifier: GPL-2.0-or-later
//! vhost-user-blk example backend driven through the rust-vmm frontend:
//! data path tests.

mod common;
use common::*;

fn sectors(b: &Backend) -> u64 {
    b.opts.image_size.unwrap() / SECTOR
}

/// Runs a scenario on split rings and (`_packed`) on packed rings.
macro_rules! both_layouts {
    ($split:ident, $packed:ident, $f:ident) => {
        #[test]
        fn $split() {
            $f::<SplitQueue>();
        }
        #[test]
        fn $packed() {
            $f::<PackedQueue>();
        }
    };
}

both_layouts!(whole_disk_write_read_back, whole_disk_write_read_back_packed, whole_disk);

fn whole_disk<Q: Driver>() {
    let mut b = Backend::start(BackendOpts { image_size: Some(1 << 20), ..Default::default() });
    let mut s = Session::<Q>::connect_as(&mut b, SessionOpts::default());
    let total = sectors(&b);
    // Initial content is visible.
    let first = s.read(0, 0, 64 * 1024, Layout::default());
    assert!(first == initial_image(64 * 1024), "initial image content not read back");
    // Write the whole disk in chunks of varying size and segmentation.
    let mut expect = vec![0u8; (total * SECTOR) as usize];
    let sizes = [1u64, 7, 8, 64, 3, 128, 255, 16];
    let mut sector = 0;
    let mut k = 0;
    while sector < total {
        let n = sizes[k % sizes.len()].min(total - sector);
        let data = pattern(sector + 1, (n * SECTOR) as usize);
        let l = Layout { seg: [512u32, 4096, 1000, 65536][k % 4], ..Default::default() };
        s.write(0, sector, &data, l);
        expect[(sector * SECTOR) as usize..((sector + n) * SECTOR) as usize].copy_from_slice(&data);
        sector += n;
        k += 1;
    }
    // Read it all back with other chunk sizes.
    let mut sector = 0;
    while sector < total {
        let n = 96u64.min(total - sector);
        let got =
            s.read(0, sector, (n * SECTOR) as u32, Layout { seg: 3072, ..Default::default() });
        assert!(
            got == expect[(sector * SECTOR) as usize..((sector + n) * SECTOR) as usize],
            "data mismatch at sector {sector}"
        );
        sector += n;
    }
    assert!(b.image_content() == expect, "image file differs from what was written");
}

#[test]
fn out_of_range_requests_fail_cleanly() {
    let mut b = Backend::start(BackendOpts { image_size: Some(64 * 1024), ..Default::default() });
    let mut s = Session::connect(&mut b, SessionOpts::default());
    let total = sectors(&b);
    let l = Layout::default();
    // Last sector is fine.
    s.write(0, total - 1, &pattern(9, 512), l);
    // Past the end, straddling the end, and a huge sector number.
    for (sector, n) in [(total, 1u64), (total - 1, 2), (u64::MAX / 512, 1), (u64::MAX, 1)] {
        let c = s.io(0, VIRTIO_BLK_T_OUT, sector, &pattern(1, (n * SECTOR) as usize), 0, l);
        assert_eq!(c.status, VIRTIO_BLK_S_IOERR, "write at {sector}+{n} must fail");
        let c = s.io(0, VIRTIO_BLK_T_IN, sector, &[], (n * SECTOR) as u32, l);
        assert_eq!(c.status, VIRTIO_BLK_S_IOERR, "read at {sector}+{n} must fail");
    }
    // A length that is not a multiple of the sector size.
    let c = s.io(0, VIRTIO_BLK_T_IN, 0, &[], 100, l);
    assert_eq!(c.status, VIRTIO_BLK_S_IOERR);
    // Unknown request type.
    let c = s.io(0, 0x1234, 0, &[], 512, l);
    assert_eq!(c.status, VIRTIO_BLK_S_UNSUPP);
    // The image is unchanged except for the last sector; size unchanged.
    let img = b.image_content();
    assert_eq!(img.len() as u64, total * SECTOR);
    let mut expect = initial_image(total * SECTOR);
    expect[((total - 1) * SECTOR) as usize..].copy_from_slice(&pattern(9, 512));
    assert!(img == expect, "image modified by a rejected request");
}

both_layouts!(
    buffers_spanning_memory_regions,
    buffers_spanning_memory_regions_packed,
    spanning_regions
);

fn spanning_regions<Q: Driver>() {
    let mut b = Backend::start(BackendOpts { image_size: Some(256 * 1024), ..Default::default() });
    // Four adjacent regions of different sizes plus one far away.
    let layout = vec![
        (0, 1 << 20),
        (1 << 20, 64 << 10),
        ((1 << 20) + (64 << 10), 2 << 20),
        (1 << 32, 1 << 20),
    ];
    let mut s = Session::<Q>::connect_as(&mut b, SessionOpts { layout, ..Default::default() });
    assert_eq!(s.mem.regions.len(), 4);
    // A single descriptor whose buffer crosses region 0 -> 1, then 1 -> 2.
    for (i, region) in [0usize, 1].iter().enumerate() {
        let l = Layout { seg: 1 << 20, spanning: Some(*region), ..Default::default() };
        let data = pattern(100 + i as u64, 16 * 1024);
        s.write(0, 32 * i as u64, &data, l);
        let back = s.read(0, 32 * i as u64, 16 * 1024, Layout::default());
        assert!(back == data, "write through a region-spanning buffer read back wrong");
        let data2 = pattern(200 + i as u64, 16 * 1024);
        s.write(0, 64 + 32 * i as u64, &data2, Layout::default());
        // Spanning read: status byte separate, and status inside the data buffer.
        let mark = s.mem.mark();
        let back = s.read(0, 64 + 32 * i as u64, 16 * 1024, l);
        s.mem.release(mark);
        assert!(back == data2, "read into a region-spanning buffer wrong");
        let c = s.io(
            0,
            VIRTIO_BLK_T_IN,
            64 + 32 * i as u64,
            &[],
            16 * 1024,
            Layout { status_in_data: true, ..l },
        );
        assert_eq!(c.status, VIRTIO_BLK_S_OK);
        assert!(c.data == data2);
    }
    // Buffers in the far region (allocated once the lower regions are full).
    let mark = s.mem.mark();
    for r in 0..3 {
        s.mem.exhaust(r);
    }
    let data = pattern(300, 8192);
    let probe = s.mem.alloc(8, 8);
    assert!(probe >= 1 << 32, "allocation not in the far region");
    s.write(0, 200, &data, Layout::default());
    assert!(s.read(0, 200, 8192, Layout::default()) == data);
    s.mem.release(mark);
    let img = b.image_content();
    assert!(img[200 * 512..200 * 512 + 8192] == data[..]);
}

both_layouts!(indirect_descriptors, indirect_descriptors_packed, indirect);

fn indirect<Q: Driver>() {
    let mut b = Backend::start(BackendOpts { image_size: Some(256 * 1024), ..Default::default() });
    let mut s =
        Session::<Q>::connect_as(&mut b, SessionOpts { queue_size: 16, ..Default::default() });
    assert!(s.acked & VIRTIO_RING_F_INDIRECT_DESC != 0);
    // 64 data segments: more than the 16-entry ring could hold directly.
    let l = Layout { seg: 512, indirect: true, ..Default::default() };
    let data = pattern(7, 64 * 512);
    s.write(0, 10, &data, l);
    assert!(s.read(0, 10, 64 * 512, l) == data, "indirect read back differs");
    assert!(s.read(0, 10, 64 * 512, Layout::default()) == data);
    // Mixed: direct and indirect requests in flight together.
    let mark = s.mem.mark();
    let p1 =
        prepare(&s.mem, VIRTIO_BLK_T_IN, 10, &[], 4096, Layout { seg: 512, ..Default::default() });
    let p2 = prepare(&s.mem, VIRTIO_BLK_T_IN, 18, &[], 4096, l);
    let h1 = s.submit(0, &p1);
    let h2 = s.submit(0, &p2);
    let mut done = vec![s.qs[0].wait_used(IO_TIMEOUT), s.qs[0].wait_used(IO_TIMEOUT)];
    done.sort();
    let mut heads = vec![(h1, 4097), (h2, 4097)];
    heads.sort();
    assert_eq!(done, heads);
    assert!(finish(&s.mem, &p1, 0).data == data[..4096]);
    assert!(finish(&s.mem, &p2, 0).data == data[4096..8192]);
    s.mem.release(mark);
    assert_eq!(s.qs[0].free_count(), 16, "descriptors leaked");
}

both_layouts!(flush_and_get_id, flush_and_get_id_packed, flush_get_id);

fn flush_get_id<Q: Driver>() {
    let mut b =
        Backend::start(BackendOpts { serial: Some("test-serial-42".into()), ..Default::default() });
    let mut s = Session::<Q>::connect_as(&mut b, SessionOpts::default());
    s.write(0, 0, &pattern(3, 4096), Layout::default());
    let c = s.io(0, VIRTIO_BLK_T_FLUSH, 0, &[], 0, Layout::default());
    assert_eq!((c.status, c.used_len), (VIRTIO_BLK_S_OK, 1), "flush");
    let c = s.io(0, VIRTIO_BLK_T_GET_ID, 0, &[], 20, Layout::default());
    assert_eq!(c.status, VIRTIO_BLK_S_OK);
    assert_eq!(&c.data[..14], b"test-serial-42");
    assert!(c.data[14..].iter().all(|&x| x == 0));
    assert_eq!(c.used_len, 21);
    drop(s);
    let st = b.terminate();
    assert!(st.success(), "backend exit: {}", describe(st));
    let (reqs, rd, wr, errs) = parse_summary(&b.stdout()).expect("summary line");
    assert_eq!((reqs, rd, wr, errs), (3, 0, 4096, 0), "summary: {}", b.stdout());
}

fn worker_threads<Q: Driver>(queues: u16) {
    let mut b = Backend::start(BackendOpts {
        queues,
        threads: true,
        image_size: Some(512 * 1024),
        ..Default::default()
    });
    let mut s = Session::<Q>::connect_as(
        &mut b,
        SessionOpts { queues, event_idx: true, ..Default::default() },
    );
    for round in 0..20u64 {
        for q in 0..queues as usize {
            let sector = (round * queues as u64 + q as u64) * 16;
            let data = pattern(round * 10 + q as u64, 8192);
            s.write(q, sector, &data, Layout { seg: 2048, ..Default::default() });
            assert!(s.read(q, sector, 8192, Layout::default()) == data);
        }
    }
    for q in 0..queues as usize {
        let want = s.qs[q].ring_state();
        assert_eq!(s.stop_queue(q), want, "GET_VRING_BASE of queue {q} ({})", Q::NAME);
        if Q::NAME == "split" {
            assert_eq!(want, 40);
        }
    }
}

fn worker_thread_modes<Q: Driver>() {
    worker_threads::<Q>(1);
    worker_threads::<Q>(3);
}

both_layouts!(worker_thread_mode, worker_thread_mode_packed, worker_thread_modes);

#[test]
fn null_mode_and_summary() {
    let mut b =
        Backend::start(BackendOpts { image_size: None, null_size: 1 << 40, ..Default::default() });
    let mut s = Session::connect(&mut b, SessionOpts::default());
    let cfg = s.get_config(CFG_LEN);
    assert_eq!(u64::from_le_bytes(cfg[0..8].try_into().unwrap()), (1u64 << 40) / 512);
    let c = s.io(0, VIRTIO_BLK_T_IN, (1 << 40) / 512 - 8, &[], 4096, Layout::default());
    assert_eq!((c.status, c.used_len), (VIRTIO_BLK_S_OK, 4097));
    s.write(0, 1 << 30, &pattern(1, 8192), Layout::default());
    let c = s.io(0, VIRTIO_BLK_T_IN, (1 << 40) / 512, &[], 512, Layout::default());
    assert_eq!(c.status, VIRTIO_BLK_S_IOERR, "read past the end of a null device");
    drop(s);
    let st = b.terminate();
    assert!(st.success());
    assert_eq!(
        parse_summary(&b.stdout()),
        Some((3, 4096, 8192, 1)),
        "summary: {:?} {:?} {}",
        b.stdout(),
        st,
        b.stderr()
    );
}
