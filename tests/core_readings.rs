//! The scheduler's readings of the paper (task boundaries, the momentum-aware threshold
//! and noise, symmetric and proportional control, the lr actually applied, the top
//! eigenvalue) against hand-worked cases, and the core's contract at the edges (overflow,
//! signed zeros, huge safety factors).

mod core_support;

use core_support::{jacobi_eigenvalues, matvec, random_orthogonal, with_spectrum, Rng};
use safestep_core::adam::{adam_step, preconditioner_sqrt, AdamConfig, StepStats, WeightDecay};
use safestep_core::bounds::{momentum_edge, Bounds, StepMeasure};
use safestep_core::noise::NoiseStats;
use safestep_core::power::{top_eigenvalue, PowerConfig, PowerIteration};
use safestep_core::scheduler::{
    Control, Decision, LayerObservation, LayerScheduler, Mode, NoiseAveraging, Progress,
    SchedulerConfig, SnrEstimator, TaskBoundary, Threshold, VolatilityEstimator,
};
use safestep_core::Error;

type Sched = LayerScheduler<f64, 32>;

fn obs(alpha: f64, sharpness: f64, mgs: f64, s: f64, batch: usize) -> LayerObservation<f64> {
    LayerObservation {
        alpha_agg: alpha,
        sharpness,
        noise: NoiseStats::from_variance(mgs, s, batch, None).unwrap(),
        ..LayerObservation::default()
    }
}

fn late() -> Progress {
    Progress {
        step_in_task: 90,
        steps_per_task: Some(100),
        step: 90,
        total_steps: None,
    }
}

fn state(s: &Sched) -> Vec<u64> {
    s.to_state().map(f64::to_bits).collect()
}

#[test]
fn task_boundaries_carry_reset_the_statistics_or_restart_the_lr() {
    for boundary in TaskBoundary::ALL.iter().copied() {
        let cfg = SchedulerConfig {
            boundary,
            ..SchedulerConfig::default()
        };
        let mut s = Sched::new(&cfg, 1e-3).unwrap();
        // ρ = 5 far above any bound: three cools.
        for _ in 0..3 {
            s.observe(&cfg, &obs(1.0, 5.0, 1.0, 4.0, 16), late())
                .unwrap();
        }
        assert!((s.lr() - 1e-3 * 0.99f64.powi(3)).abs() < 1e-15);
        let lr = s.lr();
        let before = state(&s);
        s.begin_task(&cfg);
        let after: Vec<f64> = s.to_state().collect();
        match boundary {
            TaskBoundary::Carry => assert_eq!(state(&s), before),
            TaskBoundary::ResetStats => {
                assert_eq!(s.lr(), lr);
                assert_eq!(&after[3..6], &[0.0, 0.0, 0.0]); // SNR EMAs
                assert_eq!(after[12], 0.0); // empty window
            }
            TaskBoundary::ResetLr => {
                assert_eq!(s.lr(), 1e-3);
                assert_eq!(after[12], 0.0);
            }
        }
    }
}

#[test]
fn the_preconditioned_measure_uses_the_lr_actually_applied() {
    let cfg = SchedulerConfig {
        measure: StepMeasure::Preconditioned,
        mode: Mode::Off,
        ..SchedulerConfig::default()
    };
    let mut s = Sched::new(&cfg, 1e-3).unwrap();
    let mut o = obs(0.0, 40.0, 1.0, 1.0, 16);
    assert!((s.observe(&cfg, &o, late()).unwrap().rho - 0.04).abs() < 1e-15);
    o.lr_used = Some(1e-4); // e.g. after a step-decay milestone
    assert!((s.observe(&cfg, &o, late()).unwrap().rho - 0.004).abs() < 1e-15);
}

#[test]
fn the_momentum_threshold_scales_the_bound_by_the_edge_of_momentum() {
    let sgd = SchedulerConfig {
        snr_estimator: SnrEstimator::Raw,
        ..SchedulerConfig::default()
    };
    let momentum = SchedulerConfig {
        threshold: Threshold::Momentum,
        ..sgd
    };
    // G² = 3 − 1/4·4 = 2, noise S/B = 1: SNR_g = 2, Vol = 0 on the first event.
    let o = obs(0.1, 1.0, 3.0, 4.0, 4);
    let a = Sched::new(&sgd, 1e-3)
        .unwrap()
        .observe(&sgd, &o, late())
        .unwrap();
    let b = Sched::new(&momentum, 1e-3)
        .unwrap()
        .observe(&momentum, &o, late())
        .unwrap();
    let snr = 2.0 / 3.0;
    assert!((a.rho_g - 2.0 * 0.8 * snr).abs() < 1e-12, "{a:?}");
    assert!((b.rho_g - 38.0 * 0.8 * snr).abs() < 1e-9, "{b:?}");
    assert!((momentum_edge(0.9f64).unwrap() - 38.0).abs() < 1e-12);
}

