//! Scheduler invariants: lr finite and clamped, mode off is plain Adam, decisions follow
//! the rule, determinism, errors change nothing.

mod core_support;
use core_support::Rng;
use proptest::prelude::*;
use safestep_core::adam::{adam_step, AdamConfig, StepStats};
use safestep_core::bounds::{momentum_edge, StepMeasure};
use safestep_core::noise::NoiseStats;
use safestep_core::scheduler::{
    Control, Decision, LayerObservation, LayerScheduler, Mode, NoiseAveraging, Progress, Report,
    SchedulerConfig, SnrEstimator, TaskBoundary, Threshold, VolatilityEstimator,
};

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Off),
        Just(Mode::Gradient),
        Just(Mode::Volatility),
        Just(Mode::Combined)
    ]
}

fn config() -> impl Strategy<Value = SchedulerConfig<f64>> {
    (
        mode(),
        prop_oneof![
            Just(StepMeasure::Normalized),
            Just(StepMeasure::Preconditioned),
            Just(StepMeasure::Mean)
        ],
        (0.05..2.0f64, 0.0..4.0f64, 1usize..=16, 0.0..0.99f64),
        (prop::bool::ANY, prop::bool::ANY),
        (0.5..=1.0f64, 1.0..1.5f64, 0.0..=1.0f64, 0.0..=1.0f64),
        (1e-7..1e-3f64, 1.0..1e4f64),
        (
            0usize..3,
            0usize..2,
            0usize..2,
            0usize..3,
            0.25..3.0f64,
            0.0..0.99f64,
        ),
    )
        .prop_map(
            |(
                mode,
                measure,
                (safety, beta, window, decay),
                (raw, ema_vol),
                (cool, warm, wf, timid),
                (lr_min, span),
                (boundary, threshold, averaging, control, kappa, beta1),
            )| {
                SchedulerConfig {
                    mode,
                    measure,
                    interval: 1,
                    safety,
                    beta,
                    window,
                    snr_ema_decay: decay,
                    snr_estimator: if raw {
                        SnrEstimator::Raw
                    } else {
                        SnrEstimator::Ema
                    },
                    volatility_estimator: if ema_vol {
                        VolatilityEstimator::Ema
                    } else {
                        VolatilityEstimator::Window
                    },
                    cool,
                    warm,
                    warm_fraction: wf,
                    timid,
                    lr_min,
                    lr_max: lr_min * span,
                    boundary: TaskBoundary::ALL[boundary],
                    threshold: Threshold::ALL[threshold],
                    noise_averaging: NoiseAveraging::ALL[averaging],
                    control: Control::ALL[control],
                    kappa,
                    beta1,
                }
            },
        )
}

/// Observations across many orders of magnitude, including zeros and negative sharpness.
fn observation() -> impl Strategy<Value = LayerObservation<f64>> {
    let mag = prop_oneof![
        Just(0.0),
        1e-12..1e-6f64,
        1e-6..1.0f64,
        1.0..1e6f64,
        1e6..1e12f64
    ];
    (
        mag.clone(),
        mag.clone(),
        (-1.0..1.0f64, mag.clone()),
        mag.clone(),
        mag,
        2usize..512,
        prop::option::of(512usize..2048),
    )
        .prop_map(
            |(alpha, mult, (sign, lam), mgs, s, batch, pop)| LayerObservation {
                lr_used: None,
                alpha_agg: alpha,
                mean_multiplier: mult,
                sharpness: if sign < -0.8 { -lam } else { lam },
                noise: NoiseStats::from_variance(mgs, s, batch, pop).unwrap(),
            },
        )
}

fn progress_at(step: u64) -> Progress {
    Progress {
        step_in_task: step % 50,
        steps_per_task: Some(50),
        step,
        total_steps: None,
    }
}

fn run(cfg: &SchedulerConfig<f64>, lr0: f64, obs: &[LayerObservation<f64>]) -> Vec<Report<f64>> {
    let mut s = LayerScheduler::<f64, 16>::new(cfg, lr0).unwrap();
    obs.iter()
        .enumerate()
        .map(|(k, o)| s.observe(cfg, o, progress_at(k as u64)).unwrap())
        .collect()
}

