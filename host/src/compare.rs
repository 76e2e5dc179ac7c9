//! `safestep compare`: every combination of methods × schedulers × lrs × seeds, tabulated.
//!
//! Each combination runs into its own subfolder (a finished one is reused, so an
//! interrupted comparison continues where it stopped). The table reports, per method,
//! scheduler and lr, the maintained trainability (mean end-of-task training accuracy over
//! the last five tasks) and the mean over all tasks, as mean ± standard error over seeds,
//! and marks the best lr of each method and scheduler: a constant lr tuned by this sweep is
//! the fair baseline for any lr schedule.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};

use safestep_core::scheduler::Mode;

use crate::config::{ConfigError, RunConfig};
use crate::methods::Method;
use crate::outputs::{read_summary, write_atomic, OutputError, Summary};
use crate::runner::{run, RunError, RunOptions};

/// One combination to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Combination {
    /// Method.
    pub method: Method,
    /// Scheduler mode.
    pub scheduler: Mode,
    /// Initial learning rate.
    pub lr: f64,
    /// Seed.
    pub seed: u64,
}

/// What a comparison tabulates: accuracies for the MNIST streams, squared errors for
/// slowly-changing regression (which has no accuracy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tabulated {
    /// End-of-task train accuracy over the last five and all tasks, and online accuracy;
    /// the best lr has the highest last-five accuracy.
    Accuracy,
    /// The online squared error over the stream and on the final task, and the end-of-task
    /// squared error over all tasks; the best lr has the lowest stream online error.
    SquaredError,
}

impl Tabulated {
    /// What a run with this summary is scored by.
    pub fn of(summary: &Summary) -> Self {
        if summary.mean_train_accuracy.is_none() && summary.mean_online_loss.is_some() {
            Tabulated::SquaredError
        } else {
            Tabulated::Accuracy
        }
    }

    /// The three metrics of a summary, in the table's column order (NaN where missing).
    fn metrics(self, s: &Summary) -> [f64; 3] {
        let v = |x: Option<f64>| x.unwrap_or(f64::NAN);
        match self {
            Tabulated::Accuracy => [
                v(s.mean_train_accuracy_last5),
                v(s.mean_train_accuracy),
                v(s.mean_online_accuracy),
            ],
            Tabulated::SquaredError => [
                v(s.mean_online_loss),
                v(s.final_online_loss),
                v(s.mean_loss),
            ],
        }
    }

    /// The columns of the terminal and Markdown tables.
    fn header(self) -> [&'static str; 9] {
        let [a, b, c] = match self {
            Tabulated::Accuracy => ["acc last 5 tasks", "acc all tasks", "acc online"],
            Tabulated::SquaredError => [
                "online sq. error (stream)",
                "online sq. error (final task)",
                "sq. error all tasks",
            ],
        };
        [
            "method",
            "scheduler",
            "lr",
            "seeds",
            a,
            b,
            c,
            "s/run",
            "best lr",
        ]
    }

    /// The metric columns of `compare.csv` (each followed by its `_se`).
    fn csv_names(self) -> [&'static str; 3] {
        match self {
            Tabulated::Accuracy => ["last5", "all", "online"],
            Tabulated::SquaredError => ["online_loss", "final_online_loss", "loss"],
        }
    }

    /// Whether `a` is a better first metric than `b`.
    fn better(self, a: f64, b: f64) -> bool {
        match self {
            Tabulated::Accuracy => a > b,
            Tabulated::SquaredError => a < b,
        }
    }

    /// The line above the Markdown table.
    fn caption(self) -> &'static str {
        match self {
            Tabulated::Accuracy => "Maintained trainability: end-of-task training accuracy, mean ± standard error over seeds.",
            Tabulated::SquaredError => "Squared error ½‖ŷ − y‖² (online: each example before the step that trains on it), mean ± standard error over seeds.",
        }
    }
}

/// A metric aggregated over seeds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stat {
    /// Mean over seeds.
    pub mean: f64,
    /// Its standard error over seeds.
    pub se: f64,
}

