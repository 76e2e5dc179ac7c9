//! Power iteration against known spectra and a Jacobi eigenvalue reference.

mod core_support;
use core_support::{jacobi_eigenvalues, matvec, random_orthogonal, with_spectrum, Rng};
use proptest::prelude::*;
use safestep_core::power::{PowerConfig, PowerError, PowerIteration};
use safestep_core::Error;

fn hvp_of(a: &[f64]) -> impl FnMut(&[f64], &mut [f64]) -> Result<(), ()> + '_ {
    move |v, out| {
        matvec(a, v, out);
        Ok(())
    }
}

#[test]
fn jacobi_reference_recovers_a_known_spectrum() {
    let mut rng = Rng::new(9);
    let q = random_orthogonal(6, &mut rng);
    let eig = [5.0, -3.0, 2.0, 1.0, 0.5, 0.0];
    let mut got = jacobi_eigenvalues(&with_spectrum(&q, &eig), 6);
    got.sort_by(|a, b| b.partial_cmp(a).unwrap());
    let mut want = eig.to_vec();
    want.sort_by(|a, b| b.partial_cmp(a).unwrap());
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-10, "{got:?}");
    }
}

proptest! {
    #![proptest_config(core_support::proptest_cases(128))]

    /// Random symmetric matrices with a random eigenbasis and a dominant eigenvalue (of
    /// either sign): the cold start converges to it.
    #[test]
    fn converges_to_top_eigenvalue(seed in any::<u64>(), n in 2usize..12, top in prop_oneof![0.1..100.0f64, -100.0..-0.1f64]) {
        let mut rng = Rng::new(seed);
        let q = random_orthogonal(n, &mut rng);
        let mut eig: Vec<f64> = (0..n).map(|_| (rng.uniform() * 1.6 - 0.8) * top.abs()).collect();
        eig[rng.below(n)] = top;
        let a = with_spectrum(&q, &eig);
        let mut v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mut hv = vec![0.0; n];
        let mut p = PowerIteration::new();
        let cfg = PowerConfig { tol: 1e-12, max_iters: 400 };
        let lambda = p.estimate(&cfg, &mut v, &mut hv, None, hvp_of(&a)).unwrap();
        prop_assert!((lambda - top).abs() <= 1e-6 * top.abs(), "{lambda} vs {top}, {eig:?}");
        // The warm-started direction is an eigenvector: A v ≈ λ v.
        matvec(&a, &v, &mut hv);
        let resid: f64 = hv.iter().zip(&v).map(|(h, x)| (h - lambda * x).powi(2)).sum::<f64>().sqrt();
        prop_assert!(resid <= 1e-3 * top.abs());
    }

    /// Preconditioned: λ_max(D^½ A D^½) for PSD A, checked against Jacobi on the explicit
    /// matrix (Ostrowski keeps the spectral gap: d ∈ [0.5, 2], top(A) = 10, others <= 2).
    #[test]
    fn preconditioned_matches_explicit_matrix(seed in any::<u64>(), n in 2usize..10) {
        let mut rng = Rng::new(seed);
        let q = random_orthogonal(n, &mut rng);
        let mut eig: Vec<f64> = (0..n).map(|_| rng.uniform() * 2.0).collect();
        eig[0] = 10.0;
        let a = with_spectrum(&q, &eig);
        let d: Vec<f64> = (0..n).map(|_| 0.5 + 1.5 * rng.uniform()).collect();
        let scaled: Vec<f64> = (0..n * n).map(|k| d[k / n] * a[k] * d[k % n]).collect();
        let want = jacobi_eigenvalues(&scaled, n).into_iter().fold(f64::MIN, f64::max);
        let mut v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        let mut hv = vec![0.0; n];
        let mut p = PowerIteration::new();
        let cfg = PowerConfig { tol: 1e-13, max_iters: 500 };
        let lambda = p.estimate(&cfg, &mut v, &mut hv, Some(&d), hvp_of(&a)).unwrap();
        prop_assert!((lambda - want).abs() <= 1e-6 * want, "{lambda} vs {want}");
    }
}

