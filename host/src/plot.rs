//! `safestep plot`: accuracy per task (one line per method) and per-layer learning-rate
//! trajectories, as PNG and SVG, drawn with plotters and an embedded DejaVu Sans font (so
//! no system fonts are needed).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::compare::run_folders;
use crate::config::RunConfig;
use crate::methods::Method;
use crate::outputs::{OutputError, Summary, CONFIG_FILE, CONTROLLER_FILE, SUMMARY_FILE};
use crate::runner::{epoch_batches, read_run};

/// Errors drawing plots.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// A folder holds no run.
    #[error("{path} holds no safestep run (no {SUMMARY_FILE}) and no run folders")]
    NoRun {
        /// The folder.
        path: PathBuf,
    },
    /// Reading a run failed.
    #[error(transparent)]
    Output(#[from] OutputError),
    /// A run with neither accuracies nor online squared errors per task.
    #[error("{path} has neither a train accuracy nor an online squared error per task to plot")]
    NoAccuracy {
        /// The run folder.
        path: PathBuf,
    },
    /// Accuracy runs and squared-error runs asked for in one plot.
    #[error("{path} is scored by another metric than the runs before it (accuracy or squared error): plot the MNIST and regression runs separately")]
    MixedMetrics {
        /// The first run folder of the other kind.
        path: PathBuf,
    },
    /// Drawing failed.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The plot file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// One line of a plot, with an optional shaded band (e.g. ± one standard error over seeds).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
    /// Band (x, low, high) drawn translucent under the line; empty for none.
    pub band: Vec<(f64, f64, f64)>,
}

impl Series {
    /// A line without a band.
    pub fn line(label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        Series {
            label: label.into(),
            points,
            band: Vec::new(),
        }
    }

    /// A quantity held from each point until the next one (an lr set at a controller event
    /// applies until the next event): every change becomes a vertical riser at its x. Drawn
    /// this way, a reset from a small lr back to lr0 is a right-angled corner, where a
    /// straight segment into a sharp turn made the bitmap backend draw spikes past the axes.
    pub fn steps(label: impl Into<String>, events: &[(f64, f64)]) -> Self {
        let mut points = Vec::with_capacity(2 * events.len());
        for (i, &(x, y)) in events.iter().enumerate() {
            if i > 0 {
                points.push((x, events[i - 1].1));
            }
            points.push((x, y));
        }
        Series::line(label, points)
    }

    /// The mean over `curves` (each a value per x, all as long as the shortest) with a band
    /// of ± one standard error; x runs from 1.
    pub fn mean_band(label: impl Into<String>, curves: &[Vec<f64>]) -> Self {
        let len = curves.iter().map(Vec::len).min().unwrap_or(0);
        let mut points = Vec::with_capacity(len);
        let mut band = Vec::with_capacity(len);
        for t in 0..len {
            let vals: Vec<f64> = curves.iter().map(|c| c[t]).collect();
            let (m, se) = crate::compare::mean_se(&vals);
            let x = (t + 1) as f64;
            points.push((x, m));
            if curves.len() > 1 {
                band.push((x, m - se, m + se));
            }
        }
        Series {
            label: label.into(),
            points,
            band,
        }
    }
}

/// One chart of a figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Panel {
    /// Its caption.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Its lines.
    pub series: Vec<Series>,
    /// A logarithmic y axis.
    pub log_y: bool,
}

const FONT: &str = "sans-serif";

fn register_embedded_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // DejaVu Sans ships inside the `dejavu` crate; failing to parse it would be a bug of
        // that crate, and plotting then falls back to drawing no text.
        let _ = register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

/// Expands compare folders into their run folders.
pub fn expand_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, PlotError> {
    let mut runs = Vec::new();
    for dir in dirs {
        if dir.join(SUMMARY_FILE).is_file() {
            runs.push(dir.clone());
        } else {
            let inner = run_folders(dir);
            if inner.is_empty() {
                return Err(PlotError::NoRun { path: dir.clone() });
            }
            runs.extend(inner);
        }
    }
    Ok(runs)
}

/// What the per-task plot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskMetric {
    /// End-of-task train accuracy (the MNIST streams).
    Accuracy,
    /// Each task's online squared error (slowly-changing regression, which has no accuracy).
    OnlineLoss,
}

