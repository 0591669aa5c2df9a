// SPDX-License-Identifier: GPL-2.0-or-later
//! The seeded PRNG of the random-input tests (the stress tests, tests/split_cases), included
//! with `#[path]` where it is used.
#![allow(dead_code)]

/// splitmix64: small, deterministic, good enough for input generation.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn u32(&mut self) -> u32 {
        self.u64() as u32
    }
    pub fn u16(&mut self) -> u16 {
        self.u64() as u16
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.u64() % n
    }
    pub fn range(&mut self, lo: u64, hi_incl: u64) -> u64 {
        lo + self.below(hi_incl - lo + 1)
    }
    /// True with probability num/den.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.u64() as u8).collect()
    }
    /// Boundary values, random values, or `near` plus/minus a little.
    pub fn interesting_u64(&mut self, near: u64) -> u64 {
        const V: &[u64] = &[
            0,
            1,
            2,
            3,
            4,
            7,
            8,
            15,
            16,
            255,
            256,
            1023,
            1024,
            1025,
            4095,
            4096,
            4097,
            32768,
            65535,
            65536,
            1 << 20,
            (1 << 20) - 1,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
            1 << 32,
            (1 << 32) + 1,
            0x7fff_ffff_ffff,
            0x8000_0000_0000,
            i64::MAX as u64,
            1 << 63,
            u64::MAX - 4095,
            u64::MAX - 1,
            u64::MAX,
        ];
        match self.below(4) {
            0 => self.pick(V),
            1 => self.u64(),
            2 => near.wrapping_add(self.pick(&[1u64, 2, 8, 16, 4095, 4096, 65536, 1 << 20])),
            _ => near.wrapping_sub(self.pick(&[1u64, 2, 8, 16, 4095, 4096, 65536, 1 << 20])),
        }
    }
    pub fn interesting_u32(&mut self, near: u32) -> u32 {
        if self.chance(1, 2) {
            self.interesting_u64(near as u64) as u32
        } else {
            self.pick(&[
                0u32,
                1,
                2,
                3,
                4,
                7,
                8,
                16,
                255,
                256,
                512,
                1024,
                1025,
                2048,
                32768,
                65535,
                65536,
                u32::MAX,
            ])
        }
    }
}
