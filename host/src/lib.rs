//! safestep-host: the CPU engine, task streams and benchmark runner behind the `safestep` binary.

pub mod backend;
pub mod data;
pub mod cpu;
pub mod model;
pub mod bench;
#[cfg(feature = "cuda")]
pub mod cuda;
