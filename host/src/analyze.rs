//! `safestep analyze`: which recorded signal anticipates loss of trainability?
//!
//! Every signal of `indicators.csv` (each column, per layer, as its value at task `t` and
//! as its change over the last `m` tasks) is scored the same way against the runs'
//! end-of-task accuracies:
//!
//! - **drop event**: the accuracy at task `t+1` falls by more than `δ` below that of task
//!   `t` (`--drop-from previous`, the default) or below the best so far (`max`);
//! - **AUROC**: how well the signal at task `t` separates the tasks followed by a drop from
//!   the others, pooled over runs, with a 95 % bootstrap interval over runs; the score is
//!   `max(AUROC, 1 − AUROC)` and the direction says whether high (+) or low (−) values warn;
//! - **Spearman**: the rank correlation between the signal's change over the last `m` tasks
//!   and the next change of accuracy;
//! - **lead**: at the threshold that best separates (Youden's J), for how many consecutive
//!   tasks before each detected drop the signal was already past it;
//! - **chance**: the same score with each run's task order shuffled (the mean over
//!   shuffles): what a signal unrelated to time would score.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::config::ConfigError;
use crate::outputs::{write_atomic, OutputError, INDICATORS_FILE};
use crate::plot::{draw_panels, expand_dirs, Panel, Series};
use crate::runner::{read_run, RunError};

/// How a drop is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum DropFrom {
    /// Below the previous task's accuracy.
    #[default]
    Previous,
    /// Below the best accuracy so far.
    Max,
}

/// What `analyze` computes.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalyzeOptions {
    /// A drop is a fall of more than this (accuracy, 0–1).
    pub delta: f64,
    /// Measured from the previous task or from the running maximum.
    pub drop_from: DropFrom,
    /// Tasks over which a signal's change is taken.
    pub window: usize,
    /// Bootstrap resamples of runs for the interval.
    pub bootstrap: usize,
    /// Shuffles of the task order for the chance line.
    pub shuffles: usize,
}

impl Default for AnalyzeOptions {
    fn default() -> Self {
        AnalyzeOptions {
            delta: 0.05,
            drop_from: DropFrom::Previous,
            window: 1,
            bootstrap: 500,
            shuffles: 100,
        }
    }
}

/// One run as the analysis sees it.
#[derive(Debug, Clone)]
struct RunSignals {
    /// `method / scheduler / lr` (runs that differ only by seed share it).
    group: String,
    /// End-of-task training accuracy per task.
    accuracy: Vec<f64>,
    /// Signal name → value per task (`NaN` where not recorded).
    signals: BTreeMap<String, Vec<f64>>,
}

/// One signal's scores.
#[derive(Debug, Clone, PartialEq)]
pub struct SignalScore {
    /// `column@layer`, or `Δcolumn@layer` for its change over the window.
    pub signal: String,
    /// Tasks followed by a drop, and not.
    pub drops: usize,
    /// Tasks not followed by a drop.
    pub others: usize,
    /// Pooled AUROC (high values predicting a drop).
    pub auroc: f64,
    /// 95 % bootstrap interval of the AUROC (resampling runs).
    pub ci: (f64, f64),
    /// `max(AUROC, 1 − AUROC)`.
    pub score: f64,
    /// `+1` when high values warn, `−1` when low values do.
    pub direction: i8,
    /// Spearman correlation of the signal's change with the next accuracy change.
    pub spearman: f64,
    /// Mean number of consecutive tasks the signal was past its threshold before a
    /// detected drop.
    pub lead: f64,
    /// Fraction of drops at which the signal was past its threshold.
    pub detected: f64,
    /// The score with the task order shuffled (mean over shuffles).
    pub chance: f64,
}

fn bad_input(field: &str, value: impl std::fmt::Display, allowed: &str) -> RunError {
    RunError::Config(ConfigError::new(field, value, allowed))
}

