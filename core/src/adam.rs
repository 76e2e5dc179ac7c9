//! Adam / AdamW over slices, fused with the per-layer statistics the scheduler needs.
//!
//! One call updates one slice (a weight matrix, or a bias). A *layer* is usually several
//! slices: call [`adam_step`] once per slice with the same [`StepStats`] and the statistics
//! accumulate across them. The scheduler then reads
//! [`StepStats::alpha_agg`] (`α_agg = lr/(sqrt(mean v̂)+ε)`) and
//! [`StepStats::mean_multiplier`] (the literal `mean(lr/((1−β1^t)(sqrt(v̂)+ε)))`).
//!
//! ```
//! use safestep_core::adam::{adam_step, AdamConfig, StepStats};
//! let cfg = AdamConfig::<f32>::default();
//! let (mut w, mut b) = ([0.5_f32, -0.25], [0.0_f32]);
//! let (gw, gb) = ([0.1_f32, -0.2], [0.05_f32]);
//! let (mut mw, mut vw, mut mb, mut vb) = ([0.0; 2], [0.0; 2], [0.0; 1], [0.0; 1]);
//! let mut stats = StepStats::new();
//! adam_step(&cfg, 1e-3, 1, &mut w, &gw, &mut mw, &mut vw, &mut stats)?;
//! adam_step(&cfg, 1e-3, 1, &mut b, &gb, &mut mb, &mut vb, &mut stats)?;
//! assert_eq!(stats.count, 3);
//! // At t = 1 Adam moves every parameter by about lr against its gradient's sign.
//! assert!((w[0] - (0.5 - 1e-3)).abs() < 1e-6);
//! assert!(stats.alpha_agg(1e-3, 1e-8) > 0.0);
//! # Ok::<(), safestep_core::Error>(())
//! ```

use crate::error::{check_len, check_nonneg};
use crate::{Error, Real};

/// Weight decay applied by [`adam_step`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum WeightDecay<T> {
    /// No weight decay.
    #[default]
    None,
    /// Coupled L2 (classic "Adam + L2"): the gradient becomes `g + λ·θ` before the moments.
    CoupledL2(T),
    /// Decoupled (AdamW): `θ ← θ − lr·λ·θ` alongside the Adam update, outside the moments.
    Decoupled(T),
}

/// Adam's hyper-parameters except the learning rate (which is per layer and passed to
/// [`adam_step`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamConfig<T> {
    /// First-moment decay β1, in `[0, 1)`.
    pub beta1: T,
    /// Second-moment decay β2, in `[0, 1)`.
    pub beta2: T,
    /// Denominator floor ε, finite and `> 0`.
    pub eps: T,
    /// Weight decay mode and coefficient (coefficient finite and `>= 0`).
    pub weight_decay: WeightDecay<T>,
}

impl<T: Real> Default for AdamConfig<T> {
    /// β1 = 0.9, β2 = 0.999, ε = 1e-8, no weight decay (PyTorch's and the paper's defaults).
    fn default() -> Self {
        AdamConfig {
            beta1: T::of(0.9),
            beta2: T::of(0.999),
            eps: T::of(1e-8),
            weight_decay: WeightDecay::None,
        }
    }
}

impl<T: Real> AdamConfig<T> {
    /// Checks every field; [`adam_step`] calls this itself.
    ///
    /// ```
    /// use safestep_core::adam::AdamConfig;
    /// let bad = AdamConfig { beta1: 1.0_f64, ..AdamConfig::default() };
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        let unit = |field: &'static str, x: T| {
            if x.is_finite() && x >= T::zero() && x < T::one() {
                Ok(())
            } else {
                Err(Error::InvalidConfig {
                    field,
                    value: x.as_f64(),
                    allowed: "in [0, 1)",
                })
            }
        };
        unit("beta1", self.beta1)?;
        unit("beta2", self.beta2)?;
        if !(self.eps.is_finite() && self.eps > T::zero()) {
            return Err(Error::InvalidConfig {
                field: "eps",
                value: self.eps.as_f64(),
                allowed: "finite and > 0",
            });
        }
        match self.weight_decay {
            WeightDecay::None => Ok(()),
            WeightDecay::CoupledL2(l) | WeightDecay::Decoupled(l) => {
                if l.is_finite() && l >= T::zero() {
                    Ok(())
                } else {
                    Err(Error::InvalidConfig {
                        field: "weight_decay",
                        value: l.as_f64(),
                        allowed: "finite and >= 0",
                    })
                }
            }
        }
    }
}

/// An [`AdamConfig`] that passed [`AdamConfig::validate`]: its steps skip the config check.
///
/// ```
/// use safestep_core::adam::{Adam, AdamConfig, StepStats};
/// let adam = Adam::new(AdamConfig::<f32>::default())?;
/// let (mut p, mut m, mut v, mut st) = ([1.0_f32], [0.0], [0.0], StepStats::new());
/// adam.step(1e-3, 1, &mut p, &[0.5], &mut m, &mut v, &mut st)?;
/// assert!(p[0] < 1.0);
/// assert!(Adam::new(AdamConfig { beta2: 1.0_f32, ..AdamConfig::default() }).is_err());
/// # Ok::<(), safestep_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Adam<T> {
    cfg: AdamConfig<T>,
}

impl<T: Real> Adam<T> {
    /// Validates `cfg` once.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] from [`AdamConfig::validate`].
    pub fn new(cfg: AdamConfig<T>) -> Result<Self, Error> {
        cfg.validate()?;
        Ok(Adam { cfg })
    }

    /// The validated configuration.
    pub fn config(&self) -> &AdamConfig<T> {
        &self.cfg
    }

    /// [`adam_step`] without re-validating the configuration.
    ///
    /// # Errors
    /// Those of [`adam_step`] except [`Error::InvalidConfig`].
    #[allow(clippy::too_many_arguments)]
    pub fn step(
        &self,
        lr: T,
        t: u64,
        params: &mut [T],
        grads: &[T],
        m: &mut [T],
        v: &mut [T],
        stats: &mut StepStats<T>,
    ) -> Result<(), Error> {
        self.prepare(lr, t, params, grads, m, v)?.apply(stats);
        Ok(())
    }

