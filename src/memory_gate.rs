//! The memory lock's implementation: one 32-bit word that queue operations enter and leave
//! with one atomic add each, and that the control plane closes to change guest memory.
//!
//! Queue operations are short and never block while inside (they call no C callback and wait
//! for nothing), so the writer mostly spins on them: it closes the gate (`WRITER`), spins a
//! little, then sleeps on a futex until the last reader inside leaves and wakes it. A reader
//! that finds the gate closed backs out and parks until the writer opens it again. Nothing here
//! calls sched_yield or a sleep: sandboxed backends (virtiofsd's seccomp list) allow futex only. The word also carries whether removed guest
//! mappings wait to be unmapped (`RETIRED`, see `crate::retired`), so leaving tells a queue
//! operation whether it has anything else to do without another load.
//!
//! A reader's `fetch_add` and the writer's closing are read-modify-writes of the same word, so
//! one of them sees the other: either the writer sees the reader counted (and waits) or the
//! reader sees the gate closed (and backs out).
//!
//! **The home thread.** The control plane changes guest memory while it handles a message,
//! in `vu_dispatch`, on the thread that calls it. A queue call made on that same thread cannot
//! overlap such a change: the thread is in one or the other. So the express lane (`ffi::lane`)
//! does not count the calls it takes on the device's *home* — the thread of its first
//! `vu_dispatch` — and pays no locked instruction for them (each is a full barrier; six per
//! request were ~17% of a short request's CPU time). Calls from every other thread are
//! counted as before and exclude and are excluded by the writer. What this leans on is the C
//! API's own rule: the C original has no lock at all, so a backend that moves `vu_dispatch` to
//! another thread orders it with the queue calls the old thread still makes (as virtiofsd's
//! rwlock or QEMU's AioContext switch do). The home is never unset and never moves: a home
//! call can only be entered and left on the home thread, so enter and exit agree on whether
//! it was counted. Queue calls on other threads never release retired mappings while a home
//! exists (that reads every queue's `inuse`, the home's uncounted calls change theirs): the
//! home thread's next call or the next write does it.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

/// The gate is closed: a writer holds it or waits for the readers inside to leave.
const WRITER: u32 = 1 << 31;
/// Removed guest mappings wait for their elements (`crate::retired`).
const RETIRED: u32 = 1 << 30;
/// The device's queue calls all take the general path: the express lane's entry
/// (`enter_read_counted`) finds the gate closed (tracing, or LIBVHOST_USER_NO_EXPRESS: see
/// `ffi::lane`). Set once, before the device has queues.
const GENERAL: u32 = 1 << 29;
/// The count of readers inside (entering ones included).
const READERS: u32 = GENERAL - 1;

#[derive(Default)]
pub struct MemoryGate {
    word: AtomicU32,
    /// Not the gate's: the device's flags (`crate::device_ext`), in the four bytes that
    /// `home`'s alignment leaves beside `word` (the whole device state stays within the 16
    /// bytes the original's region array allocation rounds up to: see `device::DeviceState`).
    pub flags: crate::device_ext::DeviceFlags,
    /// The home thread's `this_thread()`; 0 before the first `vu_dispatch`, and for good on a
    /// device closed to the lane.
    home: AtomicUsize,
}

/// The calling thread's thread pointer (the TLS ABI's thread control block: one per live
/// thread), in one instruction; 0 where the lane has no home threads.
#[inline(always)]
fn this_thread() -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        let tp: usize;
        // SAFETY: reads the first word of the thread control block at %fs:0, which the x86-64
        // TLS ABI (glibc, musl) keeps pointing at itself; no other effect.
        unsafe {
            std::arch::asm!("mov {}, fs:0", out(reg) tp,
                options(nostack, readonly, pure, preserves_flags))
        };
        tp
    }
    #[cfg(target_arch = "aarch64")]
    {
        let tp: usize;
        // SAFETY: reads the thread pointer register, set per thread by the C library; no
        // other effect.
        unsafe {
            std::arch::asm!("mrs {}, tpidr_el0", out(reg) tp,
                options(nostack, nomem, pure, preserves_flags))
        };
        tp
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        0
    }
}

#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<MemoryGate>() == 16);

impl MemoryGate {
    /// A gate open to the lane, with no home yet, beside the device's `flags`.
    pub fn new(flags: crate::device_ext::DeviceFlags) -> MemoryGate {
        MemoryGate { flags, ..Default::default() }
    }

