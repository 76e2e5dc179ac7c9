//! `safestep bench`: steady-state training throughput of the default MLP with plain Adam,
//! and the noise-curvature controller's overhead, measured side by side in one process.
//!
//! Both measurements run the production training step ([`Trainer::step`]) on the first
//! random-label task of the embedded digits: once with the scheduler off (plain Adam, no
//! statistics), once with the combined scheduler at its defaults (K = 10, one warm-started
//! power iteration per event). Repetitions alternate between the two so that machine noise
//! hits both alike; medians are reported.

use std::time::Instant;

use serde::Serialize;

use crate::cli::BenchArgs;
use crate::config::{RunConfig, SchedulerMode};
use crate::runner::{load_digits, make_backend, task_stream, RunError};
use crate::trainer::{TaskPosition, Trainer};

/// The figures `safestep bench` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Backend measured.
    pub backend: String,
    /// Minibatch size.
    pub batch_size: usize,
    /// Timed steps per repetition.
    pub steps: usize,
    /// Repetitions.
    pub repeats: usize,
    /// Median samples/s with the scheduler off (plain Adam).
    pub adam_samples_per_sec: f64,
    /// Median samples/s with the combined scheduler at its defaults.
    pub scheduled_samples_per_sec: f64,
    /// Scheduler overhead: median time per step with the scheduler / without, minus 1.
    pub scheduler_overhead: f64,
    /// Every repetition's samples/s, scheduler off.
    pub adam_runs: Vec<f64>,
    /// Every repetition's samples/s, scheduler on.
    pub scheduled_runs: Vec<f64>,
}

impl BenchReport {
    /// A human-readable summary.
    pub fn render(&self) -> String {
        format!(
            "backend {}, batch {}, {} steps x {} repeats (medians)\n\
             plain Adam:                {:>10.0} samples/s\n\
             Adam + combined scheduler: {:>10.0} samples/s\n\
             scheduler overhead:        {:>9.1} %",
            self.backend,
            self.batch_size,
            self.steps,
            self.repeats,
            self.adam_samples_per_sec,
            self.scheduled_samples_per_sec,
            100.0 * self.scheduler_overhead
        )
    }

    /// The report as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// The median of `values` (0 for none).
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

fn bench_config(args: &BenchArgs, mode: SchedulerMode) -> RunConfig {
    let mut cfg = RunConfig {
        batch_size: args.batch_size,
        backend: args.backend,
        examples: 1000.max(args.batch_size),
        ..RunConfig::default()
    };
    cfg.scheduler.mode = mode;
    cfg
}

/// Runs the throughput benchmark.
pub fn bench(args: &BenchArgs) -> Result<BenchReport, RunError> {
    let modes = [SchedulerMode::Off, SchedulerMode::Combined];
    let mut trainers = Vec::new();
    let mut batches = Vec::new();
    let mut population = 0;
    for mode in modes {
        let cfg = bench_config(args, mode);
        cfg.validate()?;
        let digits = load_digits(&cfg)?;
        let task = task_stream(&cfg, &digits)?.task(0);
        let mut trainer = Trainer::new(&cfg, make_backend(&cfg)?)?;
        trainer
            .backend_mut()
            .load_task(&task.images, &task.labels)?;
        population = task.labels.len();
        batches = (0..population as u32)
            .collect::<Vec<u32>>()
            .chunks_exact(cfg.batch_size)
            .map(<[u32]>::to_vec)
            .collect();
        trainers.push(trainer);
    }
    let steps = args.steps.max(1);
    let mut runs = [Vec::new(), Vec::new()];
    let mut rows = Vec::new();
    // One untimed warm-up repetition each, then alternate.
    for rep in 0..=args.repeats.max(1) {
        for (i, trainer) in trainers.iter_mut().enumerate() {
            let start = Instant::now();
            for s in 0..steps {
                let pos = TaskPosition {
                    task: 0,
                    step_in_task: s as u64,
                    steps_per_task: steps as u64,
                };
                trainer.step(&batches[s % batches.len()], pos, population, &mut rows)?;
                rows.clear();
            }
            let secs = start.elapsed().as_secs_f64();
            if rep > 0 {
                runs[i].push((steps * args.batch_size) as f64 / secs);
            }
        }
    }
    let adam = median(&runs[0]);
    let scheduled = median(&runs[1]);
    let [adam_runs, scheduled_runs] = runs;
    Ok(BenchReport {
        backend: trainers[0].backend_mut().name().to_string(),
        batch_size: args.batch_size,
        steps,
        repeats: args.repeats.max(1),
        adam_samples_per_sec: adam,
        scheduled_samples_per_sec: scheduled,
        scheduler_overhead: if scheduled > 0.0 {
            adam / scheduled - 1.0
        } else {
            0.0
        },
        adam_runs,
        scheduled_runs,
    })
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
    }
}
