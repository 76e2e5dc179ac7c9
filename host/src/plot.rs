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
use crate::outputs::{OutputError, CONTROLLER_FILE, SUMMARY_FILE};
use crate::runner::read_run;

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
    /// Drawing failed.
    #[error("drawing {path}: {message}")]
    Draw {
        /// The plot file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}

/// One line of a plot.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points (x, y).
    pub points: Vec<(f64, f64)>,
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

/// Accuracy-per-task lines: runs that differ only by seed are averaged into one line.
pub fn accuracy_series(runs: &[PathBuf]) -> Result<Vec<Series>, PlotError> {
    let mut groups: BTreeMap<String, Vec<Vec<f64>>> = BTreeMap::new();
    for dir in runs {
        let (summary, rows) = read_run(dir)?;
        let label = format!(
            "{} / {} / lr {}",
            summary.method, summary.scheduler, summary.lr
        );
        groups
            .entry(label)
            .or_default()
            .push(rows.iter().map(|r| r.train_accuracy).collect());
    }
    Ok(groups
        .into_iter()
        .map(|(label, seeds)| {
            let tasks = seeds.iter().map(Vec::len).min().unwrap_or(0);
            let n = seeds.len();
            let points = (0..tasks)
                .map(|t| {
                    let mean = seeds.iter().map(|s| s[t]).sum::<f64>() / n as f64;
                    ((t + 1) as f64, mean)
                })
                .collect();
            let label = if n > 1 {
                format!("{label} ({n} seeds)")
            } else {
                label
            };
            Series { label, points }
        })
        .collect())
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
/// (x = optimizer step), else from the end of each task (x = task).
pub fn lr_series(dir: &Path) -> Result<(Vec<Series>, &'static str), PlotError> {
    let (summary, rows) = read_run(dir)?;
    let name = format!("{} / {}", summary.method, summary.scheduler);
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
            .map(|(l, points)| Series {
                label: format!("{name}: layer {l}"),
                points,
            })
            .collect();
        return Ok((series, "optimizer step"));
    }
    let layers = rows.first().map_or(0, |r| r.lrs.len());
    let series = (0..layers)
        .map(|l| Series {
            label: format!("{name}: layer {l}"),
            points: rows
                .iter()
                .map(|r| ((r.task + 1) as f64, r.lrs[l]))
                .collect(),
        })
        .collect();
    Ok((series, "task"))
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
    let points = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in points {
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
                .y_desc(y_label)
                .label_style((FONT, 14))
                .draw()
                .map_err(|e| e.to_string())?;
            for (i, s) in series.iter().enumerate() {
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

/// Draws `accuracy.{png,svg}` for all runs and `lr_<run>.{png,svg}` for each run into
/// `out`; returns the files written.
pub fn plot(dirs: &[PathBuf], out: &Path) -> Result<Vec<PathBuf>, PlotError> {
    register_embedded_font();
    let runs = expand_dirs(dirs)?;
    std::fs::create_dir_all(out).map_err(|source| OutputError::Write {
        path: out.to_path_buf(),
        source,
    })?;
    let mut written = draw_both(
        out,
        "accuracy",
        "End-of-task training accuracy",
        "task",
        "train accuracy",
        &accuracy_series(&runs)?,
        false,
    )?;
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