proptest! {
    #![proptest_config(core_support::proptest_cases(256))]

    #[test]
    fn invariants_hold_for_any_observations(
        cfg in config(), lr_pos in 0.0..=1.0f64, obs in prop::collection::vec(observation(), 1..120),
    ) {
        let lr0 = cfg.lr_min + lr_pos * (cfg.lr_max - cfg.lr_min);
        let reports = run(&cfg, lr0, &obs);
        let mut lr = lr0;
        for (k, r) in reports.iter().enumerate() {
            prop_assert_eq!(r.lr_before.to_bits(), lr.to_bits());
            prop_assert!(r.lr_after.is_finite() && r.lr_after >= cfg.lr_min && r.lr_after <= cfg.lr_max);
            for x in [r.rho, r.vol, r.snr_g, r.snr_v, r.snr, r.rho_g, r.rho_vol, r.rho_combined, r.bound, r.g2_ema, r.noise_ema] {
                prop_assert!(!x.is_nan(), "NaN in {:?}", r);
            }
            let top = match cfg.threshold {
                Threshold::Sgd => 2.0 * cfg.safety,
                Threshold::Momentum => cfg.safety * momentum_edge(cfg.beta1).unwrap(),
            };
            for b in [r.rho_g, r.rho_vol, r.rho_combined, r.bound] {
                prop_assert!((0.0..=top * (1.0 + 1e-12)).contains(&b), "{b} above {top}");
            }
            let early = progress_at(k as u64).is_early(cfg.warm_fraction)
                || cfg.control == Control::Symmetric;
            if cfg.control == Control::Proportional && cfg.mode != Mode::Off {
                let factor = if r.rho <= 0.0 {
                    cfg.warm
                } else {
                    (r.bound / r.rho).powf(cfg.kappa).clamp(cfg.cool, cfg.warm)
                };
                let want = match r.decision {
                    Decision::Hold => r.lr_before,
                    _ => (r.lr_before * factor).clamp(cfg.lr_min, cfg.lr_max),
                };
                prop_assert_eq!(r.lr_after.to_bits(), want.to_bits());
                prop_assert_eq!(r.decision == Decision::Cool, factor < 1.0);
                prop_assert_eq!(r.decision == Decision::Warm, factor > 1.0);
                lr = r.lr_after;
                continue;
            }
            match (cfg.mode, r.decision) {
                (Mode::Off, d) => {
                    prop_assert_eq!(d, Decision::Hold);
                    prop_assert_eq!(r.lr_after.to_bits(), lr0.to_bits());
                }
                (_, Decision::Cool) => {
                    prop_assert!(r.rho > r.bound);
                    prop_assert_eq!(r.lr_after, (r.lr_before * cfg.cool).max(cfg.lr_min));
                }
                (_, Decision::Warm) => {
                    prop_assert!(early && r.rho <= r.bound && r.rho < cfg.timid * r.bound);
                    prop_assert_eq!(r.lr_after, (r.lr_before * cfg.warm).min(cfg.lr_max));
                }
                (_, Decision::Hold) => {
                    prop_assert!(r.rho <= r.bound && !(early && r.rho < cfg.timid * r.bound));
                    prop_assert_eq!(r.lr_after.to_bits(), r.lr_before.to_bits());
                }
            }
            let expected_bound = match cfg.mode {
                Mode::Gradient => r.rho_g,
                Mode::Volatility => r.rho_vol,
                Mode::Off | Mode::Combined => r.rho_combined,
            };
            prop_assert_eq!(r.bound, expected_bound);
            lr = r.lr_after;
        }
        // Deterministic: a second run is bit-identical.
        let again = run(&cfg, lr0, &obs);
        for (a, b) in reports.iter().zip(&again) {
            prop_assert_eq!(format!("{a:?}"), format!("{b:?}"));
        }
    }

    #[test]
    fn errors_leave_state_unchanged(cfg in config(), obs in prop::collection::vec(observation(), 1..20), which in 0usize..4) {
        let lr0 = cfg.lr_min;
        let mut s = LayerScheduler::<f64, 16>::new(&cfg, lr0).unwrap();
        for (k, o) in obs.iter().enumerate() {
            s.observe(&cfg, o, progress_at(k as u64)).unwrap();
        }
        let before = format!("{s:?}");
        let mut bad = obs[0];
        match which {
            0 => bad.sharpness = f64::NAN,
            1 => bad.alpha_agg = -1.0,
            2 => bad.noise.noise = f64::INFINITY,
            _ => bad.mean_multiplier = f64::NAN,
        }
        prop_assert!(s.observe(&cfg, &bad, progress_at(0)).is_err());
        prop_assert_eq!(format!("{s:?}"), before);
    }
}

