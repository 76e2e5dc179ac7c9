//! safestep-core: the noise-curvature bound math and the per-layer Adam scheduler.
#![no_std]
#![forbid(unsafe_code)]
