//! The `safestep` command line (clap).

use std::path::PathBuf;

use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::{Args, Parser, Subcommand};
use safestep_core::bounds::StepMeasure;
use safestep_core::scheduler::Mode;

use crate::config::{BackendKind, ConfigError, NormKind, RunConfig};
use crate::data::Benchmark;
use crate::methods::Method;

/// A clap parser for one of safestep-core's option enums, by the names it parses.
fn core_names<T>(names: &'static [&'static str]) -> impl TypedValueParser<Value = T>
where
    T: std::str::FromStr + Clone + Send + Sync + 'static,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    PossibleValuesParser::new(names).try_map(|name| name.parse::<T>())
}

/// Noise-curvature safe step sizes for continual learning: run the benchmarks, compare
/// methods, plot the results.
#[derive(Debug, Parser)]
#[command(name = "safestep", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands (parsed once per process: their sizes do not matter).
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Run one continual-learning benchmark and write its results into a folder.
    Run(RunArgs),
    /// Run every combination of methods, schedulers, lrs and seeds and tabulate them (or
    /// plan them for Slurm, run a planned sweep's lines, collect its table).
    Compare(CompareArgs),
    /// Draw accuracy-per-task and per-layer lr plots (PNG and SVG) of finished runs.
    Plot(PlotArgs),
    /// Measure steady-state training throughput and the scheduler's overhead.
    Bench(BenchArgs),
    /// Score which recorded signal (indicators.csv) anticipates an accuracy drop.
    Analyze(AnalyzeArgs),
}

/// `safestep analyze`.
#[derive(Debug, Clone, Args)]
pub struct AnalyzeArgs {
    /// Run folders recorded with --diagnostics, or compare folders holding them.
    #[arg(required = true, value_name = "RUN_DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where to write analysis.csv, analysis.md and the plots.
    #[arg(long, value_name = "DIR", default_value = "analysis")]
    pub out: PathBuf,
    /// A drop is a fall of end-of-task accuracy by more than this.
    #[arg(long, default_value_t = 0.05)]
    pub delta: f64,
    /// Measure a drop from the previous task or from the best so far.
    #[arg(long, value_enum, default_value = "previous")]
    pub drop_from: crate::analyze::DropFrom,
    /// Tasks over which a signal's change is taken.
    #[arg(long, default_value_t = 1)]
    pub window: usize,
    /// Bootstrap resamples (over runs) for the AUROC interval.
    #[arg(long, default_value_t = 500)]
    pub bootstrap: usize,
    /// Shuffles of the task order for the chance line.
    #[arg(long, default_value_t = 100)]
    pub shuffles: usize,
}

