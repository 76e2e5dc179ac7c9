//! safestep-core: the noise-curvature bound math and the per-layer Adam scheduler.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adam;
mod error;
pub mod noise;
mod real;

pub use error::Error;
pub use real::Real;
