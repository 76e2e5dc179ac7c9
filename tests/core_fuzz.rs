//! A fuzz harness for safestep-core's public functions, with one contract for all of them:
//! no panic; on `Err` the state is unchanged; on `Ok` every output is finite and within its
//! documented range. Inputs span every magnitude an `f32`/`f64` can hold (zeros,
//! subnormals, ±1e±30, the largest finite values, NaN, ±inf).
//!
//! CI runs a short pass. A long pass: `SAFESTEP_FUZZ_CASES=200000 cargo test --release
//! --test core_fuzz` (each of the 6 targets runs that many cases).

use proptest::prelude::*;
use proptest::test_runner::Config;
use safestep_core::adam::{adam_step, preconditioner_sqrt, AdamConfig, StepStats, WeightDecay};
use safestep_core::bounds::{Bounds, StepMeasure};
use safestep_core::noise::NoiseStats;
use safestep_core::power::{top_eigenvalue, PowerConfig, PowerIteration};
use safestep_core::scheduler::{
    Control, LayerObservation, LayerScheduler, Mode, NoiseAveraging, Progress, SchedulerConfig,
    SnrEstimator, TaskBoundary, Threshold, VolatilityEstimator,
};
use safestep_core::window::{CurvatureWindow, EmaVolatility};

/// Cases per target: `SAFESTEP_FUZZ_CASES` (a positive integer), 2000 when unset.
fn cases() -> u32 {
    match std::env::var("SAFESTEP_FUZZ_CASES") {
        Err(_) => 2000,
        Ok(s) => match s.parse::<u32>() {
            Ok(n) if n > 0 => n,
            _ => panic!("SAFESTEP_FUZZ_CASES must be a positive integer, got {s:?}"),
        },
    }
}

fn config() -> Config {
    Config {
        cases: cases(),
        failure_persistence: None,
        ..Config::default()
    }
}

/// Any `f32`: ordinary values, every extreme, and the non-finite ones.
fn any_f32() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => -10.0f32..10.0,
        1 => Just(0.0f32),
        1 => Just(-0.0f32),
        1 => prop_oneof![Just(1e-45f32), Just(1e-38), Just(-1e-38), Just(1e-30), Just(-1e-30)],
        1 => prop_oneof![Just(1e19f32), Just(-1e19), Just(2e19), Just(1e30), Just(-1e30)],
        1 => prop_oneof![Just(f32::MAX), Just(f32::MIN), Just(1.7e38), Just(-3.0e38)],
        1 => prop_oneof![Just(f32::NAN), Just(f32::INFINITY), Just(f32::NEG_INFINITY)],
        1 => any::<f32>(),
    ]
}

/// Any `f64`, likewise.
fn any_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => -10.0f64..10.0,
        1 => Just(0.0f64),
        1 => Just(-0.0f64),
        1 => prop_oneof![Just(5e-324f64), Just(1e-300), Just(-1e-300), Just(1e-30)],
        1 => prop_oneof![Just(1e30f64), Just(1e154), Just(-1e154), Just(1e300), Just(-1e300)],
        1 => prop_oneof![Just(f64::MAX), Just(f64::MIN), Just(f64::MAX / 2.0), Just(f64::MAX / 4.0)],
        1 => prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)],
        1 => any::<f64>(),
    ]
}

fn finite_f32(xs: &[f32]) -> bool {
    xs.iter().all(|x| x.is_finite())
}

fn stats_finite(s: &StepStats<f32>) -> bool {
    [
        s.sum_v_hat,
        s.sum_multiplier,
        s.param_sq,
        s.grad_sq,
        s.update_sq,
    ]
    .iter()
    .all(|x| x.is_finite() && *x >= 0.0)
}

