//! The fused Adam step against a naive f64 reference, in f32 and f64.
#![allow(clippy::needless_range_loop)] // the reference indexes like the formulas

mod core_support;
use core_support::Rng;
use proptest::prelude::*;
use safestep_core::adam::{
    adam_step, preconditioner_sqrt, Adam, AdamConfig, StateBounds, StepStats, WeightDecay,
};
use safestep_core::Error;

/// Reference state and statistics, textbook formulas, f64.
struct Reference {
    p: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    /// The first moment's recurrence run on `|grad|`: the scale of the terms that `m`
    /// sums. Gradients of both signs can cancel to an `m` far smaller than its terms, and a
    /// rounding error in precision T is relative to the terms, not to `m`.
    m_scale: Vec<f64>,
}

#[derive(Default, Debug)]
struct RefStats {
    count: usize,
    sum_v_hat: f64,
    sum_mult: f64,
    param_sq: f64,
    grad_sq: f64,
    update_sq: f64,
}

impl Reference {
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        b1: f64,
        b2: f64,
        eps: f64,
        wd: WeightDecay<f64>,
        lr: f64,
        t: u64,
        g: &[f64],
        st: &mut RefStats,
    ) {
        let bc1 = 1.0 - b1.powf(t as f64);
        let bc2 = 1.0 - b2.powf(t as f64);
        for i in 0..self.p.len() {
            let grad = match wd {
                WeightDecay::CoupledL2(l) => g[i] + l * self.p[i],
                _ => g[i],
            };
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * grad;
            self.m_scale[i] = b1 * self.m_scale[i] + (1.0 - b1) * grad.abs();
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * grad * grad;
            let m_hat = self.m[i] / bc1;
            let v_hat = self.v[i] / bc2;
            let mut delta = lr * m_hat / (v_hat.sqrt() + eps);
            if let WeightDecay::Decoupled(l) = wd {
                delta += lr * l * self.p[i];
            }
            self.p[i] -= delta;
            st.count += 1;
            st.sum_v_hat += v_hat;
            st.sum_mult += lr / (bc1 * (v_hat.sqrt() + eps));
            st.param_sq += self.p[i] * self.p[i];
            st.grad_sq += g[i] * g[i];
            st.update_sq += delta * delta;
        }
    }
}

fn close(a: f64, b: f64, rel: f64, abs: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()) + abs
}

fn decay() -> impl Strategy<Value = WeightDecay<f64>> {
    prop_oneof![
        Just(WeightDecay::None),
        (0.0..0.1f64).prop_map(WeightDecay::CoupledL2),
        (0.0..0.1f64).prop_map(WeightDecay::Decoupled),
    ]
}

