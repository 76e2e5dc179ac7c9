//! `safestep run`: a whole continual-learning run, task after task, with its output folder.
//!
//! Task `k` of the stream is trained for `epochs` epochs of shuffled minibatches (every
//! example once per epoch; the last batch is smaller when the batch size does not divide
//! the task, see [`epoch_batches`]), then evaluated on its whole training set. The MNIST
//! benchmarks are scored by accuracy; slowly-changing regression by its squared error
//! (online: each example's loss before the step that trains on it; end of task: the whole
//! task set's), with no accuracy ([`Metric`]). After
//! every task the run folder is brought up to date atomically and a checkpoint is written,
//! so `--resume` continues from the last finished task and ends with results identical to
//! an uninterrupted run.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use safestep_engine::{Activation, Backend, BackendError, Loss, ModelSpec};

use crate::checkpoint::{self, Checkpoint};
use crate::config::{BackendKind, ConfigError, RunConfig};
use crate::data::mnist::{DataError, Mnist};
use crate::data::regression::RegressionStream;
use crate::data::streams::{subset_order, TaskStream};
use crate::folder::{FolderError, RunFolder};
use crate::indicators::{self, append_indicator_rows};
use crate::outputs::{
    self, append_controller_events, mean_last, normalized_area, tasks_csv, Metric, OutputError,
    Summary, TaskRow, CHECKPOINT_FILE, CONFIG_FILE, CONTROLLER_FILE, INDICATORS_FILE, SUMMARY_FILE,
    TASKS_FILE,
};
use crate::seeds::{derive_seed, RESET, SHUFFLE};
use crate::trainer::{TaskPosition, TrainError, Trainer};

/// What can stop a run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A configuration value is not allowed (exit status 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data could not be loaded.
    #[error("data: {0}")]
    Data(String),
    /// The output folder already holds a run.
    #[error("{path} already holds a run; pass --force to overwrite it or --resume {path} to continue it")]
    OutputExists {
        /// The folder.
        path: PathBuf,
    },
    /// `--resume` on a folder without a usable checkpoint.
    #[error("cannot resume {path}: {problem}")]
    Resume {
        /// The folder.
        path: PathBuf,
        /// What is missing or inconsistent.
        problem: String,
    },
    /// Training failed.
    #[error(transparent)]
    Train(#[from] TrainError),
    /// Writing the outputs failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// The output folder is in use by another run (exit status 2).
    #[error(transparent)]
    Busy(FolderError),
}

impl From<FolderError> for RunError {
    fn from(e: FolderError) -> Self {
        match e {
            FolderError::Io(e) => RunError::Output(e),
            busy => RunError::Busy(busy),
        }
    }
}

impl From<BackendError> for RunError {
    fn from(e: BackendError) -> Self {
        RunError::Train(TrainError::Backend(e))
    }
}

impl RunError {
    /// The process exit status for this error: 2 for bad user input, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            RunError::Config(_)
            | RunError::Data(_)
            | RunError::OutputExists { .. }
            | RunError::Resume { .. }
            | RunError::Busy(_) => 2,
            RunError::Train(_) | RunError::Output(_) => 1,
        }
    }
}

/// How to run, beyond the configuration itself.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The output folder.
    pub out: PathBuf,
    /// No progress bar or per-task lines.
    pub quiet: bool,
    /// Continue the run in `out` from its checkpoint.
    pub resume: bool,
    /// Overwrite a run already in `out`.
    pub force: bool,
    /// Stop after finishing this many tasks in this invocation (continue with `resume`).
    pub stop_after: Option<usize>,
    /// Threads of the CPU engine (0 is taken as 1; results do not depend on it).
    pub threads: usize,
}