/// Options shared by `run` and `compare`: each overrides the config file and the defaults.
#[derive(Debug, Clone, Args, Default)]
pub struct CommonArgs {
    /// A TOML config (e.g. a run's config.toml); flags override its values.
    #[arg(long, value_name = "FILE.toml")]
    pub config: Option<PathBuf>,
    /// Task stream.
    #[arg(long, value_enum)]
    pub benchmark: Option<Benchmark>,
    /// Number of tasks.
    #[arg(long)]
    pub tasks: Option<usize>,
    /// Epochs per task.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Examples per task.
    #[arg(long)]
    pub examples: Option<usize>,
    /// Minibatch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Hidden widths, comma-separated (e.g. 256,256).
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Hidden-layer normalisation: none (default) or layer (LayerNorm without gain/bias
    /// before each hidden nonlinearity; CPU backend only). With compare, every run gets it.
    #[arg(long, value_enum)]
    pub norm: Option<NormKind>,
    /// Step measure compared with the bound: normalized (ρ = α_agg·λ, default),
    /// preconditioned (ρ = lr·λ_max(D^½HD^½)) or mean (the literal mean multiplier).
    #[arg(long, value_parser = core_names::<StepMeasure>(StepMeasure::NAMES))]
    pub measure: Option<StepMeasure>,
    /// Control interval K (optimizer steps between controller events).
    #[arg(long)]
    pub interval: Option<usize>,
    /// The controller's Hessian-vector products on the first N rows of the step's minibatch
    /// only [default: 0, all of them]. Cheaper, noisier sharpness that changes decisions
    /// (`[statistics] hvp_rows`).
    #[arg(long, value_name = "N")]
    pub hvp_rows: Option<usize>,
    /// Safety factor s of the bounds.
    #[arg(long, allow_negative_numbers = true)]
    pub safety: Option<f64>,
    /// Folder with the standard MNIST files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz]); default: the embedded digits.
    #[arg(long, value_name = "DIR")]
    pub mnist_dir: Option<PathBuf>,
    /// Where the tensors live.
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Record the diagnosis: controller statistics even with the scheduler off, and the
    /// indicators of every layer at every task's end (indicators.csv).
    #[arg(long)]
    pub diagnostics: bool,
    /// No progress bar or per-task lines.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `safestep run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Training method (baseline).
    #[arg(long, value_enum)]
    pub method: Option<Method>,
    /// Scheduler mode: off (plain fixed lr, the default), gradient (ρ*_g), volatility
    /// (ρ*_vol) or combined (ρ̃*, the paper's scheduler).
    #[arg(long, value_parser = core_names::<Mode>(Mode::NAMES))]
    pub scheduler: Option<Mode>,
    /// Initial learning rate.
    #[arg(long, allow_negative_numbers = true)]
    pub lr: Option<f64>,
    /// Seed of everything random.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Output folder [default: runs/METHOD_SCHEDULER_lrLR_seedSEED, METHOD-ln_… with --norm layer].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Continue the run in DIR from its last finished task (uses DIR/config.toml).
    #[arg(long, value_name = "DIR", conflicts_with_all = ["out", "config"])]
    pub resume: Option<PathBuf>,
    /// Overwrite a run already in the output folder.
    #[arg(long)]
    pub force: bool,
    /// Stop after N tasks of this invocation; continue later with --resume DIR.
    #[arg(long, value_name = "N")]
    pub stop_after: Option<usize>,
    /// Threads of the CPU engine [default: the number of cores]. The results do not
    /// depend on it (bit-identical for any count).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `safestep compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Methods, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "adam")]
    pub methods: Vec<Method>,
    /// Scheduler modes, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "off,combined",
        value_parser = core_names::<Mode>(Mode::NAMES)
    )]
    pub schedulers: Vec<Mode>,
    /// Initial learning rates, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1e-3",
        allow_negative_numbers = true
    )]
    pub lrs: Vec<f64>,
    /// Seeds: a range `A..B` (B excluded) or a comma-separated list.
    #[arg(long, default_value = "0..3")]
    pub seeds: String,
    /// Output folder (one subfolder per run, plus compare.csv and compare.md).
    #[arg(long, value_name = "DIR", default_value = "runs/compare")]
    pub out: PathBuf,
    /// Re-run combinations whose folder already holds a finished run.
    #[arg(long)]
    pub force: bool,
    /// Combinations run at once [default: the number of cores]. The results do not depend
    /// on it.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// Threads of each run's CPU engine [default: 1 when several runs go at once, the
    /// number of cores when one does]. The results do not depend on it (bit-identical for
    /// any count).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Plan the combinations into DIR for Slurm (manifest, job array, dependent table
    /// step, submit.sh) instead of running them.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["collect", "manifest"])]
    pub slurm: Option<PathBuf>,
    /// With --slurm DIR: write DIR/resubmit.sbatch, an array of only the lines that have not
    /// finished (the combination flags are not needed).
    #[arg(long, requires = "slurm")]
    pub resubmit: bool,
    /// Slurm: --partition of the jobs.
    #[arg(long, requires = "slurm")]
    pub partition: Option<String>,
    /// Slurm: --time limit of each array task (e.g. 02:00:00).
    #[arg(long, requires = "slurm")]
    pub time: Option<String>,
    /// Slurm: --cpus-per-task [default: 1].
    #[arg(long, requires = "slurm")]
    pub cpus_per_task: Option<usize>,
    /// Slurm: --mem of each array task (e.g. 2G).
    #[arg(long, requires = "slurm")]
    pub mem: Option<String>,
    /// Slurm: at most N array tasks at once (`--array=…%N`).
    #[arg(long, value_name = "N", requires = "slurm")]
    pub throttle: Option<usize>,
    /// Slurm: --account to charge.
    #[arg(long, requires = "slurm")]
    pub account: Option<String>,
    /// Slurm: an extra #SBATCH line, verbatim (repeatable), e.g. --sbatch=--qos=long.
    #[arg(
        long = "sbatch",
        value_name = "OPTION",
        requires = "slurm",
        allow_hyphen_values = true
    )]
    pub sbatch_extra: Vec<String>,
    /// Build the table and plots of a planned sweep from whatever has finished, listing what
    /// is missing or failed.
    #[arg(long, value_name = "DIR", conflicts_with = "manifest")]
    pub collect: Option<PathBuf>,
    /// A planned sweep (from --slurm DIR) to run lines of: with --line N (what an array
    /// task runs) or --worker.
    #[arg(long, value_name = "DIR")]
    pub manifest: Option<PathBuf>,
    /// With --manifest: run line N (finished: kept; interrupted: resumed).
    #[arg(
        long,
        value_name = "N",
        requires = "manifest",
        conflicts_with = "worker"
    )]
    pub line: Option<usize>,
    /// With --manifest: work through every line that is neither finished nor held by
    /// another process (several workers may share one folder, on one or many machines).
    #[arg(long, requires = "manifest")]
    pub worker: bool,
}