/// Runs `steps` steps over a layer split into two slices (weight, bias) in precision T and
/// compares parameters, moments and every statistic with the reference.
macro_rules! check_against_reference {
    ($t:ty, $seed:expr, $n:expr, $steps:expr, $wd:expr, $lr:expr, $rel:expr) => {{
        let mut rng = Rng::new($seed);
        let n: usize = $n;
        let split = n / 3;
        let wd64: WeightDecay<f64> = $wd;
        let wd = match wd64 {
            WeightDecay::None => WeightDecay::None,
            WeightDecay::CoupledL2(l) => WeightDecay::CoupledL2(l as $t),
            WeightDecay::Decoupled(l) => WeightDecay::Decoupled(l as $t),
        };
        let cfg = AdamConfig::<$t> {
            weight_decay: wd,
            ..AdamConfig::default()
        };
        let p0: Vec<$t> = (0..n).map(|_| rng.normal() as $t).collect();
        let mut p = p0.clone();
        let (mut m, mut v) = (vec![0.0 as $t; n], vec![0.0 as $t; n]);
        let mut r = Reference {
            p: p0.iter().map(|&x| x as f64).collect(),
            m: vec![0.0; n],
            v: vec![0.0; n],
            m_scale: vec![0.0; n],
        };
        for t in 1..=$steps as u64 {
            // Gradients of mixed scales, including exact zeros (dead inputs).
            let g: Vec<$t> = (0..n)
                .map(|i| {
                    if i % 7 == 0 {
                        0.0
                    } else {
                        (rng.normal() * 10f64.powi((i % 5) as i32 - 3)) as $t
                    }
                })
                .collect();
            let mut st = StepStats::<$t>::new();
            let (pw, pb) = p.split_at_mut(split);
            let (mw, mb) = m.split_at_mut(split);
            let (vw, vb) = v.split_at_mut(split);
            adam_step(&cfg, $lr as $t, t, pw, &g[..split], mw, vw, &mut st).unwrap();
            adam_step(&cfg, $lr as $t, t, pb, &g[split..], mb, vb, &mut st).unwrap();
            let g64: Vec<f64> = g.iter().map(|&x| x as f64).collect();
            let mut rs = RefStats::default();
            r.step(0.9, 0.999, cfg.eps as f64, wd64, $lr, t, &g64, &mut rs);
            prop_assert_eq!(st.count, rs.count);
            prop_assert!(
                close(st.sum_v_hat as f64, rs.sum_v_hat, $rel, 1e-30),
                "sum_v_hat {} {}",
                st.sum_v_hat,
                rs.sum_v_hat
            );
            prop_assert!(
                close(st.sum_multiplier as f64, rs.sum_mult, $rel, 0.0),
                "mult {} {}",
                st.sum_multiplier,
                rs.sum_mult
            );
            prop_assert!(close(st.param_sq as f64, rs.param_sq, $rel, 0.0));
            prop_assert!(close(st.grad_sq as f64, rs.grad_sq, $rel, 1e-30));
            prop_assert!(
                close(st.update_sq as f64, rs.update_sq, $rel, 1e-20),
                "upd {} {}",
                st.update_sq,
                rs.update_sq
            );
            let lr: f64 = $lr;
            let want_alpha = lr / ((rs.sum_v_hat / n as f64).sqrt() + cfg.eps as f64);
            prop_assert!(close(
                st.alpha_agg($lr as $t, cfg.eps).to_f64_(),
                want_alpha,
                $rel,
                0.0
            ));
            prop_assert!(close(
                st.mean_multiplier() as f64,
                rs.sum_mult / n as f64,
                $rel,
                0.0
            ));
        }
        for i in 0..n {
            // Per-parameter: the step is O(lr); compare with an absolute tolerance on that scale.
            prop_assert!(
                close(p[i] as f64, r.p[i], $rel, $rel * $lr),
                "p[{}] {} {}",
                i,
                p[i],
                r.p[i]
            );
            // Gradients of both signs (or g against λθ under coupled L2) can cancel: the
            // rounding error is relative to the scale of the summed terms, not to m.
            prop_assert!(
                close(m[i] as f64, r.m[i], $rel, $rel * r.m_scale[i]),
                "m[{}] {} {} (terms' scale {})",
                i,
                m[i],
                r.m[i],
                r.m_scale[i]
            );
            prop_assert!(
                close(v[i] as f64, r.v[i], $rel, $rel * 1e-6),
                "v[{}] {} {}",
                i,
                v[i],
                r.v[i]
            );
        }
    }};
}

trait AsF64 {
    fn to_f64_(self) -> f64;
}
impl AsF64 for f32 {
    fn to_f64_(self) -> f64 {
        self as f64
    }
}
impl AsF64 for f64 {
    fn to_f64_(self) -> f64 {
        self
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn f64_matches_reference(seed in any::<u64>(), n in 1usize..300, wd in decay(), lr in 1e-5..1e-1f64) {
        check_against_reference!(f64, seed, n, 6, wd, lr, 1e-10);
    }

    #[test]
    fn f32_matches_reference(seed in any::<u64>(), n in 1usize..300, wd in decay(), lr in 1e-5..1e-1f64) {
        check_against_reference!(f32, seed, n, 6, wd, lr, 2e-4);
    }

    #[test]
    fn rejected_steps_change_nothing(seed in any::<u64>(), n in 1usize..64, bad in 0usize..64, which in 0u8..3) {
        let mut rng = Rng::new(seed);
        let bad = bad % n;
        let mut g: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        g[bad] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][which as usize];
        let p0: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let (mut p, mut m, mut v) = (p0.clone(), vec![0.1f32; n], vec![0.2f32; n]);
        let mut st = StepStats::new();
        let e = adam_step(&AdamConfig::default(), 1e-3, 3, &mut p, &g, &mut m, &mut v, &mut st);
        prop_assert_eq!(e, Err(Error::NonFinite { what: "grads", index: Some(bad) }));
        prop_assert_eq!(&p, &p0);
        prop_assert!(m.iter().all(|&x| x == 0.1) && v.iter().all(|&x| x == 0.2));
        prop_assert_eq!(st, StepStats::new());
    }
}