    /// Enters for reading (a queue operation): waits while a writer holds the gate.
    #[inline(always)]
    pub fn enter_read(&self) {
        // Acquire: what the last writer changed is visible once we are in.
        let was = self.word.fetch_add(1, Ordering::Acquire);
        if was & WRITER != 0 {
            self.enter_read_slow();
        }
    }

    /// Enters for reading if no writer holds the gate, for the express lane (`ffi::lane`):
    /// `false` when one does (or the device is the general path's alone), with the entry
    /// counted all the same, which the caller undoes by leaving (`leave_read_quick`, then
    /// `left_slow` when it says so: the writer's wait for the readers inside can end).
    #[inline(always)]
    pub fn enter_read_counted(&self) -> bool {
        self.word.fetch_add(1, Ordering::Acquire) & (WRITER | GENERAL) == 0
    }

    /// Closes the gate to the express lane for good: every queue call of the device takes the
    /// general path (which does not look at this bit). Before the first `settle_home`.
    pub fn close_to_lane(&self) {
        self.word.fetch_or(GENERAL, Ordering::Relaxed);
    }

    /// Makes the calling thread the home (see the module docs) if the device has none and is
    /// open to the lane (`vu_dispatch`, before it handles a message).
    #[inline]
    pub fn settle_home(&self) {
        let me = this_thread();
        if me != 0 && self.home.load(Ordering::Relaxed) == 0 && !self.is_general() {
            // Relaxed: only the home thread itself ever finds its own value here.
            let _ = self.home.compare_exchange(0, me, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn is_general(&self) -> bool {
        self.word.load(Ordering::Relaxed) & GENERAL != 0
    }

    /// Whether the calling thread is the home: its lane calls are not counted.
    #[inline(always)]
    pub fn at_home(&self) -> bool {
        // 0 (no home yet, or none on this architecture) is no thread's pointer.
        cfg!(any(target_arch = "x86_64", target_arch = "aarch64"))
            && self.home.load(Ordering::Relaxed) == this_thread()
    }

    /// Whether a home exists and it is another thread than the caller.
    fn home_elsewhere(&self) -> bool {
        let home = self.home.load(Ordering::Relaxed);
        home != 0 && home != this_thread()
    }

    /// Leaving an uncounted (home) lane call: `Some(word)` when the rest of leaving must
    /// follow (`left_slow`): retired mappings wait.
    #[inline(always)]
    pub fn leave_home(&self) -> Option<u32> {
        let word = self.word.load(Ordering::Relaxed);
        (word & RETIRED != 0).then_some(RETIRED)
    }

    /// Whether this thread may release retired mappings now: not while the home's uncounted
    /// calls may change `inuse` on another thread.
    pub fn may_release_retired(&self) -> bool {
        !self.home_elsewhere()
    }

    /// Leaves after reading, for the express lane: `Some(word before)` when the rest of
    /// leaving must follow (`left_slow`): a writer waits for the readers, or retired mappings
    /// wait.
    #[inline(always)]
    pub fn leave_read_quick(&self) -> Option<u32> {
        let was = self.word.fetch_sub(1, Ordering::Release);
        (was & (WRITER | RETIRED) != 0).then_some(was)
    }

    /// The rest of leaving after `leave_read_quick`: true if retired mappings wait.
    #[cold]
    #[inline(never)]
    pub fn left_slow(&self, was: u32) -> bool {
        self.leave_read_slow(was)
    }

    #[cold]
    #[inline(never)]
    fn enter_read_slow(&self) {
        loop {
            // Back out, so that the writer's wait for the readers inside can end.
            let was = self.word.fetch_sub(1, Ordering::Relaxed);
            self.reader_left(was);
            self.park_while_closed();
            if self.word.fetch_add(1, Ordering::Acquire) & WRITER == 0 {
                return;
            }
        }
    }

    /// Leaves after reading; true if retired mappings wait (the caller may unmap them).
    #[inline(always)]
    pub fn leave_read(&self) -> bool {
        // Release: our reads of guest memory happen before a writer changes it.
        let was = self.word.fetch_sub(1, Ordering::Release);
        if was & (WRITER | RETIRED) != 0 {
            return self.leave_read_slow(was);
        }
        false
    }

    #[cold]
    #[inline(never)]
    fn leave_read_slow(&self, was: u32) -> bool {
        self.reader_left(was);
        was & RETIRED != 0
    }

    /// After a reader's decrement (`was` the word before it): the last reader out of a closed
    /// gate wakes the writer waiting for it.
    fn reader_left(&self, was: u32) {
        if was & WRITER != 0 && was & READERS == 1 {
            // SAFETY: no park/unpark callback here; the key is the one `wait_for_readers`
            // parks on.
            unsafe {
                parking_lot_core::unpark_all(
                    self.readers_key(),
                    parking_lot_core::DEFAULT_UNPARK_TOKEN,
                )
            };
        }
    }

    /// Closes the gate for writing (the control plane): waits for another writer, then for
    /// the readers inside to leave.
    pub fn enter_write(&self) {
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v & WRITER != 0 {
                self.park_while_closed();
                continue;
            }
            if self
                .word
                .compare_exchange_weak(v, v | WRITER, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
            {
                break;
            }
        }
        self.wait_for_readers();
    }

    /// Closes the gate only if no reader is inside and no writer holds it (never waits).
    pub fn try_enter_write(&self) -> bool {
        let v = self.word.load(Ordering::Relaxed);
        v & (WRITER | READERS) == 0
            && self
                .word
                .compare_exchange(v, v | WRITER, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
    }

    /// Opens the gate again and wakes whoever parked on it.
    pub fn leave_write(&self) {
        self.word.fetch_and(!WRITER, Ordering::Release);
        // SAFETY: no park/unpark callback here; the key is this gate's address, which is
        // what `park_while_closed` parks on.
        unsafe { parking_lot_core::unpark_all(self.key(), parking_lot_core::DEFAULT_UNPARK_TOKEN) };
    }

    /// Records whether retired mappings wait (call with the gate held for writing).
    pub fn set_retired(&self, pending: bool) {
        if pending {
            self.word.fetch_or(RETIRED, Ordering::Relaxed);
        } else {
            self.word.fetch_and(!RETIRED, Ordering::Relaxed);
        }
    }

    /// Whether retired mappings wait.
    pub fn retired(&self) -> bool {
        self.word.load(Ordering::Relaxed) & RETIRED != 0
    }

    fn key(&self) -> usize {
        &self.word as *const AtomicU32 as usize
    }

    /// The key the writer sleeps on while readers are inside (a second key in the same word's
    /// bytes, distinct from `key`, which readers park on).
    fn readers_key(&self) -> usize {
        self.key() + 1
    }

    /// Readers inside finish their operation without waiting for anything (those that find the
    /// gate closed back out at once): spin briefly, then sleep until the last one leaves.
    fn wait_for_readers(&self) {
        for _ in 0..64 {
            if self.word.load(Ordering::Acquire) & READERS == 0 {
                return;
            }
            std::hint::spin_loop();
        }
        while self.word.load(Ordering::Acquire) & READERS != 0 {
            // `reader_left` unparks this key after the last reader's decrement.
            self.park_while(self.readers_key(), |w| w & READERS != 0);
        }
    }

    /// Sleeps while a writer holds the gate (returns at once if none does); `leave_write`
    /// unparks this key after opening the gate.
    fn park_while_closed(&self) {
        self.park_while(self.key(), |w| w & WRITER != 0);
    }

    /// Sleeps on `key` while `asleep(word)` holds (returns at once if it does not).
    fn park_while(&self, key: usize, asleep: impl Fn(u32) -> bool) {
        let validate = || asleep(self.word.load(Ordering::Acquire));
        // SAFETY: the callbacks neither panic nor call into parking_lot. `validate` runs under
        // the queue lock that the waker's `unpark_all` on the same key also takes, and the
        // waker changes the word before unparking, so a wake-up cannot be missed.
        unsafe {
            parking_lot_core::park(
                key,
                validate,
                || {},
                |_, _| {},
                parking_lot_core::DEFAULT_PARK_TOKEN,
                None,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicU64};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn readers_and_writers_exclude_each_other() {
        let gate = Arc::new(MemoryGate::default());
        let data = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (gate, data, stop) = (gate.clone(), data.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        gate.enter_read();
                        // A writer makes the value odd while it holds the gate.
                        assert_eq!(data.load(Ordering::Relaxed) % 2, 0, "read under a writer");
                        gate.leave_read();
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        for _ in 0..2000 {
            gate.enter_write();
            data.fetch_add(1, Ordering::Relaxed);
            std::hint::spin_loop();
            data.fetch_add(1, Ordering::Relaxed);
            gate.leave_write();
        }
        stop.store(true, Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
        assert_eq!(data.load(Ordering::Relaxed), 4000);
        assert!(gate.try_enter_write());
        assert!(!gate.try_enter_write(), "a second writer is refused");
        gate.leave_write();
    }

    #[test]
    fn the_express_lane_enters_counted_and_leaves_quick() {
        let gate = MemoryGate::default();
        assert!(gate.enter_read_counted());
        assert!(!gate.try_enter_write(), "a reader is inside");
        assert_eq!(gate.leave_read_quick(), None, "nothing else to do on leaving");
        gate.enter_write();
        assert!(!gate.enter_read_counted(), "the writer holds the gate");
        let was = gate.leave_read_quick().expect("a writer waits: the slow half runs");
        assert!(!gate.left_slow(was), "no retired mappings");
        assert_eq!(gate.word.load(Ordering::Relaxed) & READERS, 0, "nothing stays entered");
        gate.leave_write();
        gate.set_retired(true);
        assert!(gate.enter_read_counted(), "retired mappings do not close the gate");
        let was = gate.leave_read_quick().expect("retired mappings wait: the slow half runs");
        assert!(gate.left_slow(was), "and says so");
        gate.set_retired(false);
        gate.close_to_lane();
        assert!(!gate.enter_read_counted(), "closed to the lane");
        assert_eq!(gate.leave_read_quick(), None, "leaving a closed entry is plain leaving");
        gate.enter_read();
        assert_eq!(gate.word.load(Ordering::Relaxed) & READERS, 1, "the general path enters");
        gate.leave_read();
        assert!(gate.try_enter_write());
        gate.leave_write();
    }

    #[test]
    fn the_home_is_the_first_dispatching_thread_for_good() {
        let gate = Arc::new(MemoryGate::default());
        assert!(!gate.at_home(), "no home before the first dispatch");
        assert!(gate.may_release_retired());
        gate.settle_home();
        assert!(gate.at_home());
        let other = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                gate.settle_home();
                (gate.at_home(), gate.may_release_retired())
            })
        };
        assert_eq!(other.join().unwrap(), (false, false), "another thread: counted, no release");
        assert!(gate.at_home(), "a second dispatching thread does not move the home");
        assert!(gate.may_release_retired());
        assert_eq!(gate.leave_home(), None, "nothing else to do on leaving");
        gate.set_retired(true);
        let was = gate.leave_home().expect("retired mappings wait: the slow half runs");
        assert!(gate.left_slow(was), "and says so");
        assert_eq!(gate.word.load(Ordering::Relaxed) & READERS, 0, "home calls are not counted");
        assert!(gate.try_enter_write(), "home calls do not keep the writer out");
        gate.leave_write();

        let closed = MemoryGate::default();
        closed.close_to_lane();
        closed.settle_home();
        assert!(!closed.at_home(), "a device closed to the lane has no home");
    }

    #[test]
    fn a_writer_sleeps_until_the_last_reader_leaves() {
        let gate = Arc::new(MemoryGate::default());
        gate.enter_read();
        gate.enter_read();
        let entered = Arc::new(AtomicBool::new(false));
        let writer = {
            let (gate, entered) = (gate.clone(), entered.clone());
            std::thread::spawn(move || {
                gate.enter_write();
                entered.store(true, Ordering::SeqCst);
                gate.leave_write();
            })
        };
        // Long past the writer's spinning: it sleeps on the futex now.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!entered.load(Ordering::SeqCst), "the writer got in past two readers");
        gate.leave_read();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(!entered.load(Ordering::SeqCst), "the writer got in past one reader");
        gate.leave_read();
        writer.join().unwrap();
        assert!(entered.load(Ordering::SeqCst));
    }

    #[test]
    fn the_retired_flag_survives_readers_and_writers() {
        let gate = MemoryGate::default();
        gate.enter_write();
        gate.set_retired(true);
        gate.leave_write();
        gate.enter_read();
        assert!(gate.leave_read());
        gate.enter_write();
        gate.set_retired(false);
        gate.leave_write();
        gate.enter_read();
        assert!(!gate.leave_read());
        assert!(!gate.retired());
    }
}
