//! Property tests of the bounds and SNRs (safestep_core::bounds, ::noise).

mod core_support;
use proptest::prelude::*;
use safestep_core::bounds::{bound_from_snr, combined_snr, snr_volatility, Bounds};
use safestep_core::noise::NoiseStats;
use safestep_core::Error;

/// SNRs from 0 to huge, plus +∞.
fn snr() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(f64::INFINITY),
        1e-12..1e-3f64,
        1e-3..1e3f64,
        1e3..1e15f64,
    ]
}

fn rel_close(a: f64, b: f64, tol: f64) -> bool {
    a == b || (a - b).abs() <= tol * a.abs().max(b.abs())
}

/// ρ*_g from (‖ḡ‖², S, B) through the public API.
fn rho_g(safety: f64, mgs: f64, s: f64, b: usize) -> f64 {
    let n = NoiseStats::from_variance(mgs, s, b, None).unwrap();
    bound_from_snr(safety, n.snr()).unwrap()
}

proptest! {
    #![proptest_config(core_support::proptest_cases(512))]

    #[test]
    fn combined_snr_identity(a in snr(), b in snr()) {
        let c = combined_snr(a, b).unwrap();
        prop_assert!(!c.is_nan());
        // 1/SNR = 1/SNR_g + 1/SNR_v, in reciprocal space (1/0 = ∞, 1/∞ = 0).
        let lhs = 1.0 / c;
        let rhs = 1.0 / a + 1.0 / b;
        prop_assert!(rel_close(lhs, rhs, 1e-12), "a={a} b={b} c={c}");
        prop_assert!(c <= a.min(b) * (1.0 + 1e-15));
    }

    #[test]
    fn every_bound_in_zero_two_s(
        safety in 1e-3..10.0f64, beta in 0.0..10.0f64, batch in 1usize..10_000,
        snr_g in snr(), vol in prop_oneof![Just(0.0), 0.0..1e6f64],
    ) {
        let b = Bounds::compute(safety, beta, batch, snr_g, vol).unwrap();
        for x in [b.rho_g, b.rho_vol, b.rho_combined] {
            prop_assert!(x.is_finite() && (0.0..=2.0 * safety).contains(&x), "{b:?}");
        }
        // The combined bound is below both single bounds.
        prop_assert!(b.rho_combined <= b.rho_g * (1.0 + 1e-12));
        prop_assert!(b.rho_combined <= b.rho_vol * (1.0 + 1e-12));
        // SNR = G² / (S/B + β G² Vol / B) in SNR_g units: 1/SNR = 1/SNR_g + β Vol / B.
        if snr_g > 0.0 && snr_g.is_finite() {
            let expect = 1.0 / (1.0 / snr_g + beta * vol / batch as f64);
            prop_assert!(rel_close(b.snr, expect, 1e-12));
        }
    }

    #[test]
    fn rho_g_monotone(
        safety in 0.1..2.0f64, mgs in 0.0..100.0f64, s in 0.0..1000.0f64, b in 2usize..512,
        dm in 0.0..10.0f64, ds in 0.0..100.0f64, db in 1usize..64,
    ) {
        let base = rho_g(safety, mgs, s, b);
        let slack = 1e-12 * 2.0 * safety;
        prop_assert!(rho_g(safety, mgs + dm, s, b) >= base - slack, "increasing in ‖ḡ‖² (so in G²)");
        prop_assert!(rho_g(safety, mgs, s + ds, b) <= base + slack, "decreasing in S");
        prop_assert!(rho_g(safety, mgs, s, b + db) >= base - slack, "increasing in B");
    }

    #[test]
    fn bounds_invariant_under_gradient_rescaling(
        seed in any::<u64>(), c in prop_oneof![1e-6..1e-1f64, 1e-1..10.0f64, 10.0..1e6f64],
        b in 2usize..16, p in 1usize..20,
    ) {
        let mut x = seed | 1;
        let mut next = || { x ^= x << 13; x ^= x >> 7; x ^= x << 17; (x >> 11) as f64 / (1u64 << 53) as f64 - 0.3 };
        let samples: Vec<f64> = (0..b * p).map(|_| next()).collect();
        let mean: Vec<f64> = (0..p).map(|j| (0..b).map(|i| samples[i * p + j]).sum::<f64>() / b as f64).collect();
        let scaled: Vec<f64> = samples.iter().map(|g| g * c).collect();
        let smean: Vec<f64> = mean.iter().map(|g| g * c).collect();
        let n1 = NoiseStats::from_sample_grads(&mean, samples.chunks_exact(p), None).unwrap();
        let n2 = NoiseStats::from_sample_grads(&smean, scaled.chunks_exact(p), None).unwrap();
        prop_assert!(rel_close(n2.variance, c * c * n1.variance, 1e-9));
        let (s1, s2) = (n1.snr(), n2.snr());
        // Clamping at 0 is exact on both sides; otherwise equal up to rounding.
        if s1 > 1e-6 || s2 > 1e-6 {
            prop_assert!(rel_close(s1, s2, 1e-6), "{s1} vs {s2}");
        }
        let b1 = Bounds::compute(0.8, 1.0, b, s1, 0.3).unwrap();
        let b2 = Bounds::compute(0.8, 1.0, b, s2, 0.3).unwrap();
        prop_assert!((b1.rho_combined - b2.rho_combined).abs() < 1e-6);
    }
}

