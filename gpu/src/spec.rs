//! The shape of the MLP the device runs (plain data, no CUDA).

use crate::error::{GpuError, GpuResult};

/// Hidden nonlinearity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Act {
    /// `relu(x)`: a hidden layer of width `h` feeds `h` features forward.
    Relu,
    /// `[relu(x), relu(−x)]`: a hidden layer of width `h` feeds `2h` features forward
    /// (positive half first, then the negative half).
    Crelu,
}

impl Act {
    /// Features fed forward per hidden unit (1 or 2).
    pub fn expansion(self) -> usize {
        match self {
            Act::Relu => 1,
            Act::Crelu => 2,
        }
    }
}

/// An MLP `input → hidden[0] → … → classes`; `hidden` are the widths actually used.
///
/// Layer `l` is a weight matrix (row-major `fan_out × fan_in`) followed by its bias: the
/// same parameter layout as safestep-host's backends.
///
/// ```
/// use safestep_gpu::spec::{Act, MlpSpec};
/// let s = MlpSpec { input: 784, hidden: vec![256, 256], classes: 10, activation: Act::Crelu };
/// assert_eq!(s.layers(), 3);
/// assert_eq!((s.fan_in(1), s.fan_out(1)), (512, 256));
/// assert_eq!(s.layer_params(2), 512 * 10 + 10);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MlpSpec {
    /// Input features.
    pub input: usize,
    /// Hidden widths (units per hidden layer, before CReLU doubling).
    pub hidden: Vec<usize>,
    /// Output classes.
    pub classes: usize,
    /// Hidden nonlinearity.
    pub activation: Act,
}

impl MlpSpec {
    /// Number of layers (weight matrices).
    pub fn layers(&self) -> usize {
        self.hidden.len() + 1
    }

    /// Features into layer `l`.
    pub fn fan_in(&self, l: usize) -> usize {
        if l == 0 {
            self.input
        } else {
            self.hidden[l - 1] * self.activation.expansion()
        }
    }

    /// Units out of layer `l` (before any CReLU doubling).
    pub fn fan_out(&self, l: usize) -> usize {
        if l == self.hidden.len() {
            self.classes
        } else {
            self.hidden[l]
        }
    }

    /// Parameters of layer `l`: `fan_in·fan_out + fan_out`.
    pub fn layer_params(&self, l: usize) -> usize {
        self.fan_in(l) * self.fan_out(l) + self.fan_out(l)
    }

    /// Checks every width is positive, `classes ≥ 2`, and sizes fit the kernels.
    ///
    /// # Errors
    /// [`GpuError::InvalidArgument`] naming the field.
    pub fn validate(&self) -> GpuResult<()> {
        let bad =
            |what: &'static str, value: usize, allowed: &'static str| GpuError::InvalidArgument {
                op: "MlpSpec",
                what,
                value: value.to_string(),
                allowed,
            };
        if self.input == 0 {
            return Err(bad("input", 0, ">= 1"));
        }
        if self.classes < 2 {
            return Err(bad("classes", self.classes, ">= 2"));
        }
        if let Some(&h) = self.hidden.iter().find(|&&h| h == 0) {
            return Err(bad("hidden", h, "every width >= 1"));
        }
        for l in 0..self.layers() {
            crate::shape::check_dim("MlpSpec", "layer parameters", self.layer_params(l))?;
        }
        Ok(())
    }
}