impl TaskMetric {
    /// The file stem, title and y label of its plot.
    fn labels(self) -> (&'static str, &'static str, &'static str) {
        match self {
            TaskMetric::Accuracy => (
                "accuracy",
                "End-of-task training accuracy",
                "train accuracy",
            ),
            TaskMetric::OnlineLoss => (
                "online_loss",
                "Online squared error per task",
                "online squared error",
            ),
        }
    }
}

/// Per-task lines (accuracy, or the online squared error when the runs have no accuracy):
/// runs that differ only by seed are averaged into one line.
///
/// # Errors
/// A run that cannot be read, or runs of both kinds mixed in one plot.
pub fn task_series(runs: &[PathBuf]) -> Result<(TaskMetric, Vec<Series>), PlotError> {
    let mut groups: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    let mut metric = None;
    for dir in runs {
        let (summary, rows) = read_run(dir)?;
        let label = format!("{} / lr {}", configuration_name(dir, &summary), summary.lr);
        let accuracy: Option<Vec<f64>> = rows.iter().map(|r| r.train_accuracy).collect();
        let online_loss: Option<Vec<f64>> = rows.iter().map(|r| r.online_loss).collect();
        let (kind, curve) = match (accuracy, online_loss) {
            (Some(a), _) => (TaskMetric::Accuracy, a),
            (None, Some(l)) => (TaskMetric::OnlineLoss, l),
            (None, None) => return Err(PlotError::NoAccuracy { path: dir.clone() }),
        };
        if *metric.get_or_insert(kind) != kind {
            return Err(PlotError::MixedMetrics { path: dir.clone() });
        }
        groups.entry(label).or_default().push(curve);
    }
    let series = groups
        .into_iter()
        .map(|(label, seeds)| {
            let n = seeds.len();
            let label = if n > 1 {
                format!("{label} ({n} seeds, ± s.e.)")
            } else {
                label
            };
            Series::mean_band(label, &seeds)
        })
        .collect();
    Ok((metric.unwrap_or(TaskMetric::Accuracy), series))
}

/// `METHOD / SCHEDULER [reading]`: what a run's lines are labelled by, before its lr.
fn configuration_name(dir: &Path, summary: &Summary) -> String {
    format!(
        "{} / {}{}",
        summary.method_label(),
        summary.scheduler,
        reading_tag(dir, &summary.scheduler)
    )
}

/// The reading of a scheduled run: its `[scheduler]` and `[statistics]` settings that differ
/// from the defaults, as ` [control=proportional]`, so that runs of two readings at one lr are
/// never averaged into one line. Empty with the scheduler off, at the defaults, or when the
/// run's config.toml cannot be read.
fn reading_tag(dir: &Path, scheduler: &str) -> String {
    if scheduler == "off" {
        return String::new();
    }
    let Ok(cfg) = RunConfig::from_toml_file(&dir.join(CONFIG_FILE)) else {
        return String::new();
    };
    let defaults = RunConfig::default();
    let mut changed = Vec::new();
    for (ours, default) in [
        (
            toml::Value::try_from(cfg.scheduler),
            toml::Value::try_from(defaults.scheduler),
        ),
        (
            toml::Value::try_from(&cfg.statistics),
            toml::Value::try_from(&defaults.statistics),
        ),
    ] {
        if let (Ok(toml::Value::Table(ours)), Ok(toml::Value::Table(default))) = (ours, default) {
            // `mode` is the scheduler column itself (gradient, volatility, combined).
            for (key, value) in ours {
                if key != "mode" && default.get(&key) != Some(&value) {
                    let value = value
                        .as_str()
                        .map_or_else(|| value.to_string(), str::to_string);
                    changed.push(format!("{key}={value}"));
                }
            }
        }
    }
    if changed.is_empty() {
        String::new()
    } else {
        format!(" [{}]", changed.join(", "))
    }
}

/// The columns of a `controller.csv` row the lr plot reads.
#[derive(serde::Deserialize)]
struct LrPoint {
    step: u64,
    layer: usize,
    /// `lr_next` in runs written before the columns were derived from the reported types.
    #[serde(alias = "lr_next")]
    lr_after: f64,
}

