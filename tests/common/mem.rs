// SPDX-License-Identifier: GPL-2.0-or-later
//! Guest memory for the test frontend: several memfd-backed regions, each
//! mapped into the test process and shared with the backend by fd.

use std::fs::File;
use std::os::unix::io::{AsRawFd, FromRawFd};
use std::sync::atomic::{fence, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use vhost::VhostUserMemoryRegionInfo;

pub struct Region {
    pub gpa: u64,
    pub size: u64,
    pub host: *mut u8,
    pub file: File,
}

// SAFETY: the mapping lives as long as the Region and is only accessed
// through volatile/atomic helpers; the backend shares it by design.
unsafe impl Send for Region {}
unsafe impl Sync for Region {}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: host/size describe a mapping created in GuestMemory::new.
        unsafe { libc::munmap(self.host as *mut libc::c_void, self.size as usize) };
    }
}

pub struct GuestMemory {
    pub regions: Vec<Region>,
    /// Bump allocator: next free guest address per region.
    next: Mutex<Vec<u64>>,
}

fn memfd(name: &str, size: u64) -> File {
    let cname = std::ffi::CString::new(name).unwrap();
    // SAFETY: plain syscall with a valid C string.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor we own.
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).expect("ftruncate memfd");
    f
}

impl GuestMemory {
    /// Create regions at the given (guest physical address, size) pairs.
    pub fn new(layout: &[(u64, u64)]) -> Arc<Self> {
        let mut regions = Vec::new();
        for (i, &(gpa, size)) in layout.iter().enumerate() {
            assert!(size > 0 && size % 4096 == 0);
            let file = memfd(&format!("guest-ram-{i}"), size);
            // SAFETY: mapping a memfd we own, with its full size.
            let host = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    file.as_raw_fd(),
                    0,
                )
            };
            assert!(host != libc::MAP_FAILED, "mmap: {}", std::io::Error::last_os_error());
            regions.push(Region { gpa, size, host: host as *mut u8, file });
        }
        let next = regions.iter().map(|r| r.gpa).collect();
        Arc::new(GuestMemory { regions, next: Mutex::new(next) })
    }

    /// A single region of `size` bytes at guest address 0.
    pub fn simple(size: u64) -> Arc<Self> {
        Self::new(&[(0, size)])
    }

    /// The descriptions passed to SET_MEM_TABLE (userspace_addr is our own
    /// mapping address, as QEMU does).
    pub fn region_infos(&self) -> Vec<VhostUserMemoryRegionInfo> {
        self.regions
            .iter()
            .map(|r| VhostUserMemoryRegionInfo {
                guest_phys_addr: r.gpa,
                memory_size: r.size,
                userspace_addr: r.host as u64,
                mmap_offset: 0,
                mmap_handle: r.file.as_raw_fd(),
            })
            .collect()
    }

    fn region_of(&self, gpa: u64) -> Option<&Region> {
        self.regions.iter().find(|r| gpa >= r.gpa && gpa - r.gpa < r.size)
    }

    /// Host pointer for [gpa, gpa+len), which must lie in one region.
    pub fn host_ptr(&self, gpa: u64, len: u64) -> *mut u8 {
        let r = self.region_of(gpa).unwrap_or_else(|| panic!("gpa {gpa:#x} not in guest memory"));
        assert!(gpa - r.gpa + len <= r.size, "range {gpa:#x}+{len:#x} crosses a region end");
        // SAFETY: offset checked against the region size above.
        unsafe { r.host.add((gpa - r.gpa) as usize) }
    }

    /// Frontend virtual address (QVA) of a guest address, for SET_VRING_ADDR.
    pub fn qva(&self, gpa: u64) -> u64 {
        self.host_ptr(gpa, 0) as u64
    }

    /// Split [gpa, gpa+len) into per-region pieces (host ptr, len).
    fn pieces(&self, mut gpa: u64, mut len: u64) -> Vec<(*mut u8, usize)> {
        let mut v = Vec::new();
        while len > 0 {
            let r =
                self.region_of(gpa).unwrap_or_else(|| panic!("gpa {gpa:#x} not in guest memory"));
            let n = len.min(r.size - (gpa - r.gpa));
            // SAFETY: inside the region.
            v.push((unsafe { r.host.add((gpa - r.gpa) as usize) }, n as usize));
            gpa += n;
            len -= n;
        }
        v
    }

    pub fn write(&self, gpa: u64, data: &[u8]) {
        let mut off = 0;
        for (p, n) in self.pieces(gpa, data.len() as u64) {
            // SAFETY: p..p+n is inside a live shared mapping.
            unsafe { std::ptr::copy_nonoverlapping(data[off..].as_ptr(), p, n) };
            off += n;
        }
    }

    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        let mut off = 0;
        for (p, n) in self.pieces(gpa, len as u64) {
            // SAFETY: p..p+n is inside a live shared mapping.
            unsafe { std::ptr::copy_nonoverlapping(p, v[off..].as_mut_ptr(), n) };
            off += n;
        }
        v
    }

    pub fn fill(&self, gpa: u64, len: usize, byte: u8) {
        self.write(gpa, &vec![byte; len]);
    }

    fn atomic16(&self, gpa: u64) -> &AtomicU16 {
        assert_eq!(gpa % 2, 0);
        // SAFETY: aligned, inside guest memory that outlives &self.
        unsafe { &*(self.host_ptr(gpa, 2) as *const AtomicU16) }
    }

    /// Little-endian u16 store with release ordering (ring indices).
    pub fn store_u16(&self, gpa: u64, v: u16) {
        fence(Ordering::SeqCst);
        self.atomic16(gpa).store(v.to_le(), Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    pub fn load_u16(&self, gpa: u64) -> u16 {
        fence(Ordering::SeqCst);
        let v = u16::from_le(self.atomic16(gpa).load(Ordering::SeqCst));
        fence(Ordering::SeqCst);
        v
    }

    pub fn write_u16(&self, gpa: u64, v: u16) {
        self.write(gpa, &v.to_le_bytes());
    }
    pub fn write_u32(&self, gpa: u64, v: u32) {
        self.write(gpa, &v.to_le_bytes());
    }
    pub fn write_u64(&self, gpa: u64, v: u64) {
        self.write(gpa, &v.to_le_bytes());
    }
    pub fn read_u32(&self, gpa: u64) -> u32 {
        u32::from_le_bytes(self.read(gpa, 4).try_into().unwrap())
    }

    /// Snapshot of the allocator, to free everything allocated after it.
    pub fn mark(&self) -> Vec<u64> {
        self.next.lock().unwrap().clone()
    }

    pub fn release(&self, mark: Vec<u64>) {
        *self.next.lock().unwrap() = mark;
    }

    /// Allocate `size` bytes aligned to `align` inside one region (the
    /// first with room), zeroed.
    pub fn alloc(&self, size: u64, align: u64) -> u64 {
        let mut next = self.next.lock().unwrap();
        for (i, r) in self.regions.iter().enumerate() {
            let a = next[i].div_ceil(align) * align;
            if a + size <= r.gpa + r.size {
                next[i] = a + size;
                self.fill(a, size as usize, 0);
                return a;
            }
        }
        panic!("guest memory exhausted allocating {size} bytes");
    }

    /// Mark region `idx` as full, so later allocations go elsewhere.
    pub fn exhaust(&self, idx: usize) {
        let r = &self.regions[idx];
        self.next.lock().unwrap()[idx] = r.gpa + r.size;
    }

    /// Allocate `size` bytes that straddle the end of region `idx` (which
    /// must be followed by an adjacent region): `before` bytes in region
    /// idx, the rest in the next one. Used to test buffers spanning regions.
    pub fn alloc_spanning(&self, idx: usize, before: u64, size: u64) -> u64 {
        let r = &self.regions[idx];
        let end = r.gpa + r.size;
        assert!(self.region_of(end).is_some(), "region {idx} has no adjacent successor");
        let start = end - before;
        let mut next = self.next.lock().unwrap();
        assert!(next[idx] <= start, "region {idx} tail already allocated");
        next[idx] = end;
        let j = self.regions.iter().position(|x| x.gpa == end).unwrap();
        assert_eq!(next[j], end, "region {j} head already allocated");
        next[j] = start + size;
        drop(next);
        self.fill(start, size as usize, 0);
        start
    }
}