/// The model a configuration describes: 784 pixels to 10 classes with cross-entropy on
/// the MNIST benchmarks; `regression.bits` inputs to `regression.outputs` outputs with the
/// squared error on slowly-changing regression.
pub fn model_spec(cfg: &RunConfig) -> ModelSpec {
    let (input, classes, loss) = if cfg.benchmark.is_regression() {
        let r = cfg.regression_settings();
        (r.bits, r.outputs, Loss::SquaredError)
    } else {
        (784, 10, Loss::CrossEntropy)
    };
    ModelSpec {
        input,
        hidden: cfg.model.hidden.clone(),
        classes,
        activation: if cfg.method.uses_crelu() {
            Activation::Crelu
        } else {
            Activation::Relu
        },
        crelu_match_params: cfg.model.crelu_match_params,
        loss,
        norm: cfg.model.norm.engine(),
    }
}

/// The tasks of a run: an MNIST task stream, or the generated regression problem.
#[derive(Debug, Clone)]
pub enum RunStream {
    /// One of the MNIST benchmarks.
    Mnist(TaskStream),
    /// Slowly-changing regression, with its examples per task.
    Regression(RegressionStream, usize),
}

impl RunStream {
    /// The stream a configuration describes ([`load_stream`] for MNIST).
    ///
    /// # Errors
    /// As [`load_stream`].
    pub fn of(cfg: &RunConfig) -> Result<Self, RunError> {
        if cfg.benchmark.is_regression() {
            Ok(RunStream::Regression(
                RegressionStream::new(&cfg.regression_settings(), cfg.seed),
                cfg.examples,
            ))
        } else {
            load_stream(cfg).map(RunStream::Mnist)
        }
    }

    /// Loads task `k` into `backend` and returns its number of examples.
    ///
    /// # Errors
    /// The backend's refusal of the data.
    pub fn load(&self, k: u64, backend: &mut dyn Backend) -> Result<usize, BackendError> {
        match self {
            RunStream::Mnist(stream) => {
                let data = stream.task(k);
                backend.load_task(&data.images, &data.labels)?;
                Ok(data.labels.len())
            }
            RunStream::Regression(stream, examples) => {
                let data = stream.task(k, *examples);
                backend.load_regression_task(&data.inputs, &data.targets)?;
                Ok(*examples)
            }
        }
    }
}

/// Builds the configured backend; the CPU engine's GEMMs use `threads` threads (the
/// results do not depend on it).
pub fn make_backend(cfg: &RunConfig, threads: usize) -> Result<Box<dyn Backend>, RunError> {
    let spec = model_spec(cfg);
    match cfg.backend {
        BackendKind::Cpu => Ok(Box::new(
            safestep_engine::CpuBackend::new(&spec, cfg.seed)?.with_threads(threads)?,
        )),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => Ok(Box::new(safestep_gpu::GpuMlp::open(&spec, cfg.seed)?)),
        #[cfg(not(feature = "cuda"))]
        BackendKind::Cuda => Err(RunError::Config(ConfigError::new(
            "backend",
            "cuda",
            "cpu (this binary was built without the `cuda` feature; rebuild with `--features cuda`)",
        ))),
    }
}

/// The task stream a configuration describes, over the embedded digits or the files in
/// `mnist_dir` (of which only the stream's digits are read into memory).
///
/// # Errors
/// [`RunError::Config`] (field `examples`) for more examples than digits;
/// [`RunError::Data`] naming the file and the problem.
pub fn load_stream(cfg: &RunConfig) -> Result<TaskStream, RunError> {
    let too_many = |e: DataError| match e {
        DataError::BadExampleCount { .. } => RunError::Config(ConfigError::new(
            "examples",
            cfg.examples,
            &format!("at most the digits available ({e})"),
        )),
        other => RunError::Data(other.to_string()),
    };
    match &cfg.mnist_dir {
        Some(dir) => {
            let digits = Mnist::load_subset(dir, |n| subset_order(n, cfg.examples, cfg.seed))
                .map_err(too_many)?;
            Ok(TaskStream::from_subset(
                cfg.benchmark,
                digits.images,
                digits.labels,
                cfg.seed,
            ))
        }
        None => {
            let digits = Mnist::embedded().map_err(|e| RunError::Data(e.to_string()))?;
            TaskStream::new(cfg.benchmark, &digits, cfg.examples, cfg.seed).map_err(too_many)
        }
    }
}

