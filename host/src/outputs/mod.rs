//! A run's output folder: `config.toml`, `tasks.csv`, `controller.csv`, `summary.json`
//! and the resume checkpoint.
//!
//! Every file is replaced atomically (written to a temporary sibling, synced, renamed), so
//! a run killed at any moment leaves only complete, valid files behind.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::trainer::ControllerEvent;

pub mod record;
use record::Record;

/// Errors reading or writing a run folder; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file was read but its contents are not what safestep writes.
    #[error("{path} is not a valid safestep output: {problem}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// Writes `bytes` to `path` atomically: a temporary sibling, `fsync`, then `rename`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OutputError> {
    let err = |source| OutputError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}", std::process::id()));
    let written = fs::File::create(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if written.is_err() {
        // A full disk must not stay full of our temporary file.
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(err)
}

/// What a benchmark's tasks are scored by, which decides the columns of `tasks.csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Classification: accuracies and the cross-entropy (the MNIST benchmarks).
    Accuracy,
    /// Regression: the squared error `½‖ŷ − y‖²` only; accuracy does not apply.
    SquaredError,
}

impl Metric {
    /// The metric of `benchmark`.
    pub fn of(benchmark: crate::data::Benchmark) -> Self {
        if benchmark.is_regression() {
            Metric::SquaredError
        } else {
            Metric::Accuracy
        }
    }
}

/// One row of `tasks.csv`: the state at the end of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    /// Task index, from 0.
    pub task: usize,
    /// Accuracy on the whole task's training set at the end of the task (`None` for a
    /// regression benchmark, where accuracy does not apply).
    pub train_accuracy: Option<f64>,
    /// Mean minibatch accuracy over the task's steps (before each step's update; `None`
    /// for a regression benchmark).
    pub online_accuracy: Option<f64>,
    /// Mean training loss on the whole task's training set at the end of the task (for
    /// regression, the mean squared error `½‖ŷ − y‖²`).
    pub loss: f64,
    /// Regression only: the online squared error, the mean over the task's examples of
    /// their loss before the step that trained on them (`None` for classification, whose
    /// `tasks.csv` has no such column).
    pub online_loss: Option<f64>,
    /// Optimizer steps taken in the task.
    pub steps: u64,
    /// Seconds since the start of the run (including resumed parts).
    pub wall_seconds: f64,
    /// Every layer's learning rate at the end of the task.
    pub lrs: Vec<f64>,
}

/// The fixed columns of `tasks.csv`; per-layer `lr_<l>` columns follow.
const TASK_COLUMNS: [&str; 6] = [
    "task",
    "train_accuracy",
    "online_accuracy",
    "loss",
    "steps",
    "wall_seconds",
];

/// The fixed columns of a regression benchmark's `tasks.csv` ([`Metric::SquaredError`]):
/// no accuracy; `loss` the end-of-task squared error, `online_loss` the online one.
const REGRESSION_COLUMNS: [&str; 5] = ["task", "loss", "online_loss", "steps", "wall_seconds"];

/// Renders `tasks.csv` for `rows` with `layers` lr columns, with the columns of `metric`.
pub fn tasks_csv(rows: &[TaskRow], layers: usize, metric: Metric) -> String {
    let mut out = match metric {
        Metric::Accuracy => TASK_COLUMNS.join(","),
        Metric::SquaredError => REGRESSION_COLUMNS.join(","),
    };
    for l in 0..layers {
        let _ = write!(out, ",lr_{l}");
    }
    out.push('\n');
    // A missing value (which a row of its own metric never has) is written empty.
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| v.to_string());
    for r in rows {
        let _ = match metric {
            Metric::Accuracy => write!(
                out,
                "{},{},{},{},{},{:.3}",
                r.task,
                opt(r.train_accuracy),
                opt(r.online_accuracy),
                r.loss,
                r.steps,
                r.wall_seconds
            ),
            Metric::SquaredError => write!(
                out,
                "{},{},{},{},{:.3}",
                r.task,
                r.loss,
                opt(r.online_loss),
                r.steps,
                r.wall_seconds
            ),
        };
        for lr in &r.lrs {
            let _ = write!(out, ",{lr}");
        }
        out.push('\n');
    }
    out
}