/// One row of the comparison: a (method, scheduler, lr) cell aggregated over seeds.
#[derive(Debug, Clone, PartialEq)]
pub struct CompareRow {
    /// Method.
    pub method: Method,
    /// Scheduler mode.
    pub scheduler: Mode,
    /// Initial lr.
    pub lr: f64,
    /// Seeds aggregated.
    pub seeds: usize,
    /// What the metrics are.
    pub tabulated: Tabulated,
    /// The three metrics over seeds, in [`Tabulated`]'s order: for accuracy, the mean train
    /// accuracy over the last five tasks, over all tasks, and the mean online accuracy.
    pub metrics: [Stat; 3],
    /// Mean wall seconds per run.
    pub wall_seconds: f64,
    /// Whether this lr is the best (by the first metric) for its method and scheduler.
    pub best_lr: bool,
}

/// Mean and standard error of the mean (0 for fewer than two values).
///
/// ```
/// use safestep_host::compare::mean_se;
/// let (m, se) = mean_se(&[1.0, 2.0, 3.0]);
/// assert_eq!(m, 2.0);
/// assert!((se - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
/// ```
pub fn mean_se(values: &[f64]) -> (f64, f64) {
    let n = values.len();
    if n == 0 {
        return (0.0, 0.0);
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return (mean, 0.0);
    }
    let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    (mean, (var / n as f64).sqrt())
}

/// Most combinations one comparison may plan (a typo like `--seeds 0..1000000` is refused
/// before anything is allocated or run).
pub const MAX_COMBINATIONS: usize = 100_000;

/// One combination with its resolved configuration and run folder.
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedRun {
    /// The combination.
    pub combo: Combination,
    /// Its full configuration (validated).
    pub config: RunConfig,
    /// Its run folder.
    pub dir: PathBuf,
}

/// How [`compare`] runs its combinations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareOptions {
    /// Combinations run at once (each on its own thread; at least 1).
    pub jobs: usize,
    /// Threads of each run's CPU engine (0 is taken as 1; results do not depend on it).
    pub threads: usize,
    /// No per-run lines.
    pub quiet: bool,
    /// Re-run combinations whose folder already holds a finished run.
    pub force: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            jobs: 1,
            threads: 1,
            quiet: false,
            force: false,
        }
    }
}

/// Resolves and validates every combination before any runs, so a bad value fails at once.
///
/// # Errors
/// [`RunError::Config`] for more than [`MAX_COMBINATIONS`] combinations or the first
/// combination whose configuration is invalid.
pub fn plan(
    base: &RunConfig,
    combos: &[Combination],
    out: &Path,
) -> Result<Vec<PlannedRun>, RunError> {
    if combos.len() > MAX_COMBINATIONS {
        return Err(ConfigError::new(
            "combinations",
            combos.len(),
            &format!("at most {MAX_COMBINATIONS} (methods × schedulers × lrs × seeds)"),
        )
        .into());
    }
    combos
        .iter()
        .map(|combo| {
            let mut cfg = base.clone();
            cfg.method = combo.method;
            cfg.scheduler.mode = combo.scheduler;
            cfg.lr = combo.lr;
            cfg.seed = combo.seed;
            cfg.validate()?;
            Ok(PlannedRun {
                combo: combo.clone(),
                dir: out.join(cfg.label()),
                config: cfg,
            })
        })
        .collect()
}

/// The summary of a finished run of exactly `cfg` in `dir`, if there is one.
pub fn finished_run(dir: &Path, cfg: &RunConfig) -> Option<Summary> {
    read_summary(dir).ok().filter(|s| {
        s.finished
            && RunConfig::from_toml_file(&dir.join(crate::outputs::CONFIG_FILE))
                .is_ok_and(|earlier| earlier == *cfg)
    })
}

/// Runs one planned combination (or reuses its finished run) and returns its summary.
fn run_planned(p: &PlannedRun, opts: &CompareOptions, label: &str) -> Result<Summary, RunError> {
    let earlier = if opts.force {
        None
    } else {
        finished_run(&p.dir, &p.config)
    };
    if !opts.quiet {
        let note = if earlier.is_some() {
            " (finished earlier, reused)"
        } else {
            ""
        };
        eprintln!("{label} {}{note}", p.config.label());
    }
    match earlier {
        Some(summary) => Ok(summary),
        None => run(
            &p.config,
            &RunOptions {
                out: p.dir.clone(),
                quiet: opts.quiet || opts.jobs > 1,
                resume: false,
                force: true,
                stop_after: None,
                threads: opts.threads.max(1),
            },
        ),
    }
}

