// SPDX-License-Identifier: GPL-2.0-or-later
//! The README's main job: the example C backend (examples-c/vhost-user-blk.c, built against
//! this library) serving a disk image to an independent vhost-user frontend (rust-vmm's
//! `vhost` crate with our own split-ring driver). It writes the whole disk, reads it back,
//! checks the image file, and measures request rates.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

use common::*;

const IMAGE: u64 = 64 << 20;

fn main() {
    let mut backend =
        Backend::start(BackendOpts { image_size: Some(IMAGE), queues: 2, ..Default::default() });
    println!(
        "backend: examples-c/vhost-user-blk (pid {}) on a {} MiB image",
        backend.pid(),
        IMAGE >> 20
    );
    let opts = SessionOpts {
        queues: 2,
        event_idx: true,
        layout: vec![(0, 16 << 20), (16 << 20, 16 << 20)],
        ..Default::default()
    };
    let mut s = Session::connect(&mut backend, opts);
    println!(
        "frontend: rust-vmm vhost {} queues, EVENT_IDX, indirect descriptors, 2 memory regions",
        s.qs.len()
    );

    let cfg = s.get_config(8);
    let capacity = u64::from_le_bytes(cfg[..8].try_into().unwrap());
    assert_eq!(capacity * SECTOR, IMAGE, "config space capacity");
    println!("verified: config space capacity = {capacity} sectors");

    // Whole disk: write a pattern in 128 KiB requests, alternating queues and layouts.
    let chunk = 128 * 1024u64;
    let t = Instant::now();
    for (k, off) in (0..IMAGE).step_by(chunk as usize).enumerate() {
        let l = Layout { seg: 32 * 1024, indirect: k % 2 == 1, ..Default::default() };
        s.write(k % 2, off / SECTOR, &pattern(off, chunk as usize), l);
    }
    let wsecs = t.elapsed().as_secs_f64();
    let t = Instant::now();
    for (k, off) in (0..IMAGE).step_by(chunk as usize).enumerate() {
        let got = s.read(
            (k + 1) % 2,
            off / SECTOR,
            chunk as u32,
            Layout { seg: 16 * 1024, ..Default::default() },
        );
        assert!(got == pattern(off, chunk as usize), "read-back mismatch at offset {off}");
    }
    let rsecs = t.elapsed().as_secs_f64();
    println!(
        "verified: {} MiB written and read back through the device ({:.0} MiB/s write, {:.0} MiB/s read, queue depth 1)",
        IMAGE >> 20,
        (IMAGE >> 20) as f64 / wsecs,
        (IMAGE >> 20) as f64 / rsecs
    );
    let image = backend.image_content();
    let expect: Vec<u8> =
        (0..IMAGE).step_by(chunk as usize).flat_map(|off| pattern(off, chunk as usize)).collect();
    assert!(image == expect, "image file differs from what the guest wrote");
    println!("verified: the image file holds exactly what was written");

    // Small-request rate, one request in flight at a time.
    let n = 20_000u64;
    let t = Instant::now();
    for i in 0..n {
        let _ = s.read(0, (i * 8) % (IMAGE / SECTOR - 8), 4096, Layout::default());
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "speed: {:.0} 4 KiB reads/s at queue depth 1 ({:.1} us per request round trip)",
        n as f64 / secs,
        secs * 1e6 / n as f64
    );
    drop(s);
    let st = backend.terminate();
    println!("backend exited: {}", describe(st));
    println!("summary line from the backend: {}", backend.stdout().lines().last().unwrap_or(""));
}