/// The minibatches of one epoch over `n` shuffled examples, as index ranges: every example
/// once, the last batch smaller when `batch` does not divide `n` (as PyTorch's default
/// `drop_last=False`), except that a last batch of a single example is dropped (its
/// gradient variance is undefined) unless the batch size is 1.
///
/// ```
/// use safestep_host::runner::epoch_batches;
/// let sizes: Vec<usize> = epoch_batches(1000, 256).map(|r| r.len()).collect();
/// assert_eq!(sizes, [256, 256, 256, 232]);
/// assert_eq!(epoch_batches(513, 256).count(), 2);
/// ```
pub fn epoch_batches(n: usize, batch: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
    let batch = batch.max(1);
    // With batch size 1 (online learning) every batch has one example by design.
    let smallest = batch.min(2);
    (0..n)
        .step_by(batch)
        .map(move |start| start..(start + batch).min(n))
        .filter(move |r| r.len() >= smallest)
}

/// Runs (or resumes) a whole configured run into `opts.out` and returns its summary.
///
/// Everything is checked before the folder is touched: the configuration, the data, the
/// backend. The folder is then locked for the run's lifetime ([`RunFolder`]), and after
/// every finished task all its files are replaced together as one snapshot.
///
/// # Errors
/// [`RunError`]: exit status 2 for bad input (configuration, data, an existing run without
/// `force`, a damaged or mismatched checkpoint, a folder in use), 1 for failures of
/// training or writing.
pub fn run(cfg: &RunConfig, opts: &RunOptions) -> Result<Summary, RunError> {
    let (stream, trainer) = prepare(cfg, opts)?;
    let folder = RunFolder::open(&opts.out)?;
    run_prepared(cfg, opts, stream, trainer, folder)
}

/// [`run`] in a folder whose lock the caller already holds (`opts.out` is ignored).
///
/// # Errors
/// As [`run`].
pub fn run_in(folder: RunFolder, cfg: &RunConfig, opts: &RunOptions) -> Result<Summary, RunError> {
    let (stream, trainer) = prepare(cfg, opts)?;
    run_prepared(cfg, opts, stream, trainer, folder)
}

/// Everything that can fail on bad input, before any folder is touched.
fn prepare(cfg: &RunConfig, opts: &RunOptions) -> Result<(RunStream, Trainer), RunError> {
    cfg.validate()?;
    let stream = RunStream::of(cfg)?;
    let trainer = Trainer::new(cfg, make_backend(cfg, opts.threads.max(1))?)?;
    Ok((stream, trainer))
}