/// A run of a sweep whose training failed (it diverged, or the engine refused a step):
/// a result of that combination, not a fault of the sweep, so the others go on.
#[derive(Debug)]
pub struct FailedRun {
    /// The run's label (method, scheduler, lr, seed).
    pub label: String,
    /// Its folder (holding the last finished task's checkpoint).
    pub dir: PathBuf,
    /// Why it stopped.
    pub error: RunError,
}

/// What [`compare`] ran: the table of the finished runs and the runs whose training failed.
#[derive(Debug)]
pub struct Comparison {
    /// One row per (method, scheduler, lr) over the finished seeds.
    pub rows: Vec<CompareRow>,
    /// Runs that stopped with a training error; their seeds are missing from `rows`.
    pub failed: Vec<FailedRun>,
}

/// Runs every combination (reusing finished runs unless `force`), `jobs` at a time, and
/// aggregates them. The results do not depend on `jobs`: every run is deterministic and
/// writes only its own folder. A run whose training fails (a diverging lr) is listed in
/// [`Comparison::failed`] and the sweep goes on; its seed is missing from the table.
///
/// # Errors
/// The first invalid combination (before anything runs), or the first run that fails for
/// another reason than its training (bad data, a folder in use, a failed write; the runs
/// already started finish first).
pub fn compare(
    base: &RunConfig,
    combos: &[Combination],
    out: &Path,
    opts: &CompareOptions,
) -> Result<Comparison, RunError> {
    let planned = plan(base, combos, out)?;
    let total = planned.len();
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<Summary, RunError>>>> =
        (0..total).map(|_| Mutex::new(None)).collect();
    let worker = || loop {
        if failed.load(Ordering::SeqCst) {
            break;
        }
        let i = next.fetch_add(1, Ordering::SeqCst);
        let Some(p) = planned.get(i) else { break };
        let result = run_planned(p, opts, &format!("[{}/{total}]", i + 1));
        if matches!(result, Err(ref e) if !matches!(e, RunError::Train(_))) {
            failed.store(true, Ordering::SeqCst);
        }
        if let Ok(mut slot) = results[i].lock() {
            *slot = Some(result);
        }
    };
    std::thread::scope(|scope| {
        for _ in 1..opts.jobs.clamp(1, total.max(1)) {
            scope.spawn(worker);
        }
        worker();
    });
    let mut done = Vec::with_capacity(total);
    let mut failed_runs = Vec::new();
    for (p, slot) in planned.iter().zip(results) {
        match slot.into_inner().ok().flatten() {
            Some(Ok(summary)) => done.push((p.combo.clone(), summary)),
            Some(Err(error @ RunError::Train(_))) => failed_runs.push(FailedRun {
                label: p.config.label(),
                dir: p.dir.clone(),
                error,
            }),
            Some(Err(e)) => return Err(e),
            None => {} // not started after a failure elsewhere
        }
    }
    let rows = aggregate(&done);
    write_tables(out, &rows)?;
    write_failed(out, &failed_runs)?;
    Ok(Comparison {
        rows,
        failed: failed_runs,
    })
}

/// Name of the list of a sweep's runs that stopped in training (only there when some did).
pub const FAILED_FILE: &str = "failed.csv";

/// Writes `failed.csv` (`label,dir,error`) beside the tables, or removes a stale one.
fn write_failed(out: &Path, failed: &[FailedRun]) -> Result<(), OutputError> {
    let path = out.join(FAILED_FILE);
    if failed.is_empty() {
        return match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(OutputError::Write { path, source: e })
            }
            _ => Ok(()),
        };
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    let _ = writer.write_record(["label", "dir", "error"]);
    for f in failed {
        let _ = writer.write_record([
            f.label.as_str(),
            &f.dir.display().to_string(),
            &f.error.to_string(),
        ]);
    }
    let bytes = writer.into_inner().unwrap_or_default();
    write_atomic(&path, &bytes)
}

