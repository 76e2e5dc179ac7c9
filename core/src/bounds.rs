//! The step-size bounds `ρ*_g`, `ρ*_vol`, `ρ̃*` and the signal-to-noise ratios behind them.
//!
//! With safety factor `s`, batch size `B`, volatility weight `β` and curvature volatility
//! `Vol` (DESIGN.md, "The bounds"):
//!
//! ```text
//! ρ*_g   = 2s · SNR_g/(1 + SNR_g)                          gradient-noise bound
//! ρ*_vol = 2s · SNR_v/(1 + SNR_v),   SNR_v = B/(β·Vol)    volatility bound
//! ρ̃*     = 2s · SNR/(1 + SNR),       1/SNR = 1/SNR_g + 1/SNR_v   combined bound
//! ```
//!
//! `2·SNR/(1+SNR)` is the exact critical `α·L` of an isotropic quadratic under gradient
//! noise (the expected loss decreases iff `α·L` is below it). Edge cases, all defined, never
//! NaN: `S = 0` gives `SNR_g = ∞` and `ρ*_g = 2s`; `G² = 0` gives `SNR_g = 0` and
//! `ρ*_g = 0`; `Vol = 0` or `β = 0` gives `SNR_v = ∞` and `ρ*_vol = 2s`; `B = 1` is allowed
//! (`SNR_v = 1/(β·Vol)`); `B = 0`, negative or NaN inputs are errors. Every bound lies in
//! `[0, 2s]`.
//!
//! ```
//! use safestep_core::bounds::Bounds;
//! let b = Bounds::compute(0.8_f64, 1.0, 32, 1.0, 32.0)?; // SNR_g = 1, SNR_v = 1
//! assert!((b.snr - 0.5).abs() < 1e-15);
//! assert!((b.rho_g - 0.8).abs() < 1e-15);         // 1.6 · 1/2
//! assert!((b.rho_combined - 1.6 / 3.0).abs() < 1e-15); // 1.6 · (1/2)/(3/2)
//! # Ok::<(), safestep_core::Error>(())
//! ```

use crate::error::check_nonneg;
use crate::{Error, Real};

crate::names::named_enum! {
    /// How a layer's effective step `ρ` is measured against the bound.
    pub enum StepMeasure: "step measure" {
        /// `ρ = α_agg · λ`: Adam's aggregate multiplier times the layer's sharpness
        /// (dimensionless; the default).
        Normalized = "normalized",
        /// `ρ = lr · λ_max(D^½ H D^½)`: Adam's exact preconditioned sharpness, with `lr` the
        /// learning rate actually applied at the step.
        Preconditioned = "preconditioned",
        /// The literal reading: the mean per-parameter multiplier
        /// `mean(lr/((1−β1^t)(sqrt(v̂)+ε)))`, compared directly with the bound (ablation only;
        /// it has units and degenerates into a fixed decay, see DESIGN.md).
        Mean = "mean",
    }
    default Normalized
}

/// The edge of stability of heavy-ball momentum with Adam's EMA convention,
/// `(2 + 2β1)/(1 − β1)` (38 at β1 = 0.9; Cohen et al. 2022, "Adaptive gradient methods at
/// the edge of stability"): the largest preconditioned `lr·λ` at which Adam's iteration on
/// a quadratic is stable, against 2 for a single gradient step.
///
/// # Errors
/// [`Error::InvalidInput`] unless `0 <= beta1 < 1`.
///
/// ```
/// use safestep_core::bounds::momentum_edge;
/// assert!((momentum_edge(0.9_f64)? - 38.0).abs() < 1e-12);
/// assert_eq!(momentum_edge(0.0_f64)?, 2.0);
/// # Ok::<(), safestep_core::Error>(())
/// ```
pub fn momentum_edge<T: Real>(beta1: T) -> Result<T, Error> {
    if !(beta1.is_finite() && beta1 >= T::zero() && beta1 < T::one()) {
        return Err(Error::InvalidInput {
            what: "beta1",
            value: beta1.as_f64(),
            allowed: "in [0, 1)",
        });
    }
    Ok((T::of(2.0) + T::of(2.0) * beta1) / (T::one() - beta1))
}

