//! libvhost-user in Rust: the C API of QEMU's libvhost-user over a safe core.
//!
//! Layers, from the C boundary inwards:
//! - [`ffi`]: the exported `vu_*` functions; pointer checks, panic containment.
//! - [`control`]: the frontend's requests, one per `vu_dispatch`.
//! - [`queue`]: the split virtqueue data plane.
//! - [`memory`], [`region_index`], [`mmap`], [`retired`]: guest memory regions, their
//!   translation (and its index for many regions), and removed mappings kept while popped
//!   elements may point into them.
//! - [`iotlb`], [`iommu`]: the device IOTLB of VIRTIO_F_IOMMU_PLATFORM and its misses.
//! - [`inflight`], [`dirty_log`], [`userfaultfd`], [`backend_channel`], [`state_transfer`]: the
//!   protocol's optional parts; [`device_ext`]: library state beyond the C structs.
//! - [`device`]: typed views of the C structs (`Dev`, `Vq`) and the memory lock's guards;
//!   [`memory_gate`]: that lock (one atomic add per queue operation).
//! - [`message`], [`request`]: reading and writing messages, request codes and names.
//! - [`diagnostics`]: the LIBVHOST_USER_LOG logger and what it reports.
//! - [`abi`]: the C-visible types, from which the header is generated.

#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

// Only the C-visible types and the C functions are this crate's interface (the glib crate
// and the tests use them); the core is private.

pub mod abi;
pub(crate) mod backend_channel;
pub(crate) mod control;
pub(crate) mod device;
pub(crate) mod device_ext;
pub(crate) mod diagnostics;
pub(crate) mod dirty_log;
#[cfg(test)]
mod fault_injection;
pub(crate) mod fd;
pub mod ffi;
pub(crate) mod inflight;
pub(crate) mod iommu;
pub(crate) mod iotlb;
pub(crate) mod memory;
pub(crate) mod memory_gate;
pub(crate) mod message;
pub(crate) mod mmap;
pub(crate) mod queue;
pub(crate) mod region_index;
pub(crate) mod request;
pub(crate) mod retired;
pub(crate) mod state_transfer;
pub(crate) mod userfaultfd;