/// Per-layer lr trajectories of one run: from controller events when it has them
/// (x = optimizer step); for a `step-decay` run with the scheduler off, its schedule
/// (x = optimizer step); else from the end of each task (x = task).
pub fn lr_series(dir: &Path) -> Result<(Vec<Series>, &'static str), PlotError> {
    let (summary, rows) = read_run(dir)?;
    let name = configuration_name(dir, &summary);
    let mut by_layer: BTreeMap<usize, Vec<(f64, f64)>> = BTreeMap::new();
    if let Ok(mut reader) = csv::Reader::from_path(dir.join(CONTROLLER_FILE)) {
        for rec in reader.deserialize::<LrPoint>().flatten() {
            by_layer
                .entry(rec.layer)
                .or_default()
                .push((rec.step as f64, rec.lr_after));
        }
    }
    if !by_layer.is_empty() {
        let series = by_layer
            .into_iter()
            .map(|(l, events)| Series::steps(format!("{name}: layer {l}"), &events))
            .collect();
        return Ok((series, "optimizer step"));
    }
    if summary.scheduler == "off" {
        if let Some(series) = step_decay_series(dir, &name, rows.len()) {
            return Ok((vec![series], "optimizer step"));
        }
    }
    let layers = rows.first().map_or(0, |r| r.lrs.len());
    let series = (0..layers)
        .map(|l| {
            Series::line(
                format!("{name}: layer {l}"),
                rows.iter()
                    .map(|r| ((r.task + 1) as f64, r.lrs[l]))
                    .collect(),
            )
        })
        .collect();
    Ok((series, "task"))
}

/// The lr a `step-decay` run with the scheduler off applied at every optimizer step of its
/// first `tasks` tasks, as a staircase (x = optimizer step), rebuilt from its `config.toml`:
/// the lr times `decay_factor` per milestone passed, the same for every layer. `None` when
/// the run is of another method or its config cannot be read.
fn step_decay_series(dir: &Path, name: &str, tasks: usize) -> Option<Series> {
    let cfg = RunConfig::from_toml_file(&dir.join(CONFIG_FILE)).ok()?;
    if cfg.method != Method::StepDecay {
        return None;
    }
    let steps = (epoch_batches(cfg.examples, cfg.batch_size).count() * cfg.epochs) as u64;
    let multiplier = |s| cfg.method.lr_multiplier(&cfg.methods, s, steps);
    // The task's constant stretches: [start, end) with one multiplier each.
    let mut stretches: Vec<(u64, u64, f64)> = Vec::new();
    for s in 0..steps {
        match stretches.last_mut() {
            Some(last) if last.2 == multiplier(s) => last.1 = s + 1,
            _ => stretches.push((s, s + 1, multiplier(s))),
        }
    }
    let points = (0..tasks as u64)
        .flat_map(|t| {
            stretches.iter().flat_map(move |&(a, b, m)| {
                let lr = cfg.lr * m;
                [((t * steps + a) as f64, lr), ((t * steps + b) as f64, lr)]
            })
        })
        .collect();
    Some(Series::line(format!("{name}: every layer"), points))
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<(), String> {
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let points = series.iter().flat_map(|s| {
        s.points
            .iter()
            .copied()
            .chain(s.band.iter().flat_map(|&(x, lo, hi)| [(x, lo), (x, hi)]))
    });
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in points {
        if y.is_finite() && (!log_y || y > 0.0) {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 1e-6, 1.0);
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let caption = (FONT, 22).into_font();
    let mut builder = ChartBuilder::on(&root);
    builder
        .caption(title, caption)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    let style = |i: usize| Palette99::pick(i).stroke_width(2);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| tick_label(*y, log_y))
                .y_desc(y_label)
                .label_style((FONT, 14))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in series.iter().enumerate() {
                if !s.band.is_empty() {
                    let upper = s.band.iter().map(|&(x, _, hi)| (x, hi));
                    let lower = s.band.iter().rev().map(|&(x, lo, _)| (x, lo));
                    let outline: Vec<(f64, f64)> = upper
                        .chain(lower)
                        .filter(|&(_, y)| y.is_finite() && (!log_y || y > 0.0))
                        .collect();
                    chart
                        .draw_series(std::iter::once(Polygon::new(
                            outline,
                            Palette99::pick(i).mix(0.2).filled(),
                        )))
                        .map_err(|e| e.to_string())?;
                }
                let pts = s
                    .points
                    .iter()
                    .copied()
                    .filter(|&(_, y)| y.is_finite() && (!log_y || y > 0.0));
                chart
                    .draw_series(LineSeries::new(pts, style(i)))
                    .map_err(|e| e.to_string())?
                    .label(s.label.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], style(i)));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT, 13))
                .position(SeriesLabelPosition::UpperRight)
                .draw()
                .map_err(|e| e.to_string())?;
        }};
    }
    if log_y {
        let (lo, hi) = (y0 * 0.8, y1 * 1.25);
        finish!(builder
            .build_cartesian_2d(x0..x1, (lo..hi).log_scale())
            .map_err(|e| e.to_string())?);
    } else {
        let pad = ((y1 - y0) * 0.05).max(1e-3);
        finish!(builder
            .build_cartesian_2d(x0..x1, (y0 - pad).max(0.0)..(y1 + pad))
            .map_err(|e| e.to_string())?);
    }
    root.present().map_err(|e| e.to_string())
}

