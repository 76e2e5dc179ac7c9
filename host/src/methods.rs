//! The training methods: plain Adam and the paper's baselines (DESIGN.md, "Baselines").
//!
//! A method only chooses knobs of the same training loop: the activation, Adam's weight
//! decay, a regulariser, whether to reset at task boundaries, and an lr multiplier within
//! a task. Every method combines with every scheduler mode.

use clap::ValueEnum;
use safestep_core::adam::WeightDecay;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The constants of the baseline methods.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MethodSettings {
    /// Coupled L2 strength λ of `adam-l2` (`g += λ·θ`).
    pub l2: f64,
    /// Decoupled weight decay of `adamw`.
    pub weight_decay: f64,
    /// Strength of the Wasserstein regulariser of `wasserstein`.
    pub wasserstein: f64,
    /// `step-decay`: multiply the lr by this factor at each milestone of a task.
    pub decay_factor: f64,
    /// `step-decay`: milestones as fractions of a task's steps, increasing, in (0, 1).
    pub decay_milestones: Vec<f64>,
}

impl Default for MethodSettings {
    fn default() -> Self {
        Self {
            l2: 1e-3,
            weight_decay: 1e-2,
            wasserstein: 1e-2,
            decay_factor: 0.1,
            decay_milestones: vec![0.5, 0.75],
        }
    }
}

impl MethodSettings {
    /// Checks every constant.
    ///
    /// # Errors
    /// [`ConfigError`] naming the `methods.*` field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let non_negative = |field: &str, value: f64| {
            if value.is_finite() && value >= 0.0 && (value as f32).is_finite() {
                Ok(())
            } else {
                Err(ConfigError::new(
                    field,
                    value,
                    "a finite number >= 0 within f32's range (the engine computes in f32)",
                ))
            }
        };
        non_negative("methods.l2", self.l2)?;
        non_negative("methods.weight_decay", self.weight_decay)?;
        non_negative("methods.wasserstein", self.wasserstein)?;
        if !(self.decay_factor.is_finite() && self.decay_factor > 0.0) {
            return Err(ConfigError::new(
                "methods.decay_factor",
                self.decay_factor,
                "a finite number > 0",
            ));
        }
        let ms = &self.decay_milestones;
        if ms.iter().any(|x| !(x.is_finite() && *x > 0.0 && *x < 1.0))
            || ms.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(ConfigError::new(
                "methods.decay_milestones",
                format!("{ms:?}"),
                "increasing fractions strictly between 0 and 1",
            ));
        }
        Ok(())
    }
}

/// A training method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Plain Adam.
    #[default]
    Adam,
    /// Adam with coupled L2 (`g += λ·θ`, λ = `methods.l2`).
    AdamL2,
    /// AdamW: decoupled weight decay (`methods.weight_decay`).
    Adamw,
    /// Concatenated ReLU activations (Abbas et al. 2023).
    Crelu,
    /// Wasserstein regulariser towards the initial weight distribution (Lewandowski et al.).
    Wasserstein,
    /// Re-initialise network and optimizer at every task boundary.
    Reset,
    /// Hand-tuned step decay of the lr within each task (`methods.decay_*`).
    StepDecay,
}

impl Method {
    /// Every method, in the order tables list them.
    pub const ALL: [Method; 7] = [
        Method::Adam,
        Method::AdamL2,
        Method::Adamw,
        Method::Crelu,
        Method::Wasserstein,
        Method::Reset,
        Method::StepDecay,
    ];

    /// The method's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Method::Adam => "adam",
            Method::AdamL2 => "adam-l2",
            Method::Adamw => "adamw",
            Method::Crelu => "crelu",
            Method::Wasserstein => "wasserstein",
            Method::Reset => "reset",
            Method::StepDecay => "step-decay",
        }
    }

    /// Whether the network uses CReLU activations.
    pub fn uses_crelu(self) -> bool {
        self == Method::Crelu
    }

    /// Adam's weight decay for this method.
    pub fn weight_decay(self, settings: &MethodSettings) -> WeightDecay<f32> {
        match self {
            Method::AdamL2 => WeightDecay::CoupledL2(settings.l2 as f32),
            Method::Adamw => WeightDecay::Decoupled(settings.weight_decay as f32),
            _ => WeightDecay::None,
        }
    }

    /// Strength of the Wasserstein regulariser (0 = off).
    pub fn wasserstein(self, settings: &MethodSettings) -> f32 {
        if self == Method::Wasserstein {
            settings.wasserstein as f32
        } else {
            0.0
        }
    }

    /// Whether network and optimizer are re-initialised at every task boundary.
    pub fn resets_each_task(self) -> bool {
        self == Method::Reset
    }

    /// The lr multiplier at `step_in_task` of a task of `steps_per_task` steps.
    ///
    /// 1 for every method but `step-decay`, which multiplies by `decay_factor` at each
    /// milestone passed.
    ///
    /// ```
    /// use safestep_host::methods::{Method, MethodSettings};
    /// let s = MethodSettings::default(); // factor 0.1 at 50% and 75%
    /// assert_eq!(Method::StepDecay.lr_multiplier(&s, 10, 100), 1.0);
    /// assert!((Method::StepDecay.lr_multiplier(&s, 60, 100) - 0.1).abs() < 1e-12);
    /// assert!((Method::StepDecay.lr_multiplier(&s, 80, 100) - 0.01).abs() < 1e-12);
    /// assert_eq!(Method::Adam.lr_multiplier(&s, 80, 100), 1.0);
    /// ```
    pub fn lr_multiplier(
        self,
        settings: &MethodSettings,
        step_in_task: u64,
        steps_per_task: u64,
    ) -> f64 {
        if self != Method::StepDecay || steps_per_task == 0 {
            return 1.0;
        }
        let progress = step_in_task as f64 / steps_per_task as f64;
        let passed = settings
            .decay_milestones
            .iter()
            .filter(|&&m| progress >= m)
            .count();
        settings.decay_factor.powi(passed as i32)
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