/// The effective batch of Adam's momentum, `B·(1 + β1)/(1 − β1)`: the EMA of `B`-sample
/// minibatch gradients has the variance of the mean of that many samples (the reading
/// "noise averaged by momentum" of DESIGN.md).
///
/// # Errors
/// [`Error::InvalidInput`] for `batch == 0` or `beta1` outside `[0, 1)`.
///
/// ```
/// use safestep_core::bounds::momentum_batch;
/// assert!((momentum_batch(256, 0.9_f64)? - 256.0 * 19.0).abs() < 1e-9);
/// # Ok::<(), safestep_core::Error>(())
/// ```
pub fn momentum_batch<T: Real>(batch: usize, beta1: T) -> Result<T, Error> {
    let edge = momentum_edge(beta1)?; // validates beta1
    if batch == 0 {
        return Err(Error::InvalidInput {
            what: "batch",
            value: 0.0,
            allowed: ">= 1",
        });
    }
    Ok(T::of_usize(batch) * edge / T::of(2.0))
}

/// Checks `x` is not NaN and `>= 0` (`+∞` allowed: an SNR may be infinite).
fn check_snr<T: Real>(what: &'static str, x: T) -> Result<T, Error> {
    if x.is_nan() {
        Err(Error::NonFinite { what, index: None })
    } else if x < T::zero() {
        Err(Error::InvalidInput {
            what,
            value: x.as_f64(),
            allowed: ">= 0 (may be +inf)",
        })
    } else {
        // `+ 0` turns -0.0 into +0.0, so 1/x is +inf, never -inf.
        Ok(x + T::zero())
    }
}

/// The largest safety factor accepted: `2s` and every intermediate stay finite.
fn max_safety<T: Real>() -> T {
    T::max_value() / T::of(4.0)
}

fn check_safety<T: Real>(safety: T) -> Result<T, Error> {
    if safety.is_finite() && safety > T::zero() && safety <= max_safety() {
        Ok(safety)
    } else {
        Err(Error::InvalidInput {
            what: "safety",
            value: safety.as_f64(),
            allowed: "> 0 and at most a quarter of the type's largest value",
        })
    }
}

/// `SNR_v = B/(β·Vol)`: `+∞` when `β·Vol = 0`.
///
/// # Errors
/// [`Error::InvalidInput`] for `batch == 0` or a negative `beta`/`vol`;
/// [`Error::NonFinite`] for a non-finite `beta`/`vol`.
///
/// ```
/// use safestep_core::bounds::snr_volatility;
/// assert_eq!(snr_volatility(64, 1.0_f64, 2.0)?, 32.0);
/// assert_eq!(snr_volatility(64, 1.0_f64, 0.0)?, f64::INFINITY);
/// # Ok::<(), safestep_core::Error>(())
/// ```
pub fn snr_volatility<T: Real>(batch: usize, beta: T, vol: T) -> Result<T, Error> {
    if batch == 0 {
        return Err(Error::InvalidInput {
            what: "batch",
            value: 0.0,
            allowed: ">= 1",
        });
    }
    snr_volatility_real(T::of_usize(batch), beta, vol)
}

/// [`snr_volatility`] for a real-valued (effective) batch `batch >= 1`.
fn snr_volatility_real<T: Real>(batch: T, beta: T, vol: T) -> Result<T, Error> {
    if !(batch.is_finite() && batch >= T::one()) {
        return Err(Error::InvalidInput {
            what: "batch",
            value: batch.as_f64(),
            allowed: "finite and >= 1",
        });
    }
    let beta = check_nonneg("beta", beta)?;
    let vol = check_nonneg("vol", vol)?;
    let denom = beta * vol;
    if denom > T::zero() {
        Ok(batch / denom)
    } else {
        Ok(T::infinity())
    }
}

/// `SNR` with `1/SNR = 1/SNR_g + 1/SNR_v` (computed as `1/(1/a + 1/b)`, so an infinite
/// term drops out and a zero term gives 0).
///
/// # Errors
/// [`Error::NonFinite`] for NaN, [`Error::InvalidInput`] for a negative input.
///
/// ```
/// use safestep_core::bounds::combined_snr;
/// assert_eq!(combined_snr(2.0_f64, 2.0)?, 1.0);
/// assert_eq!(combined_snr(3.0_f64, f64::INFINITY)?, 3.0);
/// assert_eq!(combined_snr(0.0_f64, 5.0)?, 0.0);
/// # Ok::<(), safestep_core::Error>(())
/// ```
pub fn combined_snr<T: Real>(snr_g: T, snr_v: T) -> Result<T, Error> {
    let a = check_snr("snr_g", snr_g)?;
    let b = check_snr("snr_v", snr_v)?;
    if a == T::zero() || b == T::zero() {
        return Ok(T::zero());
    }
    Ok(T::one() / (T::one() / a + T::one() / b))
}

