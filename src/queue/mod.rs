//! The data plane: split virtqueues.

pub mod chain;
pub mod element;
pub mod ring;
pub mod split;

use std::fmt;

/// A fatal problem with what the guest put in a queue (or with a notification fd); becomes a
/// `panic` callback with the original's wording. Plain data, so the hot path carries no
/// allocation and returns it in registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    AvailIndexJump { from: u16, to: u16 },
    BadHead(u32),
    SizeExceeded,
    DescNext(u32),
    Looped,
    IndirectInChain,
    NestedIndirect,
    IndirectSize,
    IndirectTable,
    Order,
    ZeroSized,
    TooManySegments,
    BadAddress,
    Remap,
    InflightSlot { queue: usize, desc: u32 },
    LogTooSmall { addr: u64, len: u64 },
    EventfdWrite(i32),
    BadElement,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Fault::AvailIndexJump { from, to } => {
                write!(f, "Guest moved used index from {from} to {to}")
            }
            Fault::BadHead(h) => write!(f, "Guest says index {h} is available"),
            Fault::SizeExceeded => write!(f, "Virtqueue size exceeded"),
            Fault::DescNext(n) => write!(f, "Desc next is {n}"),
            Fault::Looped => write!(f, "Looped descriptor"),
            Fault::IndirectInChain => write!(f, "Indirect descriptor inside a descriptor chain"),
            Fault::NestedIndirect => write!(f, "Nested indirect descriptor table"),
            Fault::IndirectSize => write!(f, "Invalid size for indirect buffer table"),
            Fault::IndirectTable => write!(f, "Invalid indirect buffer table"),
            Fault::Order => write!(f, "Incorrect order for descriptors"),
            Fault::ZeroSized => write!(f, "virtio: zero sized buffers are not allowed"),
            Fault::TooManySegments => write!(f, "virtio: too many descriptors in indirect table"),
            Fault::BadAddress => write!(f, "virtio: invalid address for buffers"),
            Fault::Remap => write!(f, "remapping queue on access"),
            Fault::InflightSlot { queue, desc } => {
                write!(f, "inflight area of queue {queue} has no slot for descriptor {desc}")
            }
            Fault::LogTooSmall { addr, len } => {
                write!(f, "dirty log too small for write at {addr:#x}+{len:#x}")
            }
            Fault::EventfdWrite(errno) => {
                write!(f, "Error writing eventfd: {}", std::io::Error::from_raw_os_error(errno))
            }
            Fault::BadElement => write!(f, "invalid element index"),
        }
    }
}
