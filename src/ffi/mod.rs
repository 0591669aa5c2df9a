//! The C boundary: every `vu_*` symbol, each a thin shell that checks its pointers, catches
//! any Rust panic (none may unwind into C) and calls the safe core.
//!
//! Safety contract of every function here: the C API's. Pointers are NULL or what the C
//! caller got from this library (`dev` initialised by `vu_init`, `vq` one of its queues,
//! elements from `vu_queue_pop`) or owns (output pointers, buffers of the documented size).
#![allow(clippy::missing_safety_doc)]

mod device;
mod extensions;
mod queue;

use std::ffi::CStr;
use std::panic::{catch_unwind, AssertUnwindSafe};

pub use device::*;
pub use extensions::*;
pub use queue::*;

/// Runs `f`, turning a Rust panic into `fallback` (a bug in the library must not unwind into C).
pub fn guard<R>(fallback: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            log::error!("libvhost-user: internal error caught at the C boundary");
            fallback
        }
    }
}

const REQUEST_NAMES: [&CStr; 42] = [
    c"VHOST_USER_NONE",
    c"VHOST_USER_GET_FEATURES",
    c"VHOST_USER_SET_FEATURES",
    c"VHOST_USER_SET_OWNER",
    c"VHOST_USER_RESET_OWNER",
    c"VHOST_USER_SET_MEM_TABLE",
    c"VHOST_USER_SET_LOG_BASE",
    c"VHOST_USER_SET_LOG_FD",
    c"VHOST_USER_SET_VRING_NUM",
    c"VHOST_USER_SET_VRING_ADDR",
    c"VHOST_USER_SET_VRING_BASE",
    c"VHOST_USER_GET_VRING_BASE",
    c"VHOST_USER_SET_VRING_KICK",
    c"VHOST_USER_SET_VRING_CALL",
    c"VHOST_USER_SET_VRING_ERR",
    c"VHOST_USER_GET_PROTOCOL_FEATURES",
    c"VHOST_USER_SET_PROTOCOL_FEATURES",
    c"VHOST_USER_GET_QUEUE_NUM",
    c"VHOST_USER_SET_VRING_ENABLE",
    c"VHOST_USER_SEND_RARP",
    c"VHOST_USER_NET_SET_MTU",
    c"VHOST_USER_SET_BACKEND_REQ_FD",
    c"VHOST_USER_IOTLB_MSG",
    c"VHOST_USER_SET_VRING_ENDIAN",
    c"VHOST_USER_GET_CONFIG",
    c"VHOST_USER_SET_CONFIG",
    c"VHOST_USER_CREATE_CRYPTO_SESSION",
    c"VHOST_USER_CLOSE_CRYPTO_SESSION",
    c"VHOST_USER_POSTCOPY_ADVISE",
    c"VHOST_USER_POSTCOPY_LISTEN",
    c"VHOST_USER_POSTCOPY_END",
    c"VHOST_USER_GET_INFLIGHT_FD",
    c"VHOST_USER_SET_INFLIGHT_FD",
    c"VHOST_USER_GPU_SET_SOCKET",
    c"VHOST_USER_RESET_DEVICE",
    c"VHOST_USER_VRING_KICK",
    c"VHOST_USER_GET_MAX_MEM_SLOTS",
    c"VHOST_USER_ADD_MEM_REG",
    c"VHOST_USER_REM_MEM_REG",
    c"VHOST_USER_SET_STATUS",
    c"VHOST_USER_GET_STATUS",
    c"VHOST_USER_GET_SHARED_OBJECT",
];

/// The name of a request, "unknown" past the end of the table.
pub fn request_str(req: u32) -> &'static CStr {
    REQUEST_NAMES.get(req as usize).copied().unwrap_or(c"unknown")
}
