//! The [`Backend`] trait: everything the runner needs from the tensors.
//!
//! A backend owns one multilayer perceptron (described by a [`ModelSpec`]), its Adam state,
//! the initial parameters θ₀ (for the Wasserstein regulariser) and the current task's data.
//! The runner drives it through this trait only, so the CPU engine
//! ([`crate::cpu::CpuBackend`]) and the CUDA adapter are interchangeable.
//!
//! Conventions shared by every implementation:
//!
//! * A *layer* is one weight matrix plus its bias. Layer `l` maps `fan_in(l)` features to
//!   `fan_out(l)` features and owns `fan_in·fan_out + fan_out` parameters, laid out as the
//!   weight matrix first (row-major `fan_out × fan_in`: row `j` holds the weights into unit
//!   `j`) followed by the bias. Vectors passed to [`Backend::hvp`] and
//!   [`Backend::precond_sqrt`] use this layout.
//! * Parameters and activations are `f32`; every statistic handed back is `f64`.
//! * Losses are the minibatch *mean* softmax cross-entropy of the data; regularisers never
//!   enter the reported losses, gradient statistics or Hessian-vector products, only the
//!   Adam step.
//! * One seed gives bit-identical results on a given backend.

use safestep_core::adam::{AdamConfig, StepStats};

/// Hidden-unit nonlinearity of the MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `relu(x) = max(x, 0)`: a hidden layer of width `h` feeds `h` features forward.
    Relu,
    /// Concatenated ReLU (Abbas et al. 2023), `crelu(x) = [relu(x), relu(−x)]`: a hidden
    /// layer of width `h` feeds `2h` features forward.
    Crelu,
}

impl Activation {
    /// Features fed forward per hidden unit (1 for ReLU, 2 for CReLU).
    pub fn expansion(self) -> usize {
        match self {
            Activation::Relu => 1,
            Activation::Crelu => 2,
        }
    }

    /// Lower-case name as used on the command line (`relu`, `crelu`).
    pub fn as_str(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Crelu => "crelu",
        }
    }
}

impl core::fmt::Display for Activation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::str::FromStr for Activation {
    type Err = BackendError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "relu" => Ok(Activation::Relu),
            "crelu" => Ok(Activation::Crelu),
            other => Err(BackendError::InvalidSpec {
                field: "activation",
                value: other.to_string(),
                allowed: "relu or crelu",
            }),
        }
    }
}

/// Architecture of the MLP: `input → hidden[0] → … → hidden[last] → classes`.
///
/// With [`Activation::Crelu`] each hidden layer feeds twice its width forward. Set
/// `crelu_match_params` to shrink the hidden widths (by one common factor) so the parameter
/// count stays as close as possible to the ReLU network of the same `hidden` widths, as
/// Kumar et al. do; the widths actually used are given by [`ModelSpec::effective_hidden`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// Input features (784 for MNIST).
    pub input: usize,
    /// Hidden widths (units per hidden layer, before any CReLU doubling).
    pub hidden: Vec<usize>,
    /// Output classes (10 for MNIST).
    pub classes: usize,
    /// Hidden nonlinearity.
    pub activation: Activation,
    /// With CReLU, shrink the hidden widths to match the ReLU network's parameter count.
    pub crelu_match_params: bool,
}

impl Default for ModelSpec {
    /// The paper's MLP: 784-256-256-10 with ReLU.
    fn default() -> Self {
        ModelSpec {
            input: 784,
            hidden: vec![256, 256],
            classes: 10,
            activation: Activation::Relu,
            crelu_match_params: false,
        }
    }
}

/// Optional regularisers whose gradients are added to the data gradient right before the
/// Adam step (never to the data-loss statistics). L2 and decoupled weight decay go through
/// [`AdamConfig::weight_decay`] instead.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Regularizer {
    /// Strength `λ` of the Wasserstein regulariser (Lewandowski et al.): per layer,
    /// `(λ/2) · Σ_k (sort(θ)_k − sort(θ₀)_k)²`, separately over the layer's weights and its
    /// biases (gradient `λ·(θ_j − sort(θ₀)_rank(j))`, like coupled L2's `λ·θ`); 0 = off.
    pub wasserstein: f32,
}

