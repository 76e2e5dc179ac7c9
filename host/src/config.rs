//! The resolved run configuration: defaults, an optional TOML file, then command-line flags.
//!
//! Every constant a run depends on lives here, scheduler constants included, and the
//! whole struct is written to `config.toml` in the run's folder so that a run can be
//! reproduced from that file alone (`safestep run --config DIR/config.toml`).

use std::fmt;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use safestep_core::bounds::StepMeasure;
use safestep_core::scheduler::{Mode, SchedulerConfig, SnrEstimator, VolatilityEstimator};
use serde::{Deserialize, Serialize};

use crate::methods::Method;

/// A user-facing configuration error: which field, which value, what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field} = {value}: {allowed}")]
pub struct ConfigError {
    /// The configuration field (as spelled in `config.toml` / on the command line).
    pub field: String,
    /// The rejected value, as the user gave it.
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
}

impl ConfigError {
    /// Builds an error for `field` holding `value`, explaining what is `allowed`.
    pub fn new(field: &str, value: impl fmt::Display, allowed: &str) -> Self {
        Self {
            field: field.to_string(),
            value: value.to_string(),
            allowed: allowed.to_string(),
        }
    }
}

/// The command-line (and `config.toml`) spelling of a value, e.g. `random-label-mnist`.
///
/// ```
/// use safestep_host::config::{cli_name, SchedulerMode};
/// assert_eq!(cli_name(&SchedulerMode::Combined), "combined");
/// ```
pub fn cli_name<T: ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_string())
        .unwrap_or_default()
}

/// The continual-learning task stream (see DESIGN.md, "Benchmarks").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BenchmarkName {
    /// A fixed subset of MNIST; every task draws fresh uniformly random labels.
    #[default]
    RandomLabelMnist,
    /// A fixed random pixel permutation per task.
    PermutedMnist,
    /// A random class-to-label permutation per task.
    LabelPermutedMnist,
}

/// Where the tensors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// The CPU engine (always available).
    #[default]
    Cpu,
    /// The CUDA runner (needs the `cuda` build feature and an NVIDIA GPU).
    Cuda,
}

/// The scheduler mode, as named on the command line and in `config.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SchedulerMode {
    /// Fixed learning rate: the run is exactly plain Adam.
    #[default]
    Off,
    /// Hold ρ under the gradient-noise bound ρ*_g.
    Gradient,
    /// Hold ρ under the curvature-volatility bound ρ*_vol.
    Volatility,
    /// Hold ρ under the combined bound ρ̃* (the paper's scheduler).
    Combined,
}

/// Which effective-step measure ρ is compared with the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MeasureName {
    /// ρ = α_agg · λ (default).
    #[default]
    Normalized,
    /// ρ = lr · λ_max(D^½ H D^½), Adam's preconditioned sharpness.
    Preconditioned,
    /// The literal mean multiplier (ablation only, see DESIGN.md).
    Mean,
}

/// How SNR_g is estimated across controller events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum SnrEstimatorName {
    /// Ratio of bias-corrected EMAs of G² and S/B (default).
    #[default]
    Ema,
    /// The raw per-event ratio.
    Raw,
}

/// How the curvature volatility is estimated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum VolatilityName {
    /// Var/Mean over the last `window` values of ρ (default).
    #[default]
    Window,
    /// Bias-corrected EMA of mean and variance.
    Ema,
}

/// The model architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Hidden layer widths (before CReLU doubling).
    pub hidden: Vec<usize>,
    /// With CReLU, shrink hidden widths so the parameter count matches the ReLU network.
    pub crelu_match_params: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            hidden: vec![256, 256],
            crelu_match_params: false,
        }
    }
}

/// Adam's constants (shared by every method).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamSettings {
    /// First-moment decay β1.
    pub beta1: f64,
    /// Second-moment decay β2.
    pub beta2: f64,
    /// ε added to sqrt(v̂).
    pub eps: f64,
}

impl Default for AdamSettings {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }
}

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

