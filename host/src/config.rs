//! The resolved run configuration: defaults, an optional TOML file, then command-line flags.
//!
//! Every constant a run depends on lives here, scheduler constants included, and the
//! whole struct is written to `config.toml` in the run's folder so that a run can be
//! reproduced from that file alone (`safestep run --config DIR/config.toml`).

use std::fmt;
use std::path::{Path, PathBuf};

use clap::ValueEnum;
use safestep_core::scheduler::{Mode, NoiseAveraging, SchedulerConfig, Threshold};
use serde::{Deserialize, Serialize};

use crate::data::regression::RegressionSettings;
use crate::data::Benchmark;
pub use crate::error::ConfigError;
use crate::error::{at_least, representable_in_f32};
use crate::methods::{Method, MethodSettings};

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

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Cpu => "cpu",
            BackendKind::Cuda => "cuda",
        })
    }
}

/// Which eigenvalue of a layer's Hessian block the sharpness `λ` is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Sharpness {
    /// The largest-magnitude eigenvalue, with its sign (plain power iteration; the default).
    #[default]
    Magnitude,
    /// The top (largest algebraic) eigenvalue `λ_max`, by a shifted second power iteration
    /// when the largest-magnitude one is negative: the edge-of-stability literature's
    /// "sharpness", which the paper builds on.
    Top,
}

/// Which minibatch the controller's gradient-noise statistics are measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NoiseBatch {
    /// The event's own training minibatch, the one just stepped on (the default).
    #[default]
    Step,
    /// A fresh diagnostic minibatch of the same size, drawn from the task without
    /// replacement and never stepped on (one extra forward/backward pass per event).
    Fresh,
}

/// Normalisation of the hidden layers (`[model] norm`, `--norm`): the engine's
/// [`safestep_engine::Norm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum, Default)]
#[serde(rename_all = "kebab-case")]
pub enum NormKind {
    /// No normalisation (the default).
    #[default]
    None,
    /// LayerNorm without learnable gain or bias on each hidden layer's pre-activations,
    /// before the nonlinearity (as in the L2-Init and plasticity baselines of Kumar et al.
    /// 2023 and Lyle et al. 2023); CPU engine only.
    Layer,
}

impl NormKind {
    /// The engine's option.
    pub fn engine(self) -> safestep_engine::Norm {
        match self {
            NormKind::None => safestep_engine::Norm::None,
            NormKind::Layer => safestep_engine::Norm::Layer,
        }
    }

    /// Whether this is the default (`none`): `config.toml` then leaves the key out, so the
    /// files of every run without LayerNorm stay as they were before the option existed.
    pub fn is_none(&self) -> bool {
        *self == NormKind::None
    }
}

impl fmt::Display for NormKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.engine().as_str())
    }
}

/// The model architecture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Hidden layer widths (before CReLU doubling).
    pub hidden: Vec<usize>,
    /// With CReLU, shrink hidden widths so the parameter count matches the ReLU network.
    pub crelu_match_params: bool,
    /// none | layer: LayerNorm (no affine parameters) before each hidden nonlinearity.
    /// Written to `config.toml` only when it is `layer`.
    #[serde(skip_serializing_if = "NormKind::is_none")]
    pub norm: NormKind,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            hidden: vec![256, 256],
            crelu_match_params: false,
            norm: NormKind::None,
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

/// How the controller measures its statistics (the engine side of the readings; the
/// scheduler's own constants are the core's [`SchedulerConfig`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatisticsConfig {
    /// Apply the finite-population factor (N−B)/N to S/B (minibatches are drawn without
    /// replacement from the task's N examples).
    pub finite_population: bool,
    /// Power iteration: relative tolerance at a layer's first event.
    pub power_tol: f64,
    /// Power iteration: iteration cap at a layer's first event.
    pub power_max_iters: usize,
    /// magnitude | top: which Hessian eigenvalue is the sharpness.
    pub sharpness: Sharpness,
    /// step | fresh: the minibatch the noise statistics come from.
    pub noise_batch: NoiseBatch,
    /// The fresh diagnostic minibatch's size (0: the step's batch size).
    pub fresh_batch: usize,
    /// The controller's Hessian-vector products on the first `hvp_rows` rows of the step's
    /// minibatch only (0, the default: all of them). A cheaper, noisier sharpness that
    /// changes the controller's decisions (docs/results.md, "Controller overhead"). Written
    /// to `config.toml` only when set.
    #[serde(skip_serializing_if = "is_zero")]
    pub hvp_rows: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl Default for StatisticsConfig {
    fn default() -> Self {
        Self {
            finite_population: true,
            power_tol: 1e-3,
            power_max_iters: 20,
            sharpness: Sharpness::Magnitude,
            noise_batch: NoiseBatch::Step,
            fresh_batch: 0,
            hvp_rows: 0,
        }
    }
}