    /// Checks one step over these slices and holds them until [`PreparedStep::apply`]:
    /// a caller that updates a layer (or a model) in several slices prepares them all, and
    /// applies them only once every one succeeded, so an error changes nothing anywhere.
    ///
    /// ```
    /// use safestep_core::adam::{Adam, AdamConfig, StepStats};
    /// let adam = Adam::new(AdamConfig::<f32>::default())?;
    /// let (mut w, mut mw, mut vw) = ([1.0_f32; 4], [0.0; 4], [0.0; 4]);
    /// let (mut b, mut mb, mut vb) = ([0.0_f32; 2], [0.0; 2], [0.0; 2]);
    /// let weights = adam.prepare(1e-3, 1, &mut w, &[0.1; 4], &mut mw, &mut vw)?;
    /// let bias = adam.prepare(1e-3, 1, &mut b, &[f32::NAN, 0.0], &mut mb, &mut vb);
    /// assert!(bias.is_err()); // so apply neither: w, b and their moments stay as they were
    /// drop(weights);
    /// assert_eq!(w, [1.0; 4]);
    /// # Ok::<(), safestep_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`adam_step`] except [`Error::InvalidConfig`]; nothing is changed.
    #[inline(always)]
    pub fn prepare<'a>(
        &self,
        lr: T,
        t: u64,
        params: &'a mut [T],
        grads: &'a [T],
        m: &'a mut [T],
        v: &'a mut [T],
    ) -> Result<PreparedStep<'a, T>, Error> {
        let (coefficients, scan) = prepare(&self.cfg, lr, t, params, grads, m, v)?;
        Ok(PreparedStep {
            decay: self.cfg.weight_decay,
            coefficients,
            scan,
            params,
            grads,
            m,
            v,
        })
    }

    /// [`check_adam_step`] without re-validating the configuration.
    ///
    /// # Errors
    /// Those of [`adam_step`] except [`Error::InvalidConfig`].
    pub fn check(
        &self,
        lr: T,
        t: u64,
        params: &[T],
        grads: &[T],
        m: &[T],
        v: &[T],
    ) -> Result<(), Error> {
        prepare(&self.cfg, lr, t, params, grads, m, v).map(|_| ())
    }

    /// [`Adam::prepare`] for slices whose parameters and moments are known from the step
    /// that last wrote them ([`PreparedStep::apply_bounded`]): only the gradient is read.
    /// The same checks decide, so the result, the errors and the update are those of
    /// [`Adam::prepare`]; when the bounds cannot prove the step finite it falls back to the
    /// full read of all four slices.
    ///
    /// `known` must come from the step that last wrote these same slices. If anything else
    /// wrote them since (new values, a reset, loaded state), use [`Adam::prepare`]: with
    /// stale bounds a step may write values that are not finite.
    ///
    /// ```
    /// use safestep_core::adam::{Adam, AdamConfig, StepStats};
    /// let adam = Adam::new(AdamConfig::<f32>::default())?;
    /// let (mut p, mut m, mut v) = ([0.5_f32; 3], [0.0; 3], [0.0; 3]);
    /// let mut stats = StepStats::new();
    /// let mut known = adam.prepare(1e-3, 1, &mut p, &[0.1; 3], &mut m, &mut v)?.apply_bounded(&mut stats);
    /// for t in 2..=5 {
    ///     known = adam.prepare_known(1e-3, t, &mut p, &[0.1; 3], &mut m, &mut v, &known)?.apply_bounded(&mut stats);
    /// }
    /// assert!((p[0] - (0.5 - 5e-3)).abs() < 1e-5);
    /// assert!(known.max_abs_params() >= p[0]);
    /// # Ok::<(), safestep_core::Error>(())
    /// ```
    ///
    /// # Errors
    /// Those of [`Adam::prepare`]; nothing is changed.
    #[allow(clippy::too_many_arguments)]
    #[inline(always)]
    pub fn prepare_known<'a>(
        &self,
        lr: T,
        t: u64,
        params: &'a mut [T],
        grads: &'a [T],
        m: &'a mut [T],
        v: &'a mut [T],
        known: &StateBounds<T>,
    ) -> Result<PreparedStep<'a, T>, Error> {
        let (coefficients, scan) =
            match prove_from_bounds(&self.cfg, lr, t, params, grads, m, v, known) {
                Some(proof) => proof,
                None => prepare(&self.cfg, lr, t, params, grads, m, v)?,
            };
        Ok(PreparedStep {
            decay: self.cfg.weight_decay,
            coefficients,
            scan,
            params,
            grads,
            m,
            v,
        })
    }
}

/// Upper bounds on what a step left in its slices: `max |θ|`, `max |m|` and `max v`. They
/// let the next step over the same slices ([`Adam::prepare_known`]) prove itself finite
/// reading only the gradient. [`PreparedStep::apply_bounded`] derives them, rounding
/// included, from `‖θ‖²` and `Σ v̂` of the step and from the bounds that proved it:
/// `|θ_i| ≤ ‖θ‖`, `v_i ≤ Σ v̂ / (1/(1−β2^t))`, `|m_i| ≤ β1 max|m| + (1−β1) max|g'|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StateBounds<T> {
    params: T,
    m: T,
    v: T,
}

impl<T: Real> StateBounds<T> {
    /// A bound on `max |θ|` after the step.
    pub fn max_abs_params(&self) -> T {
        self.params
    }

    /// A bound on `max |m|` after the step.
    pub fn max_abs_m(&self) -> T {
        self.m
    }

    /// A bound on `max v` after the step (`v ≥ 0`).
    pub fn max_v(&self) -> T {
        self.v
    }
}

/// A step over one slice that passed every check ([`Adam::prepare`]), holding its slices
/// until [`PreparedStep::apply`] writes the update. Its result is proven finite.
#[derive(Debug)]
pub struct PreparedStep<'a, T> {
    decay: WeightDecay<T>,
    coefficients: Coefficients<T>,
    scan: InputScan<T>,
    params: &'a mut [T],
    grads: &'a [T],
    m: &'a mut [T],
    v: &'a mut [T],
}