/// The scheduler's constants (DESIGN.md, "The scheduler").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerSettings {
    /// off | gradient | volatility | combined.
    pub mode: SchedulerMode,
    /// normalized | preconditioned | mean.
    pub measure: MeasureName,
    /// Control interval K: a controller event every K optimizer steps.
    pub interval: usize,
    /// Safety factor s.
    pub safety: f64,
    /// Weight β of the volatility term.
    pub beta: f64,
    /// Window W of ρ values for the volatility.
    pub window: usize,
    /// EMA decay of the G² and noise estimates (and of the EMA volatility).
    pub snr_ema_decay: f64,
    /// ema | raw.
    pub snr_estimator: SnrEstimatorName,
    /// window | ema.
    pub volatility_estimator: VolatilityName,
    /// Cooling factor γ_cool.
    pub cool: f64,
    /// Warming factor γ_warm.
    pub warm: f64,
    /// Fraction of each task during which warming is allowed.
    pub warm_fraction: f64,
    /// Warm only when ρ < timid · bound.
    pub timid: f64,
    /// Lower clamp of every layer's lr.
    pub lr_min: f64,
    /// Upper clamp of every layer's lr.
    pub lr_max: f64,
    /// Apply the finite-population factor (N−B)/(N−1) to S/B.
    pub finite_population: bool,
    /// Power iteration: relative tolerance at a layer's first event.
    pub power_tol: f64,
    /// Power iteration: iteration cap at a layer's first event.
    pub power_max_iters: usize,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        let core = SchedulerConfig::<f64>::default();
        Self {
            mode: SchedulerMode::Off,
            measure: MeasureName::Normalized,
            interval: core.interval,
            safety: core.safety,
            beta: core.beta,
            window: core.window,
            snr_ema_decay: core.snr_ema_decay,
            snr_estimator: SnrEstimatorName::Ema,
            volatility_estimator: VolatilityName::Window,
            cool: core.cool,
            warm: core.warm,
            warm_fraction: core.warm_fraction,
            timid: core.timid,
            lr_min: core.lr_min,
            lr_max: core.lr_max,
            finite_population: true,
            power_tol: 1e-3,
            power_max_iters: 20,
        }
    }
}

impl SchedulerSettings {
    /// The safestep-core configuration these settings describe.
    pub fn to_core(&self) -> SchedulerConfig<f64> {
        SchedulerConfig {
            mode: match self.mode {
                SchedulerMode::Off => Mode::Off,
                SchedulerMode::Gradient => Mode::Gradient,
                SchedulerMode::Volatility => Mode::Volatility,
                SchedulerMode::Combined => Mode::Combined,
            },
            measure: match self.measure {
                MeasureName::Normalized => StepMeasure::Normalized,
                MeasureName::Preconditioned => StepMeasure::Preconditioned,
                MeasureName::Mean => StepMeasure::Mean,
            },
            interval: self.interval,
            safety: self.safety,
            beta: self.beta,
            window: self.window,
            snr_ema_decay: self.snr_ema_decay,
            snr_estimator: match self.snr_estimator {
                SnrEstimatorName::Ema => SnrEstimator::Ema,
                SnrEstimatorName::Raw => SnrEstimator::Raw,
            },
            volatility_estimator: match self.volatility_estimator {
                VolatilityName::Window => VolatilityEstimator::Window,
                VolatilityName::Ema => VolatilityEstimator::Ema,
            },
            cool: self.cool,
            warm: self.warm,
            warm_fraction: self.warm_fraction,
            timid: self.timid,
            lr_min: self.lr_min,
            lr_max: self.lr_max,
            ..SchedulerConfig::default()
        }
    }
}

/// Everything one run depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The task stream.
    pub benchmark: BenchmarkName,
    /// The training method (baseline).
    pub method: Method,
    /// cpu | cuda.
    pub backend: BackendKind,
    /// Number of tasks.
    pub tasks: usize,
    /// Epochs per task.
    pub epochs: usize,
    /// Examples per task (a fixed subset of the digits).
    pub examples: usize,
    /// Minibatch size B.
    pub batch_size: usize,
    /// Initial (and, with the scheduler off, constant) learning rate.
    pub lr: f64,
    /// Seed of everything random: initialisation, labels, permutations, minibatches.
    pub seed: u64,
    /// Folder with the standard MNIST training files; the embedded digits when absent.
    pub mnist_dir: Option<PathBuf>,
    /// Record controller statistics even with the scheduler off (costs the statistics' time).
    pub diagnostics: bool,
    /// The architecture.
    pub model: ModelConfig,
    /// Adam's constants.
    pub adam: AdamSettings,
    /// The baselines' constants.
    pub methods: MethodSettings,
    /// The scheduler's constants.
    pub scheduler: SchedulerSettings,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            benchmark: BenchmarkName::RandomLabelMnist,
            method: Method::Adam,
            backend: BackendKind::Cpu,
            tasks: 20,
            epochs: 20,
            examples: 1000,
            batch_size: 256,
            lr: 1e-3,
            seed: 0,
            mnist_dir: None,
            diagnostics: false,
            model: ModelConfig::default(),
            adam: AdamSettings::default(),
            methods: MethodSettings::default(),
            scheduler: SchedulerSettings::default(),
        }
    }
}

fn positive(field: &str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(ConfigError::new(field, value, "a finite number > 0"))
    }
}

