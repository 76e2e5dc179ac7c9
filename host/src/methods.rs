//! The training methods: plain Adam and the paper's baselines (DESIGN.md, "Baselines").
//!
//! A method only chooses knobs of the same training loop: the activation, Adam's weight
//! decay, a regulariser, whether to reset at task boundaries, and an lr multiplier within
//! a task. Every method combines with every scheduler mode.

use clap::ValueEnum;
use safestep_core::adam::WeightDecay;
use serde::{Deserialize, Serialize};

use crate::error::{at_least, representable_in_f32, ConfigError};

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
    /// `l2-init`: λ of `λ‖θ − θ₀‖²` (Kumar et al. 2023 tune it over 1e-2…1e-5; 1e-3 is the
    /// middle of that grid and the paper's L2 strength).
    pub l2_init: f64,
    /// `shrink-perturb`: the shrink ε of `θ ← (1−ε)θ + σξ`.
    pub shrink: f64,
    /// `shrink-perturb`: the noise scale σ (Dohare et al.'s permuted-MNIST grid: 1e-4,
    /// 1e-5, 1e-6 per step).
    pub perturb: f64,
    /// `shrink-perturb`: apply every this many steps.
    pub perturb_interval: usize,
    /// `cbp`: replacement rate ρ, the fraction of mature units replaced per step (Dohare et
    /// al. 2024: 1e-4 on online permuted MNIST).
    pub replacement_rate: f64,
    /// `cbp`: decay η of the running utility (Dohare et al.: 0.99).
    pub utility_decay: f64,
    /// `cbp`: steps a unit must live before it can be replaced (Dohare et al.: 100).
    pub maturity: u64,
    /// `redo`: recycle dormant units every this many steps (Sokar et al. 2023: 1000).
    pub redo_interval: u64,
    /// `redo`: a unit is dormant when its activity over the layer's mean is at most τ
    /// (Sokar et al.: 0.1 for their supervised experiments).
    pub redo_threshold: f64,
}

impl Default for MethodSettings {
    fn default() -> Self {
        Self {
            l2: 1e-3,
            weight_decay: 1e-2,
            wasserstein: 1e-2,
            decay_factor: 0.1,
            decay_milestones: vec![0.5, 0.75],
            l2_init: 1e-3,
            shrink: 1e-5,
            perturb: 1e-5,
            perturb_interval: 1,
            replacement_rate: 1e-4,
            utility_decay: 0.99,
            maturity: 100,
            redo_interval: 1000,
            redo_threshold: 0.1,
        }
    }
}

impl MethodSettings {
    /// Checks every constant.
    ///
    /// # Errors
    /// [`ConfigError`] naming the `methods.*` field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // These reach the engine as f32: a value that overflows it, or rounds to 0 there,
        // is refused rather than silently run as something else.
        let non_negative = |field: &str, value: f64| {
            if value.is_finite() && value >= 0.0 {
                representable_in_f32(field, value)
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
        non_negative("methods.l2_init", self.l2_init)?;
        non_negative("methods.perturb", self.perturb)?;
        let unit = |field: &str, value: f64| {
            if value.is_finite() && (0.0..1.0).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::new(field, value, "a number in [0, 1)"))
            }
        };
        unit("methods.shrink", self.shrink)?;
        representable_in_f32("methods.shrink", self.shrink)?;
        unit("methods.replacement_rate", self.replacement_rate)?;
        unit("methods.utility_decay", self.utility_decay)?;
        if !(self.redo_threshold.is_finite() && self.redo_threshold >= 0.0) {
            return Err(ConfigError::new(
                "methods.redo_threshold",
                self.redo_threshold,
                "a finite number >= 0",
            ));
        }
        at_least("methods.perturb_interval", self.perturb_interval, 1)?;
        at_least("methods.redo_interval", self.redo_interval, 1)?;
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
    /// L2-Init (Kumar et al. 2023): `λ‖θ − θ₀‖²` toward the initial parameters
    /// (`methods.l2_init`).
    L2Init,
    /// Shrink and perturb (Ash & Adams 2020, as Dohare et al. 2024 use it):
    /// `θ ← (1−ε)θ + σξ` every `methods.perturb_interval` steps, ξ from the initial
    /// distribution (`methods.shrink`, `methods.perturb`).
    ShrinkPerturb,
    /// Continual backprop (Dohare et al. 2024): replace a fraction of the mature,
    /// lowest-utility hidden units every step (`methods.replacement_rate`,
    /// `utility_decay`, `maturity`).
    Cbp,
    /// ReDo (Sokar et al. 2023): recycle τ-dormant hidden units every n steps
    /// (`methods.redo_interval`, `redo_threshold`).
    Redo,
}

impl Method {
    /// Every method, in the order tables list them.
    pub const ALL: [Method; 11] = [
        Method::Adam,
        Method::AdamL2,
        Method::Adamw,
        Method::Crelu,
        Method::Wasserstein,
        Method::Reset,
        Method::StepDecay,
        Method::L2Init,
        Method::ShrinkPerturb,
        Method::Cbp,
        Method::Redo,
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
            Method::L2Init => "l2-init",
            Method::ShrinkPerturb => "shrink-perturb",
            Method::Cbp => "cbp",
            Method::Redo => "redo",
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

    /// The regularisers this method adds to the step's gradient.
    pub fn regularizer(self, settings: &MethodSettings) -> safestep_engine::Regularizer {
        safestep_engine::Regularizer {
            wasserstein: if self == Method::Wasserstein {
                settings.wasserstein as f32
            } else {
                0.0
            },
            l2_init: if self == Method::L2Init {
                settings.l2_init as f32
            } else {
                0.0
            },
        }
    }

    /// Whether the method needs engine operations the CUDA engine does not offer yet.
    pub fn cpu_only(self) -> bool {
        matches!(
            self,
            Method::L2Init | Method::ShrinkPerturb | Method::Cbp | Method::Redo
        )
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
