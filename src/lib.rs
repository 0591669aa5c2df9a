//! libvhost-user in Rust: the C API of QEMU's libvhost-user over a safe core.
//!
//! Layers, from the C boundary inwards:
//! - [`ffi`]: the exported `vu_*` functions; pointer checks, panic containment.
//! - [`control`]: the frontend's requests, one per `vu_dispatch`.
//! - [`queue`]: the split virtqueue data plane.
//! - [`memory`], [`mmap`]: guest memory regions and their translation.
//! - [`inflight`], [`dirty_log`], [`postcopy`], [`backend`], [`state_transfer`]: the
//!   protocol's optional parts.
//! - [`abi`]: the C-visible types, from which the header is generated.

pub mod abi;
pub mod backend;
pub mod control;
pub mod device;
pub mod device_ext;
pub mod dirty_log;
pub mod fd;
pub mod ffi;
pub mod inflight;
pub mod memory;
pub mod message;
pub mod mmap;
pub mod postcopy;
pub mod queue;
pub mod state_transfer;