#[test]
fn momentum_noise_divides_the_noise_by_the_effective_batch() {
    let base = SchedulerConfig {
        snr_estimator: SnrEstimator::Raw,
        volatility_estimator: VolatilityEstimator::Window,
        ..SchedulerConfig::default()
    };
    let averaged = SchedulerConfig {
        noise_averaging: NoiseAveraging::Momentum,
        ..base
    };
    let o = obs(0.1, 1.0, 3.0, 4.0, 4);
    let a = Sched::new(&base, 1e-3)
        .unwrap()
        .observe(&base, &o, late())
        .unwrap();
    let b = Sched::new(&averaged, 1e-3)
        .unwrap()
        .observe(&averaged, &o, late())
        .unwrap();
    // B_eff = B·(1+β1)/(1−β1) = 19·B: the same G² against a 19× smaller noise.
    assert!((b.snr_g / a.snr_g - 19.0).abs() < 1e-9, "{a:?} {b:?}");
}

#[test]
fn symmetric_control_warms_at_any_time_and_early_warm_only_early() {
    for control in [Control::EarlyWarm, Control::Symmetric] {
        let cfg = SchedulerConfig {
            control,
            ..SchedulerConfig::default()
        };
        let mut s = Sched::new(&cfg, 1e-3).unwrap();
        // ρ = 1e-6: far below timid·bound, late in the task.
        let r = s
            .observe(&cfg, &obs(1e-6, 1.0, 3.0, 4.0, 4), late())
            .unwrap();
        let want = if control == Control::Symmetric {
            Decision::Warm
        } else {
            Decision::Hold
        };
        assert_eq!(r.decision, want, "{control}");
    }
}

#[test]
fn proportional_control_moves_the_lr_by_the_clamped_ratio() {
    let cfg = SchedulerConfig {
        control: Control::Proportional,
        snr_estimator: SnrEstimator::Raw,
        cool: 0.5,
        warm: 2.0,
        kappa: 1.0,
        ..SchedulerConfig::default()
    };
    let o = |rho: f64| obs(rho, 1.0, 3.0, 4.0, 4);
    // bound = 2·0.8·(2/3) = 1.0667 (first event: Vol = 0).
    let bound = 1.6 * 2.0 / 3.0;
    for (rho, factor) in [
        (bound / 0.8, 0.8),
        (bound / 1.25, 1.25),
        (100.0, 0.5),
        (1e-9, 2.0),
    ] {
        let mut s = Sched::new(&cfg, 1e-3).unwrap();
        let r = s.observe(&cfg, &o(rho), late()).unwrap();
        assert!((r.lr_after - 1e-3 * factor).abs() < 1e-12, "ρ {rho}: {r:?}");
        assert_eq!(r.decision == Decision::Cool, factor < 1.0);
    }
}

#[test]
fn the_top_eigenvalue_is_the_largest_algebraic_one() {
    let mut rng = Rng::new(5);
    for trial in 0..20 {
        let n = 6 + trial % 5;
        let q = random_orthogonal(n, &mut rng);
        // A dominant negative eigenvalue and a smaller positive top one.
        let mut eig: Vec<f64> = (0..n).map(|_| rng.uniform() * 2.0 - 1.0).collect();
        eig[0] = -10.0 - rng.uniform();
        eig[1] = 3.0 + rng.uniform();
        let a = with_spectrum(&q, &eig);
        let top = jacobi_eigenvalues(&a, n)
            .into_iter()
            .fold(f64::NEG_INFINITY, f64::max);
        let hvp = |x: &[f64], out: &mut [f64]| -> Result<(), ()> {
            matvec(&a, x, out);
            Ok(())
        };
        let cfg = PowerConfig {
            tol: 1e-12,
            max_iters: 2000,
        };
        let (mut mag, mut up) = (PowerIteration::new(), PowerIteration::new());
        let mut v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mut v_top = v.clone();
        let mut hv = vec![0.0; n];
        let got = top_eigenvalue(
            &mut mag, &mut up, &cfg, &mut v, &mut v_top, &mut hv, None, hvp,
        )
        .unwrap();
        assert!(
            (got - top).abs() < 1e-6 * top.abs(),
            "trial {trial}: {got} vs {top}"
        );
        assert!(mag.eigenvalue() < 0.0);
    }
}

