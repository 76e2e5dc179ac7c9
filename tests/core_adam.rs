//! The fused Adam step against a naive f64 reference, in f32 and f64.
#![allow(clippy::needless_range_loop)] // the reference indexes like the formulas

mod core_support;
use core_support::Rng;
use proptest::prelude::*;
use safestep_core::adam::{
    adam_step, preconditioner_sqrt, Adam, AdamConfig, StateBounds, StepStats, WeightDecay,
};
use safestep_core::Error;

/// The textbook Adam step in f64, with a first-order bound on how far an implementation in
/// a lower precision may drift from it.
///
/// The error model: every operation of the implementation may err by at most `rel`
/// relative to the magnitude of what it combines. Where terms of both signs cancel
/// (gradients across steps in `m`, `g` against `λθ` under coupled L2), the error is
/// relative to the terms' scale, not to the result, so the reference carries those scales:
/// `m_scale` and `v_scale` run the moments' recurrences on the terms' magnitudes, and
/// `p_err` sums the bounds on every update of a parameter. `rel` is far above the unit
/// round-off (1e-5 against 6e-8 for f32), so the first-order terms suffice; a wrong formula
/// errs on the terms' own scale and is still caught.
struct Reference {
    rel: f64,
    p: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
    m_scale: Vec<f64>,
    v_scale: Vec<f64>,
    p_err: Vec<f64>,
}

/// One step's statistics, each with the bound on its error.
#[derive(Default, Debug)]
struct RefStats {
    count: usize,
    sum_v_hat: (f64, f64),
    sum_mult: (f64, f64),
    param_sq: (f64, f64),
    grad_sq: f64,
    update_sq: (f64, f64),
}

/// Hyperparameters of one step as the implementation holds them: rounded to its precision,
/// with the bias corrections `1 − βᵗ` computed in that precision too. Those are
/// ill-conditioned at small `t` (in f32, `ulp(β₂⁶) / (1 − β₂⁶)` is 1e-5), an error of the
/// precision that no implementation of the textbook formula avoids.
struct Hyper {
    b1: f64,
    b2: f64,
    bc1: f64,
    bc2: f64,
    eps: f64,
    wd: WeightDecay<f64>,
    lr: f64,
}

/// A bound on `|√(x + δ) − √x|` for `|δ| ≤ d`: the tighter of `d/√x` and `√d`.
fn sqrt_err(x: f64, d: f64) -> f64 {
    let root = x.sqrt();
    if root > 0.0 {
        (d / root).min(d.sqrt())
    } else {
        d.sqrt()
    }
}

/// A bound on the error of `c / (x + eps)` when `x` errs by `dx`, given `q = c / (x + eps)`;
/// infinite where the perturbation may reach the pole.
fn quotient_err(q: f64, x: f64, eps: f64, dx: f64) -> f64 {
    if dx < x + eps {
        q * dx / (x + eps - dx)
    } else {
        f64::INFINITY
    }
}

impl Reference {
    fn new(p0: Vec<f64>, rel: f64) -> Self {
        let n = p0.len();
        Reference {
            rel,
            p: p0,
            m: vec![0.0; n],
            v: vec![0.0; n],
            m_scale: vec![0.0; n],
            v_scale: vec![0.0; n],
            p_err: vec![0.0; n],
        }
    }

    fn step(&mut self, h: &Hyper, g: &[f64], st: &mut RefStats) {
        let (b1, b2, bc1, bc2, eps, lr, rel) = (h.b1, h.b2, h.bc1, h.bc2, h.eps, h.lr, self.rel);
        for i in 0..self.p.len() {
            let p = self.p[i];
            // The decayed gradient and the scale its error is relative to.
            let (grad, scale) = match h.wd {
                WeightDecay::CoupledL2(l) => (
                    g[i] + l * p,
                    g[i].abs() + l * (p.abs() + self.p_err[i] / rel),
                ),
                _ => (g[i], g[i].abs()),
            };
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * grad;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * grad * grad;
            self.m_scale[i] = b1 * self.m_scale[i] + (1.0 - b1) * scale;
            self.v_scale[i] = b2 * self.v_scale[i] + (1.0 - b2) * scale * scale;
            let (m, dm) = (self.m[i], 2.0 * rel * self.m_scale[i]);
            let (v_hat, dv_hat) = (self.v[i] / bc2, 3.0 * rel * self.v_scale[i] / bc2);
            let root = v_hat.sqrt();
            let mult = lr / (bc1 * (root + eps));
            let dmult = rel * mult + quotient_err(mult, root, eps, sqrt_err(v_hat, dv_hat));
            let mut delta = m * mult;
            let mut ddelta = dm * mult + m.abs() * dmult;
            if let WeightDecay::Decoupled(l) = h.wd {
                delta += lr * l * p;
                ddelta += lr * l * (2.0 * rel * p.abs() + self.p_err[i]);
            }
            self.p[i] = p - delta;
            self.p_err[i] += ddelta + rel * self.p[i].abs();
            let (pn, dp) = (self.p[i], self.p_err[i]);
            st.count += 1;
            st.sum_v_hat.0 += v_hat;
            st.sum_v_hat.1 += dv_hat + rel * v_hat;
            st.sum_mult.0 += mult;
            st.sum_mult.1 += dmult;
            st.param_sq.0 += pn * pn;
            st.param_sq.1 += (2.0 * pn.abs() + dp) * dp + rel * pn * pn;
            st.grad_sq += g[i] * g[i];
            st.update_sq.0 += delta * delta;
            st.update_sq.1 += (2.0 * delta.abs() + ddelta) * ddelta + rel * delta * delta;
        }
    }
}