/// Which diagnosis indicators a run records, and how often (DESIGN.md, "Diagnosis").
/// They are recorded at the end of a task, per layer, on a fixed evaluation subset: the
/// first `examples` examples of the task (with the task's labels).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndicatorsConfig {
    /// Record `indicators.csv` (also turned on by `--diagnostics`).
    pub enabled: bool,
    /// Record at the end of every `every`-th task (and always the last).
    pub every: usize,
    /// Size of the evaluation subset (the first examples of each task).
    pub examples: usize,
    /// Power iterations for each layer block's top eigenvalue, warm-started from the
    /// controller's direction.
    pub sharpness_iters: usize,
    /// Also the whole network's top eigenvalue (CPU engine only; `network_iters` products).
    pub network_sharpness: bool,
    /// Power iterations for the whole network's top eigenvalue.
    pub network_iters: usize,
    /// Also each layer block's Hessian rank, estimated by Lanczos (opt-in: its cost is
    /// `lanczos_steps` products and as many layer-sized vectors per layer).
    pub hessian_rank: bool,
    /// Lanczos steps k of the Hessian rank estimate (it sees at most k eigenvalues).
    pub lanczos_steps: usize,
    /// A Ritz value counts towards the rank when its magnitude exceeds this fraction of the
    /// largest one.
    pub rank_threshold: f64,
}

impl Default for IndicatorsConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            every: 1,
            examples: 256,
            sharpness_iters: 5,
            network_sharpness: false,
            network_iters: 10,
            hessian_rank: false,
            lanczos_steps: 32,
            rank_threshold: 1e-3,
        }
    }
}

/// Everything one run depends on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    /// The task stream.
    pub benchmark: Benchmark,
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
    /// Record controller statistics even with the scheduler off, and the diagnosis
    /// indicators (`indicators.csv`) with the default `[indicators]` set.
    pub diagnostics: bool,
    /// The architecture.
    pub model: ModelConfig,
    /// Adam's constants.
    pub adam: AdamSettings,
    /// The baselines' constants.
    pub methods: MethodSettings,
    /// The scheduler's constants: safestep-core's configuration, as it is.
    pub scheduler: SchedulerConfig<f64>,
    /// How the controller measures its statistics.
    pub statistics: StatisticsConfig,
    /// The diagnosis indicators.
    pub indicators: IndicatorsConfig,
    /// The slowly-changing regression problem's constants (`[regression]`): present, and
    /// written to `config.toml`, only for that benchmark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub regression: Option<RegressionSettings>,
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            benchmark: Benchmark::RandomLabelMnist,
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
            // A run is plain Adam unless asked otherwise (the core's default is `combined`).
            scheduler: SchedulerConfig {
                mode: Mode::Off,
                ..SchedulerConfig::default()
            },
            statistics: StatisticsConfig::default(),
            indicators: IndicatorsConfig::default(),
            regression: None,
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