impl<T: Real> PreparedStep<'_, T> {
    /// Writes the update into the slices and accumulates its statistics into `stats`.
    // Inlined so that a caller compiled for wider vectors (the CPU engine's AVX2 path)
    // compiles the whole update for them.
    #[inline(always)]
    pub fn apply(self, stats: &mut StepStats<T>) {
        let (_, written) = self.update();
        stats.merge(written);
    }

    /// [`PreparedStep::apply`], also returning bounds on the parameters and moments it
    /// wrote, for the next step over these slices ([`Adam::prepare_known`]). The update and
    /// the statistics are the same bits as `apply`'s; the bounds come from the statistics
    /// and the check, at no extra pass.
    #[inline(always)]
    pub fn apply_bounded(self, stats: &mut StepStats<T>) -> StateBounds<T> {
        let (proof, written) = self.update();
        stats.merge(written);
        proof.0.bounds_after(&proof.1, &written)
    }

    /// Writes the update; returns what proved it and the statistics of these slices.
    #[inline(always)]
    fn update(self) -> ((Coefficients<T>, InputScan<T>), StepStats<T>) {
        let k = &self.coefficients;
        let (p, g, m, v) = (self.params, self.grads, self.m, self.v);
        let acc = match self.decay {
            WeightDecay::None => update::<T, 0>(k, p, g, m, v),
            WeightDecay::CoupledL2(_) => update::<T, 1>(k, p, g, m, v),
            WeightDecay::Decoupled(_) => update::<T, 2>(k, p, g, m, v),
        };
        let written = StepStats {
            count: p.len(),
            sum_v_hat: tree_sum(&acc[0]),
            sum_multiplier: tree_sum(&acc[1]),
            param_sq: tree_sum(&acc[2]),
            grad_sq: self.scan.grad_sq,
            update_sq: tree_sum(&acc[3]),
        };
        ((self.coefficients, self.scan), written)
    }
}

/// Per-layer statistics accumulated by [`adam_step`] over one or more slices.
///
/// All sums run over every parameter the step touched. `param_sq` is taken *after* the
/// update, `grad_sq` is the squared norm of the gradient as passed in (without any coupled
/// L2 term), `update_sq` the squared norm of the actual parameter change (weight decay
/// included).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct StepStats<T> {
    /// Number of parameters accumulated.
    pub count: usize,
    /// `Σ v̂_i`, with `v̂ = v/(1−β2^t)`.
    pub sum_v_hat: T,
    /// `Σ lr/((1−β1^t)(sqrt(v̂_i)+ε))`: Adam's literal per-parameter step multiplier.
    pub sum_multiplier: T,
    /// `‖θ‖²` after the step.
    pub param_sq: T,
    /// `‖g‖²` of the gradient passed in.
    pub grad_sq: T,
    /// `‖Δθ‖²` of the step taken.
    pub update_sq: T,
}

impl<T: Real> StepStats<T> {
    /// An empty accumulator (all zeros).
    pub fn new() -> Self {
        StepStats {
            count: 0,
            sum_v_hat: T::zero(),
            sum_multiplier: T::zero(),
            param_sq: T::zero(),
            grad_sq: T::zero(),
            update_sq: T::zero(),
        }
    }

    /// Adds another accumulator's sums into this one (e.g. stats computed per thread).
    ///
    /// ```
    /// use safestep_core::adam::StepStats;
    /// let mut a = StepStats { count: 2, sum_v_hat: 1.0_f64, ..StepStats::new() };
    /// a.merge(StepStats { count: 3, sum_v_hat: 2.0, ..StepStats::new() });
    /// assert_eq!((a.count, a.sum_v_hat), (5, 3.0));
    /// ```
    pub fn merge(&mut self, other: StepStats<T>) {
        self.count += other.count;
        self.sum_v_hat = self.sum_v_hat + other.sum_v_hat;
        self.sum_multiplier = self.sum_multiplier + other.sum_multiplier;
        self.param_sq = self.param_sq + other.param_sq;
        self.grad_sq = self.grad_sq + other.grad_sq;
        self.update_sq = self.update_sq + other.update_sq;
    }

    /// `α_agg = lr/(sqrt(mean v̂)+ε)`: the layer's aggregate Adam step multiplier.
    /// Returns 0 for an empty accumulator (a layer with no parameters takes no step).
    ///
    /// ```
    /// use safestep_core::adam::StepStats;
    /// let s = StepStats { count: 4, sum_v_hat: 4.0_f64, ..StepStats::new() };
    /// assert_eq!(s.alpha_agg(0.5, 0.0), 0.5);
    /// ```
    pub fn alpha_agg(&self, lr: T, eps: T) -> T {
        if self.count == 0 {
            return T::zero();
        }
        let mean_v = self.sum_v_hat / T::of_usize(self.count);
        lr / (mean_v.max(T::zero()).sqrt() + eps)
    }

    /// The literal mean multiplier `mean(lr/((1−β1^t)(sqrt(v̂)+ε)))` (step measure `mean`);
    /// 0 for an empty accumulator.
    pub fn mean_multiplier(&self) -> T {
        if self.count == 0 {
            T::zero()
        } else {
            self.sum_multiplier / T::of_usize(self.count)
        }
    }

    /// Converts the sums to another precision (e.g. `f32` kernels reporting in `f64`).
    ///
    /// ```
    /// use safestep_core::adam::StepStats;
    /// let s = StepStats { count: 1, grad_sq: 0.5_f32, ..StepStats::new() };
    /// let d: StepStats<f64> = s.cast();
    /// assert_eq!(d.grad_sq, 0.5);
    /// ```
    pub fn cast<U: Real>(&self) -> StepStats<U> {
        StepStats {
            count: self.count,
            sum_v_hat: U::of(self.sum_v_hat.as_f64()),
            sum_multiplier: U::of(self.sum_multiplier.as_f64()),
            param_sq: U::of(self.param_sq.as_f64()),
            grad_sq: U::of(self.grad_sq.as_f64()),
            update_sq: U::of(self.update_sq.as_f64()),
        }
    }
}

