//! Cheap indicators against direct formulas.

mod core_support;
use proptest::prelude::*;
use safestep_core::indicators::{
    dead_unit_fraction, grad_norm, grad_param_ratio, unit_sign_entropy, weight_norm,
};
use safestep_core::Error;

proptest! {
    #![proptest_config(core_support::proptest_cases(256))]

    #[test]
    fn norms_and_ratio(x in prop::collection::vec(-1e3..1e3f64, 0..100), c in 1e-3..1e3f64) {
        let direct = x.iter().map(|v| v * v).sum::<f64>().sqrt();
        prop_assert!((weight_norm(&x) - direct).abs() <= 1e-12 * (1.0 + direct));
        prop_assert!((grad_norm(&x) - direct).abs() <= 1e-12 * (1.0 + direct));
        let g: Vec<f64> = x.iter().map(|v| v * c).collect();
        let r = grad_param_ratio(&g, &x).unwrap();
        if direct > 0.0 {
            prop_assert!((r - c).abs() <= 1e-10 * c);
        } else {
            prop_assert_eq!(r, 0.0);
        }
    }

    #[test]
    fn entropy_and_dead_units(units in 1usize..12, batch in 1usize..20, seed in any::<u64>()) {
        let mut s = seed | 1;
        let pre: Vec<f32> = (0..units * batch)
            .map(|k| {
                s ^= s << 13; s ^= s >> 7; s ^= s << 17;
                // Unit u is on with a unit-specific probability, some units never.
                let u = k % units;
                if u % 4 == 0 { -1.0 } else if (s % 100) < (u as u64 * 9) { 1.0 } else { -0.5 }
            })
            .collect();
        let mut h = 0.0f64;
        let mut dead = 0;
        for u in 0..units {
            let on = (0..batch).filter(|&b| pre[b * units + u] > 0.0).count();
            let p = on as f64 / batch as f64;
            for q in [p, 1.0 - p] {
                if q > 0.0 { h -= q * q.log2(); }
            }
            dead += (on == 0) as usize;
        }
        let got = unit_sign_entropy(&pre, units).unwrap() as f64;
        prop_assert!((got - h / units as f64).abs() < 1e-5);
        prop_assert!((0.0..=1.0 + 1e-6).contains(&got));
        prop_assert_eq!(dead_unit_fraction(&pre, units).unwrap(), dead as f32 / units as f32);
    }
}

#[test]
fn bad_layouts_are_errors() {
    assert!(matches!(
        unit_sign_entropy(&[1.0f64; 5], 2),
        Err(Error::LengthMismatch { .. })
    ));
    assert!(matches!(
        unit_sign_entropy(&[1.0f64; 4], 0),
        Err(Error::InvalidInput { what: "units", .. })
    ));
    assert!(matches!(
        dead_unit_fraction::<f64>(&[], 3),
        Err(Error::InvalidInput { .. })
    ));
    assert!(matches!(
        dead_unit_fraction(&[1.0, f64::NAN], 2),
        Err(Error::NonFinite { index: Some(1), .. })
    ));
    assert!(matches!(
        grad_param_ratio(&[1.0f64], &[1.0, 2.0]),
        Err(Error::LengthMismatch { .. })
    ));
    assert_eq!(grad_param_ratio(&[1.0f64], &[0.0]).unwrap(), f64::INFINITY);
}
