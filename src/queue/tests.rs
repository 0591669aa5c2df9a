//! Unit tests of the queue operations on both layouts, through the C entry points, over a
//! device set up in-process: one memfd of guest memory (the library maps it as a region; the
//! test maps it again to play the driver), one queue whose ring the test writes by hand.

use std::cell::Cell;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

use libc::{c_char, c_int, c_void};

use super::packed_ring::*;
use super::VIRTIO_F_RING_PACKED;
use crate::abi::*;
use crate::device::Dev;
use crate::ffi::*;
use crate::queue::chain::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use crate::queue::split::{VIRTIO_F_VERSION_1, VIRTIO_RING_F_EVENT_IDX};

const MEM: usize = 1 << 20;
const QVA: u64 = 0x7000_0000;
const DESC: u64 = 0x1000;
const DRIVER: u64 = 0x8000;
const DEVICE: u64 = 0x8100;
const USED_SPLIT: u64 = 0x9000;
const AVAIL_SPLIT: u64 = 0x8800;
const DATA: u64 = 0x10000;

thread_local! {
    static PANICS: Cell<u32> = const { Cell::new(0) };
}

unsafe extern "C" fn on_panic(_dev: *mut VuDev, _msg: *const c_char) {
    PANICS.with(|p| p.set(p.get() + 1));
}
unsafe extern "C" fn on_set_watch(
    _d: *mut VuDev,
    _fd: c_int,
    _c: c_int,
    _cb: vu_watch_cb,
    _data: *mut c_void,
) {
}
unsafe extern "C" fn on_remove_watch(_d: *mut VuDev, _fd: c_int) {}

// SAFETY: all-zero is a valid VuDevIface (every callback None).
static IFACE: VuDevIface = unsafe { std::mem::zeroed() };

/// A device with one queue of `num` entries over 1 MiB of guest memory at guest address 0.
pub struct Harness {
    dev: Box<VuDev>,
    guest: *mut u8,
    _fd: OwnedFd,
    _sock: OwnedFd,
    pub num: u16,
    packed: bool,
    // Driver state (packed).
    avail: Pos,
    used: Pos,
    next_id: u16,
}

