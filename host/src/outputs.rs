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
    let mut file = fs::File::create(&tmp).map_err(err)?;
    file.write_all(bytes).map_err(err)?;
    file.sync_all().map_err(err)?;
    drop(file);
    fs::rename(&tmp, path).map_err(err)
}

/// One row of `tasks.csv`: the state at the end of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRow {
    /// Task index, from 0.
    pub task: usize,
    /// Accuracy on the whole task's training set at the end of the task.
    pub train_accuracy: f64,
    /// Mean minibatch accuracy over the task's steps (before each step's update).
    pub online_accuracy: f64,
    /// Mean training loss on the whole task's training set at the end of the task.
    pub loss: f64,
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

/// Renders `tasks.csv` for `rows` with `layers` lr columns.
pub fn tasks_csv(rows: &[TaskRow], layers: usize) -> String {
    let mut out = TASK_COLUMNS.join(",");
    for l in 0..layers {
        let _ = write!(out, ",lr_{l}");
    }
    out.push('\n');
    for r in rows {
        let _ = write!(
            out,
            "{},{},{},{},{},{:.3}",
            r.task, r.train_accuracy, r.online_accuracy, r.loss, r.steps, r.wall_seconds
        );
        for lr in &r.lrs {
            let _ = write!(out, ",{lr}");
        }
        out.push('\n');
    }
    out
}

/// Parses a `tasks.csv` written by [`tasks_csv`].
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
    if headers.len() < TASK_COLUMNS.len()
        || headers.iter().zip(TASK_COLUMNS).any(|(h, want)| h != want)
    {
        return Err(invalid(format!(
            "header must start with {}",
            TASK_COLUMNS.join(",")
        )));
    }
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
        rows.push(TaskRow {
            task: num(0)? as usize,
            train_accuracy: num(1)?,
            online_accuracy: num(2)?,
            loss: num(3)?,
            steps: num(4)? as u64,
            wall_seconds: num(5)?,
            lrs: (TASK_COLUMNS.len()..record.len())
                .map(num)
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(rows)
}

/// One row of `controller.csv`: one layer at one controller event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControllerRow {
    /// Global optimizer step (steps completed before the event).
    pub step: u64,
    /// Task index.
    pub task: usize,
    /// Layer index (0 = first weight matrix).
    pub layer: usize,
    /// The layer's lr used at this event's step.
    pub lr: f64,
    /// Adam's step multiplier α_agg = lr/(sqrt(mean v̂)+ε).
    pub alpha_agg: f64,
    /// Sharpness λ (power iteration).
    pub sharpness: f64,
    /// The effective step ρ.
    pub rho: f64,
    /// ‖ḡ‖² of the minibatch mean gradient.
    pub mean_grad_sq: f64,
    /// Unbiased per-sample gradient variance S.
    pub variance: f64,
    /// Unbiased squared-gradient estimate G².
    pub grad_sq: f64,
    /// The SNR_g used by the bound.
    pub snr_g: f64,
    /// Curvature volatility Vol.
    pub vol: f64,
    /// Gradient-noise bound ρ*_g.
    pub rho_g: f64,
    /// Volatility bound ρ*_vol.
    pub rho_vol: f64,
    /// Combined bound ρ̃*.
    pub rho_combined: f64,
    /// cool | warm | hold.
    pub decision: String,
    /// The layer's lr after the decision.
    pub lr_next: f64,
}

/// Appends `rows` as CSV to `out`, writing the header first when `out` is empty.
pub fn append_controller_rows(out: &mut String, rows: &[ControllerRow]) {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(out.is_empty())
        .from_writer(Vec::new());
    for row in rows {
        // Serialising plain numbers and strings into memory cannot fail.
        let _ = writer.serialize(row);
    }
    if out.is_empty() && rows.is_empty() {
        out.push_str(&controller_header());
    }
    if let Ok(bytes) = writer.into_inner() {
        out.push_str(&String::from_utf8_lossy(&bytes));
    }
}

fn controller_header() -> String {
    "step,task,layer,lr,alpha_agg,sharpness,rho,mean_grad_sq,variance,grad_sq,snr_g,vol,rho_g,rho_vol,rho_combined,decision,lr_next\n".to_string()
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
    /// Mean end-of-task training accuracy over the last five finished tasks: the maintained trainability.
    pub mean_train_accuracy_last5: f64,
    /// Mean end-of-task training accuracy over all finished tasks.
    pub mean_train_accuracy: f64,
    /// Mean online accuracy over all finished tasks.
    pub mean_online_accuracy: f64,
    /// End-of-task training accuracy of the last finished task.
    pub final_train_accuracy: f64,
    /// Wall-clock seconds of the run (resumed parts added up).
    pub wall_seconds: f64,
    /// benchmark name.
    pub benchmark: String,
    /// method name.
    pub method: String,
    /// scheduler mode.
    pub scheduler: String,
    /// Initial lr.
    pub lr: f64,
    /// Seed.
    pub seed: u64,
    /// Backend that ran it.
    pub backend: String,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_csv_round_trips() {
        let rows = vec![
            TaskRow {
                task: 0,
                train_accuracy: 0.5,
                online_accuracy: 0.25,
                loss: 1.5,
                steps: 10,
                wall_seconds: 1.25,
                lrs: vec![1e-3, 2e-3],
            },
            TaskRow {
                task: 1,
                train_accuracy: 0.75,
                online_accuracy: 0.5,
                loss: 0.5,
                steps: 10,
                wall_seconds: 2.5,
                lrs: vec![1e-4, 5e-4],
            },
        ];
        let dir = std::env::temp_dir().join(format!("safestep-out-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join(TASKS_FILE);
        write_atomic(&path, tasks_csv(&rows, 2).as_bytes()).unwrap();
        assert_eq!(read_tasks_csv(&path).unwrap(), rows);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn controller_header_matches_serialised_fields() {
        let mut out = String::new();
        append_controller_rows(&mut out, &[]);
        let row = ControllerRow {
            step: 10,
            task: 0,
            layer: 1,
            lr: 1e-3,
            alpha_agg: 0.1,
            sharpness: 3.0,
            rho: 0.3,
            mean_grad_sq: 1.0,
            variance: 2.0,
            grad_sq: 0.5,
            snr_g: 0.25,
            vol: 0.0,
            rho_g: 0.3,
            rho_vol: 1.6,
            rho_combined: 0.3,
            decision: "hold".into(),
            lr_next: 1e-3,
        };
        let mut fresh = String::new();
        append_controller_rows(&mut fresh, std::slice::from_ref(&row));
        assert_eq!(fresh.lines().next(), out.lines().next());
        append_controller_rows(&mut out, &[row]);
        assert_eq!(out, fresh);
    }

    #[test]
    fn mean_last_takes_the_tail() {
        assert_eq!(mean_last(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 5), 4.0);
        assert_eq!(mean_last(&[2.0], 5), 2.0);
        assert_eq!(mean_last(&[], 5), 0.0);
    }
}
