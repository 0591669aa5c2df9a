// SPDX-License-Identifier: GPL-2.0-or-later
//! vhost-user-blk example backend driven through the rust-vmm frontend:
//! data path tests.

mod common;
use common::*;

fn sectors(b: &Backend) -> u64 {
    b.opts.image_size.unwrap() / SECTOR
}

#[test]
fn whole_disk_write_read_back() {
    let mut b = Backend::start(BackendOpts { image_size: Some(1 << 20), ..Default::default() });
    let mut s = Session::connect(&mut b, SessionOpts::default());
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
        let got = s.read(0, sector, (n * SECTOR) as u32, Layout { seg: 3072, ..Default::default() });
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
