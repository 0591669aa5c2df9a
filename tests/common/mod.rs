// SPDX-License-Identifier: GPL-2.0-or-later
//! Test harness: builds the C example backends in examples-c/ against a
//! libvhost-user build (ours by default, see backend.rs for VU_LIB_DIR),
//! runs them, and drives them as an independent vhost-user frontend
//! (rust-vmm `vhost` crate for the control plane, our own split and packed
//! virtqueue drivers for the data plane, or raw messages for hostile input).
#![allow(dead_code, unused_imports)]

pub mod backend;
pub mod blk;
pub mod mem;
pub mod packed;
pub mod raw;
pub mod ring;
pub mod session;
pub mod vring;

pub use backend::*;
pub use blk::*;
pub use mem::*;
pub use packed::*;
pub use ring::*;
pub use session::*;
pub use vhost::vhost_user::VhostUserFrontend;
pub use vhost::VhostBackend;
pub use vring::*;