#[test]
fn adam_refuses_overflowing_steps_and_changes_nothing() {
    let l2 = AdamConfig {
        weight_decay: WeightDecay::CoupledL2(1e30f32),
        ..AdamConfig::default()
    };
    let plain = AdamConfig::<f32>::default();
    // (config, lr, parameters, gradient)
    type Case<'a> = (&'a AdamConfig<f32>, f32, [f32; 2], [f32; 2]);
    let cases: [Case; 3] = [
        (&l2, 1e-3, [1e10, 0.5], [0.1, 0.1]),    // g + λθ = 1e40
        (&plain, 1e-3, [0.5, 0.5], [2e19, 0.1]), // g² = 4e38 into v
        (&plain, 1e30, [3e38, 0.5], [1.0, 1.0]), // θ − lr·m̂/(√v̂+ε) beyond f32
    ];
    for (cfg, lr, p0, g) in cases {
        let (mut p, mut m, mut v, mut st) = (p0, [0.0f32; 2], [0.0f32; 2], StepStats::new());
        let e = adam_step(cfg, lr, 1, &mut p, &g, &mut m, &mut v, &mut st);
        assert!(matches!(e, Err(Error::Overflow { .. })), "{e:?}");
        assert_eq!((p, m, v, st), (p0, [0.0; 2], [0.0; 2], StepStats::new()));
    }
}

#[test]
fn bounds_are_never_nan_at_the_edges() {
    // A safety factor whose 2s overflows is refused.
    assert!(Bounds::compute(1e308f64, 1.0, 16, 1.0, 1.0).is_err());
    // SNR_g = −0.0 with an infinite volatility SNR (Vol = 0): a zero bound, not NaN.
    let b = Bounds::compute(0.8f64, 1.0, 16, -0.0, 0.0).unwrap();
    for x in [b.rho_g, b.rho_vol, b.rho_combined, b.snr, b.snr_g, b.snr_v] {
        assert!(!x.is_nan(), "{b:?}");
    }
    assert_eq!(b.rho_g, 0.0);
}

#[test]
fn an_overflowing_volatility_estimate_is_refused_and_the_state_kept() {
    let cfg = SchedulerConfig {
        volatility_estimator: VolatilityEstimator::Ema,
        window: 4,
        ..SchedulerConfig::<f64>::default()
    };
    let mut s = Sched::new(&cfg, 1e-3).unwrap();
    s.observe(&cfg, &obs(1e154, 1.0, 1.0, 1.0, 4), late())
        .unwrap();
    let before = state(&s);
    let e = s.observe(&cfg, &obs(1e154, -1.0, 1.0, 1.0, 4), late());
    assert!(e.is_err(), "{e:?}");
    assert_eq!(state(&s), before);
    let saved: Vec<f64> = s.to_state().collect();
    assert!(Sched::from_state(&cfg, &saved).is_ok());
}

#[test]
fn the_power_direction_stays_finite_when_undoing_a_preconditioner_overflows() {
    let d = [1e-30f32, 1e30];
    let mut v = [1.0f32, 1.0];
    let mut hv = [0.0f32; 2];
    let mut p = PowerIteration::new();
    let failing = |_: &[f32], _: &mut [f32]| Err("device lost");
    let e = p.estimate(&PowerConfig::default(), &mut v, &mut hv, Some(&d), failing);
    assert!(e.is_err());
    assert!(v.iter().all(|x| x.is_finite()), "{v:?}");
}

#[test]
fn a_preconditioner_entry_of_zero_is_refused() {
    // v̂ = 3e38/(1−0.999) overflows: 1/sqrt(sqrt(inf)+ε) would be 0.
    let mut out = [5.0f32; 2];
    let e = preconditioner_sqrt(&[3e38f32, 1.0], 0.999, 1, 1e-8, &mut out);
    assert!(
        matches!(e, Err(Error::Overflow { index: Some(0), .. })),
        "{e:?}"
    );
    assert_eq!(out, [5.0; 2]);
}