/// Result of one [`Backend::forward_backward`] on a minibatch.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchOutput {
    /// Minibatch-mean cross-entropy of the data.
    pub loss: f64,
    /// Samples whose arg-max logit equals the label.
    pub correct: usize,
    /// Minibatch size B.
    pub batch: usize,
    /// Per layer, `‖ḡ‖²`: squared norm of the minibatch-mean gradient of the data loss.
    pub mean_grad_sq: Vec<f64>,
    /// Per layer, `Σ_i ‖g_i‖²` over the batch of the per-sample gradients' squared norms
    /// (computed exactly without materialising them), when requested.
    pub sum_sample_sq_norms: Option<Vec<f64>>,
}

/// Result of [`Backend::evaluate`] over the whole current task.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvalOutput {
    /// Mean cross-entropy over the task's examples.
    pub loss: f64,
    /// Correctly classified examples.
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
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
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
                if let Some(index) = values.iter().position(|x| !x.is_finite()) {
                    return Err(BackendError::NonFiniteInput {
                        index,
                        value: values[index],
                    });
                }
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

/// Checks task data as every [`Backend::load_task`] must: at least one example, `images`
/// of `labels.len() × spec.input` finite values, every label below `spec.classes`.
pub fn check_task(spec: &ModelSpec, images: &[f32], labels: &[u8]) -> Result<(), BackendError> {
    if labels.is_empty() {
        return Err(BackendError::InvalidSpec {
            field: "labels",
            value: "0 examples".to_string(),
            allowed: "at least one example",
        });
    }
    check_len("images", labels.len() * spec.input, images.len())?;
    let classes = spec.classes;
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &y)| y as usize >= classes)
    {
        return Err(BackendError::LabelOutOfRange {
            label,
            index,
            classes,
        });
    }
    if let Some((index, &value)) = images.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(BackendError::NonFiniteInput { index, value });
    }
    Ok(())
}

/// Checks the arguments of [`Backend::adam_step`] for a model of `layers` layers: one
/// finite, non-negative lr per layer and a finite, non-negative regulariser strength.
pub fn check_step(layers: usize, lrs: &[f32], reg: &Regularizer) -> Result<(), BackendError> {
    check_len("lrs", layers, lrs.len())?;
    if let Some((layer, &value)) = lrs
        .iter()
        .enumerate()
        .find(|(_, lr)| !(lr.is_finite() && **lr >= 0.0))
    {
        return Err(BackendError::BadLearningRate { layer, value });
    }
    if !(reg.wasserstein.is_finite() && reg.wasserstein >= 0.0) {
        return Err(BackendError::InvalidSpec {
            field: "wasserstein",
            value: reg.wasserstein.to_string(),
            allowed: "finite and >= 0",
        });
    }
    Ok(())
}

/// `Ok` when a slice argument `what` has the `expected` length, else [`BackendError::LengthMismatch`].
pub(crate) fn check_len(
    what: &'static str,
    expected: usize,
    found: usize,
) -> Result<(), BackendError> {
    if expected == found {
        Ok(())
    } else {
        Err(BackendError::LengthMismatch {
            what,
            expected,
            found,
        })
    }
}