#[test]
fn edge_cases_defined_and_documented() {
    // S = 0 → SNR_g = ∞ → ρ*_g = 2s.
    let n = NoiseStats::from_variance(1.0_f64, 0.0, 8, None).unwrap();
    assert_eq!(bound_from_snr(0.8, n.snr()).unwrap(), 1.6);
    // G² = 0 → 0.
    let n = NoiseStats::from_variance(0.0_f64, 3.0, 8, None).unwrap();
    assert_eq!(bound_from_snr(0.8, n.snr()).unwrap(), 0.0);
    // Vol = 0 → ρ*_vol = 2s; B = 1 allowed for the volatility SNR.
    let b = Bounds::compute(0.8_f64, 1.0, 1, 1.0, 0.0).unwrap();
    assert_eq!(
        (b.snr_v, b.rho_vol, b.snr, b.rho_combined),
        (f64::INFINITY, 1.6, 1.0, 0.8)
    );
    assert_eq!(snr_volatility(1, 1.0_f64, 0.5).unwrap(), 2.0);
    // B = 0, negative, NaN → errors naming the input.
    assert!(matches!(
        snr_volatility(0, 1.0_f64, 0.5),
        Err(Error::InvalidInput { what: "batch", .. })
    ));
    assert!(matches!(
        Bounds::compute(0.8, 1.0, 4, f64::NAN, 0.1),
        Err(Error::NonFinite { what: "snr_g", .. })
    ));
    assert!(matches!(
        Bounds::compute(0.8, 1.0, 4, -1.0, 0.1),
        Err(Error::InvalidInput { what: "snr_g", .. })
    ));
    assert!(matches!(
        Bounds::compute(0.8, 1.0, 4, 1.0, -0.1),
        Err(Error::InvalidInput { what: "vol", .. })
    ));
    assert!(matches!(
        Bounds::compute(0.8, f64::NAN, 4, 1.0, 0.1),
        Err(Error::NonFinite { what: "beta", .. })
    ));
    assert!(matches!(
        Bounds::compute(0.0, 1.0, 4, 1.0, 0.1),
        Err(Error::InvalidInput { what: "safety", .. })
    ));
    assert!(matches!(
        NoiseStats::from_variance(1.0_f64, 1.0, 1, None),
        Err(Error::InvalidInput { what: "batch", .. })
    ));
    assert!(matches!(
        combined_snr(f64::NAN, 1.0),
        Err(Error::NonFinite { what: "snr_g", .. })
    ));
    // ∞ and 0 combine without NaN.
    assert_eq!(
        combined_snr(f64::INFINITY, f64::INFINITY).unwrap(),
        f64::INFINITY
    );
    assert_eq!(combined_snr(0.0, f64::INFINITY).unwrap(), 0.0);
    // f32 works the same way.
    let b = Bounds::compute(0.8_f32, 1.0, 32, f32::INFINITY, 0.0).unwrap();
    assert_eq!(b.rho_combined, 1.6);
}
