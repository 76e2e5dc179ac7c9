//! `safestep bench`: training throughput, measured through the production training step.
//!
//! Every measurement runs [`Trainer::step`] — exactly what `safestep run` runs — on the
//! first random-label task of the embedded digits, over shuffled epochs of minibatches as a
//! run draws them ([`epoch_batches`]). One trainer per scheduler mode (`off` is plain
//! Adam, no statistics); repetitions alternate between the modes so that machine noise hits
//! them alike, and medians are reported. The scheduler's overhead is the ratio of median
//! step times against `off`. `--breakdown` adds the cost of each backend call a controller
//! event makes. The JAX and PyTorch peers in `benches/peer/` time the same plain-Adam loop.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safestep_core::scheduler::Mode;
use safestep_engine::Regularizer;
use serde::Serialize;

use crate::cli::BenchArgs;
use crate::config::{ConfigError, RunConfig};
use crate::runner::{epoch_batches, load_stream, make_backend, RunError};
use crate::trainer::{run_adam, TaskPosition, Trainer};

/// One scheduler mode's figures.
#[derive(Debug, Clone, Serialize)]
pub struct ModeReport {
    /// The scheduler mode.
    pub scheduler: String,
    /// Median samples/s over the repetitions.
    pub samples_per_sec: f64,
    /// Median milliseconds per step.
    pub step_ms: f64,
    /// Median step time over the `off` mode's, minus 1 (0 for `off` itself).
    pub overhead: f64,
    /// Every repetition's samples/s.
    pub runs: Vec<f64>,
}

/// Milliseconds per call of each backend operation a step or a controller event makes.
#[derive(Debug, Clone, Serialize)]
pub struct Breakdown {
    /// `forward_backward` without per-sample norms.
    pub forward_backward_ms: f64,
    /// `forward_backward` with per-sample norms.
    pub forward_backward_norms_ms: f64,
    /// `adam_step` (plain Adam).
    pub adam_step_ms: f64,
    /// `hvp`, per layer.
    pub hvp_ms: Vec<f64>,
}

/// The figures `safestep bench` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Backend measured.
    pub backend: String,
    /// Threads of the CPU engine.
    pub threads: usize,
    /// Minibatch size.
    pub batch_size: usize,
    /// Hidden widths of the model measured.
    pub hidden: Vec<usize>,
    /// Control interval K of the scheduled modes.
    pub interval: usize,
    /// Rows of the minibatch the scheduled modes' Hessian-vector products use (0: all).
    pub hvp_rows: usize,
    /// Timed steps per repetition.
    pub steps: usize,
    /// Repetitions.
    pub repeats: usize,
    /// One entry per scheduler mode, in the order asked.
    pub modes: Vec<ModeReport>,
    /// Per-operation costs (with `--breakdown`).
    pub breakdown: Option<Breakdown>,
}