/// Everything that can go wrong inside a backend; each variant names the bad input.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A [`ModelSpec`] (or other configuration) field has a value that is not allowed.
    #[error("invalid model spec: {field} = {value} (allowed: {allowed})")]
    InvalidSpec {
        /// Field name.
        field: &'static str,
        /// The offending value, rendered.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A slice argument has the wrong length.
    #[error("{what}: expected length {expected}, found {found}")]
    LengthMismatch {
        /// Which argument.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Length given.
        found: usize,
    },
    /// A layer index beyond the model's layers.
    #[error("layer {layer} out of range (the model has {layers} layers)")]
    LayerOutOfRange {
        /// Index given.
        layer: usize,
        /// Number of layers.
        layers: usize,
    },
    /// A minibatch index beyond the loaded task.
    #[error("batch index {index} out of range (the task has {examples} examples)")]
    IndexOutOfRange {
        /// Index given.
        index: usize,
        /// Examples in the task.
        examples: usize,
    },
    /// A label not below the number of classes.
    #[error("label {label} at example {index} out of range (the model has {classes} classes)")]
    LabelOutOfRange {
        /// Label value.
        label: u8,
        /// Example index.
        index: usize,
        /// Number of classes.
        classes: usize,
    },
    /// An input pixel that is not finite.
    #[error("input value {value} at position {index} is not finite")]
    NonFiniteInput {
        /// Flat index into the image buffer.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A minibatch with no samples.
    #[error("empty minibatch")]
    EmptyBatch,
    /// A minibatch larger than the backend was built for.
    #[error("minibatch of {found} samples exceeds the backend's capacity of {capacity}")]
    BatchTooLarge {
        /// Samples requested.
        found: usize,
        /// Largest batch the backend supports.
        capacity: usize,
    },
    /// An operation that needs task data before [`Backend::load_task`] was called.
    #[error("no task loaded: call load_task first")]
    NoTask,
    /// An operation that needs a preceding [`Backend::forward_backward`].
    #[error("{what} needs a preceding forward_backward on the current parameters")]
    NoBatch {
        /// The operation attempted.
        what: &'static str,
    },
    /// A learning rate that is negative or not finite.
    #[error("learning rate {value} for layer {layer} is not a finite non-negative number")]
    BadLearningRate {
        /// Layer index.
        layer: usize,
        /// The value.
        value: f32,
    },
    /// A numerical failure inside the optimizer (non-finite gradient, …).
    #[error("optimizer step for layer {layer}: {error}")]
    Optimizer {
        /// Layer index.
        layer: usize,
        /// The core error.
        error: safestep_core::Error,
    },
    /// A device-side failure (CUDA adapter).
    #[error("device: {message}")]
    Device {
        /// What the device reported.
        message: String,
    },
}

/// The tensor engine behind a run: a seeded MLP with Adam state and the current task data.
///
/// Layers are numbered from the input; see the module docs for the per-layer parameter layout.
pub trait Backend {
    /// Short name: `"cpu"` or `"cuda"`.
    fn name(&self) -> &'static str;

    /// Parameters per layer (`fan_in·fan_out + fan_out`).
    fn layer_param_counts(&self) -> Vec<usize>;

    /// Re-initialises the parameters from `seed`, zeroes the Adam moments and records the new
    /// parameters as θ₀ (for the Wasserstein regulariser).
    fn reset(&mut self, seed: u64) -> Result<(), BackendError>;

    /// Replaces the task data: `images` is row-major `n × input` with values in `[0, 1]`,
    /// `labels` holds `n` labels below `classes`.
    fn load_task(&mut self, images: &[f32], labels: &[u8]) -> Result<(), BackendError>;

    /// Forward and backward pass of the data loss on the examples `batch` (indices into the
    /// task data); keeps the mean gradient for the next [`Backend::adam_step`] and the batch
    /// for [`Backend::hvp`]. With `sample_norms`, also returns the exact per-layer sums of
    /// per-sample gradient squared norms.
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

    /// Adam's preconditioner square root for layer `layer`:
    /// `out_i = 1 / sqrt(sqrt(v̂_i) + eps)` with `v̂ = v / (1 − β2^t)`.
    fn precond_sqrt(
        &mut self,
        layer: usize,
        adam: &AdamConfig<f32>,
        t: u64,
        out: &mut [f32],
    ) -> Result<(), BackendError>;

    /// One Adam step (1-based step `t`) with per-layer learning rates `lrs`, using the
    /// gradient of the last `forward_backward` plus the regulariser gradients; returns the
    /// per-layer step statistics.
    fn adam_step(
        &mut self,
        adam: &AdamConfig<f32>,
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