fn non_negative(field: &str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value >= 0.0 {
        Ok(())
    } else {
        Err(ConfigError::new(field, value, "a finite number >= 0"))
    }
}

fn in_open_unit(field: &str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 && value < 1.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            value,
            "a number strictly between 0 and 1",
        ))
    }
}

fn at_least(field: &str, value: usize, min: usize) -> Result<(), ConfigError> {
    if value >= min {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            value,
            &format!("an integer >= {min}"),
        ))
    }
}

impl RunConfig {
    /// Reads a configuration file; fields it leaves out keep their defaults.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "--config",
                path.display(),
                &format!("a readable TOML file ({e})"),
            )
        })?;
        toml::from_str(&text).map_err(|e| {
            ConfigError::new(
                "--config",
                path.display(),
                &format!("a valid safestep config: {}", e.to_string().trim()),
            )
        })
    }

    /// The configuration as TOML (what `config.toml` holds).
    pub fn to_toml(&self) -> String {
        // Serialising plain data with no maps keyed by non-strings cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every field; the first bad one is reported with what is allowed.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("tasks", self.tasks, 1)?;
        at_least("epochs", self.epochs, 1)?;
        at_least("batch-size", self.batch_size, 2)?;
        at_least("examples", self.examples, 2)?;
        if self.batch_size > self.examples {
            return Err(ConfigError::new(
                "batch-size",
                self.batch_size,
                &format!("at most --examples ({})", self.examples),
            ));
        }
        positive("lr", self.lr)?;
        if self.model.hidden.is_empty() || self.model.hidden.contains(&0) {
            return Err(ConfigError::new(
                "model.hidden",
                format!("{:?}", self.model.hidden),
                "one or more widths, each >= 1",
            ));
        }
        let a = &self.adam;
        if !(a.beta1.is_finite() && (0.0..1.0).contains(&a.beta1)) {
            return Err(ConfigError::new(
                "adam.beta1",
                a.beta1,
                "a number in [0, 1)",
            ));
        }
        in_open_unit("adam.beta2", a.beta2)?;
        positive("adam.eps", a.eps)?;
        let m = &self.methods;
        non_negative("methods.l2", m.l2)?;
        non_negative("methods.weight_decay", m.weight_decay)?;
        non_negative("methods.wasserstein", m.wasserstein)?;
        positive("methods.decay_factor", m.decay_factor)?;
        let ms = &m.decay_milestones;
        if ms.iter().any(|x| !(x.is_finite() && *x > 0.0 && *x < 1.0))
            || ms.windows(2).any(|w| w[0] >= w[1])
        {
            return Err(ConfigError::new(
                "methods.decay_milestones",
                format!("{ms:?}"),
                "increasing fractions strictly between 0 and 1",
            ));
        }
        let s = &self.scheduler;
        positive("scheduler.power_tol", s.power_tol)?;
        at_least("scheduler.power_max_iters", s.power_max_iters, 1)?;
        if s.lr_min > self.lr || self.lr > s.lr_max {
            return Err(ConfigError::new(
                "lr",
                self.lr,
                &format!(
                    "within [scheduler.lr_min, scheduler.lr_max] = [{}, {}]",
                    s.lr_min, s.lr_max
                ),
            ));
        }
        s.to_core()
            .validate()
            .map_err(|e| ConfigError::new("scheduler", e, "see DESIGN.md, 'The scheduler'"))?;
        if s.window > crate::trainer::MAX_WINDOW {
            return Err(ConfigError::new(
                "scheduler.window",
                s.window,
                &format!("at most {}", crate::trainer::MAX_WINDOW),
            ));
        }
        Ok(())
    }

    /// A short label naming the run's method, scheduler, lr and seed (used for folder names).
    pub fn label(&self) -> String {
        format!(
            "{}_{}_lr{}_seed{}",
            self.method.name(),
            cli_name(&self.scheduler.mode),
            self.lr,
            self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate_and_round_trip_through_toml() {
        let cfg = RunConfig::default();
        cfg.validate().expect("defaults are valid");
        let back: RunConfig = toml::from_str(&cfg.to_toml()).expect("parses");
        assert_eq!(back, cfg);
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut cfg = RunConfig {
            lr: -1.0,
            ..RunConfig::default()
        };
        assert_eq!(cfg.validate().unwrap_err().field, "lr");
        cfg.lr = 1e-3;
        cfg.batch_size = 0;
        assert_eq!(cfg.validate().unwrap_err().field, "batch-size");
        cfg.batch_size = 32;
        cfg.adam.beta2 = 1.0;
        assert_eq!(cfg.validate().unwrap_err().field, "adam.beta2");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<RunConfig>("lrr = 0.1").unwrap_err();
        assert!(err.to_string().contains("lrr"), "{err}");
    }
}