impl Harness {
    pub fn new(packed: bool, num: u16, features: u64) -> Harness {
        PANICS.with(|p| p.set(0));
        let mut sv = [0; 2];
        // SAFETY: plain syscalls with valid out-pointers; results checked.
        let (fd, guest, sock, other) = unsafe {
            assert_eq!(libc::socketpair(libc::AF_UNIX, libc::SOCK_STREAM, 0, sv.as_mut_ptr()), 0);
            let fd = libc::memfd_create(c"guest".as_ptr(), libc::MFD_CLOEXEC);
            assert!(fd >= 0);
            assert_eq!(libc::ftruncate(fd, MEM as i64), 0);
            let p = libc::mmap(
                std::ptr::null_mut(),
                MEM,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            (
                OwnedFd::from_raw_fd(fd),
                p as *mut u8,
                OwnedFd::from_raw_fd(sv[0]),
                OwnedFd::from_raw_fd(sv[1]),
            )
        };
        // SAFETY: all-zero is a valid VuDev before vu_init.
        let mut dev: Box<VuDev> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: a fresh device, valid callbacks and iface.
        let ok = unsafe {
            vu_init(
                &mut *dev,
                1,
                // The device owns its socket from here on (vu_deinit closes it).
                std::os::fd::IntoRawFd::into_raw_fd(sock),
                Some(on_panic),
                None,
                Some(on_set_watch),
                Some(on_remove_watch),
                &IFACE,
            )
        };
        assert!(ok);
        // SAFETY: just initialised.
        let d = unsafe { Dev::from_raw(&mut *dev) }.unwrap();
        let mut f = features | 1 << VIRTIO_F_VERSION_1;
        if packed {
            f |= 1 << VIRTIO_F_RING_PACKED;
        }
        {
            let mut mem = d.mem_mut();
            mem.table_mut()
                .add(
                    &VhostUserMemoryRegion {
                        guest_phys_addr: 0,
                        memory_size: MEM as u64,
                        userspace_addr: QVA,
                        mmap_offset: 0,
                    },
                    fd.as_fd(),
                )
                .unwrap();
            d.set_features(f);
            if packed {
                crate::queue::ids::ensure_tables(d);
            }
            // SAFETY: queue 0 of the device, under the write lock.
            let vq = unsafe { &mut *d.vq(0).unwrap() };
            vq.vring.num = u32::from(num);
            vq.vra.desc_user_addr = QVA + DESC;
            if packed {
                vq.vra.avail_user_addr = QVA + DRIVER;
                vq.vra.used_user_addr = QVA + DEVICE;
                vq.last_avail_idx = Pos::START.0;
                vq.used_idx = Pos::START.0;
            } else {
                vq.vra.avail_user_addr = QVA + AVAIL_SPLIT;
                vq.vra.used_user_addr = QVA + USED_SPLIT;
            }
            vq.enable = 1;
            vq.started = true;
            crate::queue::map_ring(d, &mem.table(), vq).unwrap();
        }
        Harness {
            dev,
            guest,
            _fd: fd,
            _sock: other,
            num,
            packed,
            avail: Pos::START,
            used: Pos::START,
            next_id: 0,
        }
    }

    pub fn dev(&mut self) -> *mut VuDev {
        &mut *self.dev
    }

    pub fn vq(&mut self) -> *mut VuVirtq {
        // SAFETY: initialised device with one queue.
        unsafe { vu_get_queue(self.dev(), 0) }
    }

    pub fn vq_ref(&self) -> &VuVirtq {
        // SAFETY: queue 0 of the initialised device; read between calls on this thread only.
        unsafe { &*self.dev.vq }
    }

    pub fn panics(&self) -> u32 {
        PANICS.with(|p| p.get())
    }

    pub fn broken(&self) -> bool {
        self.dev.broken
    }

    fn at<T>(&self, gpa: u64) -> *mut T {
        assert!(gpa as usize + std::mem::size_of::<T>() <= MEM);
        self.guest.wrapping_add(gpa as usize).cast()
    }

    pub fn write<T: Copy>(&self, gpa: u64, v: T) {
        // SAFETY: inside the test's own mapping (checked in `at`).
        unsafe { self.at::<T>(gpa).write_volatile(v) }
    }

    pub fn read<T: Copy>(&self, gpa: u64) -> T {
        // SAFETY: as in `write`.
        unsafe { self.at::<T>(gpa).read_volatile() }
    }

    fn desc_gpa(&self, slot: u16) -> u64 {
        DESC + 16 * u64::from(slot)
    }

    /// Packed driver: makes a chain of `(addr, len, write)` buffers available (head flags last);
    /// `indirect` puts them in an indirect table instead. Returns the buffer id.
    pub fn offer(&mut self, bufs: &[(u64, u32, bool)], indirect: bool) -> u16 {
        assert!(self.packed);
        let id = self.next_id;
        self.next_id = (self.next_id + 1) % self.num;
        self.offer_id(bufs, indirect, id)
    }

    pub fn offer_id(&mut self, bufs: &[(u64, u32, bool)], indirect: bool, id: u16) -> u16 {
        let descs: Vec<PackedDesc> = if indirect {
            let table = DATA + 0x8000 + 0x400 * u64::from(id);
            for (i, &(addr, len, w)) in bufs.iter().enumerate() {
                let flags = if w { VRING_DESC_F_WRITE } else { 0 };
                self.write(table + 16 * i as u64, PackedDesc { addr, len, id: 0, flags });
            }
            vec![PackedDesc {
                addr: table,
                len: 16 * bufs.len() as u32,
                id,
                flags: VRING_DESC_F_INDIRECT,
            }]
        } else {
            bufs.iter()
                .enumerate()
                .map(|(i, &(addr, len, w))| PackedDesc {
                    addr,
                    len,
                    id,
                    flags: if w { VRING_DESC_F_WRITE } else { 0 }
                        | if i + 1 < bufs.len() { VRING_DESC_F_NEXT } else { 0 },
                })
                .collect()
        };
        self.offer_raw(&descs);
        id
    }

    /// Packed driver: writes `descs` at the avail position with the right AVAIL/USED bits,
    /// the head's flags last.
    pub fn offer_raw(&mut self, descs: &[PackedDesc]) {
        let head = self.avail;
        let mut pos = head;
        let mut head_flags = 0;
        for (i, d) in descs.iter().enumerate() {
            let flags = d.flags | avail_flags(pos.wrap());
            let slot = self.desc_gpa(pos.slot());
            self.write(slot, d.addr);
            self.write(slot + 8, d.len);
            self.write(slot + 12, d.id);
            if i == 0 {
                head_flags = flags;
            } else {
                self.write(slot + 14, flags);
            }
            pos = pos.advance(1, self.num);
        }
        self.write(self.desc_gpa(head.slot()) + 14, head_flags);
        self.avail = pos;
    }

    /// Packed driver: the next used descriptor (id, len, flags), if the device wrote one.
    pub fn take_used(&mut self, ndescs: u16) -> Option<(u16, u32, u16)> {
        let slot = self.desc_gpa(self.used.slot());
        let flags: u16 = self.read(slot + 14);
        let want = used_flags(self.used.wrap());
        if flags & (VRING_PACKED_DESC_F_AVAIL | VRING_PACKED_DESC_F_USED) != want {
            return None;
        }
        let (id, len) = (self.read::<u16>(slot + 12), self.read::<u32>(slot + 8));
        self.used = self.used.advance(ndescs, self.num);
        Some((id, len, flags))
    }

    pub fn driver_event(&self, off_wrap: u16, flags: u16) {
        self.write(DRIVER, EventSuppress { off_wrap, flags });
    }

    pub fn device_event(&self) -> EventSuppress {
        self.read(DEVICE)
    }

    pub fn pop(&mut self) -> Option<Elem> {
        // SAFETY: our device and queue.
        let e =
            unsafe { vu_queue_pop(self.dev(), self.vq(), std::mem::size_of::<VuVirtqElement>()) }
                as *mut VuVirtqElement;
        (!e.is_null()).then_some(Elem(e))
    }

    pub fn push(&mut self, e: &Elem, len: u32) {
        // SAFETY: our device, queue and element.
        unsafe { vu_queue_push(self.dev(), self.vq(), e.0, len) }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // SAFETY: our device and our mapping.
        unsafe {
            vu_deinit(self.dev());
            libc::munmap(self.guest.cast(), MEM);
        }
    }
}

/// A popped element (freed on drop).
pub struct Elem(*mut VuVirtqElement);

impl Elem {
    pub fn index(&self) -> u32 {
        // SAFETY: a live element from vu_queue_pop.
        unsafe { (*self.0).index }
    }
    /// (out, in) iovec lengths.
    pub fn lens(&self) -> (Vec<usize>, Vec<usize>) {
        // SAFETY: as above; the iovec arrays hold out_num and in_num entries.
        unsafe {
            let e = &*self.0;
            let out = (0..e.out_num as usize).map(|i| (*e.out_sg.add(i)).iov_len).collect();
            let inn = (0..e.in_num as usize).map(|i| (*e.in_sg.add(i)).iov_len).collect();
            (out, inn)
        }
    }
}

impl Drop for Elem {
    fn drop(&mut self) {
        // SAFETY: malloc'd by vu_queue_pop.
        unsafe { libc::free(self.0.cast()) }
    }
}

fn chain3() -> [(u64, u32, bool); 3] {
    [(DATA, 16, false), (DATA + 0x1000, 512, true), (DATA + 0x2000, 1, true)]
}

#[test]
fn packed_pop_push_one_chain() {
    let mut h = Harness::new(true, 8, 0);
    let id = h.offer(&chain3(), false);
    let e = h.pop().expect("a request");
    assert_eq!(e.index(), u32::from(id));
    assert_eq!(e.lens(), (vec![16], vec![512, 1]));
    assert_eq!(h.vq_ref().last_avail_idx, Pos::START.0 | 3);
    assert_eq!(h.vq_ref().inuse, 1);
    assert!(h.pop().is_none());
    h.push(&e, 513);
    let (uid, len, flags) = h.take_used(3).expect("used descriptor");
    assert_eq!((uid, len), (id, 513));
    assert_ne!(flags & VRING_DESC_F_WRITE, 0);
    assert_eq!(h.vq_ref().used_idx, Pos::START.0 | 3);
    assert_eq!(h.vq_ref().inuse, 0);
    assert_eq!(h.panics(), 0);
}

#[test]
fn packed_laps_flip_both_wrap_counters() {
    let mut h = Harness::new(true, 4, 0);
    for lap in 0..10 {
        let id = h.offer(&chain3(), lap % 2 == 1);
        let e = h.pop().unwrap_or_else(|| panic!("request in lap {lap}"));
        assert_eq!(e.index(), u32::from(id));
        assert_eq!(e.lens(), (vec![16], vec![512, 1]));
        h.push(&e, 0);
        let ndescs = if lap % 2 == 1 { 1 } else { 3 };
        let (uid, len, flags) = h.take_used(ndescs).expect("used");
        assert_eq!((uid, len, flags & VRING_DESC_F_WRITE), (id, 0, 0));
        assert_eq!(Pos(h.vq_ref().last_avail_idx), h.avail);
        assert_eq!(Pos(h.vq_ref().used_idx), h.used);
    }
    // 5 chains of 3 and 5 of 1 on a ring of 4: 20 slots, 5 laps, so the counters flipped an
    // odd number of times.
    assert_eq!(h.avail, Pos(0));
    assert_eq!(Pos(h.vq_ref().used_idx), Pos(0));
    assert_eq!(h.panics(), 0);
}

#[test]
fn packed_out_of_order_completion_and_batches() {
    let mut h = Harness::new(true, 8, 0);
    let a = h.offer(&chain3(), false);
    let b = h.offer(&[(DATA, 8, true)], false);
    let c = h.offer(&[(DATA, 8, false), (DATA + 64, 8, true)], false);
    let (ea, eb, ec) = (h.pop().unwrap(), h.pop().unwrap(), h.pop().unwrap());
    h.push(&eb, 8);
    assert_eq!(h.take_used(1), Some((b, 8, used_flags(true) | VRING_DESC_F_WRITE)));
    // A batch: c then a, via fill + flush.
    // SAFETY: our device, queue and elements.
    unsafe {
        vu_queue_fill(h.dev(), h.vq(), ec.0, 8, 0);
        vu_queue_fill(h.dev(), h.vq(), ea.0, 513, 1);
        vu_queue_flush(h.dev(), h.vq(), 2);
    }
    assert_eq!(h.take_used(2).map(|u| (u.0, u.1)), Some((c, 8)));
    assert_eq!(h.take_used(3).map(|u| (u.0, u.1)), Some((a, 513)));
    assert_eq!(h.vq_ref().inuse, 0);
    assert_eq!(h.used, Pos(h.vq_ref().used_idx));
    assert_eq!(h.panics(), 0);
}

#[test]
fn packed_rewind_and_unpop() {
    let mut h = Harness::new(true, 8, 0);
    let a = h.offer(&chain3(), false);
    let b = h.offer(&[(DATA, 8, true)], false);
    let (_ea, _eb) = (h.pop().unwrap(), h.pop().unwrap());
    // SAFETY: our device and queue.
    unsafe {
        assert!(!vu_queue_rewind(h.dev(), h.vq(), 3));
        vu_queue_unpop(h.dev(), h.vq(), std::ptr::null_mut(), 0);
    }
    assert_eq!(h.vq_ref().last_avail_idx, Pos::START.0 | 3);
    assert_eq!(h.pop().map(|e| e.index()), Some(u32::from(b)));
    // SAFETY: as above.
    assert!(unsafe { vu_queue_rewind(h.dev(), h.vq(), 2) });
    assert_eq!(h.vq_ref().last_avail_idx, Pos::START.0);
    assert_eq!(h.vq_ref().inuse, 0);
    assert_eq!(h.pop().map(|e| e.index()), Some(u32::from(a)));
    assert_eq!(h.panics(), 0);
}

#[test]
fn packed_event_suppression() {
    let mut h = Harness::new(true, 8, 1 << VIRTIO_RING_F_EVENT_IDX);
    // SAFETY: a fresh eventfd, checked.
    let call = unsafe {
        let fd = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
        assert!(fd >= 0);
        OwnedFd::from_raw_fd(fd)
    };
    // SAFETY: our queue, between calls.
    unsafe { (*h.vq()).call_fd = call.as_raw_fd() };
    let count = |fd: &OwnedFd| {
        let mut v = 0u64;
        // SAFETY: reading 8 bytes from a non-blocking eventfd into a local.
        let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        if n == 8 {
            v
        } else {
            0
        }
    };
    let run = |h: &mut Harness| {
        h.offer(&[(DATA, 8, true)], false);
        let e = h.pop().unwrap();
        h.push(&e, 8);
        h.take_used(1).unwrap();
        // SAFETY: our device and queue.
        unsafe { vu_queue_notify(h.dev(), h.vq()) };
    };
    h.driver_event(0, VRING_PACKED_EVENT_FLAG_DISABLE);
    run(&mut h);
    assert_eq!(count(&call), 0);
    h.driver_event(0, VRING_PACKED_EVENT_FLAG_ENABLE);
    run(&mut h);
    assert_eq!(count(&call), 1);
    // DESC: notify when the used position passes slot 5 (wrap 1); now at 2.
    h.driver_event(Pos::WRAP | 4, VRING_PACKED_EVENT_FLAG_DESC);
    run(&mut h); // used 2 -> 3
    assert_eq!(count(&call), 0);
    run(&mut h); // 3 -> 4
    assert_eq!(count(&call), 0);
    run(&mut h); // 4 -> 5: passes 4
    assert_eq!(count(&call), 1);
    // The device's own suppression area: DESC with the avail position when enabled.
    // SAFETY: our device and queue.
    unsafe { vu_queue_set_notification(h.dev(), h.vq(), 1) };
    let e = h.device_event();
    assert_eq!((e.off_wrap, e.flags), (h.vq_ref().last_avail_idx, VRING_PACKED_EVENT_FLAG_DESC));
    // SAFETY: as above.
    unsafe { vu_queue_set_notification(h.dev(), h.vq(), 0) };
    assert_eq!(h.device_event().flags, VRING_PACKED_EVENT_FLAG_DISABLE);
    assert_eq!(h.panics(), 0);
}

#[test]
fn packed_event_idx_across_the_end_of_the_ring() {
    let mut h = Harness::new(true, 8, 1 << VIRTIO_RING_F_EVENT_IDX);
    // SAFETY: a fresh eventfd, checked.
    let call = unsafe {
        let fd = libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC);
        assert!(fd >= 0);
        OwnedFd::from_raw_fd(fd)
    };
    // SAFETY: our queue, between calls.
    unsafe { (*h.vq()).call_fd = call.as_raw_fd() };
    let calls = || {
        let mut v = 0u64;
        // SAFETY: reading 8 bytes from a non-blocking eventfd into a local.
        let n = unsafe { libc::read(call.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        if n == 8 {
            v
        } else {
            0
        }
    };
    // One one-slot buffer through the ring, without notifying.
    let complete = |h: &mut Harness| {
        h.offer(&[(DATA, 8, true)], false);
        let e = h.pop().unwrap();
        h.push(&e, 8);
        h.take_used(1).unwrap();
    };
    let notify = |h: &mut Harness| {
        // SAFETY: our device and queue.
        unsafe { vu_queue_notify(h.dev(), h.vq()) }
    };
    h.driver_event(0, VRING_PACKED_EVENT_FLAG_ENABLE);
    complete(&mut h);
    notify(&mut h);
    assert_eq!(calls(), 1);
    // Used position 1 (lap 1); the event is slot 2 of lap 2 (wrap counter 0), position 10:
    // the notifies while the used position crosses the end of the ring must not call, the
    // one after the device used position 10 must.
    h.driver_event(2, VRING_PACKED_EVENT_FLAG_DESC);
    for used in 2..=11 {
        complete(&mut h);
        notify(&mut h);
        assert_eq!(calls(), u64::from(used == 11), "used position {used} (two laps of 8)");
    }
    // More than two laps without a notify (used position 11 to 28): slot and wrap counter
    // alone would say the event (slot 7 of lap 2, position 15, used since) is still ahead;
    // the device must call.
    h.driver_event(7, VRING_PACKED_EVENT_FLAG_DESC);
    for _ in 0..17 {
        complete(&mut h);
    }
    notify(&mut h);
    assert_eq!(calls(), 1, "a lap without a notify must end in a call");
    assert_eq!(h.panics(), 0);
}

#[test]
fn packed_indirect_and_avail_bytes() {
    let mut h = Harness::new(true, 8, 0);
    let id = h.offer(&chain3(), true);
    h.offer(&[(DATA, 100, false), (DATA + 0x100, 1000, true)], false);
    let (mut inb, mut outb) = (0u32, 0u32);
    // SAFETY: our device and queue; valid out-pointers.
    unsafe { vu_queue_get_avail_bytes(h.dev(), h.vq(), &mut inb, &mut outb, 1 << 20, 1 << 20) };
    assert_eq!((inb, outb), (513 + 1000, 16 + 100));
    // SAFETY: as above.
    assert!(!unsafe { vu_queue_empty(h.dev(), h.vq()) });
    let e = h.pop().unwrap();
    assert_eq!(e.index(), u32::from(id));
    assert_eq!(e.lens(), (vec![16], vec![512, 1]));
    assert_eq!(h.vq_ref().last_avail_idx, Pos::START.0 | 1);
    assert_eq!(h.panics(), 0);
}

/// An indirect table longer than a fresh element's room (`ElementBuilder::reserve_empty`):
/// every entry in order, on the lane and on the general path.
#[test]
fn long_indirect_tables_fill_their_elements() {
    for general in [false, true] {
        let mut h = event_idx_harness(true, general);
        let bufs: Vec<(u64, u32, bool)> =
            (0..12u32).map(|i| (DATA + 0x200 * u64::from(i), 10 + i, i >= 5)).collect();
        let id = h.offer(&bufs, true);
        let e = h.pop().expect("the chain pops");
        assert_eq!(e.index(), u32::from(id));
        let want = |w: bool| bufs.iter().filter(|b| b.2 == w).map(|b| b.1 as usize).collect();
        assert_eq!(e.lens(), (want(false), want(true)), "general path: {general}");
        h.push(&e, 7);
        assert_eq!(h.take_used(1).map(|(id, len, _)| (id, len)), Some((id, 7)));
        assert_eq!(h.panics(), 0);
    }
}

/// Each hostile chain gets the panic callback and a broken device, never more.
fn refused(descs: &[PackedDesc]) {
    let mut h = Harness::new(true, 4, 0);
    h.offer_raw(descs);
    assert!(h.pop().is_none());
    assert_eq!(h.panics(), 1, "{descs:?}");
    assert!(h.broken());
    // A broken device does nothing more.
    assert!(h.pop().is_none());
    assert_eq!(h.panics(), 1);
}

fn d(addr: u64, len: u32, id: u16, flags: u16) -> PackedDesc {
    PackedDesc { addr, len, id, flags }
}

#[test]
fn packed_hostile_chains_are_refused() {
    refused(&[d(DATA, 8, 4, 0)]); // id >= ring size
    refused(&[d(DATA, 8, 0, VRING_DESC_F_NEXT); 4]); // longer than the ring
    refused(&[d(DATA, 16, 0, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT), d(DATA, 8, 0, 0)]);
    refused(&[d(DATA, 8, 0, VRING_DESC_F_NEXT), d(DATA, 16, 0, VRING_DESC_F_INDIRECT)]);
    refused(&[d(DATA, 15, 0, VRING_DESC_F_INDIRECT)]); // table size
    refused(&[d(MEM as u64, 16, 0, VRING_DESC_F_INDIRECT)]); // table outside memory
    refused(&[d(DATA, 0, 0, 0)]); // zero length
    refused(&[d(MEM as u64 - 4, 8, 0, 0)]); // runs off guest memory
    refused(&[d(u64::MAX - 2, 8, 0, 0)]); // overflows
    refused(&[d(DATA, 8, 0, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT), d(DATA, 8, 0, 0)]); // order
                                                                                         // Nested indirect.
    let mut h = Harness::new(true, 4, 0);
    h.write(DATA, d(DATA + 64, 16, 0, VRING_DESC_F_INDIRECT));
    h.offer_raw(&[d(DATA, 16, 0, VRING_DESC_F_INDIRECT)]);
    assert!(h.pop().is_none());
    assert_eq!(h.panics(), 1);
}

#[test]
fn packed_id_reused_in_flight_is_refused() {
    let mut h = Harness::new(true, 8, 0);
    h.offer_id(&[(DATA, 8, true)], false, 2);
    let _e = h.pop().unwrap();
    h.offer_id(&[(DATA, 8, true)], false, 2);
    assert!(h.pop().is_none());
    assert_eq!(h.panics(), 1);
    assert!(h.broken());
}

#[test]
fn packed_bad_ring_position_is_refused() {
    let mut h = Harness::new(true, 8, 0);
    // SAFETY: our queue, between calls (as SET_VRING_BASE would set it).
    unsafe { (*h.vq()).last_avail_idx = 9 };
    assert!(h.pop().is_none());
    assert_eq!(h.panics(), 1);
}

#[test]
fn packed_push_of_an_unknown_element_is_refused() {
    let mut h = Harness::new(true, 8, 0);
    h.offer(&[(DATA, 8, true)], false);
    let e = h.pop().unwrap();
    h.push(&e, 1);
    h.push(&e, 1);
    assert_eq!(h.panics(), 1);
}

#[test]
fn split_still_works_through_the_same_calls() {
    let mut h = Harness::new(false, 8, 0);
    // desc 0 -> 1, avail ring: [0], idx 1.
    h.write(DESC, vring_desc { addr: DATA, len: 16, flags: VRING_DESC_F_NEXT, next: 1 });
    h.write(DESC + 16, vring_desc { addr: DATA + 64, len: 32, flags: VRING_DESC_F_WRITE, next: 0 });
    h.write::<u16>(AVAIL_SPLIT + 4, 0);
    h.write::<u16>(AVAIL_SPLIT + 2, 1);
    let e = h.pop().unwrap();
    assert_eq!((e.index(), e.lens()), (0, (vec![16], vec![32])));
    h.push(&e, 32);
    assert_eq!(h.read::<u16>(USED_SPLIT + 2), 1);
    assert_eq!(h.read::<u32>(USED_SPLIT + 4), 0);
    assert_eq!(h.read::<u32>(USED_SPLIT + 8), 32);
    // A loop: 0 -> 1 -> 0.
    h.write(DESC + 16, vring_desc { addr: DATA, len: 8, flags: VRING_DESC_F_NEXT, next: 0 });
    h.write::<u16>(AVAIL_SPLIT + 6, 0);
    h.write::<u16>(AVAIL_SPLIT + 2, 2);
    assert!(h.pop().is_none());
    assert_eq!(h.panics(), 1);
    // SAFETY: the harness's initialised device.
    let d = unsafe { Dev::from_raw(h.dev()) }.unwrap();
    assert!(d.ext_if_any().is_none(), "a split ring's calls need no DeviceExt");
}

/// Inflight tracking on a packed ring: what a restarted backend finds in the area.
#[test]
fn packed_inflight_resubmits_after_a_restart() {
    let mut h = Harness::new(true, 8, 0);
    let size = crate::inflight::packed_queue_region_size(8) as usize;
    // SAFETY: an anonymous mapping for the area, checked.
    let area = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        p
    };
    // SAFETY: our device just initialised; set up as SET_INFLIGHT_FD would (under no other
    // thread), and the area's desc_num as install() writes it.
    let d = unsafe { Dev::from_raw(h.dev()) }.unwrap();
    d.set_protocol_features(
        1 << VhostUserProtocolFeature::VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD as u32,
    );
    d.set_inflight_info(VuDevInflightInfo { fd: -1, addr: area, size: size as u64 });
    // SAFETY: as above; desc_num is at offset 10 of the area.
    unsafe {
        (*h.vq()).inflight = area.cast();
        (area as *mut u8).add(10).cast::<u16>().write(8);
    }
    let start = |h: &mut Harness| {
        // SAFETY: our device.
        let d = unsafe { Dev::from_raw(h.dev()) }.unwrap();
        let mem = d.mem();
        // SAFETY: our queue, on this thread.
        let vq = unsafe { &mut *h.vq() };
        crate::queue::check_inflight(d, &mem, vq, 0).unwrap();
    };
    start(&mut h);
    let a = h.offer(&chain3(), false);
    let b = h.offer(&[(DATA, 8, true)], false);
    let c = h.offer(&[(DATA, 8, false), (DATA + 64, 32, true)], true);
    let (ea, eb, ec) = (h.pop().unwrap(), h.pop().unwrap(), h.pop().unwrap());
    h.push(&eb, 8); // written over a's first slot
    assert_eq!(h.take_used(1).map(|u| u.0), Some(b));
    drop((eb, ea, ec));
    // A restart: the frontend's SET_VRING_BASE is stale (here: the reset positions).
    // SAFETY: our queue, between calls.
    unsafe {
        let vq = &mut *h.vq();
        vq.last_avail_idx = Pos::START.0;
        vq.used_idx = Pos::START.0;
        vq.inuse = 0;
    }
    start(&mut h);
    let vq = h.vq_ref();
    assert_eq!((vq.inuse, vq.used_idx), (2, Pos::START.0 | 1));
    assert_eq!(vq.last_avail_idx, Pos::START.0 | 5);
    // Resubmitted in fetch order, from the area's copies.
    let ra = h.pop().unwrap();
    assert_eq!((ra.index(), ra.lens()), (u32::from(a), (vec![16], vec![512, 1])));
    let rc = h.pop().unwrap();
    assert_eq!((rc.index(), rc.lens()), (u32::from(c), (vec![8], vec![32])));
    assert!(h.pop().is_none());
    h.push(&rc, 32);
    h.push(&ra, 1);
    assert_eq!(h.take_used(1).map(|u| u.0), Some(c));
    assert_eq!(h.take_used(3).map(|u| u.0), Some(a));
    assert_eq!(h.vq_ref().inuse, 0);
    assert_eq!(h.panics(), 0);
    // SAFETY: the device no longer refers to the area after this.
    unsafe {
        (*h.vq()).inflight = std::ptr::null_mut();
        d.set_inflight_info(VuDevInflightInfo { fd: -1, addr: std::ptr::null_mut(), size: 0 });
        libc::munmap(area, size);
    }
}

#[test]
fn packed_rings_are_offered_unless_turned_off() {
    use crate::queue::setup;
    let mut h = Harness::new(false, 8, 0);
    // SAFETY: our device.
    let d = unsafe { Dev::from_raw(h.dev()) }.unwrap();
    let packed = 1u64 << VIRTIO_F_RING_PACKED;
    if std::env::var_os(setup::NO_PACKED_ENV).is_none() {
        assert_eq!(setup::offer(d, 1), 1 | packed);
    }
    // SAFETY: our device.
    assert!(unsafe { vu_set_packed_ring_enabled(h.dev(), false) });
    // Off: not offered (even if the backend's own features had it), and refused if acked.
    assert_eq!(setup::offer(d, 1 | packed), 1);
    assert!(setup::apply_features(d, packed | 1 << VIRTIO_F_VERSION_1).is_err());
    // SAFETY: NULL is refused.
    assert!(!unsafe { vu_set_packed_ring_enabled(std::ptr::null_mut(), true) });
}

#[test]
fn vring_base_encoding_and_layout_switch() {
    use crate::queue::setup;
    let mut h = Harness::new(false, 8, 0);
    // SAFETY: our device.
    let d = unsafe { Dev::from_raw(h.dev()) }.unwrap();
    if !setup::packed_offered(d) {
        return; // LIBVHOST_USER_NO_PACKED is set for this run
    }
    setup::apply_features(d, 1 << VIRTIO_F_VERSION_1 | 1 << VIRTIO_F_RING_PACKED).unwrap();
    // Switching layouts unmapped the ring and reset the positions (both wrap counters 1).
    assert!(h.vq_ref().vring.desc.is_null());
    assert_eq!((h.vq_ref().last_avail_idx, h.vq_ref().used_idx), (Pos::START.0, Pos::START.0));
    assert_eq!(setup::vring_base(d, h.vq_ref()), 0x8000_8000);
    {
        let _mem = d.mem_mut();
        // SAFETY: our queue, under the write lock.
        setup::set_vring_base(d, unsafe { &mut *h.vq() }, 0, 0x0003_8005).unwrap();
    }
    assert_eq!((h.vq_ref().last_avail_idx, h.vq_ref().used_idx), (0x8005, 3));
    assert_eq!(setup::vring_base(d, h.vq_ref()), 0x0003_8005);
}

#[test]
fn packed_writes_are_logged_during_migration() {
    let log_all = 1u64 << crate::dirty_log::VHOST_F_LOG_ALL;
    let mut h = Harness::new(true, 8, log_all);
    let mut log = vec![0u8; MEM / 4096 / 8];
    // SAFETY: our device; the log outlives its use below and is detached before it drops.
    let d = unsafe { Dev::from_raw(h.dev()) }.unwrap();
    d.set_log_table(log.as_mut_ptr());
    d.set_log_size(log.len() as u64);
    let page = |log: &[u8], gpa: u64| log[(gpa / 4096 / 8) as usize] & (1 << (gpa / 4096 % 8)) != 0;
    h.offer(&[(DATA, 16, false), (DATA + 0x3000, 0x2000, true), (DATA + 0x6000, 1, true)], false);
    let e = h.pop().unwrap();
    // The device wrote 0x1000 bytes into the 0x2000-byte buffer.
    h.push(&e, 0x1000);
    assert!(page(&log, DATA + 0x3000), "written buffer page");
    assert!(!page(&log, DATA + 0x4000), "beyond the written length");
    assert!(!page(&log, DATA), "device-readable buffer");
    assert!(!page(&log, DATA + 0x6000), "not written");
    assert!(page(&log, DESC), "the used descriptor in the descriptor ring");
    // fill + flush log the same way.
    log.iter_mut().for_each(|b| *b = 0);
    h.take_used(3).unwrap();
    h.offer(&[(DATA + 0x8000, 8, true)], false);
    let e = h.pop().unwrap();
    // SAFETY: our device, queue and element.
    unsafe {
        vu_queue_fill(h.dev(), h.vq(), e.0, 8, 0);
        vu_queue_flush(h.dev(), h.vq(), 1);
    }
    assert!(page(&log, DATA + 0x8000) && page(&log, DESC));
    assert_eq!(h.panics(), 0);
    d.set_log_table(std::ptr::null_mut());
    d.set_log_size(0);
}

/// An 8-entry ring with EVENT_IDX, its calls on the express lane or (`general`) closed to it.
fn event_idx_harness(packed: bool, general: bool) -> Harness {
    let mut h = Harness::new(packed, 8, 1 << VIRTIO_RING_F_EVENT_IDX);
    if general {
        // SAFETY: our device, set up by the harness.
        unsafe { Dev::from_raw(h.dev()) }.unwrap().mem_gate().close_to_lane();
    }
    h
}

/// EVENT_IDX on a split ring, on the express lane and on the general path alike: the
/// device's `avail_event` gets the original's value (the index after the pop) at a pop that
/// takes the last buffer the device knew of, not at the others (the driver is past both
/// values then), before a rewind, and when a pop or `vu_queue_empty` finds the ring empty
/// (the kick the backend then waits for); a notify leaves it alone; with notifications off
/// nothing writes it.
#[test]
fn split_avail_event_is_armed_when_the_ring_runs_dry() {
    for general in [false, true] {
        let mut h = event_idx_harness(false, general);
        const EVENT: u64 = USED_SPLIT + 4 + 8 * 8;
        for i in 0..3u16 {
            let d = vring_desc {
                addr: DATA + 64 * u64::from(i),
                len: 16,
                flags: VRING_DESC_F_WRITE,
                next: 0,
            };
            h.write(DESC + 16 * u64::from(i), d);
            h.write::<u16>(AVAIL_SPLIT + 4 + 2 * u64::from(i), i);
        }
        h.write::<u16>(AVAIL_SPLIT + 2, 3);
        let path = if general { "general path" } else { "lane" };
        let (a, b) = (h.pop().unwrap(), h.pop().unwrap());
        assert_eq!(h.read::<u16>(EVENT), 0, "{path}: written with buffers it saw waiting");
        // SAFETY: our device and queue.
        assert!(unsafe { vu_queue_rewind(h.dev(), h.vq(), 1) });
        assert_eq!(h.read::<u16>(EVENT), 2, "{path}: rewind without the original's value");
        h.write::<u16>(EVENT, 0);
        let b2 = h.pop().unwrap();
        assert_eq!(b2.index(), b.index(), "{path}");
        assert_eq!(h.read::<u16>(EVENT), 0, "{path}: written with a buffer it saw waiting");
        let c = h.pop().unwrap();
        assert_eq!(h.read::<u16>(EVENT), 3, "{path}: its last buffer popped without the value");
        for e in [&a, &b2, &c] {
            h.push(e, 16);
        }
        h.write::<u16>(EVENT, 0);
        // SAFETY: as above.
        unsafe { vu_queue_notify(h.dev(), h.vq()) };
        assert_eq!(h.read::<u16>(EVENT), 0, "{path}: a notify wrote the kick request");
        assert!(h.pop().is_none());
        assert_eq!(h.read::<u16>(EVENT), 3, "{path}: an empty ring not armed");
        h.write::<u16>(EVENT, 0);
        // SAFETY: as above.
        assert!(unsafe { vu_queue_empty(h.dev(), h.vq()) });
        assert_eq!(h.read::<u16>(EVENT), 3, "{path}: vu_queue_empty did not arm");
        // The driver publishes one more, which the device sees and takes: its last again.
        h.write::<u16>(AVAIL_SPLIT + 4 + 2 * 3, 0);
        h.write::<u16>(AVAIL_SPLIT + 2, 4);
        h.write::<u16>(EVENT, 0);
        let d = h.pop().unwrap();
        assert_eq!(h.read::<u16>(EVENT), 4, "{path}: its last buffer popped without the value");
        h.push(&d, 16);
        // SAFETY: as above.
        unsafe { vu_queue_set_notification(h.dev(), h.vq(), 0) };
        h.write::<u16>(EVENT, 0);
        assert!(h.pop().is_none());
        assert_eq!(h.read::<u16>(EVENT), 0, "{path}: armed with notifications off");
        assert_eq!(h.panics(), 0);
    }
}

/// The same on a packed ring: the device event offset.
#[test]
fn packed_device_event_is_armed_when_the_ring_runs_dry() {
    for general in [false, true] {
        let mut h = event_idx_harness(true, general);
        let path = if general { "general path" } else { "lane" };
        let event = |h: &Harness| h.device_event().off_wrap;
        // Mapped: a kick at the avail position only (the driver's zeroed area reads ENABLE).
        let e = h.device_event();
        assert_eq!((e.off_wrap, e.flags), (Pos::WRAP, VRING_PACKED_EVENT_FLAG_DESC));
        for _ in 0..3 {
            h.offer(&[(DATA, 8, true)], false);
        }
        let (a, _b) = (h.pop().unwrap(), h.pop().unwrap());
        assert_eq!(event(&h), Pos::WRAP, "{path}: written while buffers were waiting");
        // SAFETY: our device and queue.
        assert!(unsafe { vu_queue_rewind(h.dev(), h.vq(), 1) });
        assert_eq!(event(&h), Pos::WRAP | 2, "{path}: rewind without the original's value");
        let (b, c) = (h.pop().unwrap(), h.pop().unwrap());
        assert_eq!(event(&h), Pos::WRAP | 2, "{path}");
        assert!(h.pop().is_none());
        assert_eq!(event(&h), Pos::WRAP | 3, "{path}: an empty ring not armed");
        for e in [&a, &b, &c] {
            h.push(e, 8);
        }
        h.driver_event(0, VRING_PACKED_EVENT_FLAG_ENABLE);
        h.write(DEVICE, EventSuppress { off_wrap: 0, flags: 0 });
        // SAFETY: our device and queue.
        unsafe { vu_queue_notify(h.dev(), h.vq()) };
        assert_eq!(event(&h), Pos::WRAP | 3, "{path}: notify without the original's value");
        h.write(DEVICE, EventSuppress { off_wrap: 0, flags: 0 });
        // SAFETY: as above.
        assert!(unsafe { vu_queue_empty(h.dev(), h.vq()) });
        assert_eq!(event(&h), Pos::WRAP | 3, "{path}: vu_queue_empty did not arm");
        assert_eq!(h.panics(), 0);
    }
}