/// Parses a `tasks.csv` written by [`tasks_csv`], of either metric (told by its header).
pub fn read_tasks_csv(path: &Path) -> Result<Vec<TaskRow>, OutputError> {
    let invalid = |problem: String| OutputError::Invalid {
        path: path.to_path_buf(),
        problem,
    };
    let mut reader = csv::Reader::from_path(path).map_err(|e| invalid(e.to_string()))?;
    let headers = reader
        .headers()
        .map_err(|e| invalid(e.to_string()))?
        .clone();
    let starts_with = |cols: &[&str]| {
        headers.len() >= cols.len() && headers.iter().zip(cols).all(|(h, want)| h == *want)
    };
    let metric = if starts_with(&TASK_COLUMNS) {
        Metric::Accuracy
    } else if starts_with(&REGRESSION_COLUMNS) {
        Metric::SquaredError
    } else {
        return Err(invalid(format!(
            "header must start with {} (or, for regression, {})",
            TASK_COLUMNS.join(","),
            REGRESSION_COLUMNS.join(",")
        )));
    };
    let fixed = match metric {
        Metric::Accuracy => TASK_COLUMNS.len(),
        Metric::SquaredError => REGRESSION_COLUMNS.len(),
    };
    let mut rows = Vec::new();
    for (line, record) in reader.records().enumerate() {
        let record = record.map_err(|e| invalid(e.to_string()))?;
        let num = |i: usize| -> Result<f64, OutputError> {
            record
                .get(i)
                .and_then(|s| s.parse::<f64>().ok())
                .ok_or_else(|| {
                    invalid(format!(
                        "row {}: column {} is not a number",
                        line + 2,
                        headers.get(i).unwrap_or("?")
                    ))
                })
        };
        let lrs = (fixed..record.len()).map(num).collect::<Result<_, _>>()?;
        rows.push(match metric {
            Metric::Accuracy => TaskRow {
                task: num(0)? as usize,
                train_accuracy: Some(num(1)?),
                online_accuracy: Some(num(2)?),
                loss: num(3)?,
                online_loss: None,
                steps: num(4)? as u64,
                wall_seconds: num(5)?,
                lrs,
            },
            Metric::SquaredError => TaskRow {
                task: num(0)? as usize,
                train_accuracy: None,
                online_accuracy: None,
                loss: num(1)?,
                online_loss: Some(num(2)?),
                steps: num(3)? as u64,
                wall_seconds: num(4)?,
                lrs,
            },
        });
    }
    Ok(rows)
}

/// The keys of a controller event, the first columns of `controller.csv`.
#[derive(Serialize)]
struct EventKeys {
    step: u64,
    step_in_task: u64,
    task: usize,
    layer: usize,
    lr_applied: f64,
}

/// One row of `controller.csv`: one layer at one controller event. Its columns are the
/// fields of the types the trainer reports, in this order: the event's keys (`step`,
/// `step_in_task`, `task`, `layer`, `lr_applied`), the engine's per-layer statistics
/// ([`safestep_engine::LayerBatchStats`]), Adam's step statistics
/// ([`safestep_core::adam::StepStats`]), the scheduler's observation
/// ([`safestep_core::scheduler::LayerObservation`], its noise statistics flattened) and its
/// report ([`safestep_core::scheduler::Report`]). A new field in any of them is a new column.
pub fn controller_record(event: &ControllerEvent) -> Record {
    let keys = EventKeys {
        step: event.step,
        step_in_task: event.position.step_in_task,
        task: event.position.task,
        layer: event.layer,
        lr_applied: event.lr_applied,
    };
    let mut record = Record::default();
    // Plain structs of numbers and unit variants always flatten.
    let _ = record.push(&keys);
    let _ = record.push(&event.batch);
    let _ = record.push(&event.step_stats);
    let _ = record.push(&event.observation);
    let _ = record.push(&event.report);
    // The observation's `lr_used` is `lr_applied`.
    record.remove("lr_used");
    record
}

/// The columns of `controller.csv`.
pub fn controller_columns() -> Vec<&'static str> {
    controller_record(&ControllerEvent::default())
        .names()
        .to_vec()
}

/// Appends `events` as CSV rows to `out`, writing the header first when `out` is empty.
pub fn append_controller_events(out: &mut String, events: &[ControllerEvent]) {
    let mut writer = csv::WriterBuilder::new().from_writer(Vec::new());
    // Writing strings into memory cannot fail.
    if out.is_empty() {
        let _ = writer.write_record(controller_columns());
    }
    for event in events {
        let _ = writer.write_record(controller_record(event).values());
    }
    if let Ok(bytes) = writer.into_inner() {
        out.push_str(&String::from_utf8_lossy(&bytes));
    }
}

