// SPDX-License-Identifier: GPL-2.0-or-later
//! The fuzzing harness of `fuzz/src/` for AFL++ (cargo-afl): the same modules, compiled here
//! by path (the fuzz crate links libFuzzer, whose `main` would clash with AFL's).
#![allow(clippy::missing_safety_doc, dead_code)]

#[path = "../../src/capi.rs"]
pub mod capi;
#[path = "../../src/device.rs"]
pub mod device;
#[path = "../../src/engine.rs"]
pub mod engine;
#[path = "../../src/input.rs"]
pub mod input;
#[path = "../../src/proto.rs"]
pub mod proto;
#[path = "../../src/ring.rs"]
pub mod ring;
#[path = "../../src/sys.rs"]
pub mod sys;
#[path = "../../src/targets/mod.rs"]
pub mod targets;