/// Reads the runs (run folders, or compare folders holding them).
fn load(dirs: &[PathBuf]) -> Result<Vec<RunSignals>, RunError> {
    let runs = expand_dirs(dirs).map_err(|e| bad_input("RUN_DIR", e, "run or compare folders"))?;
    let mut out = Vec::new();
    for dir in runs {
        let (summary, rows) = read_run(&dir)?;
        let path = dir.join(INDICATORS_FILE);
        let mut reader = csv::Reader::from_path(&path).map_err(|_| {
            bad_input(
                "RUN_DIR",
                dir.display(),
                "a run recorded with --diagnostics (it has no indicators.csv)",
            )
        })?;
        let header = reader
            .headers()
            .map_err(|e| bad_input("indicators.csv", path.display(), &e.to_string()))?
            .clone();
        let tasks = rows.len();
        let mut signals: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for record in reader.records() {
            let record =
                record.map_err(|e| bad_input("indicators.csv", path.display(), &e.to_string()))?;
            let field = |name: &str| -> Option<&str> {
                header
                    .iter()
                    .position(|h| h == name)
                    .and_then(|i| record.get(i))
            };
            let (Some(task), Some(layer)) = (
                field("task").and_then(|t| t.parse::<usize>().ok()),
                field("layer"),
            ) else {
                return Err(bad_input(
                    "indicators.csv",
                    path.display(),
                    "task and layer columns",
                ));
            };
            if task >= tasks {
                continue;
            }
            for (name, value) in header.iter().zip(record.iter()) {
                if matches!(name, "task" | "layer" | "examples") || value.is_empty() {
                    continue;
                }
                if let Ok(v) = value.parse::<f64>() {
                    signals
                        .entry(format!("{name}@{layer}"))
                        .or_insert_with(|| vec![f64::NAN; tasks])[task] = v;
                }
            }
        }
        out.push(RunSignals {
            group: format!(
                "{} / {} / lr {}",
                summary.method, summary.scheduler, summary.lr
            ),
            accuracy: rows
                .iter()
                .map(|r| r.train_accuracy)
                .collect::<Option<Vec<f64>>>()
                .ok_or_else(|| {
                    bad_input(
                        "RUN_DIR",
                        dir.display(),
                        "a run with accuracies (the diagnosis's drops are accuracy drops; slowly-changing-regression has none)",
                    )
                })?,
            signals,
        });
    }
    if out.is_empty() {
        return Err(bad_input("RUN_DIR", "(none)", "one or more run folders"));
    }
    let tasks = out[0].accuracy.len();
    if let Some(r) = out.iter().find(|r| r.accuracy.len() != tasks) {
        return Err(bad_input(
            "RUN_DIR",
            format!(
                "{} tasks in one run, {} in another",
                tasks,
                r.accuracy.len()
            ),
            "runs with the same number of tasks",
        ));
    }
    if tasks < 3 {
        return Err(bad_input(
            "RUN_DIR",
            format!("{tasks} tasks"),
            "runs of at least 3 tasks",
        ));
    }
    Ok(out)
}

/// Whether task `t + 1` is a drop, for `t` in `0..T−1`.
fn drops(accuracy: &[f64], opts: &AnalyzeOptions) -> Vec<bool> {
    let mut best = f64::NEG_INFINITY;
    (0..accuracy.len() - 1)
        .map(|t| {
            best = best.max(accuracy[t]);
            let from = match opts.drop_from {
                DropFrom::Previous => accuracy[t],
                DropFrom::Max => best,
            };
            accuracy[t + 1] < from - opts.delta
        })
        .collect()
}

