//! Power iteration for a layer's sharpness (top Hessian eigenvalue), warm-started.
//!
//! The caller owns the direction `v` (a slice the size of the layer) and keeps it between
//! controller events; [`PowerIteration`] holds only scalars. The Hessian is never formed:
//! a caller-supplied closure computes Hessian-vector products `hv = H·v`.
//! The first call iterates to convergence (relative change of the Rayleigh quotient below
//! `tol`, at most `max_iters` products); every later call does one warm-started iteration.
//! With a preconditioner `d = D^½` ([`crate::adam::preconditioner_sqrt`]) it estimates
//! `λ_max(D^½ H D^½)` instead, scaling by `d` around the product.
//!
//! Power iteration finds the eigenvalue of largest magnitude; the returned Rayleigh quotient
//! keeps its sign. [`top_eigenvalue`] finds the largest algebraic eigenvalue instead (by a
//! shift when the largest-magnitude one is negative).
//!
//! ```
//! use safestep_core::power::{PowerConfig, PowerIteration};
//! // H = diag(3, 1): top eigenvalue 3.
//! let hvp = |v: &[f64], out: &mut [f64]| -> Result<(), ()> {
//!     out[0] = 3.0 * v[0];
//!     out[1] = v[1];
//!     Ok(())
//! };
//! let (mut v, mut hv) = ([1.0, 1.0], [0.0; 2]);
//! let mut p = PowerIteration::new();
//! let cfg = PowerConfig { tol: 1e-9, max_iters: 100 };
//! let lambda = p.estimate(&cfg, &mut v, &mut hv, None, hvp).unwrap();
//! assert!((lambda - 3.0).abs() < 1e-6);
//! ```

use crate::{Error, Real};
use core::fmt;

/// Stopping rule for the first (cold-start) estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        default,
        deny_unknown_fields,
        bound(
            serialize = "T: serde::Serialize",
            deserialize = "T: Real + serde::Deserialize<'de>"
        )
    )
)]
pub struct PowerConfig<T> {
    /// Stop when `|λ_k − λ_{k−1}| <= tol·|λ_k|` (default 1e-3).
    pub tol: T,
    /// At most this many Hessian-vector products on the first call (default 20).
    pub max_iters: usize,
}

impl<T: Real> Default for PowerConfig<T> {
    fn default() -> Self {
        PowerConfig {
            tol: T::of(1e-3),
            max_iters: 20,
        }
    }
}

/// Why an estimate failed: the caller's product failed, or an input was bad.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PowerError<E> {
    /// The Hessian-vector product closure returned this error.
    Hvp(E),
    /// A length mismatch, a bad preconditioner or config, or a non-finite product.
    Input(Error),
}

impl<E> From<Error> for PowerError<E> {
    fn from(e: Error) -> Self {
        PowerError::Input(e)
    }
}

impl<E: fmt::Display> fmt::Display for PowerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PowerError::Hvp(e) => write!(f, "Hessian-vector product failed: {e}"),
            PowerError::Input(e) => write!(f, "power iteration: {e}"),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> core::error::Error for PowerError<E> {}

/// The scalar state of one layer's power iteration (the vector lives with the caller).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct PowerIteration<T> {
    eigenvalue: T,
    converged: bool,
    iterations: usize,
    started: bool,
}

/// Deterministic pseudo-random entry in [-1, 1) for reseeding (splitmix64 of the index).
fn seed_entry<T: Real>(i: usize) -> T {
    let mut z = (i as u64)
        .wrapping_add(1)
        .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    T::of((z >> 11) as f64 / (1u64 << 52) as f64 - 1.0)
}

