//! safestep-engine: the one contract between safestep's training loop and its tensor
//! engines, and the CPU engine.
//!
//! - [`backend`]: the [`Backend`] trait every engine implements, with what crosses it: the
//!   per-layer statistics of a minibatch ([`LayerBatchStats`], defined once: the controller
//!   log's columns derive from it), evaluation results and checkpoint state;
//! - [`spec`]: the model ([`ModelSpec`], [`Activation`], [`Loss`], [`Norm`], [`LayerShape`]) and its seeded
//!   initialisation, shared by every engine so they start from bit-identical weights;
//! - [`checks`]: the input checks every engine runs, written once;
//! - [`error`]: [`BackendError`], naming the bad input or keeping the device's own error;
//! - [`cpu`]: the CPU engine ([`CpuBackend`]);
//! - [`reference`](mod@reference): a naive `f64` MLP, the independent oracle for every engine's tests.
//!
//! safestep-gpu implements [`Backend`] for its device MLP with these same types; the host
//! (the `safestep` binary) drives either through the trait alone.
#![warn(missing_docs)]

pub mod backend;
pub mod checks;
pub mod cpu;
pub mod error;
pub mod reference;
pub mod spec;

pub use backend::{
    Backend, BackendState, BatchOutput, EvalOutput, LayerBatchStats, Regularizer, UnitStats,
};
pub use cpu::CpuBackend;
pub use error::BackendError;
pub use spec::{init_params, Activation, LayerShape, Loss, ModelSpec, Norm, LAYER_NORM_EPS};
