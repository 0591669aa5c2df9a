// SPDX-License-Identifier: GPL-2.0-or-later
//! Memory slots (VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS): GET_MAX_MEM_SLOTS,
//! many ADD_MEM_REG regions with I/O buffers scattered over and spanning
//! them, REM_MEM_REG + re-ADD of the region the rings live in, and hostile
//! slot messages (reported through the panic callback, no crash, no fd leak).

mod common;
#[path = "proto/mod.rs"]
mod proto;

use std::os::fd::AsRawFd;
use std::time::Duration;

use common::*;
use proto::*;

const R: u64 = 0x1_0000; // region size
const BASE: u64 = 0x10_0000; // gpa of region 0
const NREG: usize = 128;

fn region_end(i: usize) -> u64 {
    BASE + (i as u64 + 1) * R
}

struct Io<'a> {
    fe: &'a mut Front,
    image: Vec<u8>,
    k: u64,
}

impl Io<'_> {
    /// Write `len` bytes at `data` (one descriptor per `seg` bytes), read them
    /// back into `back`, compare with the model.
    #[allow(clippy::too_many_arguments)]
    fn write_read(
        &mut self,
        sector: u64,
        data: u64,
        back: u64,
        len: u32,
        seg: u32,
        hdr: u64,
        status: u64,
    ) {
        let d = pattern(self.k, len as usize);
        self.k += 1;
        let mem = self.fe.mem.clone();
        let p = prepare_at(&mem, VIRTIO_BLK_T_OUT, sector, &d, 0, hdr, data, status, seg);
        let (st, _) = self.fe.io(0, &p);
        assert_eq!(st, 0, "write of {len} bytes from {data:#x} failed");
        let r = (sector * 512) as usize..(sector * 512) as usize + len as usize;
        self.image[r.clone()].copy_from_slice(&d);
        let p = prepare_at(&mem, VIRTIO_BLK_T_IN, sector, &[], len, hdr, back, status, seg);
        let (st, used) = self.fe.io(0, &p);
        assert_eq!(st, 0, "read of {len} bytes into {back:#x} failed");
        assert_eq!(used, len + 1);
        assert!(
            mem.read(back, len as usize) == self.image[r],
            "data read into {back:#x} (+{len}) differs"
        );
    }
}

#[test]
fn many_regions_scattered_io_and_ring_region_removal() {
    let (_dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, &[]);
    let layout: Vec<(u64, u64)> = (0..NREG).map(|i| (BASE + i as u64 * R, R)).collect();
    let mem = GuestMemory::new(&layout);
    let mut fe = Front::without_table(
        be.connect(),
        mem.clone(),
        F_VERSION_1 | F_PROTOCOL_FEATURES,
        PF_REPLY_ACK | PF_CONFIGURE_MEM_SLOTS,
    );
    assert_eq!(fe.c.call(GET_MAX_MEM_SLOTS, &[], &[]).u64(), 509, "GET_MAX_MEM_SLOTS");

    // Add the regions in a scrambled order (the table is kept sorted).
    for j in 0..NREG {
        fe.add_region((j * 67) % NREG);
    }
    fe.add_queue(64, 0); // rings in region 0
    assert!(fe.qs[0].used < region_end(0));
    fe.start_queue(0, 0, None);

    let mut io = Io { fe: &mut fe, image: initial_image(1 << 20), k: 1 };
    // Buffers spanning two adjacent regions (one descriptor across the boundary).
    for k in 0..60usize {
        let r = 1 + (k * 37) % (NREG - 3);
        let data = region_end(r) - 1000 - (k as u64 % 5) * 100;
        let back = region_end(r + 1) - 2048 - 8 * k as u64;
        let hdr = BASE + ((k * 11) % 100 + 1) as u64 * R + 0x8000;
        let status = hdr + 0x800 + k as u64;
        let seg = if k % 2 == 0 { 4096 } else { 1536 };
        io.write_read((k as u64 * 8) % 2000, data, back, 4096, seg, hdr, status);
    }
    // One descriptor spanning three regions.
    let hdr = BASE + 120 * R;
    io.write_read(
        100,
        region_end(10) - 3000,
        region_end(20) - 3000,
        (R + 6000) as u32,
        (R + 6000) as u32,
        hdr,
        hdr + 64,
    );

    // Remove the region the rings live in, add it back, carry on.
    io.fe.rem_region(0);
    io.fe.add_region(0);
    for k in 0..10u64 {
        let hdr = BASE + (30 + k) * R;
        io.write_read(
            500 + k * 8,
            region_end(40 + k as usize) - 512,
            BASE + (60 + k) * R,
            4096,
            4096,
            hdr,
            hdr + 32,
        );
    }
    // Remove a data region, do I/O elsewhere, add it back and use it.
    io.fe.rem_region(90);
    let hdr = BASE + 100 * R;
    io.write_read(700, BASE + 50 * R, BASE + 51 * R, 4096, 4096, hdr, hdr + 32);
    io.fe.add_region(90);
    io.write_read(708, region_end(89) - 100, BASE + 90 * R + 0x8007, 4096, 4096, hdr, hdr + 32);

    let image_now = std::fs::read(&image).unwrap();
    assert!(image_now == io.image, "image differs from the model");
    be.assert_alive();
    assert!(!be.stderr().contains("PANIC"), "backend panicked:\n{}", be.stderr());
}

