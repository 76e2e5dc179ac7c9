//! The model every engine trains, and its seeded initialisation.
//!
//! [`ModelSpec`] describes the network; this module resolves it into per-layer shapes
//! ([`LayerShape`]), validates it, implements the CReLU width matching and draws the seeded
//! initial parameters ([`init_params`]), so every engine starts from bit-identical weights
//! for the same seed.
//!
//! ```
//! use safestep_engine::{Activation, ModelSpec};
//! let relu = ModelSpec::default();
//! assert_eq!(relu.param_count().unwrap(), 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10);
//! let crelu = ModelSpec { activation: Activation::Crelu, crelu_match_params: true, ..relu.clone() };
//! let (a, b) = (crelu.param_count().unwrap() as f64, relu.param_count().unwrap() as f64);
//! assert!((a / b - 1.0).abs() < 0.01); // shrunk hidden widths: same size within 1 %
//! ```

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::error::BackendError;

/// Hidden-unit nonlinearity of the MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `relu(x) = max(x, 0)`: a hidden layer of width `h` feeds `h` features forward.
    Relu,
    /// Concatenated ReLU (Abbas et al. 2023), `crelu(x) = [relu(x), relu(−x)]`: a hidden
    /// layer of width `h` feeds `2h` features forward (positive half first).
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

    /// Lower-case name (`relu`, `crelu`).
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

/// Normalisation of each hidden layer's pre-activations, applied before the nonlinearity.
///
/// [`Norm::Layer`] is LayerNorm (Ba et al. 2016) without learnable gain or bias (PyTorch's
/// `LayerNorm(width, elementwise_affine=False)`): per example, over the layer's `fan_out`
/// units, `ẑ = (z − mean(z)) / sqrt(var(z) + ε)` with `ε = `[`LAYER_NORM_EPS`] and the
/// variance's divisor the width (biased, as PyTorch). With CReLU it is applied before the
/// concatenation, so `[relu(ẑ), relu(−ẑ)]` is fed forward. The output layer (the logits) is
/// never normalised.
///
/// Why no affine gain/bias: the parameter blocks then stay exactly each Linear layer's
/// weights and bias, so the scheduler's per-layer blocks, the parameter count, the seeded
/// initialisation, the checkpoint layout and the exact per-sample gradient-norm formula
/// `‖δ_i‖²·(‖a_i‖² + 1)` are unchanged; LayerNorm only changes the deltas `δ` (and, to
/// second order, the Hessian-vector products). A learnable gain/bias right before a
/// (C)ReLU and a Linear layer adds little expressiveness (the next layer's weights absorb
/// the gain up to sign, the bias shifts the kink) and would need its own parameter block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Norm {
    /// No normalisation (the default; the paper's MLP).
    #[default]
    None,
    /// LayerNorm without affine parameters on every hidden layer's pre-activations.
    Layer,
}

/// The `ε` of [`Norm::Layer`] (PyTorch's default).
pub const LAYER_NORM_EPS: f32 = 1e-5;

impl Norm {
    /// Lower-case name (`none`, `layer`), as the host's `--norm` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Norm::None => "none",
            Norm::Layer => "layer",
        }
    }
}

impl core::fmt::Display for Norm {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The data loss the MLP is trained on: what its outputs mean and what the task's targets
/// are. Every statistic an engine reports (losses, mean gradients, per-sample gradient
/// norms, Hessian-vector products) is of this loss's minibatch mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Loss {
    /// Softmax cross-entropy on `classes` logits against a label per example (the default;
    /// tasks are loaded with [`crate::Backend::load_task`]). An example's loss is
    /// `log Σ_j exp(z_j) − z_y`; its output delta `softmax(z) − onehot(y)`.
    #[default]
    CrossEntropy,
    /// Squared error on `classes` real outputs against an `f32` target vector per example
    /// (tasks are loaded with [`crate::Backend::load_regression_task`]). An example's loss
    /// is `½‖ŷ − y‖²`, so the minibatch loss is `(1/B)·Σ_i ½‖ŷ_i − y_i‖²`; its output delta
    /// is `ŷ − y` and its Hessian with respect to the outputs the identity. There is no
    /// accuracy: engines report 0 correct.
    SquaredError,
}

impl Loss {
    /// Lower-case name (`cross-entropy`, `squared-error`).
    pub fn as_str(self) -> &'static str {
        match self {
            Loss::CrossEntropy => "cross-entropy",
            Loss::SquaredError => "squared-error",
        }
    }
}

impl core::fmt::Display for Loss {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Architecture of the MLP: `input → hidden[0] → … → hidden[last] → classes`, and the loss
/// it is trained on.
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
    /// Output width: the classes of [`Loss::CrossEntropy`] (10 for MNIST), or the real
    /// outputs of [`Loss::SquaredError`].
    pub classes: usize,
    /// Hidden nonlinearity.
    pub activation: Activation,
    /// With CReLU, shrink the hidden widths to match the ReLU network's parameter count.
    pub crelu_match_params: bool,
    /// The data loss (cross-entropy by default).
    pub loss: Loss,
    /// Normalisation of the hidden pre-activations (none by default).
    pub norm: Norm,
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
            loss: Loss::CrossEntropy,
            norm: Norm::None,
        }
    }
}

