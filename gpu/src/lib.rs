//! safestep-gpu: the CUDA engine of safestep.
//!
//! The kernels live in `gpu/kernels/*.cu`, one file per family (tiled SGEMM; bias, ReLU and
//! CReLU; softmax cross-entropy; deterministic reductions and per-sample gradient norms; the
//! fused Adam/AdamW step with the scheduler's per-layer statistics; the Wasserstein
//! regulariser's sort and gradient; initialisation). `build.rs` compiles them to PTX with
//! `nvcc` (CUDA 13.0.x, `sm_90` unless `SAFESTEP_CUDA_ARCH` says otherwise), and the
//! `device` module loads them with the `cust` crate.
//!
//! The engine contract is safestep-engine's: `GpuMlp` (`cuda` feature) implements its
//! `Backend` trait with its `ModelSpec`, `BatchOutput` and `BackendError` (a [`GpuError`]
//! converts into it and stays its source), so the host drives the CPU and the CUDA engine
//! alike.
//!
//! Everything CUDA is behind the `cuda` feature. Without it this crate holds only the pieces
//! that need no GPU: [`shape`] (the launch size checks), [`slots`] (where the device MLP's
//! scalars live and how they are read back), [`reference`](mod@reference) (plain-Rust
//! references of every kernel) and [`error`].
//!
//! With it: `device::Gpu` (context, stream, modules, buffers), `kernels` (a safe wrapper per
//! kernel, one file per kernel family, that checks every size before its `unsafe` launch),
//! `mlp::GpuMlp` (the engine), `selftest` (kernel checks and benchmarks) and the
//! `safestep-gpu-check` binary. Data stays on the device across steps; only per-layer
//! scalars come back. See `docs/gpu.md`.
#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

pub mod error;
pub mod reference;
pub mod shape;
pub mod slots;

#[cfg(feature = "cuda")]
pub mod device;
#[cfg(feature = "cuda")]
pub mod kernels;
#[cfg(feature = "cuda")]
pub mod mlp;
#[cfg(feature = "cuda")]
pub mod ptx;
#[cfg(feature = "cuda")]
pub mod selftest;

pub use error::{GpuError, GpuResult};
#[cfg(feature = "cuda")]
pub use mlp::GpuMlp;

/// Whether this build includes the CUDA engine (the `cuda` feature).
pub const CUDA_ENABLED: bool = cfg!(feature = "cuda");