/// Mode off, driven through a whole Adam run, is exactly plain Adam at the fixed lr.
#[test]
fn mode_off_run_is_bitwise_plain_adam() {
    let cfg = SchedulerConfig {
        mode: Mode::Off,
        interval: 3,
        ..SchedulerConfig::<f32>::default()
    };
    let adam = AdamConfig::<f32>::default();
    let mut rng = Rng::new(11);
    let n = 50;
    let p0: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    let (mut pa, mut ma, mut va) = (p0.clone(), vec![0.0f32; n], vec![0.0f32; n]);
    let (mut pb, mut mb, mut vb) = (p0.clone(), vec![0.0f32; n], vec![0.0f32; n]);
    let mut sched = LayerScheduler::<f32, 32>::new(&cfg, 3e-3).unwrap();
    for step in 0..300u64 {
        let g: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let mut st = StepStats::new();
        adam_step(
            &adam,
            sched.lr(),
            step + 1,
            &mut pa,
            &g,
            &mut ma,
            &mut va,
            &mut st,
        )
        .unwrap();
        adam_step(
            &adam,
            3e-3,
            step + 1,
            &mut pb,
            &g,
            &mut mb,
            &mut vb,
            &mut StepStats::new(),
        )
        .unwrap();
        if cfg.is_event(step) {
            let obs = LayerObservation {
                lr_used: None,
                alpha_agg: st.alpha_agg(sched.lr(), adam.eps),
                mean_multiplier: st.mean_multiplier(),
                sharpness: 1e4, // far above any bound: any other mode would cool
                noise: NoiseStats::from_variance(1.0, 10.0, 8, None).unwrap(),
            };
            let r = sched
                .observe(
                    &cfg,
                    &obs,
                    Progress {
                        step,
                        ..Progress::default()
                    },
                )
                .unwrap();
            assert_eq!(r.decision, Decision::Hold);
        }
    }
    assert_eq!(pa, pb);
    assert_eq!((ma, va), (mb, vb));
}

#[test]
fn pure_noise_gives_snr_g_near_zero_and_cools() {
    let cfg = SchedulerConfig {
        mode: Mode::Gradient,
        ..SchedulerConfig::<f64>::default()
    };
    let mut s = LayerScheduler::<f64, 32>::new(&cfg, 1e-3).unwrap();
    let mut rng = Rng::new(12);
    let (p, b) = (40, 16);
    let mut snr_sum = 0.0;
    let mut cools = 0;
    let events = 300;
    for k in 0..events {
        let samples: Vec<f64> = (0..b * p).map(|_| rng.normal()).collect();
        let mean: Vec<f64> = (0..p)
            .map(|j| (0..b).map(|i| samples[i * p + j]).sum::<f64>() / b as f64)
            .collect();
        let noise = NoiseStats::from_sample_grads(&mean, samples.chunks_exact(p), None).unwrap();
        let obs = LayerObservation {
            lr_used: None,
            alpha_agg: 1.0,
            mean_multiplier: 1.0,
            sharpness: 0.5,
            noise,
        };
        let r = s.observe(&cfg, &obs, progress_at(k)).unwrap();
        snr_sum += r.snr_g;
        cools += (r.decision == Decision::Cool) as usize;
    }
    let mean_snr = snr_sum / events as f64;
    assert!(mean_snr < 0.05, "mean SNR_g on pure noise {mean_snr}");
    assert!(
        cools > events as usize * 9 / 10,
        "ρ = 0.5 is above a bound near 0: {cools} cools"
    );
}

#[test]
fn warms_only_early_and_respects_lr_max() {
    let cfg = SchedulerConfig {
        mode: Mode::Combined,
        ..SchedulerConfig::<f64>::default()
    };
    let mut s = LayerScheduler::<f64, 32>::new(&cfg, 9.95e-3).unwrap();
    let obs = LayerObservation {
        lr_used: None,
        alpha_agg: 1e-4,
        mean_multiplier: 0.0,
        sharpness: 1.0, // ρ = 1e-4, far below 0.1 × bound
        noise: NoiseStats::from_variance(10.0, 1.0, 32, None).unwrap(),
    };
    let early = Progress {
        step_in_task: 0,
        steps_per_task: Some(100),
        step: 0,
        total_steps: None,
    };
    let late = Progress {
        step_in_task: 50,
        ..early
    };
    assert_eq!(
        s.observe(&cfg, &obs, early).unwrap().decision,
        Decision::Warm
    );
    assert_eq!(s.lr(), 1e-2); // 9.95e-3 × 1.01 clamped to lr_max
    assert_eq!(
        s.observe(&cfg, &obs, late).unwrap().decision,
        Decision::Hold
    );
    // No task length and no run length: never "early".
    assert_eq!(
        s.observe(&cfg, &obs, Progress::default()).unwrap().decision,
        Decision::Hold
    );
    // Run-level fallback when tasks are unknown.
    let run_early = Progress {
        step_in_task: 0,
        steps_per_task: None,
        step: 10,
        total_steps: Some(100),
    };
    assert!(run_early.is_early(cfg.warm_fraction));
}