impl BenchReport {
    /// A human-readable summary.
    pub fn render(&self) -> String {
        let hvp_rows = match self.hvp_rows {
            0 => String::new(),
            rows => format!(", HVPs on the first {rows} rows"),
        };
        let mut out = format!(
            "backend {}, {} thread(s), batch {}, hidden {:?}, K {}, {} steps x {} repeats (medians){hvp_rows}\n",
            self.backend,
            self.threads,
            self.batch_size,
            self.hidden,
            self.interval,
            self.steps,
            self.repeats
        );
        for m in &self.modes {
            out.push_str(&format!(
                "scheduler {:<10} {:>10.0} samples/s  {:>8.3} ms/step  overhead {:>6.1} %\n",
                m.scheduler,
                m.samples_per_sec,
                m.step_ms,
                100.0 * m.overhead
            ));
        }
        if let Some(b) = &self.breakdown {
            out.push_str(&format!(
                "forward_backward {:.3} ms, with per-sample norms {:.3} ms, adam_step {:.3} ms\n",
                b.forward_backward_ms, b.forward_backward_norms_ms, b.adam_step_ms
            ));
            for (l, h) in b.hvp_ms.iter().enumerate() {
                out.push_str(&format!(
                    "hvp layer {l}: {h:.3} ms ({:.2} x forward_backward)\n",
                    h / b.forward_backward_ms
                ));
            }
        }
        out.trim_end().to_string()
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// The median of `values` (0 for none).
///
/// ```
/// use safestep_host::bench::median;
/// assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
/// assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
/// ```
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len().is_multiple_of(2) {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

fn bench_config(args: &BenchArgs, mode: Mode) -> RunConfig {
    let mut cfg = RunConfig {
        batch_size: args.batch_size,
        backend: args.backend,
        examples: 1000.max(args.batch_size),
        ..RunConfig::default()
    };
    cfg.scheduler.mode = mode;
    if let Some(hidden) = &args.hidden {
        cfg.model.hidden.clone_from(hidden);
    }
    if let Some(k) = args.interval {
        cfg.scheduler.interval = k;
    }
    if let Some(rows) = args.hvp_rows {
        cfg.statistics.hvp_rows = rows;
    }
    cfg
}

/// A trainer on the first task, and the minibatch order it steps through.
struct Subject {
    trainer: Trainer,
    population: usize,
    /// The minibatches of an epoch (as index ranges into `order`).
    ranges: Vec<std::ops::Range<usize>>,
    order: Vec<u32>,
    rng: ChaCha8Rng,
    step: usize,
}

impl Subject {
    /// The next minibatch, reshuffling at each epoch's start, as a run does.
    fn next_batch(&mut self) -> Vec<u32> {
        let k = self.step % self.ranges.len();
        if k == 0 {
            self.order.shuffle(&mut self.rng);
        }
        self.step += 1;
        self.order[self.ranges[k].clone()].to_vec()
    }
}

/// Runs the throughput benchmark.
///
/// # Errors
/// [`RunError::Config`] for no scheduler mode or a bad batch size; any backend error.
pub fn bench(args: &BenchArgs) -> Result<BenchReport, RunError> {
    if args.schedulers.is_empty() {
        return Err(ConfigError::new("schedulers", "(none)", "one or more scheduler modes").into());
    }
    let mut subjects = Vec::new();
    for &mode in &args.schedulers {
        let cfg = bench_config(args, mode);
        cfg.validate()?;
        let task = load_stream(&cfg)?.task(0);
        let mut trainer = Trainer::new(&cfg, make_backend(&cfg, args.threads)?)?;
        trainer
            .backend_mut()
            .load_task(&task.images, &task.labels)?;
        let population = task.labels.len();
        subjects.push(Subject {
            trainer,
            population,
            ranges: epoch_batches(population, args.batch_size).collect(),
            order: (0..population as u32).collect(),
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            step: 0,
        });
    }
    let steps = args.steps.max(1);
    let steps_per_task = steps as u64 * (args.repeats.max(1) as u64 + 1);
    let mut runs = vec![Vec::new(); subjects.len()];
    let mut events = Vec::new();
    // One untimed warm-up repetition each, then alternate.
    for rep in 0..=args.repeats.max(1) {
        for (i, s) in subjects.iter_mut().enumerate() {
            let batches: Vec<Vec<u32>> = (0..steps).map(|_| s.next_batch()).collect();
            let mut samples = 0usize;
            let start = Instant::now();
            for batch in &batches {
                let pos = TaskPosition {
                    task: 0,
                    step_in_task: s.trainer.steps(),
                    steps_per_task,
                };
                s.trainer.step(batch, pos, s.population, &mut events)?;
                events.clear();
                samples += batch.len();
            }
            let secs = start.elapsed().as_secs_f64();
            if rep > 0 {
                runs[i].push(samples as f64 / secs);
            }
        }
    }
    let mean_batch = {
        let sizes: Vec<usize> = epoch_batches(subjects[0].population, args.batch_size)
            .map(|r| r.len())
            .collect();
        sizes.iter().sum::<usize>() as f64 / sizes.len() as f64
    };
    let baseline = args
        .schedulers
        .iter()
        .position(|&m| m == Mode::Off)
        .map(|i| median(&runs[i]));
    let modes = args
        .schedulers
        .iter()
        .zip(&runs)
        .map(|(mode, r)| {
            let rate = median(r);
            ModeReport {
                scheduler: mode.to_string(),
                samples_per_sec: rate,
                step_ms: 1e3 * mean_batch / rate.max(1e-12),
                overhead: baseline.map_or(0.0, |b| b / rate.max(1e-12) - 1.0),
                runs: r.clone(),
            }
        })
        .collect();
    let breakdown = if args.breakdown {
        Some(breakdown(&mut subjects[0])?)
    } else {
        None
    };
    let plain = bench_config(args, Mode::Off);
    Ok(BenchReport {
        backend: subjects[0].trainer.backend_mut().name().to_string(),
        threads: args.threads,
        batch_size: args.batch_size,
        hidden: plain.model.hidden,
        interval: plain.scheduler.interval,
        hvp_rows: plain.statistics.hvp_rows,
        steps,
        repeats: args.repeats.max(1),
        modes,
        breakdown,
    })
}

/// Mean milliseconds of each backend call over 50 calls on one minibatch.
fn breakdown(s: &mut Subject) -> Result<Breakdown, RunError> {
    const REPS: usize = 50;
    let cfg = RunConfig::default();
    let adam = run_adam(&cfg)?;
    let b = s.next_batch();
    let backend = s.trainer.backend_mut();
    let time = |f: &mut dyn FnMut() -> Result<(), RunError>| -> Result<f64, RunError> {
        let start = Instant::now();
        for _ in 0..REPS {
            f()?;
        }
        Ok(1e3 * start.elapsed().as_secs_f64() / REPS as f64)
    };
    let fb = time(&mut || Ok(backend.forward_backward(&b, false).map(|_| ())?))?;
    let fb_norms = time(&mut || Ok(backend.forward_backward(&b, true).map(|_| ())?))?;
    let lrs = vec![1e-3f32; backend.layer_param_counts().len()];
    let mut adam_ms = 0.0;
    for t in 0..REPS as u64 {
        backend.forward_backward(&b, false)?;
        let start = Instant::now();
        backend.adam_step(&adam, &lrs, 1_000_000 + t, &Regularizer::default())?;
        adam_ms += 1e3 * start.elapsed().as_secs_f64();
    }
    backend.forward_backward(&b, true)?;
    let mut hvp_ms = Vec::new();
    for (l, n) in backend.layer_param_counts().into_iter().enumerate() {
        let v = vec![0.01f32; n];
        let mut out = vec![0.0f32; n];
        hvp_ms.push(time(&mut || Ok(backend.hvp(l, &v, &mut out)?))?);
    }
    Ok(Breakdown {
        forward_backward_ms: fb,
        forward_backward_norms_ms: fb_norms,
        adam_step_ms: adam_ms / REPS as f64,
        hvp_ms,
    })
}