impl Summary {
    /// The method as plots label it: `adam`, or `adam-ln` with LayerNorm (as run folders
    /// are named), so runs with and without it are never averaged together.
    pub fn method_label(&self) -> String {
        match self.norm.as_deref() {
            Some("layer") => format!("{}-ln", self.method),
            Some(other) => format!("{}-{other}", self.method),
            None => self.method.clone(),
        }
    }
}

/// `summary.json`: the run's headline numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Tasks finished so far.
    pub tasks: usize,
    /// Tasks the run was configured for.
    pub tasks_planned: usize,
    /// Whether every planned task finished.
    pub finished: bool,
    /// Mean end-of-task training accuracy over the last five finished tasks: the
    /// maintained trainability. The accuracy fields are absent for a regression benchmark
    /// (accuracy does not apply), whose `*_loss` fields are present instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_train_accuracy_last5: Option<f64>,
    /// Mean end-of-task training accuracy over all finished tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_train_accuracy: Option<f64>,
    /// Mean online accuracy over all finished tasks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_online_accuracy: Option<f64>,
    /// End-of-task training accuracy of the last finished task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_train_accuracy: Option<f64>,
    /// Online accuracy of the last finished task (the metric of online benchmarks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_online_accuracy: Option<f64>,
    /// Area under the end-of-task accuracy curve over tasks, by the trapezoid rule,
    /// divided by its width (tasks − 1): in [0, 1], the accuracy's mean over the stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auc_train_accuracy: Option<f64>,
    /// Regression: the online squared error over the whole stream (the mean over tasks of
    /// each task's online squared error; every task has as many examples, so also the mean
    /// over every example seen), Dohare et al.'s metric.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_online_loss: Option<f64>,
    /// Regression: the online squared error of the last finished task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_online_loss: Option<f64>,
    /// Regression: the end-of-task squared error (whole task set) of the last finished task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_loss: Option<f64>,
    /// Regression: the mean over finished tasks of the end-of-task squared error.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_loss: Option<f64>,
    /// Wall-clock seconds of the run (resumed parts added up).
    pub wall_seconds: f64,
    /// benchmark name.
    pub benchmark: String,
    /// method name.
    pub method: String,
    /// The hidden-layer normalisation when there is one (`layer`); absent without (so the
    /// summaries of runs without it are as before the option existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub norm: Option<String>,
    /// scheduler mode.
    pub scheduler: String,
    /// Initial lr.
    pub lr: f64,
    /// Seed.
    pub seed: u64,
    /// Backend that ran it.
    pub backend: String,
    /// Seconds spent computing the diagnosis indicators (0 when none were recorded).
    #[serde(default)]
    pub indicator_seconds: f64,
}

/// The area under `values` (one per task) by the trapezoid rule over its width: the value
/// itself for one task, 0 for none.
///
/// ```
/// use safestep_host::outputs::normalized_area;
/// assert_eq!(normalized_area(&[1.0, 0.0]), 0.5);
/// assert_eq!(normalized_area(&[0.2, 0.4, 0.6]), 0.4);
/// assert_eq!(normalized_area(&[0.7]), 0.7);
/// ```
pub fn normalized_area(values: &[f64]) -> f64 {
    match values {
        [] => 0.0,
        [v] => *v,
        _ => {
            let inner: f64 = values.windows(2).map(|w| (w[0] + w[1]) / 2.0).sum();
            inner / (values.len() - 1) as f64
        }
    }
}

/// Mean of the last `k` values (all of them when fewer); 0 for none.
pub fn mean_last(values: &[f64], k: usize) -> f64 {
    let tail = &values[values.len().saturating_sub(k)..];
    if tail.is_empty() {
        0.0
    } else {
        tail.iter().sum::<f64>() / tail.len() as f64
    }
}

