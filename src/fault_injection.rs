//! Test-only fault injection: makes the next `vu_dispatch` on this thread panic inside the
//! library, to test the panic policy at the C boundary (`ffi::caught_panic`). Not compiled
//! into the shipped libraries.

use std::cell::Cell;

thread_local! {
    static ARMED: Cell<bool> = const { Cell::new(false) };
}

/// The next `fire_if_armed` on this thread panics.
pub fn arm() {
    ARMED.with(|a| a.set(true));
}

/// Panics (once) if `arm` was called on this thread.
pub fn fire_if_armed() {
    if ARMED.with(|a| a.replace(false)) {
        panic!("injected fault");
    }
}