/// Largest width accepted for any layer (input, hidden or classes).
pub const MAX_WIDTH: usize = 1 << 20;
/// Largest number of parameters accepted for the whole model (2^28: 1 GiB per `f32` buffer;
/// a backend keeps about six such buffers, the default MLP has 269,322 parameters).
pub const MAX_PARAMS: usize = 1 << 28;

/// Shape of one layer (a weight matrix plus its bias).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerShape {
    /// Features in (for a layer after a CReLU, twice the previous hidden width).
    pub fan_in: usize,
    /// Units out (pre-activations).
    pub fan_out: usize,
    /// Whether the hidden nonlinearity follows (all layers but the last).
    pub hidden: bool,
}

impl LayerShape {
    /// Number of parameters: `fan_in·fan_out + fan_out`.
    pub fn params(&self) -> usize {
        self.fan_in * self.fan_out + self.fan_out
    }

    /// Number of weights (`fan_in·fan_out`); the bias follows them in the layer's vector.
    pub fn weights(&self) -> usize {
        self.fan_in * self.fan_out
    }
}

impl ModelSpec {
    /// Checks every field: input, hidden widths and classes in `1..=MAX_WIDTH` (with
    /// cross-entropy, classes in `2..=256`, labels being bytes), and the parameter count
    /// below [`MAX_PARAMS`].
    pub fn validate(&self) -> Result<(), BackendError> {
        if self.input == 0 || self.input > MAX_WIDTH {
            return Err(BackendError::InvalidSpec {
                field: "input",
                value: self.input.to_string(),
                allowed: "1..=2^20",
            });
        }
        match self.loss {
            Loss::CrossEntropy if !(2..=256).contains(&self.classes) => {
                return Err(BackendError::InvalidSpec {
                    field: "classes",
                    value: self.classes.to_string(),
                    allowed: "2..=256 (cross-entropy)",
                });
            }
            Loss::SquaredError if self.classes == 0 || self.classes > MAX_WIDTH => {
                return Err(BackendError::InvalidSpec {
                    field: "classes",
                    value: self.classes.to_string(),
                    allowed: "1..=2^20 outputs (squared error)",
                });
            }
            _ => {}
        }
        if let Some(&w) = self.hidden.iter().find(|&&w| w == 0 || w > MAX_WIDTH) {
            return Err(BackendError::InvalidSpec {
                field: "hidden",
                value: format!("{:?} (width {w})", self.hidden),
                allowed: "widths in 1..=2^20",
            });
        }
        let total = self
            .resolved_shapes()
            .iter()
            .try_fold(0usize, |acc, s| {
                s.fan_in
                    .checked_mul(s.fan_out)
                    .and_then(|w| w.checked_add(s.fan_out))
                    .and_then(|p| acc.checked_add(p))
            })
            .filter(|&t| t <= MAX_PARAMS);
        if total.is_none() {
            return Err(BackendError::InvalidSpec {
                field: "hidden",
                value: format!("{:?}", self.hidden),
                allowed: "a model with at most 2^28 parameters",
            });
        }
        Ok(())
    }

    /// The hidden widths actually used: `hidden`, or with CReLU and `crelu_match_params`
    /// the widths scaled by one common factor so the parameter count is as close as possible
    /// to the ReLU network with widths `hidden` (ties go to the larger network).
    pub fn effective_hidden(&self) -> Vec<usize> {
        let expand = self.activation.expansion();
        if expand == 1 || !self.crelu_match_params || self.hidden.is_empty() {
            return self.hidden.clone();
        }
        let target = count_params(self.input, &self.hidden, self.classes, 1) as i128;
        let max_w = self.hidden.iter().copied().max().unwrap_or(1);
        let widths_at = |w: usize| -> Vec<usize> {
            self.hidden
                .iter()
                .map(|&h| ((h * w + max_w / 2) / max_w).max(1))
                .collect()
        };
        let mut best = self.hidden.clone();
        let mut best_gap = i128::MAX;
        for w in 1..=max_w {
            let widths = widths_at(w);
            let p = count_params(self.input, &widths, self.classes, expand) as i128;
            let gap = (p - target).abs();
            if gap <= best_gap {
                best_gap = gap;
                best = widths;
            }
        }
        best
    }

    /// Per-layer shapes (input to output) without validating the spec first.
    fn resolved_shapes(&self) -> Vec<LayerShape> {
        let expand = self.activation.expansion();
        let hidden = self.effective_hidden();
        let mut shapes = Vec::with_capacity(hidden.len() + 1);
        let mut fan_in = self.input;
        for &h in &hidden {
            shapes.push(LayerShape {
                fan_in,
                fan_out: h,
                hidden: true,
            });
            fan_in = h * expand;
        }
        shapes.push(LayerShape {
            fan_in,
            fan_out: self.classes,
            hidden: false,
        });
        shapes
    }

