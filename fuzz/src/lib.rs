// SPDX-License-Identifier: GPL-2.0-or-later
//! Fuzzing harness of libvhost-user: a real device in this process, driven through the C API
//! the library exports (`vu_init`, `vu_dispatch`, `vu_queue_*`, `vu_deinit`) with C-ABI
//! callbacks written in Rust, and the harness acting as the frontend over a socketpair and as
//! the guest driver in memfd-backed guest memory.
//!
//! - [`device`]: the device, its callbacks, its event loop, the element oracle.
//! - [`engine`]: scenarios (messages with fds, kicks, guest writes, queue operations,
//!   reconnects) and the leak checks after each.
//! - [`targets`]: each fuzz target's input format, decoder and seeds.
//! - [`proto`], [`ring`]: the frontend's messages and the driver's ring writes.
//!
//! The main crate's tests include this module tree by path to replay the corpora and the
//! regression inputs under `cargo test`.
#![allow(clippy::missing_safety_doc)]

pub mod capi;
pub mod device;
pub mod engine;
pub mod input;
pub mod live;
pub mod proto;
pub mod ring;
pub mod sys;
pub mod targets;
