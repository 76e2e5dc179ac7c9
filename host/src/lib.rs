//! safestep-host: the CPU engine, task streams and benchmark runner behind the `safestep` binary.
#![warn(missing_docs)]

pub mod backend;
pub mod bench;
pub mod cli;
pub mod compare;
pub mod config;
pub mod cpu;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod data;
pub mod methods;
pub mod model;
pub mod outputs;
pub mod plot;
pub mod runner;
pub mod throughput;
pub mod trainer;