    /// Per-layer shapes, input layer first, after validating the spec.
    pub fn layer_shapes(&self) -> Result<Vec<LayerShape>, BackendError> {
        self.validate()?;
        Ok(self.resolved_shapes())
    }

    /// Total number of parameters.
    pub fn param_count(&self) -> Result<usize, BackendError> {
        Ok(self.layer_shapes()?.iter().map(LayerShape::params).sum())
    }
}

/// Parameter count of an MLP with the given widths and feature expansion, saturating.
fn count_params(input: usize, hidden: &[usize], classes: usize, expand: usize) -> usize {
    let mut total = 0usize;
    let mut fan_in = input;
    for &h in hidden {
        total = total.saturating_add(fan_in.saturating_mul(h).saturating_add(h));
        fan_in = h.saturating_mul(expand);
    }
    total.saturating_add(fan_in.saturating_mul(classes).saturating_add(classes))
}

/// The bound `b` of a layer's initial distribution `U(−b, b)`: `1/sqrt(fan_in)`.
pub fn init_bound(shape: &LayerShape) -> f32 {
    1.0 / (shape.fan_in as f32).sqrt()
}

/// Seeded initial parameters, one vector per layer (weights row-major `fan_out × fan_in`,
/// then the bias): every entry uniform in `±1/sqrt(fan_in)`, PyTorch's default for linear
/// layers. Drawn in order from one ChaCha8 generator seeded with `seed`, so the result is a
/// pure function of (`shapes`, `seed`).
pub fn init_params(shapes: &[LayerShape], seed: u64) -> Vec<Vec<f32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    shapes
        .iter()
        .map(|s| {
            let bound = init_bound(s);
            (0..s.params())
                .map(|_| rng.random_range(-bound..bound))
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_relu_and_crelu() {
        let relu = ModelSpec::default();
        let s = relu.layer_shapes().unwrap();
        assert_eq!(
            s.iter().map(|l| (l.fan_in, l.fan_out)).collect::<Vec<_>>(),
            vec![(784, 256), (256, 256), (256, 10)]
        );
        let crelu = ModelSpec {
            activation: Activation::Crelu,
            ..ModelSpec::default()
        };
        let s = crelu.layer_shapes().unwrap();
        assert_eq!(
            s.iter().map(|l| (l.fan_in, l.fan_out)).collect::<Vec<_>>(),
            vec![(784, 256), (512, 256), (512, 10)]
        );
    }

    #[test]
    fn crelu_matching_is_the_closest_common_scaling() {
        let spec = ModelSpec {
            activation: Activation::Crelu,
            crelu_match_params: true,
            ..ModelSpec::default()
        };
        let target = ModelSpec::default().param_count().unwrap() as i64;
        let h = spec.effective_hidden();
        assert_eq!(h[0], h[1]);
        let p = spec.param_count().unwrap() as i64;
        // Brute force over equal widths: nothing is closer.
        for w in 1..=256usize {
            let q = count_params(784, &[w, w], 10, 2) as i64;
            assert!((q - target).abs() >= (p - target).abs(), "w={w}");
        }
        assert!(h[0] < 256 && h[0] > 128, "{h:?}");
    }

    #[test]
    fn invalid_specs_name_the_field() {
        let bad = ModelSpec {
            hidden: vec![16, 0],
            ..ModelSpec::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(BackendError::InvalidSpec {
                field: "hidden",
                ..
            })
        ));
        let bad = ModelSpec {
            classes: 1,
            ..ModelSpec::default()
        };
        assert!(matches!(
            bad.validate(),
            Err(BackendError::InvalidSpec {
                field: "classes",
                ..
            })
        ));
        let bad = ModelSpec {
            input: 0,
            ..ModelSpec::default()
        };
        assert!(bad.validate().is_err());
        // One output is a regression, not a classification.
        let one = ModelSpec {
            classes: 1,
            loss: Loss::SquaredError,
            ..ModelSpec::default()
        };
        assert!(one.validate().is_ok());
        let none = ModelSpec { classes: 0, ..one };
        assert!(matches!(
            none.validate(),
            Err(BackendError::InvalidSpec {
                field: "classes",
                ..
            })
        ));
        let huge = ModelSpec {
            hidden: vec![1 << 20, 1 << 20],
            ..ModelSpec::default()
        };
        assert!(huge.validate().is_err());
    }

    #[test]
    fn init_is_seeded_and_bounded() {
        let shapes = ModelSpec::default().layer_shapes().unwrap();
        let a = init_params(&shapes, 1);
        assert_eq!(a, init_params(&shapes, 1));
        assert_ne!(a, init_params(&shapes, 2));
        for (p, s) in a.iter().zip(&shapes) {
            assert_eq!(p.len(), s.params());
            let bound = 1.0 / (s.fan_in as f32).sqrt();
            assert!(p.iter().all(|x| x.abs() <= bound));
            let mean = p.iter().map(|&x| x as f64).sum::<f64>() / p.len() as f64;
            assert!(mean.abs() < 0.1 * bound as f64);
        }
    }
}
