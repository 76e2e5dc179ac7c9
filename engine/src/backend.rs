//! The [`Backend`] trait: everything the training loop needs from the tensors.
//!
//! A backend owns one multilayer perceptron (described by a [`ModelSpec`]), its Adam state,
//! the initial parameters θ₀ (for the Wasserstein regulariser) and the current task's data.
//! The training loop drives it through this trait only, so the CPU engine
//! ([`crate::CpuBackend`]) and safestep-gpu's device MLP are interchangeable.
//!
//! Conventions shared by every implementation:
//!
//! * A *layer* is one weight matrix plus its bias. Layer `l` maps `fan_in(l)` features to
//!   `fan_out(l)` features and owns `fan_in·fan_out + fan_out` parameters, laid out as the
//!   weight matrix first (row-major `fan_out × fan_in`: row `j` holds the weights into unit
//!   `j`) followed by the bias. Vectors passed to [`Backend::hvp`] and
//!   [`Backend::precond_sqrt`] use this layout.
//! * Parameters and activations are `f32`; every statistic handed back is `f64`.
//! * Losses are the minibatch *mean* of the model's data loss ([`crate::Loss`]): softmax
//!   cross-entropy against labels, or `½‖ŷ − y‖²` against real targets. Every statistic
//!   below (mean gradient, per-sample gradient norms, Hessian-vector products) is of that
//!   mean, so the scheduler's readings are defined for either loss. Regularisers never
//!   enter the reported losses, gradient statistics or Hessian-vector products, only the
//!   Adam step.
//! * One seed gives bit-identical results on a given backend.
//! * Every fallible call checks its inputs first ([`crate::checks`]) and changes nothing
//!   on error.

use safestep_core::adam::{Adam, StepStats};
use serde::{Deserialize, Serialize};

use crate::checks::check_len;
use crate::error::BackendError;

#[allow(unused_imports)] // for the docs
use crate::spec::ModelSpec;

/// Optional regularisers whose gradients are added to the data gradient right before the
/// Adam step (never to the data-loss statistics). L2 and decoupled weight decay go through
/// the Adam configuration's weight decay instead.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Regularizer {
    /// Strength `λ` of the Wasserstein regulariser (Lewandowski et al.): per layer,
    /// `(λ/2) · Σ_k (sort(θ)_k − sort(θ₀)_k)²`, separately over the layer's weights and its
    /// biases (gradient `λ·(θ_j − sort(θ₀)_rank(j))`, like coupled L2's `λ·θ`); 0 = off.
    pub wasserstein: f32,
    /// Strength `λ` of L2-Init (Kumar et al. 2023): `λ‖θ − θ₀‖²` toward the initial
    /// parameters of the last reset, gradient `2λ(θ − θ₀)`; 0 = off.
    pub l2_init: f32,
}

impl Regularizer {
    /// Whether any regulariser is on.
    pub fn any(&self) -> bool {
        self.wasserstein > 0.0 || self.l2_init > 0.0
    }
}

/// What the unit-replacement methods (continual backprop, ReDo) read of one hidden layer
/// on the last `forward_backward` batch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UnitStats {
    /// Per unit, the batch mean of `|h|` summed over the features it feeds forward (one for
    /// ReLU, two for CReLU): its activity. `h` is what the next layer reads, so with
    /// [`crate::Norm::Layer`] it is measured after LayerNorm and the nonlinearity.
    pub activity: Vec<f32>,
    /// Per unit, `Σ_k |w_kj|` over the next layer's weights out of its features.
    pub outgoing: Vec<f32>,
}

/// One layer's statistics of one minibatch, as [`Backend::forward_backward`] returns them.
///
/// This struct is the one definition of the per-layer engine statistics: the controller
/// log (`controller.csv`) takes its columns from these field names. A new statistic is a
/// new field here plus the code in each engine that computes it.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LayerBatchStats {
    /// `‖ḡ‖²`: squared norm of the minibatch-mean gradient of the data loss.
    pub mean_grad_sq: f64,
    /// `Σ_i ‖g_i‖²` over the batch of the per-sample gradients' squared norms (computed
    /// exactly without materialising them), when requested.
    pub sum_sample_sq_norms: Option<f64>,
}

/// Result of one [`Backend::forward_backward`] on a minibatch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchOutput {
    /// Minibatch-mean data loss (cross-entropy, or `½‖ŷ − y‖²`).
    pub loss: f64,
    /// Samples whose arg-max logit equals the label (always 0 for the squared-error loss,
    /// where accuracy does not apply).
    pub correct: usize,
    /// Minibatch size B.
    pub batch: usize,
    /// Per-layer statistics, input layer first.
    pub layers: Vec<LayerBatchStats>,
}

/// Result of [`Backend::evaluate`] over the whole current task.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvalOutput {
    /// Mean data loss over the task's examples (cross-entropy, or `½‖ŷ − y‖²`).
    pub loss: f64,
    /// Correctly classified examples (always 0 for the squared-error loss, where accuracy
    /// does not apply).
    pub correct: usize,
    /// Examples evaluated.
    pub count: usize,
}