/// `Σ a_i·b_i` over the common length, with eight interleaved partial sums: the compiler can
/// vectorise it, and the summation order is fixed, so results stay deterministic.
fn dot<T: Real>(a: &[T], b: &[T]) -> T {
    const LANES: usize = 8;
    let mut acc = [T::zero(); LANES];
    let (mut ca, mut cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    for (x, y) in (&mut ca).zip(&mut cb) {
        for k in 0..LANES {
            acc[k] = acc[k] + x[k] * y[k];
        }
    }
    let tail = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .fold(T::zero(), |s, (&x, &y)| s + x * y);
    acc.iter().fold(T::zero(), |s, &x| s + x) + tail
}

/// Euclidean norm. Sums the squares directly when that neither overflows nor loses
/// precision to underflow (the common case, one vectorised pass); otherwise rescales by the
/// largest magnitude first.
fn norm<T: Real>(x: &[T]) -> T {
    let ss = dot(x, x);
    if ss.is_finite() && ss >= T::min_positive_value() / T::epsilon() {
        return ss.sqrt();
    }
    let scale = x.iter().fold(T::zero(), |a, &b| a.max(b.abs()));
    if scale == T::zero() || !scale.is_finite() {
        return scale;
    }
    let inv = T::one() / scale;
    let ss = x.iter().fold(T::zero(), |a, &b| {
        let y = b * inv;
        a + y * y
    });
    scale * ss.sqrt()
}

impl<T: Real> PowerIteration<T> {
    /// A fresh state: the next [`PowerIteration::estimate`] iterates to convergence.
    pub fn new() -> Self {
        PowerIteration {
            eigenvalue: T::zero(),
            converged: false,
            iterations: 0,
            started: false,
        }
    }

    /// Rebuilds a state saved as ([`PowerIteration::eigenvalue`],
    /// [`PowerIteration::is_warm`]) — with the caller's saved direction, a checkpointed run
    /// continues bit-identically.
    ///
    /// ```
    /// use safestep_core::power::PowerIteration;
    /// let p = PowerIteration::from_parts(3.5_f32, true);
    /// assert_eq!((p.eigenvalue(), p.is_warm()), (3.5, true));
    /// ```
    pub fn from_parts(eigenvalue: T, warm: bool) -> Self {
        PowerIteration {
            eigenvalue,
            converged: false,
            iterations: 0,
            started: warm,
        }
    }

    /// The last estimate (0 before the first call).
    pub fn eigenvalue(&self) -> T {
        self.eigenvalue
    }

    /// Whether the last call met the tolerance (for a one-step call: the relative change
    /// against the previous event's estimate).
    pub fn converged(&self) -> bool {
        self.converged
    }

    /// Hessian-vector products the last call used.
    pub fn iterations(&self) -> usize {
        self.iterations
    }

    /// Whether the cold start is done, so the next call does one warm-started iteration.
    pub fn is_warm(&self) -> bool {
        self.started
    }

    /// Forget the history, so the next call iterates to convergence again (e.g. after a
    /// task boundary). The caller's vector is kept as the starting direction.
    pub fn restart(&mut self) {
        self.started = false;
        self.converged = false;
    }

    /// One estimate of the top eigenvalue of `H` (or of `D^½ H D^½` with
    /// `precond = Some(d)`), returning the Rayleigh quotient `v·Av` for the unit `v`.
    ///
    /// `v` is the warm-start direction and is left holding the next one; `hv` is scratch of
    /// the same length. If `v` is zero or not finite it is reseeded deterministically.
    /// `hvp(x, out)` must write `H·x` into `out`. If `H·v = 0` the estimate is 0 and `v` is
    /// kept. An empty slice gives 0.
    ///
    /// # Errors
    /// [`PowerError::Input`] for mismatched lengths, a `tol` that is not finite and `>= 0`,
    /// a preconditioner entry that is not finite and `> 0`, or a non-finite product;
    /// [`PowerError::Hvp`] when the closure fails. On error `v` holds a finite direction
    /// (the one before the failing product, up to rounding, or a deterministic reseed when
    /// undoing a preconditioner scaling overflows) and the state is unchanged.
    pub fn estimate<F, E>(
        &mut self,
        cfg: &PowerConfig<T>,
        v: &mut [T],
        hv: &mut [T],
        precond: Option<&[T]>,
        hvp: F,
    ) -> Result<T, PowerError<E>>
    where
        F: FnMut(&[T], &mut [T]) -> Result<(), E>,
    {
        self.estimate_shifted(cfg, v, hv, precond, T::zero(), hvp)
    }

    /// [`PowerIteration::estimate`] on the shifted operator `A − σI` (`A` = `H` or
    /// `D^½ H D^½`): the iteration converges to the eigenvector of `A` whose eigenvalue is
    /// farthest from `shift`, and the value returned is still `A`'s Rayleigh quotient at it.
    /// With `shift` = a negative largest-magnitude eigenvalue this finds the top (largest
    /// algebraic) eigenvalue; see [`top_eigenvalue`].
    ///
    /// # Errors
    /// As [`PowerIteration::estimate`], and [`PowerError::Input`] for a non-finite `shift`.
    pub fn estimate_shifted<F, E>(
        &mut self,
        cfg: &PowerConfig<T>,
        v: &mut [T],
        hv: &mut [T],
        precond: Option<&[T]>,
        shift: T,
        mut hvp: F,
    ) -> Result<T, PowerError<E>>
    where
        F: FnMut(&[T], &mut [T]) -> Result<(), E>,
    {
        if !shift.is_finite() {
            return Err(Error::NonFinite {
                what: "shift",
                index: None,
            }
            .into());
        }
        let n = v.len();
        crate::error::check_len("hv", n, hv.len())?;
        if !(cfg.tol.is_finite() && cfg.tol >= T::zero()) {
            return Err(Error::InvalidConfig {
                field: "tol",
                value: cfg.tol.as_f64(),
                allowed: "finite and >= 0",
            }
            .into());
        }
        if let Some(d) = precond {
            crate::error::check_len("precond", n, d.len())?;
            for (i, &x) in d.iter().enumerate() {
                if !x.is_finite() {
                    return Err(Error::NonFinite {
                        what: "precond",
                        index: Some(i),
                    }
                    .into());
                }
                if x <= T::zero() {
                    return Err(Error::InvalidInput {
                        what: "precond",
                        value: x.as_f64(),
                        allowed: "> 0 (D^½ of a positive diagonal)",
                    }
                    .into());
                }
            }
        }
        if n == 0 {
            self.eigenvalue = T::zero();
            self.converged = true;
            self.iterations = 0;
            self.started = true;
            return Ok(T::zero());
        }

        let mut len = norm(v);
        if !(len.is_finite() && len > T::zero()) {
            for (i, x) in v.iter_mut().enumerate() {
                *x = seed_entry(i);
            }
            len = norm(v);
        }
        for x in v.iter_mut() {
            *x = *x / len;
        }

        let iters = if self.started {
            1
        } else {
            cfg.max_iters.max(1)
        };
        let mut prev = if self.started {
            Some(self.eigenvalue)
        } else {
            None
        };
        let mut lambda = T::zero();
        let mut converged = false;
        let mut used = 0;
        for _ in 0..iters {
            used += 1;
            let (rq, null) = match precond {
                None => {
                    hvp(v, hv).map_err(PowerError::Hvp)?;
                    let rq = dot(v, hv);
                    if shift != T::zero() {
                        for (y, &x) in hv.iter_mut().zip(v.iter()) {
                            *y = *y - shift * x;
                        }
                    }
                    let w = norm(hv);
                    if !(w.is_finite() && rq.is_finite()) {
                        return Err(Error::NonFinite {
                            what: "hvp output",
                            index: None,
                        }
                        .into());
                    }
                    if w == T::zero() {
                        (T::zero(), true)
                    } else {
                        for (x, &y) in v.iter_mut().zip(hv.iter()) {
                            *x = y / w;
                        }
                        (rq, false)
                    }
                }
                Some(d) => {
                    // v ← d⊙v (= u), hv = H u, λ = u·Hu, next v ∝ d⊙hv.
                    for (x, &di) in v.iter_mut().zip(d) {
                        *x = *x * di;
                    }
                    // Undo the scaling; if that is not representable, reseed (a valid
                    // direction either way).
                    let unscale = |v: &mut [T]| {
                        for (x, &di) in v.iter_mut().zip(d) {
                            *x = *x / di;
                        }
                        if v.iter().any(|x| !x.is_finite()) {
                            for (i, x) in v.iter_mut().enumerate() {
                                *x = seed_entry(i);
                            }
                        }
                    };
                    if let Err(e) = hvp(v, hv) {
                        unscale(v);
                        return Err(PowerError::Hvp(e));
                    }
                    let rq = dot(v, hv);
                    // (A − σI)·v_orig with A·v_orig = d⊙hv and v_orig = u/d.
                    for ((y, &di), &u) in hv.iter_mut().zip(d).zip(v.iter()) {
                        *y = *y * di - shift * (u / di);
                    }
                    let w = norm(hv);
                    if !(w.is_finite() && rq.is_finite()) {
                        unscale(v);
                        return Err(Error::NonFinite {
                            what: "hvp output",
                            index: None,
                        }
                        .into());
                    }
                    if w == T::zero() {
                        unscale(v);
                        (T::zero(), true)
                    } else {
                        for (x, &y) in v.iter_mut().zip(hv.iter()) {
                            *x = y / w;
                        }
                        (rq, false)
                    }
                }
            };
            lambda = rq;
            if let Some(p) = prev {
                if (lambda - p).abs() <= cfg.tol * lambda.abs() {
                    converged = true;
                    break;
                }
            }
            if null {
                // H·v = 0: nothing more to learn from this direction.
                converged = true;
                break;
            }
            prev = Some(lambda);
        }
        self.eigenvalue = lambda;
        self.converged = converged;
        self.iterations = used;
        self.started = true;
        Ok(lambda)
    }
}

/// The top (largest algebraic) eigenvalue `λ_max` of `A` = `H` (or `D^½ H D^½`), which is
/// what "sharpness" means in the edge-of-stability literature the paper builds on.
///
/// Plain power iteration (`magnitude`, direction `v`) finds the eigenvalue of largest
/// magnitude `λ_m`. If it is `>= 0` it is `λ_max`. Otherwise a second, warm-started power
/// iteration (`top`, direction `v_top`) on `A − λ_m I`, whose eigenvalues `λ − λ_m` are all
/// `>= 0`, converges to `λ_max`'s eigenvector; its Rayleigh quotient on `A` is returned.
/// The second iteration costs its products only at events where `λ_m < 0`.
///
/// # Errors
/// As [`PowerIteration::estimate`], and [`PowerError::Input`] when `v_top` has another
/// length than `v`.
///
/// ```
/// use safestep_core::power::{top_eigenvalue, PowerConfig, PowerIteration};
/// // H = diag(-5, 2): the largest magnitude is -5, the top eigenvalue 2.
/// let hvp = |v: &[f64], out: &mut [f64]| -> Result<(), ()> {
///     out[0] = -5.0 * v[0];
///     out[1] = 2.0 * v[1];
///     Ok(())
/// };
/// let cfg = PowerConfig { tol: 1e-10, max_iters: 200 };
/// let (mut mag, mut top) = (PowerIteration::new(), PowerIteration::new());
/// let (mut v, mut v_top, mut hv) = ([1.0, 1.0], [1.0, 1.0], [0.0; 2]);
/// let lambda = top_eigenvalue(&mut mag, &mut top, &cfg, &mut v, &mut v_top, &mut hv, None, hvp).unwrap();
/// assert!((lambda - 2.0).abs() < 1e-6);
/// assert!((mag.eigenvalue() + 5.0).abs() < 1e-6);
/// ```
#[allow(clippy::too_many_arguments)]
pub fn top_eigenvalue<T, F, E>(
    magnitude: &mut PowerIteration<T>,
    top: &mut PowerIteration<T>,
    cfg: &PowerConfig<T>,
    v: &mut [T],
    v_top: &mut [T],
    hv: &mut [T],
    precond: Option<&[T]>,
    mut hvp: F,
) -> Result<T, PowerError<E>>
where
    T: Real,
    F: FnMut(&[T], &mut [T]) -> Result<(), E>,
{
    crate::error::check_len("v_top", v.len(), v_top.len())?;
    let lambda_m = magnitude.estimate(cfg, v, hv, precond, &mut hvp)?;
    if lambda_m >= T::zero() {
        return Ok(lambda_m);
    }
    top.estimate_shifted(cfg, v_top, hv, precond, lambda_m, &mut hvp)
}

#[cfg(test)]
mod tests {
    use super::{dot, norm};

    #[test]
    fn dot_matches_a_sequential_sum_on_every_tail_length() {
        for n in 0..20usize {
            let a: [f64; 20] = core::array::from_fn(|i| i as f64 + 0.5);
            let b: [f64; 20] = core::array::from_fn(|i| 1.0 - i as f64 / 7.0);
            let want: f64 = a[..n].iter().zip(&b[..n]).map(|(x, y)| x * y).sum();
            assert!((dot(&a[..n], &b[..n]) - want).abs() <= 1e-12 * want.abs().max(1.0));
        }
    }

    #[test]
    fn norm_is_exact_where_squares_would_overflow_or_underflow() {
        assert_eq!(norm(&[3.0f32, 4.0]), 5.0);
        let big = norm(&[3e30f32, 4e30]);
        assert!((big / 5e30 - 1.0).abs() < 1e-6, "{big}");
        let tiny = norm(&[3e-30f32, 4e-30]);
        assert!((tiny / 5e-30 - 1.0).abs() < 1e-6, "{tiny}");
        assert_eq!(norm::<f32>(&[]), 0.0);
        assert_eq!(norm(&[0.0f64; 3]), 0.0);
    }
}