fn run_prepared(
    cfg: &RunConfig,
    opts: &RunOptions,
    stream: RunStream,
    mut trainer: Trainer,
    folder: RunFolder,
) -> Result<Summary, RunError> {
    let layers = trainer.layer_count();
    let out = &folder.dir().to_path_buf();
    let checkpoint = if opts.resume {
        read_checkpoint(&folder, cfg, layers)?
    } else {
        if folder.holds_run() {
            if !opts.force {
                return Err(RunError::OutputExists {
                    path: out.to_path_buf(),
                });
            }
            folder.clear()?;
        }
        None
    };
    let config_text = cfg.to_toml();
    let (start_task, mut task_rows, mut logs) = match &checkpoint {
        Some(ck) => {
            trainer.import_state(&ck.trainer)?;
            let logs = RunLogs {
                controller: read_text(&out.join(CONTROLLER_FILE))?,
                indicators: ck.indicators_csv.clone(),
                indicator_seconds: ck.indicator_seconds,
            };
            (ck.next_task, ck.task_rows.clone(), logs)
        }
        None => {
            let mut logs = RunLogs::default();
            append_controller_events(&mut logs.controller, &[]);
            if cfg.records_indicators() {
                append_indicator_rows(&mut logs.indicators, &[]);
            }
            (0, Vec::new(), logs)
        }
    };
    let wall_offset = task_rows.last().map_or(0.0, |r| r.wall_seconds);
    if checkpoint.is_none() {
        commit(&folder, cfg, &config_text, &task_rows, &logs, layers, None)?;
    }
    let spec = model_spec(cfg);
    let shapes = spec.layer_shapes()?;
    let metric = Metric::of(cfg.benchmark);

    let examples = cfg.examples;
    let steps_per_task = (epoch_batches(examples, cfg.batch_size).count() * cfg.epochs) as u64;
    let progress = progress_bar(opts.quiet, cfg.tasks as u64 * steps_per_task);
    progress.set_position(start_task as u64 * steps_per_task);
    let started = Instant::now();
    let mut rows = Vec::new();

    let end_task = opts
        .stop_after
        .map_or(cfg.tasks, |n| cfg.tasks.min(start_task.saturating_add(n)));
    for task in start_task..end_task {
        if cfg.method.resets_each_task() && task > 0 {
            trainer.reset(derive_seed(cfg.seed, RESET, task as u64))?;
        } else if task > 0 {
            trainer.begin_task();
        }
        let population = stream.load(task as u64, trainer.backend_mut())?;
        let mut order: Vec<u32> = (0..population as u32).collect();
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(cfg.seed, SHUFFLE, task as u64));
        let (mut correct, mut seen, mut step_in_task) = (0usize, 0usize, 0u64);
        let mut loss_sum = 0.0f64;
        for _epoch in 0..cfg.epochs {
            order.shuffle(&mut rng);
            for range in epoch_batches(population, cfg.batch_size) {
                let batch = &order[range];
                let pos = TaskPosition {
                    task,
                    step_in_task,
                    steps_per_task,
                };
                let outcome = trainer.step(batch, pos, population, &mut rows)?;
                correct += outcome.correct;
                loss_sum += outcome.loss * batch.len() as f64;
                seen += batch.len();
                step_in_task += 1;
                progress.inc(1);
            }
        }
        let eval = trainer.backend_mut().evaluate()?;
        if !eval.loss.is_finite() {
            return Err(TrainError::Diverged {
                task,
                loss: eval.loss,
            }
            .into());
        }
        let wall = wall_offset + started.elapsed().as_secs_f64();
        let per_example = |sum: f64| if seen == 0 { 0.0 } else { sum / seen as f64 };
        let classification = metric == Metric::Accuracy;
        let row = TaskRow {
            task,
            train_accuracy: classification.then(|| eval.accuracy()),
            online_accuracy: classification.then(|| per_example(correct as f64)),
            loss: eval.loss,
            online_loss: (!classification).then(|| per_example(loss_sum)),
            steps: step_in_task,
            wall_seconds: wall,
            lrs: trainer.scheduled_lrs(),
        };
        report_task(&progress, opts.quiet, cfg.tasks, &row);
        task_rows.push(row);
        let every = cfg.indicators.every;
        if cfg.records_indicators() && ((task + 1) % every == 0 || task + 1 == cfg.tasks) {
            let (found, seconds) = indicators::record(
                &mut trainer,
                &cfg.indicators,
                &shapes,
                spec.activation,
                task,
                population,
                &rows,
            )?;
            append_indicator_rows(&mut logs.indicators, &found);
            logs.indicator_seconds += seconds;
        }
        append_controller_events(&mut logs.controller, &rows);
        rows.clear();
        let ck = Checkpoint {
            config: config_text.clone(),
            next_task: task + 1,
            task_rows: task_rows.clone(),
            controller_len: logs.controller.len(),
            controller_crc: crc32fast::hash(logs.controller.as_bytes()),
            trainer: trainer.export_state()?,
            indicators_csv: logs.indicators.clone(),
            indicator_seconds: logs.indicator_seconds,
        };
        commit(
            &folder,
            cfg,
            &config_text,
            &task_rows,
            &logs,
            layers,
            Some(&ck),
        )?;
    }
    progress.finish_and_clear();
    Ok(summary(cfg, &task_rows, logs.indicator_seconds))
}