impl EvalOutput {
    /// Fraction of examples classified correctly (0 for an empty evaluation).
    pub fn accuracy(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.correct as f64 / self.count as f64
        }
    }
}

/// A snapshot of a backend's training state (for checkpoints): with the same [`ModelSpec`]
/// and task, [`Backend::import_state`] of an exported state continues bit-identically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendState {
    /// Parameters per layer (weights row-major `fan_out × fan_in`, then bias).
    pub params: Vec<Vec<f32>>,
    /// Adam's first moments, same layout.
    pub m: Vec<Vec<f32>>,
    /// Adam's second moments, same layout.
    pub v: Vec<Vec<f32>>,
    /// The initial parameters θ₀ of the last reset, same layout (Wasserstein reference).
    pub theta0: Vec<Vec<f32>>,
}

impl BackendState {
    /// Checks a snapshot against a model with `param_counts` parameters per layer: four
    /// parts of one vector per layer, each of the layer's length, every value finite and
    /// every second moment `>= 0`. Backends call this before importing anything.
    ///
    /// # Errors
    /// [`BackendError::LengthMismatch`], [`BackendError::NonFiniteInput`], or
    /// [`BackendError::InvalidSpec`] (field `state v`) naming the layer and index.
    pub fn validate(&self, param_counts: &[usize]) -> Result<(), BackendError> {
        let parts: [(&'static str, &Vec<Vec<f32>>); 4] = [
            ("state params", &self.params),
            ("state m", &self.m),
            ("state v", &self.v),
            ("state theta0", &self.theta0),
        ];
        for (what, part) in parts {
            check_len(what, param_counts.len(), part.len())?;
            for (&count, values) in param_counts.iter().zip(part) {
                check_len(what, count, values.len())?;
                crate::checks::check_finite(values)?;
            }
        }
        if let Some((layer, index)) = self
            .v
            .iter()
            .enumerate()
            .find_map(|(l, v)| v.iter().position(|&x| x < 0.0).map(|i| (l, i)))
        {
            return Err(BackendError::InvalidSpec {
                field: "state v",
                value: format!("layer {layer} index {index}: {}", self.v[layer][index]),
                allowed: "second moments >= 0",
            });
        }
        Ok(())
    }
}

/// The tensor engine behind a run: a seeded MLP with Adam state and the current task data.
///
/// Layers are numbered from the input; see the module docs for the per-layer parameter layout.
pub trait Backend {
    /// Short name: `"cpu"` or `"cuda"`.
    fn name(&self) -> &'static str;

    /// Parameters per layer (`fan_in·fan_out + fan_out`).
    fn layer_param_counts(&self) -> Vec<usize>;

    /// Re-initialises the parameters from `seed` ([`crate::init_params`]), zeroes the Adam
    /// moments and records the new parameters as θ₀ (for the Wasserstein regulariser).
    fn reset(&mut self, seed: u64) -> Result<(), BackendError>;

    /// Replaces the task data: `images` is row-major `n × input` with values in `[0, 1]`,
    /// `labels` holds `n` labels below `classes` ([`crate::checks::check_task`]).
    /// A cross-entropy model's task; a squared-error model refuses it with
    /// [`BackendError::WrongTargets`].
    fn load_task(&mut self, images: &[f32], labels: &[u8]) -> Result<(), BackendError>;

    /// Replaces the task data of a squared-error model ([`crate::Loss::SquaredError`]):
    /// `inputs` is row-major `n × input`, `targets` row-major `n × classes` (the outputs'
    /// targets), all finite ([`crate::checks::check_regression_task`]). A cross-entropy
    /// model refuses it with [`BackendError::WrongTargets`]; engines without the loss return
    /// [`BackendError::Unsupported`] (the default).
    fn load_regression_task(
        &mut self,
        inputs: &[f32],
        targets: &[f32],
    ) -> Result<(), BackendError> {
        let _ = (inputs, targets);
        Err(BackendError::Unsupported {
            what: "load_regression_task (the squared-error loss)",
            backend: self.name(),
        })
    }

    /// Forward and backward pass of the data loss on the examples `batch` (indices into the
    /// task data, [`crate::checks::Batch`]); keeps the mean gradient for the next
    /// [`Backend::adam_step`] and the batch for [`Backend::hvp`]. With `sample_norms`, each
    /// layer's statistics include the exact sum of per-sample gradient squared norms.
    fn forward_backward(
        &mut self,
        batch: &[u32],
        sample_norms: bool,
    ) -> Result<BatchOutput, BackendError>;

    /// `out = H_ll · v`: the product of layer `layer`'s diagonal Hessian block of the mean
    /// data loss on the last `forward_backward` batch with `v` (both of the layer's length).
    /// Call it between `forward_backward` and `adam_step`: once the parameters or the task
    /// change (`adam_step`, `reset`, `load_task`, `import_state`) it fails with
    /// [`BackendError::NoBatch`].
    fn hvp(&mut self, layer: usize, v: &[f32], out: &mut [f32]) -> Result<(), BackendError>;