/// AUROC of `scores` for `labels` (ties count half); `NaN` without both classes.
pub fn auroc(pairs: &[(f64, bool)]) -> f64 {
    let mut v: Vec<(f64, bool)> = pairs
        .iter()
        .copied()
        .filter(|(s, _)| s.is_finite())
        .collect();
    let pos = v.iter().filter(|(_, y)| *y).count();
    let neg = v.len() - pos;
    if pos == 0 || neg == 0 {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Mid-ranks over ties.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1].0 == v[i].0 {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        rank_sum += mid * v[i..=j].iter().filter(|(_, y)| *y).count() as f64;
        i = j + 1;
    }
    (rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64
}

/// Spearman's rank correlation (`NaN` for fewer than 3 pairs or a constant side).
pub fn spearman(pairs: &[(f64, f64)]) -> f64 {
    let v: Vec<(f64, f64)> = pairs
        .iter()
        .copied()
        .filter(|(a, b)| a.is_finite() && b.is_finite())
        .collect();
    if v.len() < 3 {
        return f64::NAN;
    }
    let ranks = |xs: Vec<f64>| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..xs.len()).collect();
        idx.sort_by(|&a, &b| xs[a].total_cmp(&xs[b]));
        let mut r = vec![0.0; xs.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && xs[idx[j + 1]] == xs[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    };
    let a = ranks(v.iter().map(|p| p.0).collect());
    let b = ranks(v.iter().map(|p| p.1).collect());
    let n = a.len() as f64;
    let (ma, mb) = (a.iter().sum::<f64>() / n, b.iter().sum::<f64>() / n);
    let cov: f64 = a.iter().zip(&b).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let va: f64 = a.iter().map(|x| (x - ma).powi(2)).sum();
    let vb: f64 = b.iter().map(|y| (y - mb).powi(2)).sum();
    if va == 0.0 || vb == 0.0 {
        f64::NAN
    } else {
        cov / (va * vb).sqrt()
    }
}

/// The signal's value per task, or its change over `window` tasks.
fn series(values: &[f64], change: bool, window: usize) -> Vec<f64> {
    if !change {
        return values.to_vec();
    }
    (0..values.len())
        .map(|t| {
            if t >= window {
                values[t] - values[t - window]
            } else {
                f64::NAN
            }
        })
        .collect()
}

/// (signal at t, drop at t+1) of one run.
fn pairs_of(values: &[f64], dropped: &[bool]) -> Vec<(f64, bool)> {
    dropped
        .iter()
        .enumerate()
        .map(|(t, &y)| (values[t], y))
        .collect()
}

/// Scores every signal of `runs`.
fn score_all(runs: &[RunSignals], opts: &AnalyzeOptions) -> Vec<SignalScore> {
    let names: Vec<String> = {
        let mut n: Vec<String> = runs
            .iter()
            .flat_map(|r| r.signals.keys().cloned())
            .collect();
        n.sort();
        n.dedup();
        n
    };
    let dropped: Vec<Vec<bool>> = runs.iter().map(|r| drops(&r.accuracy, opts)).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(0x5afe_57e9_a9a1_7515);
    let mut out = Vec::new();
    for name in &names {
        for change in [false, true] {
            let per_run: Vec<Vec<f64>> = runs
                .iter()
                .map(|r| {
                    let values = r
                        .signals
                        .get(name)
                        .cloned()
                        .unwrap_or_else(|| vec![f64::NAN; r.accuracy.len()]);
                    series(&values, change, opts.window)
                })
                .collect();
            let pooled: Vec<(f64, bool)> = per_run
                .iter()
                .zip(&dropped)
                .flat_map(|(v, d)| pairs_of(v, d))
                .collect();
            let auc = auroc(&pooled);
            if !auc.is_finite() {
                continue;
            }
            let score = auc.max(1.0 - auc);
            let direction: i8 = if auc >= 0.5 { 1 } else { -1 };
            let mut boot: Vec<f64> = (0..opts.bootstrap)
                .map(|_| {
                    let sample: Vec<(f64, bool)> = (0..runs.len())
                        .flat_map(|_| {
                            let k = rng.random_range(0..runs.len());
                            pairs_of(&per_run[k], &dropped[k])
                        })
                        .collect();
                    auroc(&sample)
                })
                .filter(|a| a.is_finite())
                .collect();
            boot.sort_by(f64::total_cmp);
            let pct = |q: f64| -> f64 {
                if boot.is_empty() {
                    f64::NAN
                } else {
                    boot[((boot.len() - 1) as f64 * q).round() as usize]
                }
            };
            let chance = (0..opts.shuffles)
                .map(|_| {
                    let shuffled: Vec<(f64, bool)> = per_run
                        .iter()
                        .zip(&dropped)
                        .flat_map(|(v, d)| {
                            let mut v = v[..d.len()].to_vec();
                            v.shuffle(&mut rng);
                            pairs_of(&v, d)
                        })
                        .collect();
                    let a = auroc(&shuffled);
                    a.max(1.0 - a)
                })
                .filter(|a| a.is_finite())
                .sum::<f64>()
                / opts.shuffles.max(1) as f64;
            // Spearman: the signal's change against the next accuracy change.
            let change_pairs: Vec<(f64, f64)> = per_run
                .iter()
                .zip(runs)
                .flat_map(|(v, r)| {
                    let delta = series(v, !change, opts.window);
                    let d = if change { v.clone() } else { delta };
                    (0..r.accuracy.len() - 1)
                        .map(|t| (d[t], r.accuracy[t + 1] - r.accuracy[t]))
                        .collect::<Vec<_>>()
                })
                .collect();
            let (lead, detected) = lead_time(&per_run, &dropped, &pooled, direction);
            out.push(SignalScore {
                signal: if change {
                    format!("Δ{name}")
                } else {
                    name.clone()
                },
                drops: pooled.iter().filter(|(s, y)| *y && s.is_finite()).count(),
                others: pooled.iter().filter(|(s, y)| !*y && s.is_finite()).count(),
                auroc: auc,
                ci: (pct(0.025), pct(0.975)),
                score,
                direction,
                spearman: spearman(&change_pairs),
                lead,
                detected,
                chance,
            });
        }
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.signal.cmp(&b.signal)));
    out
}