/// `1 − β^t` computed without overflow of the exponent for any `u64` step.
fn bias_correction<T: Real>(beta: T, t: u64) -> T {
    let pow = if t <= i32::MAX as u64 {
        beta.powi(t as i32)
    } else {
        beta.powf(T::of(t as f64))
    };
    T::one() - pow
}

/// Number of independent accumulator lanes: lets the compiler vectorise the reductions.
const LANES: usize = 8;

/// What one read-only pass over a step's inputs finds: `‖g‖²`, upper bounds on the
/// magnitudes of the gradient, parameters and moments, whether some `v` is negative, and a
/// sentinel that is finite iff every parameter and moment is (and their sums of squares do
/// not overflow). ([`Adam::prepare_known`] puts known bounds in place of those on the
/// parameters and moments.)
#[derive(Debug, Clone, Copy)]
struct InputScan<T> {
    grad_sq: T,
    max_g: T,
    max_p: T,
    max_m: T,
    max_v: T,
    /// `Σ (|v| − v)`: zero iff no `v` is negative (for finite `v`).
    negative_v: T,
    poison: T,
}

/// The larger of `a` and `b` by comparison.
#[inline(always)]
fn larger<T: Real>(a: T, b: T) -> T {
    if b > a {
        b
    } else {
        a
    }
}

/// One lane-parallel pass over `(p, g, m, v)` (equal lengths). It only sums (`Σg²`, `Σθ²`,
/// `Σm²`, `Σv`, `Σ(|v| − v)`), one element-wise step per sum over fixed-size blocks, so
/// that every step vectorises; the bounds come from the sums ([`peak_from_sum_sq`]; `Σv`
/// bounds every `v ≥ 0`). They only have to be upper bounds: where they prove nothing,
/// the exact check decides.
#[inline(always)]
fn scan<T: Real>(p: &[T], g: &[T], m: &[T], v: &[T]) -> InputScan<T> {
    let mut sums = [[T::zero(); LANES]; 5];
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (pc, pt) = p[..n].as_chunks::<LANES>();
    let (gc, gt) = g[..n].as_chunks::<LANES>();
    let (mc, mt) = m[..n].as_chunks::<LANES>();
    let (vc, vt) = v[..n].as_chunks::<LANES>();
    for (((pb, gb), mb), vb) in pc.iter().zip(gc).zip(mc).zip(vc) {
        for j in 0..LANES {
            sums[0][j] = sums[0][j] + gb[j] * gb[j];
        }
        for j in 0..LANES {
            sums[1][j] = sums[1][j] + pb[j] * pb[j];
        }
        for j in 0..LANES {
            sums[2][j] = sums[2][j] + mb[j] * mb[j];
        }
        for j in 0..LANES {
            sums[3][j] = sums[3][j] + vb[j];
        }
        for j in 0..LANES {
            sums[4][j] = sums[4][j] + (vb[j].abs() - vb[j]);
        }
    }
    let tail = pt.iter().zip(gt).zip(mt).zip(vt).enumerate();
    for (j, (((&pi, &gi), &mi), &vi)) in tail {
        sums[0][j] = sums[0][j] + gi * gi;
        sums[1][j] = sums[1][j] + pi * pi;
        sums[2][j] = sums[2][j] + mi * mi;
        sums[3][j] = sums[3][j] + vi;
        sums[4][j] = sums[4][j] + (vi.abs() - vi);
    }
    let [gs, ps, ms, vs, neg] = sums.map(|lanes| tree_sum(&lanes));
    InputScan {
        grad_sq: gs,
        max_g: peak_from_sum_sq(gs),
        max_p: peak_from_sum_sq(ps),
        max_m: peak_from_sum_sq(ms),
        max_v: vs * bound_slack() + bound_floor(),
        negative_v: neg,
        poison: ps + ms + vs,
    }
}

/// `‖g‖²` with the lanes and order of [`scan`], so the same bits.
#[inline(always)]
fn grad_sq<T: Real>(g: &[T]) -> T {
    let mut gs = [T::zero(); LANES];
    let (blocks, tail) = g.as_chunks::<LANES>();
    for gc in blocks {
        for j in 0..LANES {
            gs[j] = gs[j] + gc[j] * gc[j];
        }
    }
    for (j, &gi) in tail.iter().enumerate() {
        gs[j] = gs[j] + gi * gi;
    }
    tree_sum(&gs)
}

/// An upper bound on every `|x_i|` from `Σ x_i²` as the lanes summed it: `‖x‖` with a
/// relative slack of 16 ε, above the rounding of the sum and of the bound itself, plus
/// `sqrt(min_positive)`, above what underflow (or flushing subnormals to zero) can hide in
/// the squares. Infinite when the sum is, and then it proves nothing.
#[inline(always)]
fn peak_from_sum_sq<T: Real>(sum_sq: T) -> T {
    sum_sq.sqrt() * bound_slack() + bound_floor()
}

/// The absolute slack of derived bounds: `sqrt(min_positive)`, above what underflow (or
/// flushing subnormals to zero) can hide.
#[inline(always)]
fn bound_floor<T: Real>() -> T {
    T::min_positive_value().sqrt()
}

/// The relative slack of derived bounds: `1 + 16 ε`.
#[inline(always)]
fn bound_slack<T: Real>() -> T {
    T::one() + T::of(16.0) * T::epsilon()
}

/// Pairwise sum of the lane accumulators.
#[inline(always)]
fn tree_sum<T: Real>(a: &[T; LANES]) -> T {
    ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]))
}

/// Per-step constants of the update.
#[derive(Debug, Clone, Copy)]
struct Coefficients<T> {
    b1: T,
    b2: T,
    c1: T,
    c2: T,
    eps: T,
    step: T,
    inv_bc2: T,
    coupled: T,
    decoupled: T,
}