/// The logs a run accumulates beside its task rows.
#[derive(Debug, Default)]
struct RunLogs {
    /// `controller.csv`.
    controller: String,
    /// `indicators.csv` (empty when the run records none).
    indicators: String,
    /// Seconds spent on indicators.
    indicator_seconds: f64,
}

/// The checkpoint of the run in `folder`, checked against `cfg` and against the folder's
/// other files; `None` when the run had not finished its first task (it starts over).
fn read_checkpoint(
    folder: &RunFolder,
    cfg: &RunConfig,
    layers: usize,
) -> Result<Option<Checkpoint>, RunError> {
    let out = folder.dir();
    let resume_err = |problem: String| RunError::Resume {
        path: out.to_path_buf(),
        problem,
    };
    let on_disk = RunConfig::from_toml_file(&out.join(CONFIG_FILE))
        .map_err(|e| resume_err(format!("no usable {CONFIG_FILE} ({e})")))?;
    if on_disk != *cfg {
        return Err(resume_err(format!(
            "the configuration differs from the one in {}",
            out.join(CONFIG_FILE).display()
        )));
    }
    let path = out.join(CHECKPOINT_FILE);
    let read = |file: &str| {
        let path = out.join(file);
        fs::read_to_string(&path)
            .map_err(|e| resume_err(format!("cannot read {} ({e})", path.display())))
    };
    let tasks = read(TASKS_FILE)?;
    outputs::read_tasks_csv(&out.join(TASKS_FILE)).map_err(|e| resume_err(e.to_string()))?;
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        // Killed during the first task: nothing to continue from, start it over.
        Err(_) if tasks.lines().count() <= 1 => return Ok(None),
        Err(e) => {
            return Err(resume_err(format!(
                "no checkpoint at {} ({e})",
                path.display()
            )))
        }
    };
    let ck = checkpoint::decode(&bytes)
        .map_err(|e| resume_err(format!("{} is not usable: {e}", path.display())))?;
    if RunConfig::from_toml_str(&ck.config).ok().as_ref() != Some(cfg) {
        return Err(resume_err(format!(
            "{} was written for another configuration",
            path.display()
        )));
    }
    let controller = read(CONTROLLER_FILE)?;
    ck.check_folder(
        &tasks,
        layers,
        Metric::of(cfg.benchmark),
        &controller,
        cfg.method.resets_each_task(),
    )
    .map_err(|e| resume_err(format!("{} disagrees with the folder: {e}", path.display())))?;
    if cfg.records_indicators() {
        let on_disk = read(INDICATORS_FILE)?;
        if on_disk != ck.indicators_csv {
            return Err(resume_err(format!(
                "{} disagrees with the checkpoint",
                out.join(INDICATORS_FILE).display()
            )));
        }
    }
    Ok(Some(ck))
}

fn read_text(path: &Path) -> Result<String, RunError> {
    fs::read_to_string(path).map_err(|source| {
        OutputError::Read {
            path: path.to_path_buf(),
            source,
        }
        .into()
    })
}

/// Writes every file of the run as the folder's new snapshot.
fn commit(
    folder: &RunFolder,
    cfg: &RunConfig,
    config_text: &str,
    rows: &[TaskRow],
    logs: &RunLogs,
    layers: usize,
    checkpoint: Option<&Checkpoint>,
) -> Result<(), RunError> {
    let tasks = tasks_csv(rows, layers, Metric::of(cfg.benchmark));
    let summary = serde_json::to_string_pretty(&summary(cfg, rows, logs.indicator_seconds))
        .unwrap_or_default();
    let ck = checkpoint.map(checkpoint::encode);
    let mut files: Vec<(&str, &[u8])> = vec![
        (CONFIG_FILE, config_text.as_bytes()),
        (TASKS_FILE, tasks.as_bytes()),
        (CONTROLLER_FILE, logs.controller.as_bytes()),
        (SUMMARY_FILE, summary.as_bytes()),
    ];
    if !logs.indicators.is_empty() {
        files.push((INDICATORS_FILE, logs.indicators.as_bytes()));
    }
    if let Some(ck) = &ck {
        files.push((CHECKPOINT_FILE, ck));
    }
    folder.commit(&files)?;
    Ok(())
}