#[test]
fn config_and_construction_errors_name_the_field() {
    let ok = SchedulerConfig::<f64>::default();
    assert!(ok.validate().is_ok());
    let fields: [(SchedulerConfig<f64>, &str); 8] = [
        (SchedulerConfig { interval: 0, ..ok }, "interval"),
        (SchedulerConfig { safety: -1.0, ..ok }, "safety"),
        (
            SchedulerConfig {
                snr_ema_decay: 1.0,
                ..ok
            },
            "snr_ema_decay",
        ),
        (SchedulerConfig { warm: 0.5, ..ok }, "warm"),
        (
            SchedulerConfig {
                warm_fraction: 1.5,
                ..ok
            },
            "warm_fraction",
        ),
        (
            SchedulerConfig {
                timid: f64::NAN,
                ..ok
            },
            "timid",
        ),
        (SchedulerConfig { lr_min: 0.0, ..ok }, "lr_min"),
        (SchedulerConfig { lr_max: 1e-7, ..ok }, "lr_max"),
    ];
    for (cfg, field) in fields {
        match cfg.validate() {
            Err(safestep_core::Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(
        LayerScheduler::<f64, 8>::new(&ok, 1e-3).is_err(),
        "window 20 > N = 8"
    );
    assert!(
        LayerScheduler::<f64, 32>::new(&ok, 1.0).is_err(),
        "lr0 above lr_max"
    );
    let mut s = LayerScheduler::<f64, 32>::new(&ok, 1e-3).unwrap();
    let other = SchedulerConfig { window: 10, ..ok };
    let obs = LayerObservation {
        lr_used: None,
        noise: NoiseStats::from_variance(1.0, 1.0, 4, None).unwrap(),
        ..LayerObservation::default()
    };
    assert!(s.observe(&other, &obs, Progress::default()).is_err());
}

proptest! {
    #![proptest_config(core_support::proptest_cases(128))]

    /// A checkpoint taken at any event and restored continues bit-identically.
    #[test]
    fn state_roundtrip_continues_bit_identically(
        cfg in config(), obs in prop::collection::vec(observation(), 2..60), cut in 0usize..60,
    ) {
        let cut = cut % obs.len();
        let mut a = LayerScheduler::<f64, 16>::new(&cfg, cfg.lr_max).unwrap();
        for (k, o) in obs[..cut].iter().enumerate() {
            a.observe(&cfg, o, progress_at(k as u64)).unwrap();
        }
        let saved: Vec<f64> = a.to_state().collect();
        prop_assert_eq!(saved.len(), a.state_len());
        let mut b = LayerScheduler::<f64, 16>::from_state(&cfg, &saved).unwrap();
        for (k, o) in obs[cut..].iter().enumerate() {
            let ra = a.observe(&cfg, o, progress_at((cut + k) as u64)).unwrap();
            let rb = b.observe(&cfg, o, progress_at((cut + k) as u64)).unwrap();
            prop_assert_eq!(format!("{ra:?}"), format!("{rb:?}"));
        }
        // Truncated or corrupted states are rejected, never accepted silently.
        prop_assert!(LayerScheduler::<f64, 16>::from_state(&cfg, &saved[..saved.len() - 1]).is_err());
        let mut bad = saved.clone();
        bad[1] = f64::NAN;
        prop_assert!(LayerScheduler::<f64, 16>::from_state(&cfg, &bad).is_err());
    }
}

proptest! {
    #![proptest_config(core_support::proptest_cases(128))]

    /// The same invariants in f32: lr finite and clamped, mode off untouched.
    #[test]
    fn f32_lr_stays_finite_and_clamped(
        mode in mode(), seq in prop::collection::vec((0.0..1e3f32, -1e3..1e4f32, 0.0..1e6f32, 0.0..1e6f32), 1..200),
    ) {
        let cfg = SchedulerConfig { mode, ..SchedulerConfig::<f32>::default() };
        let mut s = LayerScheduler::<f32, 32>::new(&cfg, 1e-3).unwrap();
        for (k, &(alpha, lam, mgs, var)) in seq.iter().enumerate() {
            let obs = LayerObservation {
                lr_used: None,
                alpha_agg: alpha,
                mean_multiplier: alpha,
                sharpness: lam,
                noise: NoiseStats::from_variance(mgs, var, 64, None).unwrap(),
            };
            let r = s.observe(&cfg, &obs, progress_at(k as u64)).unwrap();
            prop_assert!(r.lr_after.is_finite() && r.lr_after >= cfg.lr_min && r.lr_after <= cfg.lr_max);
            if mode == Mode::Off {
                prop_assert_eq!(r.lr_after, 1e-3);
            }
        }
    }
}