/// Writes `overlay` onto `base`, recursing into tables (defaults, then a file, then flags).
fn merge_tables(base: &mut toml::Table, overlay: toml::Table) {
    for (key, value) in overlay {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// The protocol of online permuted MNIST (Dohare et al. 2024): one pass over each task,
/// one example per step. A file or flags that set them override these.
pub fn online_preset() -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("epochs".into(), toml::Value::Integer(1));
    t.insert("batch_size".into(), toml::Value::Integer(1));
    t
}

/// Examples per task of slowly-changing regression by default: the paper flips a bit every
/// `T = 10,000` examples.
pub const REGRESSION_EXAMPLES: usize = 10_000;
/// Most examples per task of slowly-changing regression (they are generated in memory).
pub const MAX_REGRESSION_EXAMPLES: usize = 1_000_000;
/// The learner's hidden widths for slowly-changing regression by default: the paper's
/// network of one hidden layer of 5 units.
pub const REGRESSION_HIDDEN: [usize; 1] = [5];

/// The protocol of slowly-changing regression (Dohare et al. 2024): one pass over each task
/// of 10,000 examples, one example per step, a learner with one hidden layer of 5 units,
/// and the problem's constants ([`RegressionSettings`]). A file or flags that set them
/// override these.
pub fn regression_preset() -> toml::Table {
    let mut t = online_preset();
    t.insert(
        "examples".into(),
        toml::Value::Integer(REGRESSION_EXAMPLES as i64),
    );
    let mut model = toml::Table::new();
    model.insert(
        "hidden".into(),
        toml::Value::Array(
            REGRESSION_HIDDEN
                .iter()
                .map(|&h| toml::Value::Integer(h as i64))
                .collect(),
        ),
    );
    t.insert("model".into(), toml::Value::Table(model));
    if let Ok(settings) = toml::Table::try_from(RegressionSettings::default()) {
        t.insert("regression".into(), toml::Value::Table(settings));
    }
    t
}

impl RunConfig {
    /// Applies the protocol of `benchmark` when a configuration switches to it (the flags
    /// given after it still override): one pass with batch 1 for the online benchmarks, and
    /// for slowly-changing regression also [`regression_preset`]'s examples, widths and
    /// problem constants.
    pub fn apply_benchmark_preset(&mut self, benchmark: Benchmark) {
        if benchmark == self.benchmark {
            return;
        }
        if !benchmark.is_regression() {
            self.regression = None;
        }
        match benchmark {
            Benchmark::OnlinePermutedMnist => {
                self.epochs = 1;
                self.batch_size = 1;
            }
            Benchmark::SlowlyChangingRegression => {
                self.epochs = 1;
                self.batch_size = 1;
                self.examples = REGRESSION_EXAMPLES;
                self.model.hidden = REGRESSION_HIDDEN.to_vec();
                self.regression = Some(RegressionSettings::default());
            }
            _ => {}
        }
    }

    /// The regression problem's constants (the defaults when `[regression]` is absent).
    pub fn regression_settings(&self) -> RegressionSettings {
        self.regression.clone().unwrap_or_default()
    }
}

/// Keys an older safestep wrote in `[scheduler]` that now live in `[statistics]`: moved, so
/// earlier runs' `config.toml` files still load (and `compare` still reuses them).
const MOVED_TO_STATISTICS: [&str; 3] = ["finite_population", "power_tol", "power_max_iters"];

fn migrate_legacy(table: &mut toml::Table) {
    let Some(toml::Value::Table(sched)) = table.get_mut("scheduler") else {
        return;
    };
    let moved: Vec<(String, toml::Value)> = MOVED_TO_STATISTICS
        .iter()
        .filter_map(|&k| sched.remove(k).map(|v| (k.to_string(), v)))
        .collect();
    if moved.is_empty() {
        return;
    }
    let stats = table
        .entry("statistics")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    if let toml::Value::Table(stats) = stats {
        for (k, v) in moved {
            stats.entry(k).or_insert(v);
        }
    }
}

impl RunConfig {
    /// Reads a configuration file; fields it leaves out keep their defaults.
    ///
    /// # Errors
    /// [`ConfigError`] (field `--config`) for an unreadable file or one that is not a valid
    /// safestep config (an unknown field, a value of the wrong type), naming the problem.
    pub fn from_toml_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(
                "--config",
                path.display(),
                &format!("a readable TOML file ({e})"),
            )
        })?;
        Self::from_toml_str(&text).map_err(|problem| {
            ConfigError::new(
                "--config",
                path.display(),
                &format!("a valid safestep config: {problem}"),
            )
        })
    }

    /// Parses a configuration: every field it leaves out, in any section, keeps its
    /// default (so `[scheduler]` with only `safety` keeps the run's default mode, off).
    ///
    /// ```
    /// use safestep_host::config::RunConfig;
    /// use safestep_core::scheduler::Mode;
    /// let cfg = RunConfig::from_toml_str("epochs = 5\n[scheduler]\nsafety = 0.5").unwrap();
    /// assert_eq!((cfg.epochs, cfg.scheduler.safety, cfg.scheduler.mode), (5, 0.5, Mode::Off));
    /// assert!(RunConfig::from_toml_str("epoch = 5").unwrap_err().contains("epoch"));
    /// ```
    ///
    /// # Errors
    /// The TOML or serde message, naming the bad key or value.
    pub fn from_toml_str(text: &str) -> Result<Self, String> {
        let overlay: toml::Table =
            toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        let mut merged = toml::Table::try_from(RunConfig::default()).map_err(|e| e.to_string())?;
        let mut overlay = overlay;
        migrate_legacy(&mut overlay);
        match overlay.get("benchmark").and_then(toml::Value::as_str) {
            Some("online-permuted-mnist") => merge_tables(&mut merged, online_preset()),
            Some("slowly-changing-regression") => merge_tables(&mut merged, regression_preset()),
            _ => {}
        }
        merge_tables(&mut merged, overlay);
        RunConfig::deserialize(toml::Value::Table(merged))
            .map_err(|e| e.to_string().trim().to_string())
    }

    /// The configuration as TOML (what `config.toml` holds).
    pub fn to_toml(&self) -> String {
        // Serialising plain data with no maps keyed by non-strings cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks every field; the first bad one is reported with what is allowed.
    ///
    /// # Errors
    /// [`ConfigError`] naming the field as spelled in `config.toml` or on the command line.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("tasks", self.tasks, 1)?;
        at_least("epochs", self.epochs, 1)?;
        at_least("batch-size", self.batch_size, 1)?;
        if self.benchmark == Benchmark::OnlinePermutedMnist && self.epochs != 1 {
            return Err(ConfigError::new(
                "epochs",
                self.epochs,
                "1 for online-permuted-mnist (one pass over each task)",
            ));
        }
        if self.method.cpu_only() && self.backend == BackendKind::Cuda {
            return Err(ConfigError::new(
                "method",
                self.method,
                "a method the cuda engine offers (l2-init, shrink-perturb, cbp and redo run on the cpu backend only, for now)",
            ));
        }
        if self.model.norm == NormKind::Layer && self.backend == BackendKind::Cuda {
            return Err(ConfigError::new(
                "model.norm",
                self.model.norm,
                "none on the cuda backend (its kernels have no LayerNorm yet; --norm layer runs on --backend cpu)",
            ));
        }
        at_least("examples", self.examples, 2)?;
        if self.benchmark.is_regression() {
            self.regression_settings().validate()?;
            if self.examples > MAX_REGRESSION_EXAMPLES {
                return Err(ConfigError::new(
                    "examples",
                    self.examples,
                    &format!("at most {MAX_REGRESSION_EXAMPLES} for slowly-changing-regression"),
                ));
            }
            if self.backend == BackendKind::Cuda {
                return Err(ConfigError::new(
                    "backend",
                    self.backend,
                    "cpu for slowly-changing-regression (the cuda engine has no squared-error kernels yet)",
                ));
            }
            if self.epochs != 1 {
                return Err(ConfigError::new(
                    "epochs",
                    self.epochs,
                    "1 for slowly-changing-regression (one pass over each task)",
                ));
            }
        } else if self.regression.is_some() {
            return Err(ConfigError::new(
                "regression",
                "[regression]",
                "absent unless benchmark = slowly-changing-regression",
            ));
        }
        if self.batch_size > self.examples {
            return Err(ConfigError::new(
                "batch-size",
                self.batch_size,
                &format!("at most --examples ({})", self.examples),
            ));
        }
        if self.model.hidden.is_empty() || self.model.hidden.contains(&0) {
            return Err(ConfigError::new(
                "model.hidden",
                format!("{:?}", self.model.hidden),
                "one or more widths, each >= 1",
            ));
        }
        crate::runner::model_spec(self).validate().map_err(|e| {
            ConfigError::new(
                "model.hidden",
                format!("{:?}", self.model.hidden),
                &e.to_string(),
            )
        })?;
        let a = &self.adam;
        if !(a.beta1.is_finite() && (0.0..1.0).contains(&a.beta1)) {
            return Err(ConfigError::new(
                "adam.beta1",
                a.beta1,
                "a number in [0, 1)",
            ));
        }
        if !(a.beta2.is_finite() && a.beta2 > 0.0 && a.beta2 < 1.0) {
            return Err(ConfigError::new(
                "adam.beta2",
                a.beta2,
                "a number strictly between 0 and 1",
            ));
        }
        positive("adam.eps", a.eps)?;
        for (field, value) in [
            ("adam.beta1", a.beta1),
            ("adam.beta2", a.beta2),
            ("adam.eps", a.eps),
        ] {
            representable_in_f32(field, value)?;
        }
        self.methods.validate()?;
        let st = &self.statistics;
        let noise_batch = match st.noise_batch {
            NoiseBatch::Fresh if st.fresh_batch > 0 => st.fresh_batch,
            _ => self.batch_size,
        };
        if self.has_controller_events() && noise_batch < 2 {
            return Err(ConfigError::new(
                "batch-size",
                self.batch_size,
                "at least 2 for the controller's noise statistics, or [statistics] noise_batch = \"fresh\" with fresh_batch >= 2",
            ));
        }
        if st.fresh_batch > self.examples {
            return Err(ConfigError::new(
                "statistics.fresh_batch",
                st.fresh_batch,
                &format!("at most --examples ({})", self.examples),
            ));
        }
        if st.hvp_rows > self.batch_size {
            return Err(ConfigError::new(
                "statistics.hvp_rows",
                st.hvp_rows,
                &format!(
                    "at most --batch-size ({}), or 0 for the whole minibatch",
                    self.batch_size
                ),
            ));
        }
        positive("statistics.power_tol", st.power_tol)?;
        representable_in_f32("statistics.power_tol", st.power_tol)?;
        at_least("statistics.power_max_iters", st.power_max_iters, 1)?;
        let ind = &self.indicators;
        at_least("indicators.every", ind.every, 1)?;
        at_least("indicators.examples", ind.examples, 2)?;
        at_least("indicators.sharpness_iters", ind.sharpness_iters, 1)?;
        at_least("indicators.network_iters", ind.network_iters, 1)?;
        at_least("indicators.lanczos_steps", ind.lanczos_steps, 1)?;
        if !(ind.rank_threshold.is_finite() && ind.rank_threshold > 0.0 && ind.rank_threshold < 1.0)
        {
            return Err(ConfigError::new(
                "indicators.rank_threshold",
                ind.rank_threshold,
                "a number strictly between 0 and 1",
            ));
        }
        if self.records_indicators() && self.backend == BackendKind::Cuda && ind.network_sharpness {
            return Err(ConfigError::new(
                "indicators.network_sharpness",
                true,
                "false on the cuda backend (whole-network products are CPU only)",
            ));
        }
        let s = &self.scheduler;
        s.validate().map_err(|e| match e {
            safestep_core::Error::InvalidConfig {
                field,
                value,
                allowed,
            } => ConfigError::new(&format!("scheduler.{field}"), value, allowed),
            other => ConfigError::new("scheduler", other, "see DESIGN.md, 'The scheduler'"),
        })?;
        if s.window > crate::trainer::MAX_WINDOW {
            return Err(ConfigError::new(
                "scheduler.window",
                s.window,
                &format!("at most {}", crate::trainer::MAX_WINDOW),
            ));
        }
        // Every lr a layer can take is applied in f32.
        for (field, value) in [
            ("scheduler.lr_min", s.lr_min),
            ("scheduler.lr_max", s.lr_max),
        ] {
            representable_in_f32(field, value)?;
        }
        positive("lr", self.lr)?;
        representable_in_f32("lr", self.lr)?;
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
        if s.mode != Mode::Off
            && (s.threshold == Threshold::Momentum || s.noise_averaging == NoiseAveraging::Momentum)
            && s.beta1 != a.beta1
        {
            return Err(ConfigError::new(
                "scheduler.beta1",
                s.beta1,
                &format!(
                    "equal to adam.beta1 ({}) for the momentum readings",
                    a.beta1
                ),
            ));
        }
        Ok(())
    }

    /// Whether the run records `indicators.csv` (`diagnostics` or `indicators.enabled`).
    pub fn records_indicators(&self) -> bool {
        self.diagnostics || self.indicators.enabled
    }

    /// Whether the controller's statistics run at all (the scheduler, or the diagnosis).
    pub fn has_controller_events(&self) -> bool {
        self.scheduler.mode != Mode::Off || self.records_indicators()
    }

    /// A short label naming the run's method, scheduler, lr and seed (used for folder names),
    /// the method marked `-ln` with LayerNorm (`adam-ln_combined_lr0.001_seed0`), so runs
    /// with and without it never share a folder.
    pub fn label(&self) -> String {
        let norm = match self.model.norm {
            NormKind::None => "",
            NormKind::Layer => "-ln",
        };
        format!(
            "{}{norm}_{}_lr{}_seed{}",
            self.method.name(),
            self.scheduler.mode,
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
    fn the_regression_preset_applies_from_a_file_and_from_flags_and_stays_out_of_mnist_configs() {
        let cfg = RunConfig::from_toml_str("benchmark = \"slowly-changing-regression\"").unwrap();
        assert_eq!((cfg.epochs, cfg.batch_size, cfg.examples), (1, 1, 10_000));
        assert_eq!(cfg.model.hidden, vec![5]);
        assert_eq!(cfg.regression, Some(RegressionSettings::default()));
        cfg.validate().unwrap();
        let back = RunConfig::from_toml_str(&cfg.to_toml()).unwrap();
        assert_eq!(back, cfg);
        let mut flags = RunConfig::default();
        flags.apply_benchmark_preset(Benchmark::SlowlyChangingRegression);
        flags.benchmark = Benchmark::SlowlyChangingRegression;
        assert_eq!(flags, cfg);
        // Switching back drops [regression]; an MNIST config never writes it.
        flags.apply_benchmark_preset(Benchmark::PermutedMnist);
        assert_eq!(flags.regression, None);
        assert!(!RunConfig::default().to_toml().contains("regression"));
        let stray = RunConfig {
            regression: Some(RegressionSettings::default()),
            ..RunConfig::default()
        };
        assert_eq!(stray.validate().unwrap_err().field, "regression");
        let too_many = RunConfig {
            examples: MAX_REGRESSION_EXAMPLES + 1,
            ..cfg
        };
        assert_eq!(too_many.validate().unwrap_err().field, "examples");
    }

    #[test]
    fn norm_round_trips_and_stays_out_of_default_configs() {
        assert!(!RunConfig::default().to_toml().contains("\nnorm ="));
        let cfg = RunConfig::from_toml_str("[model]\nnorm = \"layer\"").unwrap();
        assert_eq!(cfg.model.norm, NormKind::Layer);
        cfg.validate().unwrap();
        assert!(
            cfg.to_toml().contains("norm = \"layer\""),
            "{}",
            cfg.to_toml()
        );
        assert_eq!(RunConfig::from_toml_str(&cfg.to_toml()).unwrap(), cfg);
        assert_eq!(cfg.label(), "adam-ln_off_lr0.001_seed0");
        assert_eq!(RunConfig::default().label(), "adam_off_lr0.001_seed0");
        assert_eq!(
            crate::runner::model_spec(&cfg).norm,
            safestep_engine::Norm::Layer
        );
        // A bad value names the key, the value and what is allowed.
        let err = RunConfig::from_toml_str("[model]\nnorm = \"batch\"").unwrap_err();
        assert!(
            err.contains("norm") && err.contains("batch") && err.contains("layer"),
            "{err}"
        );
        // The CUDA engine has no LayerNorm.
        let cuda = RunConfig {
            backend: BackendKind::Cuda,
            ..cfg
        };
        assert_eq!(cuda.validate().unwrap_err().field, "model.norm");
    }

    #[test]
    fn hvp_rows_round_trips_stays_out_of_default_configs_and_is_checked_on_both_engines() {
        assert!(!RunConfig::default().to_toml().contains("hvp_rows"));
        let cfg = RunConfig::from_toml_str("[statistics]\nhvp_rows = 64").unwrap();
        assert_eq!(cfg.statistics.hvp_rows, 64);
        cfg.validate().unwrap();
        assert!(cfg.to_toml().contains("hvp_rows = 64"), "{}", cfg.to_toml());
        assert_eq!(RunConfig::from_toml_str(&cfg.to_toml()).unwrap(), cfg);
        let mut more = cfg.clone();
        more.statistics.hvp_rows = cfg.batch_size + 1;
        let err = more.validate().unwrap_err();
        assert_eq!(err.field, "statistics.hvp_rows");
        assert!(err.to_string().contains("at most --batch-size"), "{err}");
        let cuda = RunConfig {
            backend: BackendKind::Cuda,
            ..cfg
        };
        // The CUDA engine offers sub-batch products too.
        cuda.validate().unwrap();
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = toml::from_str::<RunConfig>("lrr = 0.1").unwrap_err();
        assert!(err.to_string().contains("lrr"), "{err}");
    }
}