/// Youden-optimal threshold of the oriented signal; the mean run of tasks past it before
/// each drop it detects, and the fraction of drops it detects.
fn lead_time(
    per_run: &[Vec<f64>],
    dropped: &[Vec<bool>],
    pooled: &[(f64, bool)],
    direction: i8,
) -> (f64, f64) {
    let d = f64::from(direction);
    let mut candidates: Vec<f64> = pooled
        .iter()
        .map(|p| d * p.0)
        .filter(|x| x.is_finite())
        .collect();
    candidates.sort_by(f64::total_cmp);
    candidates.dedup();
    let (pos, neg) = (
        pooled.iter().filter(|p| p.1 && p.0.is_finite()).count() as f64,
        pooled.iter().filter(|p| !p.1 && p.0.is_finite()).count() as f64,
    );
    let mut best = (f64::NEG_INFINITY, f64::INFINITY);
    for &c in &candidates {
        let tp = pooled.iter().filter(|p| p.1 && d * p.0 >= c).count() as f64;
        let fp = pooled.iter().filter(|p| !p.1 && d * p.0 >= c).count() as f64;
        let j = tp / pos.max(1.0) - fp / neg.max(1.0);
        if j > best.0 {
            best = (j, c);
        }
    }
    let threshold = best.1;
    let (mut leads, mut hits, mut total) = (0.0, 0.0, 0.0);
    for (v, drop) in per_run.iter().zip(dropped) {
        for (t, &y) in drop.iter().enumerate() {
            if !y {
                continue;
            }
            total += 1.0;
            if d * v[t] >= threshold {
                hits += 1.0;
                let mut run = 0;
                while run <= t && d * v[t - run] >= threshold {
                    run += 1;
                }
                leads += run as f64;
            }
        }
    }
    (
        if hits > 0.0 { leads / hits } else { 0.0 },
        if total > 0.0 { hits / total } else { 0.0 },
    )
}

fn markdown(scores: &[SignalScore], runs: usize, opts: &AnalyzeOptions) -> String {
    let mut md = format!(
        "Which signal anticipates an accuracy drop at the next task? {runs} runs; a drop is a \
         fall of more than {} from the {}; Δ = change over the last {} task(s). Sorted by \
         score = max(AUROC, 1 − AUROC); chance = the same with each run's task order shuffled.\n\n",
        opts.delta,
        match opts.drop_from {
            DropFrom::Previous => "previous task",
            DropFrom::Max => "best task so far",
        },
        opts.window
    );
    md.push_str("| signal | drops / others | AUROC [95 % CI] | score | dir | chance | Spearman | lead (tasks) | detected |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for s in scores {
        let _ = writeln!(
            md,
            "| {} | {} / {} | {:.3} [{:.3}, {:.3}] | {:.3} | {} | {:.3} | {:.3} | {:.2} | {:.2} |",
            s.signal,
            s.drops,
            s.others,
            s.auroc,
            s.ci.0,
            s.ci.1,
            s.score,
            if s.direction > 0 { "+" } else { "−" },
            s.chance,
            s.spearman,
            s.lead,
            s.detected
        );
    }
    md
}