/// Reads a run folder's `summary.json`.
pub fn read_summary(dir: &Path) -> Result<Summary, OutputError> {
    let path = dir.join(SUMMARY_FILE);
    let text = fs::read_to_string(&path).map_err(|source| OutputError::Read {
        path: path.clone(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| OutputError::Invalid {
        path,
        problem: e.to_string(),
    })
}

/// Name of the resolved configuration file in a run folder.
pub const CONFIG_FILE: &str = "config.toml";
/// Name of the per-task results file in a run folder.
pub const TASKS_FILE: &str = "tasks.csv";
/// Name of the per-event controller log in a run folder.
pub const CONTROLLER_FILE: &str = "controller.csv";
/// Name of the summary file in a run folder.
pub const SUMMARY_FILE: &str = "summary.json";
/// Name of the resume checkpoint in a run folder.
pub const CHECKPOINT_FILE: &str = "checkpoint.bin";
/// Name of the diagnosis indicators file in a run folder (when recorded).
pub const INDICATORS_FILE: &str = "indicators.csv";

/// The files of a run folder (each a link into its current snapshot).
pub const RUN_FILES: [&str; 6] = [
    CONFIG_FILE,
    TASKS_FILE,
    CONTROLLER_FILE,
    SUMMARY_FILE,
    CHECKPOINT_FILE,
    INDICATORS_FILE,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_csv_round_trips() {
        let rows = vec![
            TaskRow {
                task: 0,
                train_accuracy: Some(0.5),
                online_accuracy: Some(0.25),
                loss: 1.5,
                online_loss: None,
                steps: 10,
                wall_seconds: 1.25,
                lrs: vec![1e-3, 2e-3],
            },
            TaskRow {
                task: 1,
                train_accuracy: Some(0.75),
                online_accuracy: Some(0.5),
                loss: 0.5,
                online_loss: None,
                steps: 10,
                wall_seconds: 2.5,
                lrs: vec![1e-4, 5e-4],
            },
        ];
        let dir = std::env::temp_dir().join(format!("safestep-out-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(TASKS_FILE);
        write_atomic(&path, tasks_csv(&rows, 2, Metric::Accuracy).as_bytes()).unwrap();
        assert_eq!(read_tasks_csv(&path).unwrap(), rows);
        // A regression run's rows: no accuracy columns, the online squared error instead.
        let regression: Vec<TaskRow> = rows
            .iter()
            .map(|r| TaskRow {
                train_accuracy: None,
                online_accuracy: None,
                online_loss: Some(r.loss * 2.0),
                ..r.clone()
            })
            .collect();
        let text = tasks_csv(&regression, 2, Metric::SquaredError);
        assert!(text.starts_with("task,loss,online_loss,steps,wall_seconds,lr_0,lr_1\n"));
        assert!(!text.contains("accuracy"));
        write_atomic(&path, text.as_bytes()).unwrap();
        assert_eq!(read_tasks_csv(&path).unwrap(), regression);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn controller_columns_derive_from_the_reported_types() {
        let mut out = String::new();
        append_controller_events(&mut out, &[]);
        let header: Vec<&str> = out.trim_end().split(',').collect();
        assert_eq!(header, controller_columns());
        for name in [
            "step",
            "step_in_task",
            "task",
            "layer",
            "lr_applied",
            "mean_grad_sq",
            "sum_sample_sq_norms",
            "param_sq",
            "alpha_agg",
            "sharpness",
            "batch",
            "variance",
            "unbiased_grad_sq",
            "decision",
            "lr_before",
            "lr_after",
            "rho",
            "rho_combined",
            "g2_ema",
            "noise_ema",
        ] {
            assert!(header.contains(&name), "{name} missing from {header:?}");
        }
        assert!(!header.contains(&"lr_used"));
        let event = ControllerEvent {
            step: 10,
            layer: 1,
            lr_applied: 1e-3,
            ..ControllerEvent::default()
        };
        let mut fresh = String::new();
        append_controller_events(&mut fresh, std::slice::from_ref(&event));
        assert_eq!(fresh.lines().next(), out.lines().next());
        let row: Vec<&str> = fresh.lines().nth(1).unwrap().split(',').collect();
        assert_eq!(row.len(), header.len());
        assert_eq!(row[0], "10");
        assert_eq!(
            row[header.iter().position(|h| *h == "lr_applied").unwrap()],
            "0.001"
        );
        assert_eq!(
            row[header.iter().position(|h| *h == "decision").unwrap()],
            "hold"
        );
        append_controller_events(&mut out, &[event]);
        assert_eq!(out, fresh);
    }

    #[test]
    fn mean_last_takes_the_tail() {
        assert_eq!(mean_last(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 5), 4.0);
        assert_eq!(mean_last(&[2.0], 5), 2.0);
        assert_eq!(mean_last(&[], 5), 0.0);
    }
}