/// `safestep plot`.
#[derive(Debug, Clone, Args)]
pub struct PlotArgs {
    /// Run folders, or compare folders (their runs are plotted together).
    #[arg(required = true, value_name = "DIR")]
    pub dirs: Vec<PathBuf>,
    /// Where to write the plots [default: the single folder given, else ./plots].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// `safestep bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Timed optimizer steps per measurement.
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Repetitions (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub repeats: usize,
    /// Minibatch size.
    #[arg(long, default_value_t = 256)]
    pub batch_size: usize,
    /// Where the tensors live.
    #[arg(long, value_enum, default_value = "cpu")]
    pub backend: BackendKind,
    /// Threads of the CPU engine (results are bit-identical for any count).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Scheduler modes to measure, comma-separated (`off` is plain Adam, the baseline).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "off,combined",
        value_parser = core_names::<Mode>(Mode::NAMES)
    )]
    pub schedulers: Vec<Mode>,
    /// Hidden widths, comma-separated [default: the run default, 256,256].
    #[arg(long, value_delimiter = ',')]
    pub hidden: Option<Vec<usize>>,
    /// Control interval K of the scheduled modes [default: the run default, 10].
    #[arg(long)]
    pub interval: Option<usize>,
    /// The scheduled modes' Hessian-vector products on the first N rows of the minibatch
    /// only [default: 0, all of them] (see `run --hvp-rows`).
    #[arg(long, value_name = "N")]
    pub hvp_rows: Option<usize>,
    /// Also time each backend call of a step and of a controller event.
    #[arg(long)]
    pub breakdown: bool,
    /// Write the figures as JSON here too.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

impl CommonArgs {
    /// The configuration: defaults, then the config file, then these flags.
    pub fn resolve(&self) -> Result<RunConfig, ConfigError> {
        let mut cfg = match &self.config {
            Some(path) => RunConfig::from_toml_file(path)?,
            None => RunConfig::default(),
        };
        self.apply(&mut cfg);
        Ok(cfg)
    }

    /// Applies the flags given on top of `cfg`.
    pub fn apply(&self, cfg: &mut RunConfig) {
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        if let Some(benchmark) = self.benchmark {
            // The benchmark's protocol (one pass, batch 1, …); the flags below override it.
            cfg.apply_benchmark_preset(benchmark);
        }
        set(&mut cfg.benchmark, &self.benchmark);
        set(&mut cfg.tasks, &self.tasks);
        set(&mut cfg.epochs, &self.epochs);
        set(&mut cfg.examples, &self.examples);
        set(&mut cfg.batch_size, &self.batch_size);
        set(&mut cfg.model.hidden, &self.hidden);
        set(&mut cfg.model.norm, &self.norm);
        set(&mut cfg.scheduler.measure, &self.measure);
        set(&mut cfg.scheduler.interval, &self.interval);
        set(&mut cfg.statistics.hvp_rows, &self.hvp_rows);
        set(&mut cfg.scheduler.safety, &self.safety);
        set(&mut cfg.backend, &self.backend);
        if self.mnist_dir.is_some() {
            cfg.mnist_dir.clone_from(&self.mnist_dir);
        }
        cfg.diagnostics |= self.diagnostics;
    }
}

impl RunArgs {
    /// The configuration of this run (for `--resume`, the folder's config.toml plus flags).
    pub fn resolve(&self) -> Result<RunConfig, ConfigError> {
        let mut common = self.common.clone();
        if let Some(dir) = &self.resume {
            common.config = Some(crate::folder::run_file(dir, crate::outputs::CONFIG_FILE));
        }
        let mut cfg = common.resolve()?;
        if let Some(m) = self.method {
            cfg.method = m;
        }
        if let Some(s) = self.scheduler {
            cfg.scheduler.mode = s;
        }
        if let Some(lr) = self.lr {
            cfg.lr = lr;
        }
        if let Some(seed) = self.seed {
            cfg.seed = seed;
        }
        Ok(cfg)
    }
}

/// Most seeds one `--seeds` may name.
pub const MAX_SEEDS: usize = 10_000;

/// Parses `A..B` (B excluded) or `a,b,c` into seeds (at most [`MAX_SEEDS`]).
///
/// ```
/// use safestep_host::cli::parse_seeds;
/// assert_eq!(parse_seeds("0..3").unwrap(), vec![0, 1, 2]);
/// assert_eq!(parse_seeds("4,7").unwrap(), vec![4, 7]);
/// assert!(parse_seeds("3..3").is_err());
/// ```
pub fn parse_seeds(text: &str) -> Result<Vec<u64>, ConfigError> {
    let bad = || {
        ConfigError::new(
            "seeds",
            text,
            "a range A..B with A < B, or a list like 0,1,2",
        )
    };
    let seeds: Vec<u64> = if let Some((a, b)) = text.split_once("..") {
        let (a, b): (u64, u64) = (
            a.trim().parse().map_err(|_| bad())?,
            b.trim().parse().map_err(|_| bad())?,
        );
        // Refuse a huge range before materialising it.
        if b.saturating_sub(a) > MAX_SEEDS as u64 {
            return Err(ConfigError::new(
                "seeds",
                text,
                &format!("at most {MAX_SEEDS} seeds"),
            ));
        }
        (a..b).collect()
    } else {
        text.split(',')
            .map(|s| s.trim().parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?
    };
    if seeds.is_empty() {
        return Err(bad());
    }
    Ok(seeds)
}