/// Whether `got` is within `bound` of `want`.
fn within(got: f64, (want, bound): (f64, f64)) -> bool {
    (got - want).abs() <= bound
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
        let wd = match $wd {
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
        let mut r = Reference::new(p0.iter().map(|&x| x as f64).collect(), $rel);
        let mut hyper = Hyper {
            b1: cfg.beta1 as f64,
            b2: cfg.beta2 as f64,
            bc1: 0.0,
            bc2: 0.0,
            eps: cfg.eps as f64,
            wd: match wd {
                WeightDecay::None => WeightDecay::None,
                WeightDecay::CoupledL2(l) => WeightDecay::CoupledL2(l as f64),
                WeightDecay::Decoupled(l) => WeightDecay::Decoupled(l as f64),
            },
            lr: ($lr as $t) as f64,
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
            hyper.bc1 = (1.0 - cfg.beta1.powi(t as i32)) as f64;
            hyper.bc2 = (1.0 - cfg.beta2.powi(t as i32)) as f64;
            r.step(&hyper, &g64, &mut rs);
            prop_assert_eq!(st.count, rs.count);
            prop_assert!(
                within(st.sum_v_hat as f64, rs.sum_v_hat),
                "sum_v_hat {} {:?}",
                st.sum_v_hat,
                rs.sum_v_hat
            );
            prop_assert!(
                within(st.sum_multiplier as f64, rs.sum_mult),
                "mult {} {:?}",
                st.sum_multiplier,
                rs.sum_mult
            );
            prop_assert!(
                within(st.param_sq as f64, rs.param_sq),
                "param_sq {} {:?}",
                st.param_sq,
                rs.param_sq
            );
            prop_assert!(close(st.grad_sq as f64, rs.grad_sq, $rel, 1e-30));
            prop_assert!(
                within(st.update_sq as f64, rs.update_sq),
                "upd {} {:?}",
                st.update_sq,
                rs.update_sq
            );
            // α = lr / (√(mean v̂) + ε), with the bound on the mean carried through.
            let (mean_v, dmean_v) = (rs.sum_v_hat.0 / n as f64, rs.sum_v_hat.1 / n as f64);
            let want_alpha = hyper.lr / (mean_v.sqrt() + hyper.eps);
            let dalpha = quotient_err(
                want_alpha,
                mean_v.sqrt(),
                hyper.eps,
                sqrt_err(mean_v, dmean_v),
            );
            prop_assert!(within(
                st.alpha_agg($lr as $t, cfg.eps).to_f64_(),
                (want_alpha, dalpha + $rel * want_alpha)
            ));
            prop_assert!(within(
                st.mean_multiplier() as f64,
                (rs.sum_mult.0 / n as f64, rs.sum_mult.1 / n as f64)
            ));
        }
        for i in 0..n {
            prop_assert!(
                within(p[i] as f64, (r.p[i], r.p_err[i])),
                "p[{}] {} {} (bound {})",
                i,
                p[i],
                r.p[i],
                r.p_err[i]
            );
            prop_assert!(
                within(m[i] as f64, (r.m[i], 2.0 * $rel * r.m_scale[i])),
                "m[{}] {} {} (terms' scale {})",
                i,
                m[i],
                r.m[i],
                r.m_scale[i]
            );
            prop_assert!(
                within(v[i] as f64, (r.v[i], 3.0 * $rel * r.v_scale[i])),
                "v[{}] {} {} (terms' scale {})",
                i,
                v[i],
                r.v[i],
                r.v_scale[i]
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
    #![proptest_config(core_support::proptest_cases(64))]

    #[test]
    fn f64_matches_reference(seed in any::<u64>(), n in 1usize..300, wd in decay(), lr in 1e-5..1e-1f64) {
        check_against_reference!(f64, seed, n, 6, wd, lr, 1e-10);
    }

    #[test]
    fn f32_matches_reference(seed in any::<u64>(), n in 1usize..300, wd in decay(), lr in 1e-5..1e-1f64) {
        check_against_reference!(f32, seed, n, 6, wd, lr, 1e-5);
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
    #![proptest_config(core_support::proptest_cases(256))]

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
    #![proptest_config(core_support::proptest_cases(4096))]

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