/// `2s · SNR/(1 + SNR)`, computed as `2s/(1 + 1/SNR)`: `2s` for `SNR = ∞`, 0 for `SNR = 0`,
/// always in `[0, 2s]`.
///
/// # Errors
/// [`Error::InvalidInput`] for a `safety` that is not finite and `> 0` or a negative
/// `snr`; [`Error::NonFinite`] for a NaN `snr`.
///
/// ```
/// use safestep_core::bounds::bound_from_snr;
/// assert_eq!(bound_from_snr(1.0_f64, 1.0)?, 1.0);
/// assert_eq!(bound_from_snr(0.8_f64, f64::INFINITY)?, 1.6);
/// # Ok::<(), safestep_core::Error>(())
/// ```
pub fn bound_from_snr<T: Real>(safety: T, snr: T) -> Result<T, Error> {
    let s = check_safety(safety)?;
    let snr = check_snr("snr", snr)?;
    if snr == T::zero() {
        return Ok(T::zero());
    }
    let two_s = s + s;
    Ok((two_s / (T::one() + T::one() / snr)).min(two_s))
}

/// All three bounds and the SNRs behind them, for one layer at one event.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Bounds<T> {
    /// Gradient signal-to-noise ratio `SNR_g` (as passed in).
    pub snr_g: T,
    /// Volatility signal-to-noise ratio `SNR_v = B/(β·Vol)`.
    pub snr_v: T,
    /// Combined `SNR`, `1/SNR = 1/SNR_g + 1/SNR_v`.
    pub snr: T,
    /// Gradient-noise bound `ρ*_g`.
    pub rho_g: T,
    /// Volatility bound `ρ*_vol`.
    pub rho_vol: T,
    /// Combined bound `ρ̃*`.
    pub rho_combined: T,
}

impl<T: Real> Bounds<T> {
    /// Computes every SNR and bound from the safety factor `s`, the volatility weight `β`,
    /// the batch size `B`, the gradient SNR (e.g. [`crate::noise::NoiseStats::snr`]) and the
    /// curvature volatility `Vol` (e.g. [`crate::window::CurvatureWindow::volatility`]).
    ///
    /// # Errors
    /// Any input outside its domain (see the module docs): `safety` not finite and `> 0`,
    /// `beta` or `vol` negative or non-finite, `batch == 0`, `snr_g` negative or NaN
    /// (`+∞` is allowed).
    pub fn compute(safety: T, beta: T, batch: usize, snr_g: T, vol: T) -> Result<Self, Error> {
        if batch == 0 {
            return Err(Error::InvalidInput {
                what: "batch",
                value: 0.0,
                allowed: ">= 1",
            });
        }
        Self::with_effective_batch(safety, beta, T::of_usize(batch), snr_g, vol)
    }

    /// [`Bounds::compute`] with a real-valued effective batch (`>= 1`) in `SNR_v`, e.g.
    /// [`momentum_batch`].
    ///
    /// # Errors
    /// As [`Bounds::compute`]; `batch` must be finite and `>= 1`.
    ///
    /// ```
    /// use safestep_core::bounds::Bounds;
    /// let a = Bounds::compute(0.8_f64, 1.0, 32, 1.0, 32.0)?;
    /// let b = Bounds::with_effective_batch(0.8_f64, 1.0, 32.0, 1.0, 32.0)?;
    /// assert_eq!(a, b);
    /// # Ok::<(), safestep_core::Error>(())
    /// ```
    pub fn with_effective_batch(
        safety: T,
        beta: T,
        batch: T,
        snr_g: T,
        vol: T,
    ) -> Result<Self, Error> {
        let safety = check_safety(safety)?;
        let snr_g = check_snr("snr_g", snr_g)?;
        let snr_v = snr_volatility_real(batch, beta, vol)?;
        // In inverse-SNR form every bound is one division: 2s·x/(1+x) = 2s/(1 + 1/x), and
        // 1/SNR = 1/SNR_g + 1/SNR_v. IEEE arithmetic gives the edge cases: 1/∞ = 0, 1/0 = ∞,
        // 2s/(1+∞) = 0; both inverses are >= +0, so no ∞ − ∞ arises.
        let inv_g = T::one() / snr_g;
        let inv_v = T::one() / snr_v;
        let inv = inv_g + inv_v;
        let two_s = safety + safety;
        Ok(Bounds {
            snr_g,
            snr_v,
            snr: T::one() / inv,
            rho_g: two_s / (T::one() + inv_g),
            rho_vol: two_s / (T::one() + inv_v),
            rho_combined: two_s / (T::one() + inv),
        })
    }
}