/// A y tick's text: two significant digits in scientific notation on a log axis (`3e-5`,
/// `2.5e-4`; the default printed f64 noise such as `3.0000004e-5`), else up to three decimals.
fn tick_label(y: f64, log_y: bool) -> String {
    if log_y {
        let text = format!("{y:.1e}");
        text.replace(".0e", "e")
    } else {
        let text = format!("{y:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn draw_both(
    out: &Path,
    stem: &str,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_y: bool,
) -> Result<Vec<PathBuf>, PlotError> {
    let png = out.join(format!("{stem}.png"));
    let svg = out.join(format!("{stem}.svg"));
    let size = (1000, 620);
    draw(
        BitMapBackend::new(&png, size).into_drawing_area(),
        title,
        x_label,
        y_label,
        series,
        log_y,
    )
    .map_err(|message| PlotError::Draw {
        path: png.clone(),
        message,
    })?;
    draw(
        SVGBackend::new(&svg, size).into_drawing_area(),
        title,
        x_label,
        y_label,
        series,
        log_y,
    )
    .map_err(|message| PlotError::Draw {
        path: svg.clone(),
        message,
    })?;
    Ok(vec![png, svg])
}

/// Draws `panels` in a grid of `columns` as `{stem}.png` and `{stem}.svg` in `out`.
pub fn draw_panels(
    out: &Path,
    stem: &str,
    panels: &[Panel],
    columns: usize,
) -> Result<Vec<PathBuf>, PlotError> {
    register_embedded_font();
    std::fs::create_dir_all(out).map_err(|source| OutputError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let columns = columns.clamp(1, panels.len().max(1));
    let rows = panels.len().div_ceil(columns).max(1);
    let size = (700 * columns as u32, 430 * rows as u32);
    let png = out.join(format!("{stem}.png"));
    let svg = out.join(format!("{stem}.svg"));
    fn grid<DB: DrawingBackend>(
        root: DrawingArea<DB, Shift>,
        panels: &[Panel],
        rows: usize,
        columns: usize,
    ) -> Result<(), String> {
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        for (area, p) in root.split_evenly((rows, columns)).into_iter().zip(panels) {
            draw(area, &p.title, &p.x_label, &p.y_label, &p.series, p.log_y)?;
        }
        root.present().map_err(|e| e.to_string())
    }
    grid(
        BitMapBackend::new(&png, size).into_drawing_area(),
        panels,
        rows,
        columns,
    )
    .map_err(|message| PlotError::Draw {
        path: png.clone(),
        message,
    })?;
    grid(
        SVGBackend::new(&svg, size).into_drawing_area(),
        panels,
        rows,
        columns,
    )
    .map_err(|message| PlotError::Draw {
        path: svg.clone(),
        message,
    })?;
    Ok(vec![png, svg])
}

/// Draws `accuracy.{png,svg}` (`online_loss.{png,svg}` for slowly-changing regression) for all
/// runs and `lr_<run>.{png,svg}` for each run into
/// `out`; returns the files written.
pub fn plot(dirs: &[PathBuf], out: &Path) -> Result<Vec<PathBuf>, PlotError> {
    register_embedded_font();
    let runs = expand_dirs(dirs)?;
    std::fs::create_dir_all(out).map_err(|source| OutputError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let (metric, series) = task_series(&runs)?;
    let (stem, title, y_label) = metric.labels();
    let mut written = draw_both(out, stem, title, "task", y_label, &series, false)?;
    for dir in &runs {
        let (series, x_label) = lr_series(dir)?;
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "run".into());
        let stem = if runs.len() == 1 {
            "lr".to_string()
        } else {
            format!("lr_{name}")
        };
        written.extend(draw_both(
            out,
            &stem,
            &format!("Per-layer learning rate: {name}"),
            x_label,
            "learning rate",
            &series,
            true,
        )?);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_folder(tag: &str, method: Method) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("safestep-plot-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let cfg = RunConfig {
            method,
            epochs: 2,
            examples: 8,
            batch_size: 4,
            lr: 1e-2,
            ..RunConfig::default()
        };
        std::fs::write(dir.join(CONFIG_FILE), cfg.to_toml()).expect("config.toml");
        dir
    }

    #[test]
    fn a_step_decay_run_plots_its_schedule_per_optimizer_step() {
        // 8 examples in batches of 4 for 2 epochs: 4 steps per task. The default milestones
        // (half and three quarters of a task, factor 0.1) decay at steps 2 and 3 of each.
        let dir = run_folder("step-decay", Method::StepDecay);
        let series = step_decay_series(&dir, "step-decay / off", 2).expect("a schedule");
        let expected = [
            (0.0, 1e-2),
            (2.0, 1e-2),
            (2.0, 1e-3),
            (3.0, 1e-3),
            (3.0, 1e-4),
            (4.0, 1e-4),
            (4.0, 1e-2),
            (6.0, 1e-2),
            (6.0, 1e-3),
            (7.0, 1e-3),
            (7.0, 1e-4),
            (8.0, 1e-4),
        ];
        assert_eq!(series.points.len(), expected.len());
        for (&(x, y), &(ex, ey)) in series.points.iter().zip(&expected) {
            assert_eq!(x, ex);
            assert!((y - ey).abs() < 1e-15, "lr {y} at step {x}, expected {ey}");
        }
        assert!(step_decay_series(&run_folder("adam", Method::Adam), "adam / off", 2).is_none());
    }

    #[test]
    fn controller_lrs_are_held_until_the_next_event() {
        let s = Series::steps("l", &[(0.0, 3.0), (10.0, 2.0), (20.0, 2.0), (30.0, 5.0)]);
        let expected = [
            (0.0, 3.0),
            (10.0, 3.0),
            (10.0, 2.0),
            (20.0, 2.0),
            (20.0, 2.0),
            (30.0, 2.0),
            (30.0, 5.0),
        ];
        assert_eq!(s.points, expected);
        assert!(Series::steps("empty", &[]).points.is_empty());
    }

    #[test]
    fn a_scheduled_runs_label_names_its_reading() {
        let dir = run_folder("reading", Method::Adam);
        assert_eq!(reading_tag(&dir, "combined"), "");
        let mut cfg = RunConfig::from_toml_file(&dir.join(CONFIG_FILE)).expect("config");
        cfg.scheduler.mode = "combined".parse().expect("a mode");
        std::fs::write(dir.join(CONFIG_FILE), cfg.to_toml()).expect("config.toml");
        assert_eq!(reading_tag(&dir, "combined"), "");
        cfg.scheduler.control = "proportional".parse().expect("a control law");
        std::fs::write(dir.join(CONFIG_FILE), cfg.to_toml()).expect("config.toml");
        assert_eq!(reading_tag(&dir, "combined"), " [control=proportional]");
        assert_eq!(reading_tag(&dir, "off"), "");
        assert_eq!(reading_tag(&dir.join("missing"), "combined"), "");
    }

    #[test]
    fn tick_labels_are_short() {
        assert_eq!(tick_label(3.0000004e-5, true), "3e-5");
        assert_eq!(tick_label(2.5e-4, true), "2.5e-4");
        assert_eq!(tick_label(0.25, false), "0.25");
        assert_eq!(tick_label(1.0, false), "1");
        assert_eq!(tick_label(0.0, false), "0");
    }
}