/// The exact peaks `max |θ|`, `max |m|`, `max v` of a state, folded naively in f64.
fn peaks(p: &[f32], m: &[f32], v: &[f32]) -> [f64; 3] {
    let peak = |x: &[f32], f: fn(f32) -> f32| x.iter().fold(0.0f64, |a, &y| a.max(f(y) as f64));
    [peak(p, f32::abs), peak(m, f32::abs), peak(v, |y| y)]
}

fn bits(x: &[f32]) -> Vec<u32> {
    x.iter().map(|y| y.to_bits()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Chained steps through `prepare_known` (reading only the gradient) decide and write
    /// exactly what `prepare` does, step after step: the same result, errors included, and
    /// the same bits in the slices and statistics. Gradient scales and learning rates run
    /// up to the edge of f32, so proofs fail, the full check takes over and steps are
    /// refused; a refused step changes nothing, so its bounds stay valid. The bounds hold
    /// the state written.
    #[test]
    fn prepare_known_decides_and_writes_as_prepare(
        seed in any::<u64>(), n in 0usize..80, wd in 0u8..3, wd_exp in -8i32..30,
        lr_exp in -6i32..30, scales in prop::collection::vec((-40i32..39, 0u8..8), 1..10),
    ) {
        let mut rng = Rng::new(seed);
        let lambda = 10f32.powi(wd_exp);
        let weight_decay = [
            WeightDecay::None,
            WeightDecay::CoupledL2(lambda),
            WeightDecay::Decoupled(lambda),
        ][wd as usize];
        let adam = Adam::new(AdamConfig { weight_decay, ..AdamConfig::default() }).unwrap();
        let lr = 10f32.powi(lr_exp);
        let p0: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
        let (mut pa, mut ma, mut va) = (p0.clone(), vec![0.0f32; n], vec![0.0f32; n]);
        let (mut pb, mut mb, mut vb) = (p0, vec![0.0f32; n], vec![0.0f32; n]);
        let mut known: Option<StateBounds<f32>> = None;
        for (t, &(scale_exp, nan)) in (1u64..).zip(&scales) {
            let scale = 10f64.powi(scale_exp);
            let mut g: Vec<f32> = (0..n).map(|_| (rng.normal() * scale) as f32).collect();
            if nan == 0 && n > 0 {
                let bad = rng.below(n);
                g[bad] = f32::NAN;
            }
            let (mut sa, mut sb) = (StepStats::new(), StepStats::new());
            let full = adam
                .prepare(lr, t, &mut pa, &g, &mut ma, &mut va)
                .map(|step| step.apply_bounded(&mut sa));
            let fast = match &known {
                Some(k) => adam.prepare_known(lr, t, &mut pb, &g, &mut mb, &mut vb, k),
                None => adam.prepare(lr, t, &mut pb, &g, &mut mb, &mut vb),
            }
            .map(|step| step.apply_bounded(&mut sb));
            // The bounds themselves differ: `prepare` proved from exact peaks.
            prop_assert_eq!(full.map(|_| ()), fast.map(|_| ()));
            prop_assert_eq!(bits(&pa), bits(&pb));
            prop_assert_eq!(bits(&ma), bits(&mb));
            prop_assert_eq!(bits(&va), bits(&vb));
            prop_assert_eq!(sa, sb);
            if let Ok(b) = fast {
                let bound = [b.max_abs_params(), b.max_abs_m(), b.max_v()].map(f64::from);
                let peak = peaks(&pb, &mb, &vb);
                prop_assert!((0..3).all(|i| bound[i] >= peak[i]), "{bound:?} < {peak:?}");
                known = Some(b);
            }
        }
    }
}

/// `apply_bounded` writes what `apply` writes, and the same statistics; its bounds hold
/// and are tight to within the norm's factor (a slice of equal magnitudes: `‖θ‖ = √n max|θ|`).
#[test]
fn apply_bounded_writes_as_apply() {
    let adam = Adam::new(AdamConfig::<f32>::default()).unwrap();
    let mut rng = Rng::new(7);
    let n = 1001;
    let p0: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    let g: Vec<f32> = (0..n).map(|_| rng.normal() as f32 * 1e-2).collect();
    let (mut pa, mut ma, mut va) = (p0.clone(), vec![1e-3f32; n], vec![1e-6f32; n]);
    let (mut pb, mut mb, mut vb) = (p0, vec![1e-3f32; n], vec![1e-6f32; n]);
    let (mut sa, mut sb) = (StepStats::new(), StepStats::new());
    adam.prepare(1e-3, 4, &mut pa, &g, &mut ma, &mut va)
        .unwrap()
        .apply(&mut sa);
    let bounds = adam
        .prepare(1e-3, 4, &mut pb, &g, &mut mb, &mut vb)
        .unwrap()
        .apply_bounded(&mut sb);
    assert_eq!(
        (bits(&pa), bits(&ma), bits(&va)),
        (bits(&pb), bits(&mb), bits(&vb))
    );
    assert_eq!(sa, sb);
    let bound = [bounds.max_abs_params(), bounds.max_abs_m(), bounds.max_v()].map(f64::from);
    let peak = peaks(&pb, &mb, &vb);
    for i in 0..3 {
        assert!(bound[i] >= peak[i], "{bound:?} < {peak:?}");
    }
    // ‖θ‖ over 1001 normals is about √1001 ≈ 32 times a typical |θ|, and ~10 times the peak.
    assert!(bound[0] < 40.0 * peak[0], "{bound:?} vs {peak:?}");
}

/// Inputs whose squares overflow f32 do not make a finite step refused: the scan's bounds
/// prove nothing there, and the exact check takes the step. `m = 1e20` with `v = 5e37`:
/// `Σm²` is infinite, the update is about `1e20 · 1e-3 / 7e18`.
#[test]
fn huge_but_finite_steps_are_taken() {
    let adam = Adam::new(AdamConfig::<f32>::default()).unwrap();
    let (mut p, mut m, mut v) = ([0.5f32, -0.5], [1e20f32, -1e20], [5e37f32, 5e37]);
    let mut st = StepStats::new();
    adam.prepare(1e-3, 1_000_000, &mut p, &[0.1, 0.1], &mut m, &mut v)
        .expect("a finite step")
        .apply(&mut st);
    assert!(p.iter().chain(&m).chain(&v).all(|x| x.is_finite()));
    assert!(
        (p[0] - 0.5).abs() > 1e-3 && (p[0] - 0.5).abs() < 5e-2,
        "{p:?}"
    );
    // The same state with v = 0 would step by about 1e20 · 1e-3 / 1e-8: refused, untouched.
    let (mut m0, mut v0) = ([1e20f32, -1e20], [0.0f32; 2]);
    let e = adam.prepare(1e-3, 1_000_000, &mut p, &[0.1, 0.1], &mut m0, &mut v0);
    assert!(matches!(e, Err(Error::Overflow { .. })), "{e:?}");
}

#[test]
fn length_mismatch_names_the_slice() {
    let cfg = AdamConfig::<f64>::default();
    let (mut p, g, mut m, mut v) = (vec![0.0; 4], vec![0.0; 4], vec![0.0; 3], vec![0.0; 4]);
    let mut st = StepStats::new();
    assert_eq!(
        adam_step(&cfg, 1e-3, 1, &mut p, &g, &mut m, &mut v, &mut st),
        Err(Error::LengthMismatch {
            what: "m",
            expected: 4,
            found: 3
        })
    );
    let bad = AdamConfig { eps: 0.0, ..cfg };
    assert!(matches!(
        adam_step(&bad, 1e-3, 1, &mut p, &g, &mut v.clone(), &mut v, &mut st),
        Err(Error::InvalidConfig { field: "eps", .. })
    ));
}

#[test]
fn preconditioner_sqrt_matches_formula() {
    let v = [0.0, 1e-8, 0.25, 4.0];
    let mut out = [0.0; 4];
    preconditioner_sqrt(&v, 0.999, 10, 1e-8, &mut out).unwrap();
    let bc2 = 1.0 - 0.999f64.powi(10);
    for i in 0..4 {
        let want = 1.0 / ((v[i] / bc2).sqrt() + 1e-8).sqrt();
        assert!((out[i] - want).abs() <= 1e-12 * want);
    }
    assert!(preconditioner_sqrt(&[-1.0], 0.999, 1, 1e-8, &mut [0.0]).is_err());
    assert!(preconditioner_sqrt(&[1.0], 0.999, 1, 1e-8, &mut [0.0, 0.0]).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    /// The core's `std` feature only swaps libm's sqrt for std's: both are correctly
    /// rounded, so every result is bit-identical with and without it.
    #[test]
    fn std_and_libm_sqrt_agree_bitwise(bits32 in any::<u32>(), bits64 in any::<u64>()) {
        let x = f32::from_bits(bits32).abs();
        let y = f64::from_bits(bits64).abs();
        prop_assert!(libm::sqrtf(x).to_bits() == x.sqrt().to_bits() || x.is_nan());
        prop_assert!(libm::sqrt(y).to_bits() == y.sqrt().to_bits() || y.is_nan());
    }
}