impl<T: Real> Coefficients<T> {
    /// The constants of step `t` (≥ 1) at `lr` under a validated `cfg`.
    fn new(cfg: &AdamConfig<T>, lr: T, t: u64) -> Self {
        let (coupled, decoupled) = match cfg.weight_decay {
            WeightDecay::None => (T::zero(), T::zero()),
            WeightDecay::CoupledL2(l) => (l, T::zero()),
            WeightDecay::Decoupled(l) => (T::zero(), lr * l),
        };
        Coefficients {
            b1: cfg.beta1,
            b2: cfg.beta2,
            c1: T::one() - cfg.beta1,
            c2: T::one() - cfg.beta2,
            eps: cfg.eps,
            step: lr / bias_correction(cfg.beta1, t),
            inv_bc2: T::one() / bias_correction(cfg.beta2, t),
            coupled,
            decoupled,
        }
    }

    /// Whether the inputs' magnitudes prove that every updated value and every statistic
    /// of a step over `n` elements stays finite (with a 16× margin for rounding). `false`
    /// means "not proven": the exact check decides.
    fn proves_finite(&self, scan: &InputScan<T>, n: usize) -> bool {
        let big = T::max_value() / T::of(16.0);
        let per = big / T::of_usize(n.max(1));
        let root = per.sqrt();
        let ge = scan.max_g + self.coupled * scan.max_p;
        let vn = larger(scan.max_v, ge * ge);
        let mn = larger(scan.max_m, ge);
        let mul = self.step / self.eps;
        let upd = mn * mul + self.decoupled * scan.max_p;
        let pn = scan.max_p + upd;
        // Each comparison is false for an infinite left side, so an overflow in the bound
        // itself also sends the step to the exact check.
        ge <= big.sqrt() && vn * self.inv_bc2 <= per && mul <= per && upd <= root && pn <= root
    }

    /// Bounds on the state a step with these constants wrote, from the input bounds that
    /// proved it (`proof`) and the statistics it summed (`written`): `|θ_i| ≤ ‖θ‖` and
    /// `v_i ≤ Σ v̂ / (1/(1−β2^t))` (both sums of non-negative terms, so no term exceeds
    /// them), `|m_i| ≤ β1 max|m| + (1−β1) max|g'|`; each with the slack and the floor of
    /// [`peak_from_sum_sq`]. A bound that overflows is infinite, and then proves nothing.
    fn bounds_after(&self, proof: &InputScan<T>, written: &StepStats<T>) -> StateBounds<T> {
        let slack = bound_slack::<T>();
        let floor = bound_floor::<T>();
        let ge = proof.max_g + self.coupled * proof.max_p;
        StateBounds {
            params: peak_from_sum_sq(written.param_sq),
            m: (self.b1 * proof.max_m + self.c1 * ge) * slack + floor,
            v: written.sum_v_hat / self.inv_bc2 * slack + floor,
        }
    }

    /// The exact check (a read-only pass): the first parameter index whose update would not
    /// be finite, or a statistic whose sum would overflow.
    fn find_overflow<const DECAY: u8>(
        &self,
        params: &[T],
        grads: &[T],
        m: &[T],
        v: &[T],
    ) -> Option<Error> {
        let half = T::max_value() / T::of(2.0);
        let mut sums = [T::zero(); 4];
        for i in 0..params.len() {
            let (mut p, mut mi, mut vi) = (params[i], m[i], v[i]);
            let mut acc = [[T::zero(); LANES]; 4];
            lane::<T, DECAY>(self, &mut p, grads[i], &mut mi, &mut vi, &mut acc, 0);
            for (what, x) in [("v", vi), ("m", mi), ("params", p)] {
                if !x.is_finite() {
                    return Some(Error::Overflow {
                        what,
                        index: Some(i),
                    });
                }
            }
            for (k, sum) in sums.iter_mut().enumerate() {
                *sum = *sum + acc[k][0];
            }
        }
        let names = ["sum_v_hat", "sum_multiplier", "param_sq", "update_sq"];
        names
            .iter()
            .zip(sums)
            .find(|(_, sum)| !(sum.is_finite() && *sum <= half))
            .map(|(&what, _)| Error::Overflow { what, index: None })
    }
}

/// One element of the fused update, accumulating `v̂`, the multiplier, `θ'²` and `Δθ²`
/// into lane `j` of `acc`.
/// `DECAY`: 0 none, 1 coupled L2, 2 decoupled (a constant, so unused terms vanish).
#[inline(always)]
fn lane<T: Real, const DECAY: u8>(
    k: &Coefficients<T>,
    p: &mut T,
    g: T,
    m: &mut T,
    v: &mut T,
    acc: &mut [[T; LANES]; 4],
    j: usize,
) {
    let g = if DECAY == 1 { g + k.coupled * *p } else { g };
    let mi = k.b1 * *m + k.c1 * g;
    let vi = k.b2 * *v + k.c2 * (g * g);
    let vh = vi * k.inv_bc2;
    let mul = k.step / (vh.sqrt() + k.eps);
    let upd = if DECAY == 2 {
        mi * mul + k.decoupled * *p
    } else {
        mi * mul
    };
    let pn = *p - upd;
    *p = pn;
    *m = mi;
    *v = vi;
    acc[0][j] = acc[0][j] + vh;
    acc[1][j] = acc[1][j] + mul;
    acc[2][j] = acc[2][j] + pn * pn;
    acc[3][j] = acc[3][j] + upd * upd;
}

/// The fused update over equal-length slices; returns the lane accumulators.
#[inline(always)]
fn update<T: Real, const DECAY: u8>(
    k: &Coefficients<T>,
    params: &mut [T],
    grads: &[T],
    m: &mut [T],
    v: &mut [T],
) -> [[T; LANES]; 4] {
    let n = params.len().min(grads.len()).min(m.len()).min(v.len());
    let (pc, pt) = params[..n].as_chunks_mut::<LANES>();
    let (gc, gt) = grads[..n].as_chunks::<LANES>();
    let (mc, mt) = m[..n].as_chunks_mut::<LANES>();
    let (vc, vt) = v[..n].as_chunks_mut::<LANES>();
    // The four accumulators live in locals (registers), and each block is written as
    // element-wise array steps, so the compiler turns every step into packed instructions
    // (sqrt and division included). Lane j of a block does exactly what `lane` does for it,
    // in the same order, so the results are bit-identical to the element-by-element loop.
    let mut acc = [[T::zero(); LANES]; 4];
    for (((p, g), mm), vv) in pc.iter_mut().zip(gc).zip(mc.iter_mut()).zip(vc.iter_mut()) {
        block::<T, DECAY>(k, p, g, mm, vv, &mut acc);
    }
    for (j, (((p, &g), mm), vv)) in pt
        .iter_mut()
        .zip(gt)
        .zip(mt.iter_mut())
        .zip(vt.iter_mut())
        .enumerate()
    {
        lane::<T, DECAY>(k, p, g, mm, vv, &mut acc, j);
    }
    acc
}