#[test]
fn first_call_iterates_then_one_step_per_call() {
    let mut rng = Rng::new(5);
    let n = 8;
    let q = random_orthogonal(n, &mut rng);
    let eig: Vec<f64> = (0..n).map(|i| 4.0 * 0.7f64.powi(i as i32)).collect();
    let a = with_spectrum(&q, &eig);
    let mut v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
    let mut hv = vec![0.0; n];
    let mut p = PowerIteration::new();
    let cfg = PowerConfig::default(); // tol 1e-3, at most 20
    let mut calls = 0;
    let first = p
        .estimate(
            &cfg,
            &mut v,
            &mut hv,
            None,
            |x: &[f64], o: &mut [f64]| -> Result<(), ()> {
                calls += 1;
                matvec(&a, x, o);
                Ok(())
            },
        )
        .unwrap();
    assert!(calls > 1 && calls <= 20 && calls == p.iterations());
    assert!(p.converged() && (first - 4.0).abs() < 0.05 * 4.0);
    // Later events: exactly one product each, tracking a drifting matrix.
    for k in 1..=30 {
        let scale = 1.0 + 0.01 * k as f64;
        let ak: Vec<f64> = a.iter().map(|x| x * scale).collect();
        let mut calls = 0;
        let l = p
            .estimate(
                &cfg,
                &mut v,
                &mut hv,
                None,
                |x: &[f64], o: &mut [f64]| -> Result<(), ()> {
                    calls += 1;
                    matvec(&ak, x, o);
                    Ok(())
                },
            )
            .unwrap();
        assert_eq!(calls, 1);
        assert!((l - 4.0 * scale).abs() < 1e-3 * 4.0 * scale, "{l}");
    }
}

#[test]
fn robust_to_zero_and_non_finite_vectors() {
    let a = [2.0, 0.0, 0.0, 1.0];
    for start in [[0.0, 0.0], [f64::NAN, 1.0], [f64::INFINITY, 0.0]] {
        let mut v = start;
        let mut hv = [0.0; 2];
        let mut p = PowerIteration::new();
        let cfg = PowerConfig {
            tol: 1e-12,
            max_iters: 200,
        };
        let l = p.estimate(&cfg, &mut v, &mut hv, None, hvp_of(&a)).unwrap();
        assert!((l - 2.0).abs() < 1e-9, "{start:?} → {l}");
        assert!(v.iter().all(|x| x.is_finite()));
    }
    // Zero Hessian: estimate 0, direction kept, no NaN.
    let mut v = [0.6, 0.8];
    let mut hv = [0.0; 2];
    let l = PowerIteration::new()
        .estimate(
            &PowerConfig::default(),
            &mut v,
            &mut hv,
            None,
            |_: &[f64], o: &mut [f64]| -> Result<(), ()> {
                o.fill(0.0);
                Ok(())
            },
        )
        .unwrap();
    assert_eq!(l, 0.0);
    assert!((v[0] - 0.6).abs() < 1e-15 && (v[1] - 0.8).abs() < 1e-15);
    // Non-finite product: an error, and v stays a finite direction.
    let mut p = PowerIteration::new();
    let e = p.estimate(
        &PowerConfig::default(),
        &mut v,
        &mut hv,
        Some(&[2.0, 0.5]),
        |_: &[f64], o: &mut [f64]| -> Result<(), ()> {
            o[0] = f64::NAN;
            Ok(())
        },
    );
    assert!(matches!(
        e,
        Err(PowerError::Input(Error::NonFinite {
            what: "hvp output",
            ..
        }))
    ));
    assert!(
        (v[0] - 0.6).abs() < 1e-12 && (v[1] - 0.8).abs() < 1e-12,
        "{v:?}"
    );
    // The closure's own error is passed through.
    let e = p.estimate(
        &PowerConfig::default(),
        &mut v,
        &mut hv,
        None,
        |_: &[f64], _: &mut [f64]| Err("device lost"),
    );
    assert_eq!(e, Err(PowerError::Hvp("device lost")));
    // Bad inputs are named.
    let e = p.estimate(
        &PowerConfig::default(),
        &mut v,
        &mut [0.0; 3],
        None,
        hvp_of(&a),
    );
    assert!(matches!(
        e,
        Err(PowerError::Input(Error::LengthMismatch { what: "hv", .. }))
    ));
    let e = p.estimate(
        &PowerConfig::default(),
        &mut v,
        &mut hv,
        Some(&[1.0, 0.0]),
        hvp_of(&a),
    );
    assert!(matches!(
        e,
        Err(PowerError::Input(Error::InvalidInput {
            what: "precond",
            ..
        }))
    ));
}

#[test]
fn works_in_f32() {
    let a = [3.0_f32, 1.0, 1.0, 3.0]; // eigenvalues 4, 2
    let mut v = [1.0_f32, 0.0];
    let mut hv = [0.0_f32; 2];
    let l = PowerIteration::new()
        .estimate(
            &PowerConfig {
                tol: 1e-6,
                max_iters: 100,
            },
            &mut v,
            &mut hv,
            None,
            |x: &[f32], o: &mut [f32]| -> Result<(), ()> {
                o[0] = a[0] * x[0] + a[1] * x[1];
                o[1] = a[2] * x[0] + a[3] * x[1];
                Ok(())
            },
        )
        .unwrap();
    assert!((l - 4.0).abs() < 1e-4);
}