fn decay() -> impl Strategy<Value = WeightDecay<f32>> {
    prop_oneof![
        Just(WeightDecay::None),
        any_f32().prop_map(WeightDecay::CoupledL2),
        any_f32().prop_map(WeightDecay::Decoupled),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn adam_step_is_finite_or_changes_nothing(
        beta1 in any_f32(), beta2 in any_f32(), eps in any_f32(), wd in decay(),
        lr in any_f32(), t in prop_oneof![Just(0u64), 1u64..5, Just(u64::MAX)],
        state in prop::collection::vec((any_f32(), any_f32(), any_f32(), any_f32()), 0..24),
        v_abs in any::<bool>(),
    ) {
        let cfg = AdamConfig { beta1, beta2, eps, weight_decay: wd };
        let mut p: Vec<f32> = state.iter().map(|s| s.0).collect();
        let g: Vec<f32> = state.iter().map(|s| s.1).collect();
        let mut m: Vec<f32> = state.iter().map(|s| s.2).collect();
        let mut v: Vec<f32> = state.iter().map(|s| if v_abs { s.3.abs() } else { s.3 }).collect();
        let before = (p.clone(), m.clone(), v.clone());
        let mut stats = StepStats::new();
        match adam_step(&cfg, lr, t, &mut p, &g, &mut m, &mut v, &mut stats) {
            Ok(()) => {
                prop_assert!(finite_f32(&p) && finite_f32(&m) && finite_f32(&v));
                prop_assert!(v.iter().all(|&x| x >= 0.0));
                prop_assert!(stats_finite(&stats), "{stats:?}");
                prop_assert_eq!(stats.count, p.len());
            }
            Err(_) => {
                let bits = |x: &[f32]| x.iter().map(|y| y.to_bits()).collect::<Vec<_>>();
                prop_assert_eq!(bits(&p), bits(&before.0));
                prop_assert_eq!(bits(&m), bits(&before.1));
                prop_assert_eq!(bits(&v), bits(&before.2));
                prop_assert_eq!(stats, StepStats::new());
            }
        }
    }

    #[test]
    fn preconditioner_is_positive_and_finite_or_changes_nothing(
        v in prop::collection::vec(any_f32(), 0..16), beta2 in any_f32(), eps in any_f32(),
        t in 0u64..4,
    ) {
        let mut out = vec![7.0f32; v.len()];
        match preconditioner_sqrt(&v, beta2, t, eps, &mut out) {
            Ok(()) => prop_assert!(out.iter().all(|&d| d.is_finite() && d > 0.0), "{out:?}"),
            Err(_) => prop_assert!(out.iter().all(|&d| d == 7.0)),
        }
    }

    #[test]
    fn noise_and_bounds_are_finite_and_in_range(
        mgs in any_f64(), s in any_f64(), batch in 0usize..600,
        population in prop::option::of(0usize..1000),
        safety in any_f64(), beta in any_f64(), vol in any_f64(), snr in any_f64(),
    ) {
        for n in [
            NoiseStats::from_variance(mgs, s, batch, population),
            NoiseStats::from_sample_sq_norms(mgs, s, batch, population),
        ]
        .into_iter()
        .flatten()
        {
            for x in [n.mean_grad_sq, n.variance, n.noise, n.unbiased_grad_sq] {
                prop_assert!(x.is_finite() && x >= 0.0, "{n:?}");
            }
            prop_assert!(!n.snr().is_nan() && n.snr() >= 0.0);
        }
        if let Ok(b) = Bounds::compute(safety, beta, batch, snr, vol) {
            for x in [b.rho_g, b.rho_vol, b.rho_combined] {
                prop_assert!(x.is_finite() && (0.0..=2.0 * safety).contains(&x), "{b:?}");
            }
            for x in [b.snr_g, b.snr_v, b.snr] {
                prop_assert!(!x.is_nan() && x >= 0.0, "{b:?}");
            }
        }
    }

    #[test]
    fn scheduler_reports_finite_numbers_or_changes_nothing(
        cfg in scheduler_config(), lr_pos in 0.0..=1.0f64,
        events in prop::collection::vec(observation(), 1..30),
        boundary_every in 1usize..10,
    ) {
        let Ok(mut s) = LayerScheduler::<f64, 64>::new(&cfg, cfg.lr_min + lr_pos * (cfg.lr_max - cfg.lr_min)) else {
            return Ok(());
        };
        for (k, obs) in events.iter().enumerate() {
            if k % boundary_every == boundary_every - 1 {
                s.begin_task(&cfg);
            }
            let before: Vec<f64> = s.to_state().collect();
            let progress = Progress { step_in_task: k as u64, steps_per_task: Some(30), step: k as u64, total_steps: None };
            match s.observe(&cfg, obs, progress) {
                Ok(r) => {
                    for x in [r.lr_before, r.lr_after, r.rho, r.vol, r.rho_g, r.rho_vol, r.rho_combined, r.bound, r.g2_ema, r.noise_ema] {
                        prop_assert!(x.is_finite(), "{r:?}");
                    }
                    for x in [r.snr_g, r.snr_v, r.snr] {
                        prop_assert!(!x.is_nan() && x >= 0.0, "{r:?}");
                    }
                    prop_assert!(r.lr_after >= cfg.lr_min && r.lr_after <= cfg.lr_max);
                    // Whatever was stored can be restored.
                    let state: Vec<f64> = s.to_state().collect();
                    let restored = LayerScheduler::<f64, 64>::from_state(&cfg, &state);
                    prop_assert!(restored.is_ok(), "{:?}", restored.err());
                }
                Err(_) => {
                    let after: Vec<f64> = s.to_state().collect();
                    prop_assert_eq!(
                        before.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                        after.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
                    );
                }
            }
        }
    }

    #[test]
    fn volatility_estimators_hold_finite_state(
        values in prop::collection::vec(any_f64(), 1..40), w in 1usize..16,
    ) {
        let mut window = CurvatureWindow::<f64, 16>::new(w).expect("valid window");
        let mut ema = EmaVolatility::new(EmaVolatility::<f64>::decay_for_window(w)).expect("valid decay");
        for &x in &values {
            let (len, ema_count) = (window.len(), ema.count());
            if window.push(x).is_err() {
                prop_assert_eq!(window.len(), len);
            }
            let before = ema;
            match ema.push(x) {
                Ok(()) => {
                    prop_assert!(ema.mean().is_finite());
                    prop_assert!(ema.variance().is_finite() && ema.variance() >= 0.0);
                    prop_assert!(!ema.volatility().is_nan());
                }
                Err(_) => {
                    prop_assert_eq!(ema, before);
                    prop_assert_eq!(ema.count(), ema_count);
                }
            }
            prop_assert!(!window.volatility().is_nan());
        }
    }

    #[test]
    fn power_iteration_leaves_a_finite_direction(
        diag in prop::collection::vec(any_f32(), 1..12), start in prop::collection::vec(any_f32(), 12),
        precond in prop::option::of(prop::collection::vec(any_f32(), 12)),
        fail_at in prop::option::of(0usize..4), top in any::<bool>(),
    ) {
        let n = diag.len();
        let mut v: Vec<f32> = start[..n].to_vec();
        let mut v_top = v.clone();
        let mut hv = vec![0.0f32; n];
        let d = precond.as_ref().map(|p| p[..n].to_vec());
        let mut calls = 0usize;
        let hvp = |x: &[f32], out: &mut [f32]| {
            calls += 1;
            if Some(calls - 1) == fail_at {
                return Err("injected failure");
            }
            for ((o, &xi), &di) in out.iter_mut().zip(x).zip(&diag) {
                *o = di * xi;
            }
            Ok(())
        };
        let cfg = PowerConfig { tol: 1e-4, max_iters: 8 };
        let (mut p, mut p_top) = (PowerIteration::new(), PowerIteration::new());
        let before = p;
        let result = if top {
            top_eigenvalue(&mut p, &mut p_top, &cfg, &mut v, &mut v_top, &mut hv, d.as_deref(), hvp)
        } else {
            p.estimate(&cfg, &mut v, &mut hv, d.as_deref(), hvp)
        };
        match result {
            Ok(lambda) => prop_assert!(lambda.is_finite()),
            Err(_) => {
                if !top {
                    prop_assert_eq!(p, before);
                }
            }
        }
        prop_assert!(finite_f32(&v) || !finite_f32(&start[..n]), "{v:?}");
    }
}

fn scheduler_config() -> impl Strategy<Value = SchedulerConfig<f64>> {
    (
        (0usize..4, 0usize..3, 0usize..2, 0usize..2),
        (any_f64(), any_f64(), 1usize..64, any_f64()),
        (any_f64(), any_f64(), any_f64(), any_f64()),
        (any_f64(), any_f64()),
        (
            0usize..3,
            0usize..2,
            0usize..2,
            0usize..3,
            any_f64(),
            any_f64(),
        ),
    )
        .prop_map(|(e, a, b, (lr_min, lr_max), c)| SchedulerConfig {
            mode: Mode::ALL[e.0],
            measure: StepMeasure::ALL[e.1],
            snr_estimator: SnrEstimator::ALL[e.2],
            volatility_estimator: VolatilityEstimator::ALL[e.3],
            interval: 1,
            safety: a.0,
            beta: a.1,
            window: a.2,
            snr_ema_decay: a.3,
            cool: b.0,
            warm: b.1,
            warm_fraction: b.2,
            timid: b.3,
            lr_min,
            lr_max,
            boundary: TaskBoundary::ALL[c.0],
            threshold: Threshold::ALL[c.1],
            noise_averaging: NoiseAveraging::ALL[c.2],
            control: Control::ALL[c.3],
            kappa: c.4,
            beta1: c.5,
        })
}

fn observation() -> impl Strategy<Value = LayerObservation<f64>> {
    (
        (any_f64(), any_f64(), any_f64(), prop::option::of(any_f64())),
        (
            any_f64(),
            any_f64(),
            0usize..600,
            prop::option::of(0usize..1000),
        ),
    )
        .prop_map(|((alpha, mult, sharp, lr_used), (mgs, s, batch, pop))| {
            let noise = NoiseStats::from_variance(mgs, s, batch, pop).unwrap_or(NoiseStats {
                batch,
                mean_grad_sq: mgs,
                variance: s,
                noise: s,
                unbiased_grad_sq: mgs,
            });
            LayerObservation {
                alpha_agg: alpha,
                mean_multiplier: mult,
                sharpness: sharp,
                noise,
                lr_used,
            }
        })
}