/// [`lane`] over one block of `LANES` elements, one element-wise step at a time (so that
/// each step vectorises); lane `j` accumulates into `acc[..][j]` as [`lane`] does.
#[inline(always)]
fn block<T: Real, const DECAY: u8>(
    k: &Coefficients<T>,
    p: &mut [T; LANES],
    g: &[T; LANES],
    m: &mut [T; LANES],
    v: &mut [T; LANES],
    acc: &mut [[T; LANES]; 4],
) {
    let mut ge = [T::zero(); LANES];
    for j in 0..LANES {
        ge[j] = if DECAY == 1 {
            g[j] + k.coupled * p[j]
        } else {
            g[j]
        };
    }
    let mut mul = [T::zero(); LANES];
    let mut upd = [T::zero(); LANES];
    for j in 0..LANES {
        m[j] = k.b1 * m[j] + k.c1 * ge[j];
    }
    for j in 0..LANES {
        v[j] = k.b2 * v[j] + k.c2 * (ge[j] * ge[j]);
    }
    for j in 0..LANES {
        let vh = v[j] * k.inv_bc2;
        acc[0][j] = acc[0][j] + vh;
        mul[j] = k.step / (vh.sqrt() + k.eps);
    }
    for j in 0..LANES {
        upd[j] = if DECAY == 2 {
            m[j] * mul[j] + k.decoupled * p[j]
        } else {
            m[j] * mul[j]
        };
    }
    for j in 0..LANES {
        let pn = p[j] - upd[j];
        p[j] = pn;
        acc[1][j] = acc[1][j] + mul[j];
        acc[2][j] = acc[2][j] + pn * pn;
        acc[3][j] = acc[3][j] + upd[j] * upd[j];
    }
}

/// One Adam (or AdamW, or Adam + L2) step over one slice, accumulating `stats`.
///
/// `t` is the 1-based step count (bias corrections `1−β^t`). With `g' = g + λθ` for
/// [`WeightDecay::CoupledL2`] (else `g' = g`):
///
/// ```text
/// m ← β1 m + (1−β1) g'        v ← β2 v + (1−β2) g'²
/// v̂ = v/(1−β2^t)             Δθ = lr·m/((1−β1^t)(sqrt(v̂)+ε)) [+ lr·λ·θ if Decoupled]
/// θ ← θ − Δθ
/// ```
///
/// A step that returns `Ok` leaves every parameter, moment and statistic finite. A first,
/// read-only pass over the inputs bounds their magnitudes; when the bounds cannot prove
/// the result finite (inputs near the type's largest values), an exact read-only pass
/// checks every element before anything is written.
///
/// # Errors
/// Nothing is modified (params, moments or stats) when an error is returned:
/// - [`Error::LengthMismatch`] if `grads`, `m` or `v` differ in length from `params`;
/// - [`Error::NonFinite`] naming the first non-finite entry of `grads`, `params`, `m` or `v`;
/// - [`Error::InvalidInput`] for `t == 0`, a negative / non-finite `lr` or a negative `v`;
/// - [`Error::InvalidConfig`] from [`AdamConfig::validate`];
/// - [`Error::Overflow`] naming the first result (`v`, `m`, `params`, or a statistic) that
///   would not be finite, with its index.
///
/// ```
/// use safestep_core::adam::{adam_step, AdamConfig, StepStats, WeightDecay};
/// use safestep_core::Error;
/// // Coupled L2 of 1e30 on a parameter of 1e10: g' = 1e40 is beyond f32.
/// let cfg = AdamConfig { weight_decay: WeightDecay::CoupledL2(1e30_f32), ..AdamConfig::default() };
/// let (mut p, mut m, mut v, mut st) = ([1e10_f32], [0.0], [0.0], StepStats::new());
/// let e = adam_step(&cfg, 1e-3, 1, &mut p, &[0.5], &mut m, &mut v, &mut st);
/// assert!(matches!(e, Err(Error::Overflow { index: Some(0), .. })));
/// assert_eq!((p, m, v), ([1e10], [0.0], [0.0])); // untouched
/// ```
#[allow(clippy::too_many_arguments)]
pub fn adam_step<T: Real>(
    cfg: &AdamConfig<T>,
    lr: T,
    t: u64,
    params: &mut [T],
    grads: &[T],
    m: &mut [T],
    v: &mut [T],
    stats: &mut StepStats<T>,
) -> Result<(), Error> {
    Adam::new(*cfg)?.step(lr, t, params, grads, m, v, stats)
}

/// Every check [`adam_step`] makes, without the step: `Ok` iff `adam_step` with the same
/// arguments would succeed. Lets a caller that updates a layer in several calls check them
/// all before changing any.
///
/// # Errors
/// Those of [`adam_step`].
pub fn check_adam_step<T: Real>(
    cfg: &AdamConfig<T>,
    lr: T,
    t: u64,
    params: &[T],
    grads: &[T],
    m: &[T],
    v: &[T],
) -> Result<(), Error> {
    Adam::new(*cfg)?.check(lr, t, params, grads, m, v)
}

