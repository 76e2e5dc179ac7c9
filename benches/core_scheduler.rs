//! Cost of one scheduler decision for one layer, given its statistics.
//!
//! Run: `cargo bench --bench core_scheduler -- --sample-size 30`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use safestep_core::noise::NoiseStats;
use safestep_core::scheduler::{
    LayerObservation, LayerScheduler, Mode, Progress, SchedulerConfig, VolatilityEstimator,
};

fn bench_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("scheduler_decision");
    for (name, estimator) in [
        ("window20", VolatilityEstimator::Window),
        ("ema", VolatilityEstimator::Ema),
    ] {
        let cfg = SchedulerConfig {
            mode: Mode::Combined,
            volatility_estimator: estimator,
            ..SchedulerConfig::<f64>::default()
        };
        let mut sched = LayerScheduler::<f64, 32>::new(&cfg, 1e-3).unwrap();
        let noise = NoiseStats::from_variance(2.0, 40.0, 256, Some(1000)).unwrap();
        let mut k = 0u64;
        group.bench_function(format!("observe_f64_{name}"), |b| {
            b.iter(|| {
                k += 1;
                // ρ varies so the window statistics are not constant.
                let obs = LayerObservation {
                    lr_used: None,
                    alpha_agg: 1e-3 * (1.0 + (k % 7) as f64 * 0.1),
                    mean_multiplier: 1e-3,
                    sharpness: 300.0,
                    noise,
                };
                let progress = Progress {
                    step_in_task: k % 1000,
                    steps_per_task: Some(1000),
                    step: k,
                    total_steps: None,
                };
                black_box(sched.observe(&cfg, black_box(&obs), progress).unwrap())
            })
        });
    }
    let cfg = SchedulerConfig::<f32>::default();
    let mut sched = LayerScheduler::<f32, 32>::new(&cfg, 1e-3).unwrap();
    let noise = NoiseStats::from_variance(2.0f32, 40.0, 256, None).unwrap();
    let mut k = 0u64;
    group.bench_function("observe_f32_window20", |b| {
        b.iter(|| {
            k += 1;
            let obs = LayerObservation {
                lr_used: None,
                alpha_agg: 1e-3 * (1.0 + (k % 7) as f32 * 0.1),
                mean_multiplier: 1e-3,
                sharpness: 300.0,
                noise,
            };
            let progress = Progress {
                step_in_task: k % 1000,
                steps_per_task: Some(1000),
                step: k,
                total_steps: None,
            };
            black_box(sched.observe(&cfg, black_box(&obs), progress).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decision);
criterion_main!(benches);
