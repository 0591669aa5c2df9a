//! libvhost-user in Rust: the C API of QEMU's libvhost-user, with a safe core.
pub mod abi;