/// Validates a step's arguments (the configuration is already valid) and proves the step
/// finite; returns its coefficients and the input scan.
#[inline(always)]
fn prepare<T: Real>(
    cfg: &AdamConfig<T>,
    lr: T,
    t: u64,
    params: &[T],
    grads: &[T],
    m: &[T],
    v: &[T],
) -> Result<(Coefficients<T>, InputScan<T>), Error> {
    check_nonneg("lr", lr)?;
    if t == 0 {
        return Err(Error::InvalidInput {
            what: "t",
            value: 0.0,
            allowed: ">= 1 (1-based step)",
        });
    }
    let n = params.len();
    check_len("grads", n, grads.len())?;
    check_len("m", n, m.len())?;
    check_len("v", n, v.len())?;
    let scan = scan(params, grads, m, v);
    let first_bad = |what: &'static str, x: &[T]| {
        x.iter()
            .position(|y| !y.is_finite())
            .map(|i| Error::NonFinite {
                what,
                index: Some(i),
            })
    };
    if !scan.grad_sq.is_finite() {
        if let Some(e) = first_bad("grads", grads) {
            return Err(e);
        }
    }
    if !scan.poison.is_finite() {
        for (what, x) in [("params", params), ("m", m), ("v", v)] {
            if let Some(e) = first_bad(what, x) {
                return Err(e);
            }
        }
    }
    if scan.negative_v > T::zero() {
        let index = v.iter().position(|&x| x < T::zero());
        return Err(Error::InvalidInput {
            what: "v",
            value: index.map_or(0.0, |i| v[i].as_f64()),
            allowed: ">= 0 (a second moment)",
        });
    }
    let k = Coefficients::new(cfg, lr, t);
    if !(k.proves_finite(&scan, n) && scan.grad_sq.is_finite()) {
        let overflow = match cfg.weight_decay {
            WeightDecay::None => k.find_overflow::<0>(params, grads, m, v),
            WeightDecay::CoupledL2(_) => k.find_overflow::<1>(params, grads, m, v),
            WeightDecay::Decoupled(_) => k.find_overflow::<2>(params, grads, m, v),
        };
        if let Some(e) = overflow {
            return Err(e);
        }
        if !scan.grad_sq.is_finite() {
            return Err(Error::Overflow {
                what: "grad_sq",
                index: None,
            });
        }
    }
    Ok((k, scan))
}

/// The proof of [`prepare`] from `‖g‖²` (one read of the gradient, which also bounds
/// `max |g|`) and `known` bounds on the other inputs (see [`Adam::prepare_known`]); `None`
/// when an argument is invalid or the bounds prove nothing, and the full [`prepare`] must
/// decide.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn prove_from_bounds<T: Real>(
    cfg: &AdamConfig<T>,
    lr: T,
    t: u64,
    params: &[T],
    grads: &[T],
    m: &[T],
    v: &[T],
    known: &StateBounds<T>,
) -> Option<(Coefficients<T>, InputScan<T>)> {
    let n = params.len();
    let lengths_agree = grads.len() == n && m.len() == n && v.len() == n;
    if check_nonneg("lr", lr).is_err() || t == 0 || !lengths_agree {
        return None;
    }
    let grad_sq = grad_sq(grads);
    let scan = InputScan {
        grad_sq,
        max_g: peak_from_sum_sq(grad_sq),
        max_p: known.params,
        max_m: known.m,
        max_v: known.v,
        negative_v: T::zero(),
        poison: T::zero(),
    };
    let k = Coefficients::new(cfg, lr, t);
    (grad_sq.is_finite() && k.proves_finite(&scan, n)).then_some((k, scan))
}

