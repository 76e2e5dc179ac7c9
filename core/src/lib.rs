//! safestep-core: the noise-curvature bound math and the per-layer Adam scheduler.
//!
//! `#![no_std]`, no allocation, no unsafe; generic over `f32` and `f64` ([`Real`]).
//! The one home of the math in *A Unified Noise-Curvature View of Loss of Trainability*
//! (Baveja, Lewandowski, Schmidt), as operationalised in the project's DESIGN.md:
//!
//! - [`adam`]: Adam / AdamW over slices, returning the per-layer statistics in the same pass;
//! - [`noise`]: gradient-noise statistics `S`, the unbiased `G²`, `SNR_g`;
//! - [`power`]: warm-started power iteration for a layer's sharpness from Hessian-vector
//!   products (plain or Adam-preconditioned);
//! - [`window`]: curvature volatility `Vol = Var(ρ)/Mean(ρ)` (window or EMA);
//! - [`bounds`]: `ρ*_g`, `ρ*_vol`, `ρ̃*` and their SNRs;
//! - [`scheduler`]: the per-layer cool / warm / hold scheduler (Algorithm 1);
//! - [`indicators`]: diagnostics over slices (norms, unit-sign entropy, dead units, effective
//!   and stable rank).
//!
//! Every fallible function returns [`Error`] naming the bad input and changes nothing when
//! it fails.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod adam;
pub mod bounds;
mod error;
pub mod indicators;
pub mod names;
pub mod noise;
pub mod power;
mod real;
pub mod scheduler;
pub mod window;

pub use error::Error;
pub use real::Real;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