    /// [`Backend::hvp`] on the first `rows` rows of the last `forward_backward` batch only
    /// (the Hessian block of their mean loss): a cheaper, noisier curvature estimate, for
    /// the controller's documented `hvp_rows` option; never used by default. `rows` must be
    /// in `1..=` the batch's size ([`BackendError::HvpRows`]). Engines that do not offer it
    /// return [`BackendError::Unsupported`] (the default).
    fn hvp_rows(
        &mut self,
        layer: usize,
        rows: usize,
        v: &[f32],
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        let _ = (layer, rows, v, out);
        Err(BackendError::Unsupported {
            what: "hvp_rows (a Hessian-vector product on part of the minibatch)",
            backend: self.name(),
        })
    }

    /// `out = H v` for the whole network's Hessian of the mean data loss on the last
    /// `forward_backward` batch (one vector per layer, in the layer layout), for the
    /// diagnosis's network sharpness. Engines that do not offer it return
    /// [`BackendError::Unsupported`] (the default).
    fn hvp_network(&mut self, v: &[Vec<f32>], out: &mut [Vec<f32>]) -> Result<(), BackendError> {
        let _ = (v, out);
        Err(BackendError::Unsupported {
            what: "hvp_network",
            backend: self.name(),
        })
    }

    /// The pre-activations `z` of every hidden layer on the task examples `batch`
    /// (row-major `batch × fan_out` each), by a forward pass that changes no parameter:
    /// the nonlinearity's inputs, so with [`crate::Norm::Layer`] the normalised
    /// `LN(z)` (the diagnosis's dead-unit, entropy and rank indicators are of the features
    /// the next layer sees); it
    /// may end the last `forward_backward`'s batch (call `forward_backward` again before
    /// [`Backend::hvp`]).
    fn hidden_pre_activations(&mut self, batch: &[u32]) -> Result<Vec<Vec<f32>>, BackendError>;

    /// Each hidden layer's [`UnitStats`] on the last `forward_backward` batch (valid until
    /// the next one). Engines that do not offer it return [`BackendError::Unsupported`].
    fn unit_stats(&mut self) -> Result<Vec<UnitStats>, BackendError> {
        Err(BackendError::Unsupported {
            what: "unit_stats",
            backend: self.name(),
        })
    }

    /// Re-initialises the units `units` of hidden layer `layer` (continual backprop, ReDo):
    /// their input weights and bias drawn afresh from the initial distribution (seeded by
    /// `seed`), their outgoing weights set to 0, and the Adam moments of every touched
    /// parameter set to 0. Invalidates the last batch.
    fn reinit_units(
        &mut self,
        layer: usize,
        units: &[usize],
        seed: u64,
    ) -> Result<(), BackendError> {
        let _ = (layer, units, seed);
        Err(BackendError::Unsupported {
            what: "reinit_units",
            backend: self.name(),
        })
    }

    /// Shrink and perturb (Ash & Adams 2020): every parameter `θ ← (1 − shrink)·θ +
    /// scale·ξ`, `ξ` drawn from the initial distribution (seeded by `seed`). Invalidates the
    /// last batch.
    fn shrink_perturb(&mut self, shrink: f32, scale: f32, seed: u64) -> Result<(), BackendError> {
        let _ = (shrink, scale, seed);
        Err(BackendError::Unsupported {
            what: "shrink_perturb",
            backend: self.name(),
        })
    }

    /// Adam's preconditioner square root for layer `layer`:
    /// `out_i = 1 / sqrt(sqrt(v̂_i) + eps)` with `v̂ = v / (1 − β2^t)`.
    fn precond_sqrt(
        &mut self,
        layer: usize,
        adam: &Adam<f32>,
        t: u64,
        out: &mut [f32],
    ) -> Result<(), BackendError>;

    /// One Adam step (1-based step `t`) with per-layer learning rates `lrs`, using the
    /// gradient of the last `forward_backward` plus the regulariser gradients; returns the
    /// per-layer step statistics. Every layer is checked before any is changed: a
    /// non-finite gradient, or a step whose result would overflow, is
    /// [`BackendError::Optimizer`] naming the layer and the quantity.
    fn adam_step(
        &mut self,
        adam: &Adam<f32>,
        lrs: &[f32],
        t: u64,
        reg: &Regularizer,
    ) -> Result<Vec<StepStats<f64>>, BackendError>;

    /// Forward pass over the whole current task: mean loss and correct count.
    fn evaluate(&mut self) -> Result<EvalOutput, BackendError>;

    /// Snapshot of parameters, Adam moments and θ₀ (the task data is not included).
    fn export_state(&mut self) -> Result<BackendState, BackendError>;

    /// Restores a snapshot from [`Backend::export_state`] of a backend with the same spec;
    /// checks every layer's lengths and finiteness first and changes nothing on error.
    fn import_state(&mut self, state: &BackendState) -> Result<(), BackendError>;
}