fn csv_table(scores: &[SignalScore]) -> String {
    let mut out = String::from(
        "signal,drops,others,auroc,ci_low,ci_high,score,direction,chance,spearman,lead,detected\n",
    );
    for s in scores {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            s.signal,
            s.drops,
            s.others,
            s.auroc,
            s.ci.0,
            s.ci.1,
            s.score,
            s.direction,
            s.chance,
            s.spearman,
            s.lead,
            s.detected
        );
    }
    out
}

/// Curves per task, one per run.
type Curves = Vec<Vec<f64>>;

/// One configuration's curves: its label, the accuracy of each run, and each
/// `column@layer`'s values of each run.
type GroupCurves = (String, Curves, BTreeMap<String, Curves>);

/// The runs grouped by configuration, with their accuracy and `column`'s curves.
fn group_curves(runs: &[RunSignals], column: &str) -> Vec<GroupCurves> {
    let mut groups: BTreeMap<String, (Curves, BTreeMap<String, Curves>)> = BTreeMap::new();
    for r in runs {
        let g = groups.entry(r.group.clone()).or_default();
        g.0.push(r.accuracy.clone());
        for (name, values) in &r.signals {
            if name.split('@').next() == Some(column) {
                g.1.entry(name.clone()).or_default().push(values.clone());
            }
        }
    }
    groups.into_iter().map(|(k, (a, s))| (k, a, s)).collect()
}

/// Figure-1-shaped plots: for each indicator, accuracy and the indicator per task, for the
/// first two configurations side by side; and the bounds against accuracy (Figure 4, top).
fn plots(runs: &[RunSignals], out: &Path) -> Result<Vec<PathBuf>, RunError> {
    let columns: Vec<String> = {
        let mut c: Vec<String> = runs
            .iter()
            .flat_map(|r| {
                r.signals
                    .keys()
                    .filter_map(|k| k.split('@').next().map(str::to_string))
            })
            .collect();
        c.sort();
        c.dedup();
        c
    };
    let mut written = Vec::new();
    let draw_err = |e: crate::plot::PlotError| {
        RunError::Output(OutputError::Invalid {
            path: out.to_path_buf(),
            problem: e.to_string(),
        })
    };
    for column in columns.iter().filter(|c| !c.starts_with("rho")) {
        let mut panels = Vec::new();
        for (group, acc, signals) in group_curves(runs, column).into_iter().take(2) {
            panels.push(Panel {
                title: format!("{group}: accuracy"),
                x_label: "task".into(),
                y_label: "train accuracy".into(),
                series: vec![Series::mean_band("accuracy", &acc)],
                log_y: false,
            });
            panels.push(Panel {
                title: format!("{group}: {column}"),
                x_label: "task".into(),
                y_label: column.clone(),
                series: signals
                    .iter()
                    .map(|(name, curves)| Series::mean_band(name.replace('@', " layer "), curves))
                    .collect(),
                log_y: false,
            });
        }
        written
            .extend(draw_panels(out, &format!("signal_{column}"), &panels, 2).map_err(draw_err)?);
    }
    let mut panels = Vec::new();
    for (group, acc, _) in group_curves(runs, "rho_combined_mean").into_iter().take(2) {
        panels.push(Panel {
            title: format!("{group}: accuracy"),
            x_label: "task".into(),
            y_label: "train accuracy".into(),
            series: vec![Series::mean_band("accuracy", &acc)],
            log_y: false,
        });
        let mut series = Vec::new();
        for bound in [
            "rho_g_mean",
            "rho_vol_mean",
            "rho_combined_mean",
            "rho_mean",
        ] {
            for (g, _, signals) in group_curves(runs, bound) {
                if g == group {
                    for (name, curves) in signals {
                        series.push(Series::mean_band(
                            name.replace("_mean@", " layer "),
                            &curves,
                        ));
                    }
                }
            }
        }
        panels.push(Panel {
            title: format!("{group}: bounds and ρ (task means)"),
            x_label: "task".into(),
            y_label: "ρ and bounds".into(),
            series,
            log_y: true,
        });
    }
    if !panels.is_empty() {
        written.extend(draw_panels(out, "bounds", &panels, 2).map_err(draw_err)?);
    }
    Ok(written)
}