/// Aggregates finished runs into (method, scheduler, lr) rows, in first-seen order.
pub fn aggregate(done: &[(Combination, Summary)]) -> Vec<CompareRow> {
    let mut keys: Vec<(Method, Mode, f64)> = Vec::new();
    for (c, _) in done {
        let key = (c.method, c.scheduler, c.lr);
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    let mut rows: Vec<CompareRow> = keys
        .iter()
        .map(|&(method, scheduler, lr)| {
            let runs: Vec<&Summary> = done
                .iter()
                .filter(|(c, _)| (c.method, c.scheduler, c.lr) == (method, scheduler, lr))
                .map(|(_, s)| s)
                .collect();
            // One comparison has one benchmark, so its runs agree on what is tabulated.
            let tabulated = runs
                .first()
                .map_or(Tabulated::Accuracy, |s| Tabulated::of(s));
            let per_run: Vec<[f64; 3]> = runs.iter().map(|s| tabulated.metrics(s)).collect();
            let metrics = [0, 1, 2].map(|k| {
                let (mean, se) = mean_se(&per_run.iter().map(|m| m[k]).collect::<Vec<_>>());
                Stat { mean, se }
            });
            CompareRow {
                method,
                scheduler,
                lr,
                seeds: runs.len(),
                tabulated,
                metrics,
                wall_seconds: runs.iter().map(|s| s.wall_seconds).sum::<f64>()
                    / runs.len().max(1) as f64,
                best_lr: false,
            }
        })
        .collect();
    // Mark the best lr of each (method, scheduler) group that swept more than one lr.
    for i in 0..rows.len() {
        let (tabulated, method, scheduler) = (rows[i].tabulated, rows[i].method, rows[i].scheduler);
        let group: Vec<f64> = rows
            .iter()
            .filter(|r| r.method == method && r.scheduler == scheduler)
            .map(|r| r.metrics[0].mean)
            .collect();
        let mine = rows[i].metrics[0].mean;
        rows[i].best_lr = group.len() > 1 && !group.iter().any(|&g| tabulated.better(g, mine));
    }
    rows
}

fn cells(r: &CompareRow) -> [String; 9] {
    let [a, b, c] = r.metrics.map(|m| format!("{:.4} ± {:.4}", m.mean, m.se));
    [
        r.method.name().to_string(),
        r.scheduler.to_string(),
        format!("{}", r.lr),
        r.seeds.to_string(),
        a,
        b,
        c,
        format!("{:.1}", r.wall_seconds),
        if r.best_lr { "*".into() } else { String::new() },
    ]
}

/// What a set of rows tabulates (accuracy for an empty set).
fn tabulated(rows: &[CompareRow]) -> Tabulated {
    rows.first().map_or(Tabulated::Accuracy, |r| r.tabulated)
}

/// The comparison as a terminal table.
pub fn render_table(rows: &[CompareRow]) -> String {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(tabulated(rows).header());
    for r in rows {
        table.add_row(cells(r));
    }
    table.to_string()
}

/// The comparison as a Markdown table.
pub fn render_markdown(rows: &[CompareRow]) -> String {
    let kind = tabulated(rows);
    let mut md = format!("{}\n\n", kind.caption());
    let header = kind.header();
    let _ = writeln!(md, "| {} |", header.join(" | "));
    let _ = writeln!(md, "|{}", "---|".repeat(header.len()));
    for r in rows {
        let _ = writeln!(md, "| {} |", cells(r).join(" | "));
    }
    md
}

/// The comparison as CSV (one row per method, scheduler and lr): for accuracy,
/// `method,scheduler,lr,seeds,last5_mean,last5_se,all_mean,all_se,online_mean,online_se,wall_seconds,best_lr`;
/// for squared error the metric columns are `online_loss_*`, `final_online_loss_*`, `loss_*`.
pub fn render_csv(rows: &[CompareRow]) -> String {
    let mut csv = String::from("method,scheduler,lr,seeds,");
    for name in tabulated(rows).csv_names() {
        let _ = write!(csv, "{name}_mean,{name}_se,");
    }
    csv.push_str("wall_seconds,best_lr\n");
    for r in rows {
        let _ = write!(
            csv,
            "{},{},{},{},",
            r.method.name(),
            r.scheduler,
            r.lr,
            r.seeds
        );
        for m in r.metrics {
            let _ = write!(csv, "{},{},", m.mean, m.se);
        }
        let _ = writeln!(csv, "{:.3},{}", r.wall_seconds, r.best_lr);
    }
    csv
}

/// Writes `compare.csv` and `compare.md` into `out`.
pub fn write_tables(out: &Path, rows: &[CompareRow]) -> Result<(), OutputError> {
    write_atomic(&out.join("compare.csv"), render_csv(rows).as_bytes())?;
    write_atomic(&out.join("compare.md"), render_markdown(rows).as_bytes())
}

/// The run folders of a compare folder (those with a summary), sorted.
pub fn run_folders(dir: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join(crate::outputs::SUMMARY_FILE).is_file())
        .collect();
    dirs.sort();
    dirs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(last5: f64, all: f64) -> Summary {
        Summary {
            tasks: 5,
            tasks_planned: 5,
            finished: true,
            mean_train_accuracy_last5: Some(last5),
            mean_train_accuracy: Some(all),
            mean_online_accuracy: Some(0.0),
            final_train_accuracy: Some(last5),
            final_online_accuracy: Some(0.0),
            auc_train_accuracy: Some(all),
            mean_online_loss: None,
            final_online_loss: None,
            final_loss: None,
            mean_loss: None,
            wall_seconds: 1.0,
            benchmark: String::new(),
            method: String::new(),
            norm: None,
            scheduler: String::new(),
            lr: 0.0,
            seed: 0,
            backend: "cpu".into(),
            indicator_seconds: 0.0,
        }
    }

    fn adam_off(lr: f64, seed: u64) -> Combination {
        Combination {
            method: Method::Adam,
            scheduler: Mode::Off,
            lr,
            seed,
        }
    }

    #[test]
    fn aggregates_over_seeds_and_marks_the_best_lr() {
        let done = vec![
            (adam_off(1e-3, 0), summary(0.5, 0.6)),
            (adam_off(1e-3, 1), summary(0.7, 0.8)),
            (adam_off(1e-4, 0), summary(0.9, 0.9)),
        ];
        let rows = aggregate(&done);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].seeds, 2);
        assert!((rows[0].metrics[0].mean - 0.6).abs() < 1e-12);
        assert!((rows[0].metrics[0].se - 0.1).abs() < 1e-12);
        assert!(!rows[0].best_lr && rows[1].best_lr);
        let md = render_markdown(&rows);
        assert!(
            md.contains("| adam | off | 0.001 | 2 | 0.6000 ± 0.1000 | 0.7000 ± 0.1000 |"),
            "{md}"
        );
    }

    #[test]
    fn squared_error_runs_are_tabulated_by_their_losses_lowest_best() {
        let loss = |online: f64, final_online: f64, end: f64| Summary {
            mean_train_accuracy_last5: None,
            mean_train_accuracy: None,
            mean_online_accuracy: None,
            final_train_accuracy: None,
            final_online_accuracy: None,
            auc_train_accuracy: None,
            mean_online_loss: Some(online),
            final_online_loss: Some(final_online),
            mean_loss: Some(end),
            ..summary(0.0, 0.0)
        };
        let done = vec![
            (adam_off(1e-2, 0), loss(0.3, 0.2, 0.1)),
            (adam_off(1e-2, 1), loss(0.5, 0.4, 0.3)),
            (adam_off(1e-3, 0), loss(0.9, 0.8, 0.7)),
        ];
        let rows = aggregate(&done);
        assert_eq!(rows[0].tabulated, Tabulated::SquaredError);
        assert!((rows[0].metrics[0].mean - 0.4).abs() < 1e-12);
        assert!((rows[0].metrics[2].mean - 0.2).abs() < 1e-12);
        assert!(
            rows[0].best_lr && !rows[1].best_lr,
            "the lower error is best"
        );
        let csv = render_csv(&rows);
        assert!(csv.starts_with(
            "method,scheduler,lr,seeds,online_loss_mean,online_loss_se,final_online_loss_mean,final_online_loss_se,loss_mean,loss_se,wall_seconds,best_lr\n"
        ), "{csv}");
        assert!(render_markdown(&rows).contains("online sq. error (stream)"));
    }

    #[test]
    fn the_accuracy_csv_keeps_its_columns() {
        let csv = render_csv(&aggregate(&[(adam_off(1e-3, 0), summary(0.5, 0.6))]));
        assert!(csv.starts_with(
            "method,scheduler,lr,seeds,last5_mean,last5_se,all_mean,all_se,online_mean,online_se,wall_seconds,best_lr\nadam,off,0.001,1,0.5,0,0.6,0,0,0,1.000,false\n"
        ), "{csv}");
    }
}