/// Send `f`, then expect a new panic report containing `what`, a live
/// backend that still answers, and no leaked fd.
fn expect_panic(be: &mut ProtoBackend, fe: &Front, what: &str, f: impl FnOnce(&Front)) {
    let before_panics = be.stderr().matches("PANIC").count();
    let fds_before = fd_count(be.pid());
    f(fe);
    assert_eq!(
        fe.c.call(GET_MAX_MEM_SLOTS, &[], &[]).u64(),
        509,
        "backend stopped answering after: {what}"
    );
    // The backend's stderr is collected asynchronously: wait for the new report to arrive.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while be.stderr().matches("PANIC").count() <= before_panics
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(
        be.stderr().matches("PANIC").count() > before_panics,
        "no panic reported for: {what}\n{}",
        be.stderr()
    );
    let last = be.stderr().lines().rfind(|l| l.contains("PANIC")).unwrap_or("").to_string();
    assert!(last.to_lowercase().contains(&what.to_lowercase()), "panic for '{what}' says: {last}");
    be.assert_alive();
    assert_eq!(fd_count(be.pid()), fds_before, "backend fd count changed after: {what}");
}

#[test]
fn hostile_mem_slot_messages() {
    let (_dir, sock, image) = workdir(1 << 20);
    let mut be = ProtoBackend::spawn(&sock, &image, &[]);
    let mem = GuestMemory::new(&[(BASE, R), (BASE + R, R)]);
    let fe = Front::without_table(
        be.connect(),
        mem.clone(),
        F_VERSION_1 | F_PROTOCOL_FEATURES,
        PF_CONFIGURE_MEM_SLOTS,
    );
    // No REPLY_ACK: a refused request gets no reply, the next call proves liveness.
    fe.add_region(0);
    fe.add_region(1);
    assert_eq!(fe.c.call(GET_MAX_MEM_SLOTS, &[], &[]).u64(), 509);
    assert!(!be.stderr().contains("PANIC"), "{}", be.stderr());
    let big = memfd("slots", 600 * 4096);
    let fd = big.as_raw_fd();

    expect_panic(&mut be, &fe, "overlapping", |fe| {
        fe.c.send(ADD_MEM_REG, FLAG_VERSION, &memreg(BASE + R / 2, R, 0x7000_0000, 0), &[fd]);
    });
    expect_panic(&mut be, &fe, "not found", |fe| {
        fe.c.send(REM_MEM_REG, FLAG_VERSION, &memreg(BASE + 40 * R, R, 0x7000_0000, 0), &[fd]);
    });
    expect_panic(&mut be, &fe, "not found", |fe| {
        // Right address, wrong size.
        fe.c.send(
            REM_MEM_REG,
            FLAG_VERSION,
            &memreg(BASE, R / 2, mem.regions[0].host as u64, 0),
            &[],
        );
    });
    expect_panic(&mut be, &fe, "fd", |fe| {
        fe.c.send(ADD_MEM_REG, FLAG_VERSION, &memreg(BASE + 50 * R, 4096, 0x7100_0000, 0), &[]);
    });
    expect_panic(&mut be, &fe, "fd", |fe| {
        fe.c.send(
            ADD_MEM_REG,
            FLAG_VERSION,
            &memreg(BASE + 50 * R, 4096, 0x7100_0000, 0),
            &[fd, fd],
        );
    });
    expect_panic(&mut be, &fe, "fd", |fe| {
        fe.c.send(
            REM_MEM_REG,
            FLAG_VERSION,
            &memreg(BASE, R, mem.regions[0].host as u64, 0),
            &[fd, fd],
        );
    });
    expect_panic(&mut be, &fe, "size", |fe| {
        fe.c.send(
            ADD_MEM_REG,
            FLAG_VERSION,
            &memreg(BASE + 50 * R, 4096, 0x7100_0000, 0)[..24],
            &[fd],
        );
    });

    // Fill all 509 slots (2 are used), then one more.
    let fds_before = fd_count(be.pid());
    for i in 0..507u64 {
        fe.c.send(
            ADD_MEM_REG,
            FLAG_VERSION,
            &memreg(0x1000_0000 + i * 4096, 4096, 0x8000_0000 + i * 4096, i * 4096),
            &[fd],
        );
    }
    assert_eq!(fe.c.call(GET_MAX_MEM_SLOTS, &[], &[]).u64(), 509);
    let panics = be.stderr().matches("PANIC").count();
    assert_eq!(fd_count(be.pid()), fds_before, "fds leaked while adding regions");
    expect_panic(&mut be, &fe, "slots", |fe| {
        fe.c.send(
            ADD_MEM_REG,
            FLAG_VERSION,
            &memreg(0x2000_0000, 4096, 0x9000_0000, 508 * 4096),
            &[fd],
        );
    });
    assert_eq!(
        be.stderr().matches("PANIC").count(),
        panics + 1,
        "adding the 509 slots was refused:\n{}",
        be.stderr()
    );
    // Removing one frees a slot again.
    fe.c.send(REM_MEM_REG, FLAG_VERSION, &memreg(0x1000_0000, 4096, 0x8000_0000, 0), &[]);
    fe.c.send(
        ADD_MEM_REG,
        FLAG_VERSION,
        &memreg(0x2000_0000, 4096, 0x9000_0000, 508 * 4096),
        &[fd],
    );
    assert_eq!(fe.c.call(GET_MAX_MEM_SLOTS, &[], &[]).u64(), 509);
    assert_eq!(
        be.stderr().matches("PANIC").count(),
        panics + 1,
        "re-adding after a removal was refused:\n{}",
        be.stderr()
    );
    be.assert_alive();
    for l in be.stderr().lines().filter(|l| l.contains("PANIC")) {
        eprintln!("reported: {l}");
    }
}
