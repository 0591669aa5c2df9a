//! The data plane: split virtqueues.

pub mod chain;
pub mod element;
pub mod ring;
pub mod split;

/// A fatal problem with what the guest put in a queue; becomes a `panic` callback.
#[derive(Debug)]
pub struct Fault(pub String);

impl Fault {
    pub fn new(msg: &str) -> Fault {
        Fault(msg.to_owned())
    }
}
