//! safestep-host: the `safestep` binary's library: configuration, task streams, the
//! training loop with the noise-curvature controller, run folders, comparisons, plots and
//! the throughput benchmark. The tensors live behind safestep-engine's `Backend` trait (the
//! CPU engine, or safestep-gpu's CUDA engine with the `cuda` feature).
#![warn(missing_docs)]

pub mod analyze;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod compare;
pub mod config;
pub mod data;
pub mod error;
pub mod folder;
pub mod indicators;
pub mod methods;
pub mod outputs;
pub mod plasticity;
pub mod plot;
pub mod runner;
pub mod seeds;
pub mod sweep;
pub mod trainer;
