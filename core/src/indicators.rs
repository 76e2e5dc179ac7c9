//! Cheap per-layer indicators the paper compares its signals against: weight and gradient
//! norms, the gradient-to-parameter ratio, unit-sign entropy and the dead-unit fraction.
//!
//! Norms propagate non-finite entries (a NaN weight gives a NaN norm — itself a
//! diagnostic); the functions over pre-activations reject them.
//!
//! ```
//! use safestep_core::indicators::{dead_unit_fraction, unit_sign_entropy, weight_norm};
//! assert_eq!(weight_norm(&[3.0_f64, 4.0]), 5.0);
//! // 2 samples × 3 units, batch-major: unit 0 always on, unit 1 half, unit 2 never.
//! let pre = [1.0_f64, 1.0, -1.0, 2.0, -1.0, 0.0];
//! assert_eq!(dead_unit_fraction(&pre, 3)?, 1.0 / 3.0);
//! assert!((unit_sign_entropy(&pre, 3)? - 1.0 / 3.0).abs() < 1e-15); // (0 + 1 + 0)/3 bits
//! # Ok::<(), safestep_core::Error>(())
//! ```

use crate::error::check_len;
use crate::{Error, Real};

/// `Σ x_i²`, with lane-parallel accumulation.
fn sq_norm<T: Real>(x: &[T]) -> T {
    let mut acc = [T::zero(); 4];
    let chunks = x.chunks_exact(4);
    let rest = chunks.remainder();
    for c in chunks {
        for j in 0..4 {
            acc[j] = acc[j] + c[j] * c[j];
        }
    }
    let tail = rest.iter().fold(T::zero(), |a, &b| a + b * b);
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `‖θ‖₂` of a layer's parameters.
pub fn weight_norm<T: Real>(params: &[T]) -> T {
    sq_norm(params).sqrt()
}

/// `‖g‖₂` of a layer's gradient.
pub fn grad_norm<T: Real>(grads: &[T]) -> T {
    sq_norm(grads).sqrt()
}

/// `‖g‖/‖θ‖`: 0 when both are 0, `+∞` when only `‖θ‖` is.
///
/// # Errors
/// [`Error::LengthMismatch`] if the slices differ in length.
///
/// ```
/// use safestep_core::indicators::grad_param_ratio;
/// assert_eq!(grad_param_ratio(&[0.3_f32, 0.4], &[3.0, 4.0])?, 0.1);
/// # Ok::<(), safestep_core::Error>(())
/// ```
pub fn grad_param_ratio<T: Real>(grads: &[T], params: &[T]) -> Result<T, Error> {
    check_len("grads", params.len(), grads.len())?;
    Ok(crate::noise::snr_ratio(
        grad_norm(grads),
        weight_norm(params),
    ))
}

/// Checks the batch-major layout and returns the batch size.
fn batch_of<T: Real>(pre: &[T], units: usize) -> Result<usize, Error> {
    if units == 0 {
        return Err(Error::InvalidInput {
            what: "units",
            value: 0.0,
            allowed: ">= 1",
        });
    }
    let batch = pre.len() / units;
    check_len("pre_activations", batch * units, pre.len())?;
    if batch == 0 {
        return Err(Error::InvalidInput {
            what: "pre_activations",
            value: 0.0,
            allowed: "at least one sample",
        });
    }
    if let Some(i) = pre.iter().position(|x| !x.is_finite()) {
        return Err(Error::NonFinite {
            what: "pre_activations",
            index: Some(i),
        });
    }
    Ok(batch)
}

/// Mean over units of the binary entropy (bits) of each unit's sign pattern across the
/// batch: `p` = fraction of samples with pre-activation `> 0`, `H = −p log₂p − (1−p) log₂(1−p)`.
/// 1 for units on half the time, 0 for units always on or always off. `pre_activations` is
/// batch-major (`sample · units + unit`).
///
/// # Errors
/// `units == 0`, a length that is not a positive multiple of `units`, or a non-finite entry.
pub fn unit_sign_entropy<T: Real>(pre_activations: &[T], units: usize) -> Result<T, Error> {
    let batch = batch_of(pre_activations, units)?;
    let mut total = T::zero();
    for u in 0..units {
        let on = pre_activations
            .iter()
            .skip(u)
            .step_by(units)
            .filter(|&&x| x > T::zero())
            .count();
        let p = T::of_usize(on) / T::of_usize(batch);
        let h = |q: T| {
            if q > T::zero() {
                -q * q.log2()
            } else {
                T::zero()
            }
        };
        total = total + h(p) + h(T::one() - p);
    }
    Ok(total / T::of_usize(units))
}

/// Fraction of units whose pre-activation is `<= 0` for every sample of the batch (dead
/// ReLUs). Layout as [`unit_sign_entropy`].
///
/// # Errors
/// As [`unit_sign_entropy`].
pub fn dead_unit_fraction<T: Real>(pre_activations: &[T], units: usize) -> Result<T, Error> {
    let _ = batch_of(pre_activations, units)?;
    let dead = (0..units)
        .filter(|&u| {
            pre_activations
                .iter()
                .skip(u)
                .step_by(units)
                .all(|&x| x <= T::zero())
        })
        .count();
    Ok(T::of_usize(dead) / T::of_usize(units))
}

/// The effective rank of a matrix from its singular values (Roy & Vetterli 2007):
/// `exp(H(p))` with `p_i = σ_i / Σσ` and `H` the Shannon entropy (nats). Between 1 (one
/// non-zero singular value) and the number of singular values (all equal); 0 for a zero
/// matrix.
///
/// # Errors
/// [`Error::NonFinite`] or [`Error::InvalidInput`] for a non-finite or negative value.
///
/// ```
/// use safestep_core::indicators::effective_rank;
/// assert!((effective_rank(&[2.0_f64, 2.0, 2.0])? - 3.0).abs() < 1e-12);
/// assert!((effective_rank(&[5.0_f64, 0.0, 0.0])? - 1.0).abs() < 1e-12);
/// # Ok::<(), safestep_core::Error>(())
/// ```
pub fn effective_rank<T: Real>(singular_values: &[T]) -> Result<T, Error> {
    for &s in singular_values {
        crate::error::check_nonneg("singular value", s)?;
    }
    let total = singular_values.iter().fold(T::zero(), |a, &s| a + s);
    if total == T::zero() {
        return Ok(T::zero());
    }
    let entropy = singular_values
        .iter()
        .filter(|&&s| s > T::zero())
        .map(|&s| {
            let p = s / total;
            -p * p.ln()
        })
        .fold(T::zero(), |a, h| a + h);
    Ok(entropy.exp())
}

/// The stable rank `‖W‖_F² / ‖W‖_2²` of a matrix from its squared Frobenius norm and its
/// largest singular value: between 1 and the rank; 0 for a zero matrix.
///
/// # Errors
/// [`Error::NonFinite`] or [`Error::InvalidInput`] for a non-finite or negative input.
///
/// ```
/// use safestep_core::indicators::stable_rank;
/// // diag(3, 4): ‖W‖_F² = 25, ‖W‖_2 = 4.
/// assert_eq!(stable_rank(25.0_f64, 4.0)?, 25.0 / 16.0);
/// # Ok::<(), safestep_core::Error>(())
/// ```
pub fn stable_rank<T: Real>(frobenius_sq: T, spectral_norm: T) -> Result<T, Error> {
    let f = crate::error::check_nonneg("frobenius_sq", frobenius_sq)?;
    let s = crate::error::check_nonneg("spectral_norm", spectral_norm)?;
    if s == T::zero() {
        return Ok(T::zero());
    }
    Ok(f / (s * s))
}