/// The summary of the finished tasks `rows` of a run configured by `cfg` (its wall time is
/// the last finished task's), which spent `indicator_seconds` on the diagnosis.
///
/// A classification run's summary has the accuracy fields; a regression run's the loss
/// fields instead (accuracy does not apply).
pub fn summary(cfg: &RunConfig, rows: &[TaskRow], indicator_seconds: f64) -> Summary {
    let classification = Metric::of(cfg.benchmark) == Metric::Accuracy;
    let acc: Vec<f64> = rows.iter().filter_map(|r| r.train_accuracy).collect();
    let online: Vec<f64> = rows.iter().filter_map(|r| r.online_accuracy).collect();
    let losses: Vec<f64> = rows.iter().map(|r| r.loss).collect();
    let online_loss: Vec<f64> = rows.iter().filter_map(|r| r.online_loss).collect();
    let accuracy = |v: f64| classification.then_some(v);
    let regression = |v: f64| (!classification).then_some(v);
    Summary {
        tasks: rows.len(),
        tasks_planned: cfg.tasks,
        finished: rows.len() == cfg.tasks,
        mean_train_accuracy_last5: accuracy(mean_last(&acc, 5)),
        mean_train_accuracy: accuracy(mean_last(&acc, acc.len())),
        mean_online_accuracy: accuracy(mean_last(&online, online.len())),
        final_train_accuracy: accuracy(acc.last().copied().unwrap_or(0.0)),
        final_online_accuracy: accuracy(online.last().copied().unwrap_or(0.0)),
        auc_train_accuracy: accuracy(normalized_area(&acc)),
        mean_online_loss: regression(mean_last(&online_loss, online_loss.len())),
        final_online_loss: regression(online_loss.last().copied().unwrap_or(0.0)),
        final_loss: regression(losses.last().copied().unwrap_or(0.0)),
        mean_loss: regression(mean_last(&losses, losses.len())),
        wall_seconds: rows.last().map_or(0.0, |r| r.wall_seconds),
        benchmark: cfg.benchmark.to_string(),
        method: cfg.method.name().to_string(),
        norm: (!cfg.model.norm.is_none()).then(|| cfg.model.norm.to_string()),
        scheduler: cfg.scheduler.mode.to_string(),
        lr: cfg.lr,
        seed: cfg.seed,
        backend: cfg.backend.to_string(),
        indicator_seconds,
    }
}

fn progress_bar(quiet: bool, total: u64) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] [{bar:30}] {pos}/{len} steps ({per_sec}, ETA {eta}) {msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn report_task(bar: &ProgressBar, quiet: bool, tasks: usize, row: &TaskRow) {
    if quiet {
        return;
    }
    let line = match (row.train_accuracy, row.online_accuracy, row.online_loss) {
        (Some(train), Some(online), _) => format!(
            "task {}/{}: train accuracy {train:.3}, online {online:.3}, loss {:.3}",
            row.task + 1,
            tasks,
            row.loss
        ),
        (_, _, online) => format!(
            "task {}/{}: squared error online {:.4}, end of task {:.4}",
            row.task + 1,
            tasks,
            online.unwrap_or(f64::NAN),
            row.loss
        ),
    };
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.set_message(line.clone());
        bar.println(line);
    }
}

/// Reads a finished or partial run's per-task rows (for `compare` and `plot`).
pub fn read_run(dir: &Path) -> Result<(Summary, Vec<TaskRow>), OutputError> {
    Ok((
        outputs::read_summary(dir)?,
        outputs::read_tasks_csv(&dir.join(TASKS_FILE))?,
    ))
}
