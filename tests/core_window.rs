//! Curvature volatility: window and EMA estimators against direct formulas.

mod core_support;
use proptest::prelude::*;
use safestep_core::window::{CurvatureWindow, EmaVolatility};

proptest! {
    #![proptest_config(core_support::proptest_cases(256))]

    #[test]
    fn vol_of_constant_series_is_zero(c in 0.0..1e6f64, n in 0usize..100, w in 1usize..=32) {
        let mut win = CurvatureWindow::<f64, 32>::new(w).unwrap();
        let mut ema = EmaVolatility::new(EmaVolatility::<f64>::decay_for_window(w)).unwrap();
        for _ in 0..n {
            win.push(c).unwrap();
            ema.push(c).unwrap();
        }
        prop_assert_eq!(win.volatility(), 0.0);
        prop_assert_eq!(ema.volatility(), 0.0);
        if n > 0 {
            prop_assert!((win.mean() - c).abs() <= 1e-12 * c);
            prop_assert!((ema.mean() - c).abs() <= 1e-12 * c);
        }
    }

    /// The window holds the last w values and its statistics match a direct two-pass
    /// computation over them.
    #[test]
    fn window_matches_direct_formula(xs in prop::collection::vec(-10.0..100.0f64, 0..80), w in 1usize..=20) {
        let mut win = CurvatureWindow::<f64, 20>::new(w).unwrap();
        for &x in &xs {
            win.push(x).unwrap();
        }
        let tail = &xs[xs.len().saturating_sub(w)..];
        prop_assert_eq!(win.len(), tail.len());
        if tail.len() >= 2 {
            let k = tail.len() as f64;
            let mean = tail.iter().sum::<f64>() / k;
            let var = tail.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (k - 1.0);
            prop_assert!((win.mean() - mean).abs() <= 1e-10 * (1.0 + mean.abs()));
            prop_assert!((win.variance() - var).abs() <= 1e-9 * (1.0 + var));
            let vol = if mean > 0.0 { var / mean } else { 0.0 };
            prop_assert!((win.volatility() - vol).abs() <= 1e-8 * (1.0 + vol.abs()));
        } else {
            prop_assert_eq!(win.volatility(), 0.0);
        }
    }

    /// Peeking at the volatility after a push gives bit-for-bit what the push then gives,
    /// wherever the ring buffer wraps.
    #[test]
    fn volatility_after_equals_push(xs in prop::collection::vec(0.0..100.0f64, 1..60), w in 1usize..=8) {
        let mut win = CurvatureWindow::<f64, 8>::new(w).unwrap();
        for &x in &xs {
            let peek = win.volatility_after(x);
            win.push(x).unwrap();
            prop_assert_eq!(peek.to_bits(), win.volatility().to_bits());
        }
    }

    /// EMA estimator = explicit weighted mean and reliability-weighted unbiased variance
    /// with weights d^age.
    #[test]
    fn ema_matches_weighted_formula(xs in prop::collection::vec(0.0..50.0f64, 1..60), d in 0.0..0.99f64) {
        let mut ema = EmaVolatility::new(d).unwrap();
        for &x in &xs {
            ema.push(x).unwrap();
        }
        let n = xs.len();
        let w: Vec<f64> = (0..n).map(|k| d.powi((n - 1 - k) as i32)).collect();
        let sw: f64 = w.iter().sum();
        let sw2: f64 = w.iter().map(|x| x * x).sum();
        let mean = w.iter().zip(&xs).map(|(a, b)| a * b).sum::<f64>() / sw;
        prop_assert!((ema.mean() - mean).abs() <= 1e-9 * (1.0 + mean));
        let denom = sw - sw2 / sw;
        if n >= 2 && denom > 1e-9 {
            let var = w.iter().zip(&xs).map(|(a, b)| a * (b - mean).powi(2)).sum::<f64>() / denom;
            prop_assert!((ema.variance() - var).abs() <= 1e-7 * (1.0 + var), "{} vs {}", ema.variance(), var);
        }
    }
}

#[test]
fn fewer_than_two_samples_and_bad_inputs() {
    let mut w = CurvatureWindow::<f32, 4>::new(4).unwrap();
    assert_eq!(w.volatility(), 0.0);
    w.push(3.0).unwrap();
    assert_eq!((w.mean(), w.variance(), w.volatility()), (3.0, 0.0, 0.0));
    assert!(w.push(f32::NAN).is_err());
    assert_eq!(w.len(), 1);
    assert!(CurvatureWindow::<f32, 4>::new(5).is_err());
    assert!(CurvatureWindow::<f32, 4>::new(0).is_err());
    // A non-positive mean gives Vol = 0, never a negative or NaN volatility.
    let mut w = CurvatureWindow::<f64, 4>::new(4).unwrap();
    for x in [-1.0, 1.0, -2.0] {
        w.push(x).unwrap();
    }
    assert_eq!(w.volatility(), 0.0);
    assert!(EmaVolatility::new(1.0_f64).is_err());
    let mut e = EmaVolatility::new(0.5_f64).unwrap();
    e.push(1.0).unwrap();
    e.push(3.0).unwrap();
    assert!(e.volatility() > 0.0);
    e.clear();
    assert_eq!((e.count(), e.volatility()), (0, 0.0));
}