/// Scores every signal of the runs in `dirs` and writes `analysis.csv`, `analysis.md` and
/// the plots into `out`.
///
/// # Errors
/// [`RunError::Config`] (exit status 2) for a folder without `indicators.csv`, runs of
/// different lengths, or fewer than 3 tasks; [`RunError::Output`] when writing fails.
pub fn analyze(
    dirs: &[PathBuf],
    out: &Path,
    opts: &AnalyzeOptions,
) -> Result<(Vec<SignalScore>, Vec<PathBuf>), RunError> {
    if !(opts.delta.is_finite() && opts.delta >= 0.0 && opts.delta < 1.0) {
        return Err(bad_input("delta", opts.delta, "an accuracy drop in [0, 1)"));
    }
    if opts.window == 0 {
        return Err(bad_input("window", 0, "at least 1 task"));
    }
    let runs = load(dirs)?;
    let scores = score_all(&runs, opts);
    std::fs::create_dir_all(out).map_err(|source| OutputError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut written = vec![out.join("analysis.csv"), out.join("analysis.md")];
    write_atomic(&written[0], csv_table(&scores).as_bytes())?;
    write_atomic(&written[1], markdown(&scores, runs.len(), opts).as_bytes())?;
    written.extend(plots(&runs, out)?);
    Ok((scores, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_of_perfect_random_and_reversed_orders() {
        let perfect = [(1.0, false), (2.0, false), (3.0, true), (4.0, true)];
        assert_eq!(auroc(&perfect), 1.0);
        let reversed = [(1.0, true), (2.0, true), (3.0, false), (4.0, false)];
        assert_eq!(auroc(&reversed), 0.0);
        let ties = [(1.0, true), (1.0, false)];
        assert_eq!(auroc(&ties), 0.5);
        assert!(auroc(&[(1.0, true)]).is_nan());
    }

    #[test]
    fn spearman_is_one_for_a_monotone_relation() {
        let pairs: Vec<(f64, f64)> = (0..10).map(|i| (i as f64, (i as f64).powi(3))).collect();
        assert!((spearman(&pairs) - 1.0).abs() < 1e-12);
        let neg: Vec<(f64, f64)> = pairs.iter().map(|&(a, b)| (a, -b)).collect();
        assert!((spearman(&neg) + 1.0).abs() < 1e-12);
    }

    #[test]
    fn drops_from_the_previous_task_or_the_best_so_far() {
        let acc = [0.9, 0.8, 0.75, 0.9, 0.6];
        let opts = AnalyzeOptions {
            delta: 0.06,
            ..AnalyzeOptions::default()
        };
        assert_eq!(drops(&acc, &opts), [true, false, false, true]);
        let max = AnalyzeOptions {
            drop_from: DropFrom::Max,
            ..opts
        };
        assert_eq!(drops(&acc, &max), [true, true, false, true]);
    }

    #[test]
    fn a_signal_that_rises_before_every_drop_scores_high_and_leads() {
        // Accuracy drops after tasks 3 and 7; the signal is high at 2-3 and 6-7.
        let accuracy = vec![0.9, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 0.5, 0.1, 0.1];
        let warning = vec![0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0];
        let noise = vec![0.3, 0.1, 0.4, 0.1, 0.5, 0.9, 0.2, 0.6, 0.5, 0.3];
        let run = |s: &[f64]| RunSignals {
            group: "g".into(),
            accuracy: accuracy.clone(),
            signals: BTreeMap::from([
                ("warn@0".to_string(), s.to_vec()),
                ("noise@0".to_string(), noise.clone()),
            ]),
        };
        let scores = score_all(&[run(&warning), run(&warning)], &AnalyzeOptions::default());
        let warn = scores.iter().find(|s| s.signal == "warn@0").unwrap();
        // High before both drops, and once each without one: (10 + 4·½)/14 of the pairs.
        assert!((warn.score - 12.0 / 14.0).abs() < 1e-12, "{warn:?}");
        assert_eq!(warn.direction, 1);
        assert!((warn.lead - 2.0).abs() < 1e-12, "{warn:?}");
        assert_eq!(warn.detected, 1.0);
        assert!(warn.chance < warn.score);
        assert_eq!(scores[0].signal, "warn@0");
    }
}