/// Writes `D^½` for Adam's preconditioner `D = diag(1/(sqrt(v̂)+ε))`:
/// `out_i = 1/sqrt(sqrt(v̂_i)+ε)`, `v̂ = v/(1−β2^t)`. Used by the `preconditioned` step
/// measure around the Hessian-vector product ([`crate::power`]).
///
/// # Errors
/// [`Error::LengthMismatch`] if `out.len() != v.len()`; [`Error::InvalidInput`] for
/// `t == 0`, a `beta2` outside `[0, 1)` or an `eps` that is not finite and `> 0`;
/// [`Error::NonFinite`] / [`Error::InvalidInput`] for a non-finite or negative `v_i`;
/// [`Error::Overflow`] when an entry would be 0 or not finite (a `v̂` beyond the type's
/// range). `out` is left unchanged on error; on `Ok` every entry is finite and `> 0`.
///
/// ```
/// use safestep_core::adam::preconditioner_sqrt;
/// let mut d = [0.0_f64; 2];
/// preconditioner_sqrt(&[0.0, 0.0], 0.999, 1, 1.0, &mut d)?;
/// assert_eq!(d, [1.0, 1.0]);
/// # Ok::<(), safestep_core::Error>(())
/// ```
pub fn preconditioner_sqrt<T: Real>(
    v: &[T],
    beta2: T,
    t: u64,
    eps: T,
    out: &mut [T],
) -> Result<(), Error> {
    check_len("out", v.len(), out.len())?;
    if t == 0 {
        return Err(Error::InvalidInput {
            what: "t",
            value: 0.0,
            allowed: ">= 1 (1-based step)",
        });
    }
    if !(beta2.is_finite() && beta2 >= T::zero() && beta2 < T::one()) {
        return Err(Error::InvalidInput {
            what: "beta2",
            value: beta2.as_f64(),
            allowed: "in [0, 1)",
        });
    }
    if !(eps.is_finite() && eps > T::zero()) {
        return Err(Error::InvalidInput {
            what: "eps",
            value: eps.as_f64(),
            allowed: "finite and > 0",
        });
    }
    let inv_bc2 = T::one() / bias_correction(beta2, t);
    let entry = |vi: T| T::one() / ((vi * inv_bc2).sqrt() + eps).sqrt();
    for (i, &vi) in v.iter().enumerate() {
        if !vi.is_finite() {
            return Err(Error::NonFinite {
                what: "v",
                index: Some(i),
            });
        }
        check_nonneg("v", vi)?;
        // v̂ beyond the type's range would give an entry of 0, which is no preconditioner.
        let d = entry(vi);
        if !(d.is_finite() && d > T::zero()) {
            return Err(Error::Overflow {
                what: "preconditioner",
                index: Some(i),
            });
        }
    }
    for (o, &vi) in out.iter_mut().zip(v) {
        *o = entry(vi);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked `update` is bit-identical to `lane` applied element by element (same
    /// lanes, same order), for every decay mode and with a tail shorter than a block.
    #[test]
    fn blocked_update_matches_lane_by_lane() {
        fn check<const DECAY: u8>(n: usize) {
            let k = Coefficients {
                b1: 0.9f32,
                b2: 0.999,
                c1: 0.1,
                c2: 0.001,
                eps: 1e-8,
                step: 1e-3 / (1.0 - 0.9f32.powi(7)),
                inv_bc2: 1.0 / (1.0 - 0.999f32.powi(7)),
                coupled: 0.01,
                decoupled: 1e-5,
            };
            let x = |i: usize, s: u32| ((i as u32).wrapping_mul(2_654_435_761) ^ s) as f32 / 4e9;
            const N: usize = 1003;
            let mut p0 = [0.0f32; N];
            let mut g = [0.0f32; N];
            let mut m0 = [0.0f32; N];
            let mut v0 = [0.0f32; N];
            for i in 0..n {
                p0[i] = x(i, 1) - 0.5;
                g[i] = (x(i, 2) - 0.5) * 1e-2;
                m0[i] = (x(i, 3) - 0.5) * 1e-3;
                v0[i] = x(i, 4) * 1e-6;
            }
            let (mut p1, mut m1, mut v1) = (p0, m0, v0);
            let got = update::<f32, DECAY>(&k, &mut p1[..n], &g[..n], &mut m1[..n], &mut v1[..n]);
            let (mut p2, mut m2, mut v2) = (p0, m0, v0);
            let mut want = [[0.0f32; LANES]; 4];
            for i in 0..n {
                let (p, m, v) = (&mut p2[i], &mut m2[i], &mut v2[i]);
                lane::<f32, DECAY>(&k, p, g[i], m, v, &mut want, i % LANES);
            }
            let same =
                |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
            assert!(same(&p1, &p2) && same(&m1, &m2) && same(&v1, &v2));
            for (a, b) in got.iter().zip(&want) {
                assert!(same(a, b));
            }
        }
        for n in [0, 1, 7, 8, 9, 64, 1003] {
            check::<0>(n);
            check::<1>(n);
            check::<2>(n);
        }
    }

    /// Textbook Adam in f64, written independently of the fused kernel.
    fn reference(
        cfg: &AdamConfig<f64>,
        lr: f64,
        t: u64,
        p: &mut [f64],
        g: &[f64],
        m: &mut [f64],
        v: &mut [f64],
    ) {
        for i in 0..p.len() {
            let mut gi = g[i];
            if let WeightDecay::CoupledL2(l) = cfg.weight_decay {
                gi += l * p[i];
            }
            m[i] = cfg.beta1 * m[i] + (1.0 - cfg.beta1) * gi;
            v[i] = cfg.beta2 * v[i] + (1.0 - cfg.beta2) * gi * gi;
            let mh = m[i] / (1.0 - cfg.beta1.powi(t as i32));
            let vh = v[i] / (1.0 - cfg.beta2.powi(t as i32));
            let mut d = lr * mh / (vh.sqrt() + cfg.eps);
            if let WeightDecay::Decoupled(l) = cfg.weight_decay {
                d += lr * l * p[i];
            }
            p[i] -= d;
        }
    }

    #[test]
    fn matches_reference_all_decays() {
        for wd in [
            WeightDecay::None,
            WeightDecay::CoupledL2(0.01),
            WeightDecay::Decoupled(0.1),
        ] {
            let cfg = AdamConfig {
                weight_decay: wd,
                ..AdamConfig::default()
            };
            let n = 37;
            let mut p: [f64; 37] = core::array::from_fn(|i| (i as f64 * 0.37).sin());
            let mut m = [0.0; 37];
            let mut v = [0.0; 37];
            let (mut rp, mut rm, mut rv) = (p, m, v);
            for t in 1..=5u64 {
                let g: [f64; 37] = core::array::from_fn(|i| ((i as f64 + t as f64) * 1.3).cos());
                let mut st = StepStats::new();
                adam_step(&cfg, 1e-2, t, &mut p, &g, &mut m, &mut v, &mut st).unwrap();
                reference(&cfg, 1e-2, t, &mut rp, &g, &mut rm, &mut rv);
                assert_eq!(st.count, n);
                let gs: f64 = g.iter().map(|x| x * x).sum();
                assert!((st.grad_sq - gs).abs() < 1e-12 * gs.max(1.0));
            }
            for i in 0..n {
                assert!((p[i] - rp[i]).abs() < 1e-12, "{wd:?} {i}");
                assert!((m[i] - rm[i]).abs() < 1e-12);
                assert!((v[i] - rv[i]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn errors_leave_state_untouched() {
        let cfg = AdamConfig::<f32>::default();
        let mut p = [1.0_f32; 10];
        let mut m = [0.5_f32; 10];
        let mut v = [0.25_f32; 10];
        let mut g = [0.1_f32; 10];
        g[7] = f32::NAN;
        let mut st = StepStats::new();
        let e = adam_step(&cfg, 1e-3, 1, &mut p, &g, &mut m, &mut v, &mut st);
        assert_eq!(
            e,
            Err(Error::NonFinite {
                what: "grads",
                index: Some(7)
            })
        );
        assert_eq!(
            (p, m, v, st),
            ([1.0; 10], [0.5; 10], [0.25; 10], StepStats::new())
        );
        let e = adam_step(&cfg, 1e-3, 1, &mut p, &g[..9], &mut m, &mut v, &mut st);
        assert_eq!(
            e,
            Err(Error::LengthMismatch {
                what: "grads",
                expected: 10,
                found: 9
            })
        );
        g[7] = f32::INFINITY;
        assert!(adam_step(&cfg, 1e-3, 1, &mut p, &g, &mut m, &mut v, &mut st).is_err());
        g[7] = 0.0;
        assert!(adam_step(&cfg, 1e-3, 0, &mut p, &g, &mut m, &mut v, &mut st).is_err());
        assert!(adam_step(&cfg, f32::NAN, 1, &mut p, &g, &mut m, &mut v, &mut st).is_err());
        assert_eq!((p, m, v), ([1.0; 10], [0.5; 10], [0.25; 10]));
    }
}
