//! `safestep`: the umbrella crate of the workspace.
//!
//! It re-exports [`safestep_core`] (the `no_std` bound math and scheduler),
//! [`safestep_host`] (the CPU engine and benchmark runner) and [`safestep_gpu`]
//! (the CUDA runner, built only with its `cuda` feature), and owns the
//! workspace's integration and property tests (`tests/`) and criterion
//! benchmarks (`benches/`).

pub use safestep_core as core;
pub use safestep_gpu as gpu;
pub use safestep_host as host;
