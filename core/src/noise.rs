//! Gradient-noise statistics of a minibatch: `S`, the unbiased `G²` and `SNR_g`.
//!
//! For a minibatch of `B` per-sample gradients `g_i` with mean `ḡ`:
//!
//! ```text
//! S     = Σ_i ‖g_i − ḡ‖² / (B − 1)          unbiased per-sample variance (summed over the layer)
//! noise = S/B · fpc                        the variance of ḡ itself
//! G²    = max(0, ‖ḡ‖² − noise)             unbiased estimate of the true ‖g‖²
//! SNR_g = G² / noise
//! ```
//!
//! The naive `‖ḡ‖²` must not be used as the signal: it contains the noise `S/B` itself, so
//! `B‖ḡ‖²/S` never falls much below 1 even on pure noise and the bound it feeds is nearly
//! constant (DESIGN.md, McCandlish et al. 2018).
//!
//! `fpc` is the finite-population factor for minibatches drawn *without replacement* from
//! `N` examples: `fpc = (N − B)/N`. (DESIGN.md writes `(N−B)/(N−1)`, the factor that goes
//! with the divisor-`N` population variance; `S` here is the divisor-`(B−1)` sample
//! variance, which estimates the divisor-`(N−1)` variance, and with it the exact factor is
//! `(N−B)/N`. The two differ by `1/N`; the property tests check `G²` is unbiased with it.)
//!
//! ```
//! use safestep_core::noise::NoiseStats;
//! // Two samples, one parameter: g = 1 and g = 3, mean 2.
//! let n = NoiseStats::from_sample_grads(&[2.0_f64], [&[1.0][..], &[3.0][..]], None)?;
//! assert_eq!(n.variance, 2.0);   // ((1−2)² + (3−2)²)/(2−1)
//! assert_eq!(n.noise, 1.0);      // S/B
//! assert_eq!(n.unbiased_grad_sq, 3.0);    // 2² − 1
//! assert_eq!(n.snr(), 3.0);
//! # Ok::<(), safestep_core::Error>(())
//! ```

use crate::error::{check_len, check_nonneg};
use crate::{Error, Real};

/// Gradient-noise statistics of one layer on one minibatch.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NoiseStats<T> {
    /// Minibatch size `B` (>= 2).
    pub batch: usize,
    /// `‖ḡ‖²`, the squared norm of the minibatch-mean gradient.
    pub mean_grad_sq: T,
    /// `S`, the unbiased per-sample gradient variance summed over the layer (>= 0).
    pub variance: T,
    /// `S/B · fpc`: the variance of the minibatch mean (the noise in `‖ḡ‖²`).
    pub noise: T,
    /// `G² = max(0, ‖ḡ‖² − noise)`: the unbiased estimate of the true `‖g‖²`, clamped.
    pub unbiased_grad_sq: T,
}

/// `fpc = (N−B)/N` for sampling without replacement from `N`, 1 with replacement.
fn population_factor<T: Real>(batch: usize, population: Option<usize>) -> Result<T, Error> {
    match population {
        None => Ok(T::one()),
        Some(n) if n >= batch => Ok(T::of_usize(n - batch) / T::of_usize(n)),
        Some(n) => Err(Error::InvalidInput {
            what: "population",
            value: n as f64,
            allowed: ">= batch (minibatches are drawn from the population)",
        }),
    }
}

fn check_batch(batch: usize) -> Result<(), Error> {
    if batch >= 2 {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            what: "batch",
            value: batch as f64,
            allowed: ">= 2 (a variance needs two samples)",
        })
    }
}

impl<T: Real> NoiseStats<T> {
    /// From `‖ḡ‖²` and an already computed unbiased variance `S`.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] for `batch < 2`, a `population` smaller than `batch`, or a
    /// negative input; [`Error::NonFinite`] for a non-finite input.
    ///
    /// ```
    /// use safestep_core::noise::NoiseStats;
    /// // Full-batch (N = B): no sampling noise, G² is ‖ḡ‖² and SNR_g is infinite.
    /// let n = NoiseStats::from_variance(4.0_f64, 2.0, 8, Some(8))?;
    /// assert_eq!((n.noise, n.unbiased_grad_sq), (0.0, 4.0));
    /// assert!(n.snr().is_infinite());
    /// # Ok::<(), safestep_core::Error>(())
    /// ```
    pub fn from_variance(
        mean_grad_sq: T,
        variance: T,
        batch: usize,
        population: Option<usize>,
    ) -> Result<Self, Error> {
        check_batch(batch)?;
        let fpc = population_factor::<T>(batch, population)?;
        let mean_grad_sq = check_nonneg("mean_grad_sq", mean_grad_sq)?;
        let variance = check_nonneg("variance", variance)?;
        let noise = variance / T::of_usize(batch) * fpc;
        let unbiased_grad_sq = (mean_grad_sq - noise).max(T::zero());
        Ok(NoiseStats {
            batch,
            mean_grad_sq,
            variance,
            noise,
            unbiased_grad_sq,
        })
    }

    /// From `‖ḡ‖²` and `Σ_i ‖g_i‖²` (what a backend gets cheaply with the per-sample norm
    /// trick): `S = max(0, (Σ_i ‖g_i‖² − B‖ḡ‖²)/(B−1))`.
    ///
    /// This form subtracts two large numbers: its absolute error is about
    /// `machine ε · Σ‖g_i‖²`, so when `S ≪ ‖ḡ‖²` pass the sums in `f64` (or use
    /// [`NoiseStats::from_sample_grads`], which has no cancellation). Rounding that would
    /// make `S` negative is clamped to 0.
    ///
    /// # Errors
    /// As [`NoiseStats::from_variance`], naming `sum_sample_sq_norms` when it is negative or
    /// non-finite.
    ///
    /// ```
    /// use safestep_core::noise::NoiseStats;
    /// // samples 1 and 3: Σ‖g_i‖² = 10, ḡ = 2.
    /// let n = NoiseStats::from_sample_sq_norms(4.0_f64, 10.0, 2, None)?;
    /// assert_eq!(n.variance, 2.0);
    /// # Ok::<(), safestep_core::Error>(())
    /// ```
    pub fn from_sample_sq_norms(
        mean_grad_sq: T,
        sum_sample_sq_norms: T,
        batch: usize,
        population: Option<usize>,
    ) -> Result<Self, Error> {
        check_batch(batch)?;
        let mgs = check_nonneg("mean_grad_sq", mean_grad_sq)?;
        let sum = check_nonneg("sum_sample_sq_norms", sum_sample_sq_norms)?;
        let b = T::of_usize(batch);
        let s = ((sum - b * mgs) / (b - T::one())).max(T::zero());
        Self::from_variance(mgs, s, batch, population)
    }

    /// From the minibatch-mean gradient and the per-sample gradients (each a slice of the
    /// same length; `B` is their count), two-pass: `S = Σ_i ‖g_i − ḡ‖²/(B−1)`, with no
    /// cancellation however small `S` is against `‖ḡ‖²`. `mean_grad` must be the mean of
    /// the samples (as the backend computed it); a row-major `B × P` buffer can be passed
    /// as `buf.chunks_exact(P)`.
    ///
    /// # Errors
    /// [`Error::LengthMismatch`] for a sample whose length differs from `mean_grad`;
    /// [`Error::NonFinite`] for a non-finite entry (`mean_grad` or `samples`); otherwise as
    /// [`NoiseStats::from_variance`].
    ///
    /// ```
    /// use safestep_core::noise::NoiseStats;
    /// let grads = [1.0_f32, 0.0, 3.0, 2.0]; // B = 2 samples of P = 2
    /// let n = NoiseStats::from_sample_grads(&[2.0, 1.0], grads.chunks_exact(2), None)?;
    /// assert_eq!(n.variance, 4.0); // (1+1) + (1+1), divided by B−1 = 1
    /// # Ok::<(), safestep_core::Error>(())
    /// ```
    pub fn from_sample_grads<'a, I>(
        mean_grad: &[T],
        samples: I,
        population: Option<usize>,
    ) -> Result<Self, Error>
    where
        I: IntoIterator<Item = &'a [T]>,
        T: 'a,
    {
        let mut mean_grad_sq = T::zero();
        for (i, &g) in mean_grad.iter().enumerate() {
            if !g.is_finite() {
                return Err(Error::NonFinite {
                    what: "mean_grad",
                    index: Some(i),
                });
            }
            mean_grad_sq = mean_grad_sq + g * g;
        }
        let mut batch = 0usize;
        let mut sum_dev = T::zero();
        for sample in samples {
            check_len("samples", mean_grad.len(), sample.len())?;
            let mut acc = T::zero();
            for (j, (&g, &mu)) in sample.iter().zip(mean_grad).enumerate() {
                if !g.is_finite() {
                    return Err(Error::NonFinite {
                        what: "samples",
                        index: Some(batch * mean_grad.len() + j),
                    });
                }
                let d = g - mu;
                acc = acc + d * d;
            }
            sum_dev = sum_dev + acc;
            batch += 1;
        }
        check_batch(batch)?;
        let s = sum_dev / T::of_usize(batch - 1);
        Self::from_variance(mean_grad_sq, s, batch, population)
    }

    /// `‖ḡ‖² − noise` before the clamp at 0: the unbiased estimate of `‖g‖²` itself (it can
    /// be negative). Average *this* across minibatches and clamp the average — averaging
    /// the clamped [`NoiseStats::unbiased_grad_sq`] is biased upwards on pure noise.
    ///
    /// ```
    /// use safestep_core::noise::NoiseStats;
    /// let n = NoiseStats::from_variance(1.0_f64, 16.0, 8, None)?;
    /// assert_eq!((n.unbiased_grad_sq, n.unbiased_grad_sq_unclamped()), (0.0, -1.0));
    /// # Ok::<(), safestep_core::Error>(())
    /// ```
    pub fn unbiased_grad_sq_unclamped(&self) -> T {
        self.mean_grad_sq - self.noise
    }

    /// `SNR_g = G²/noise`: `+∞` when there is no noise and `G² > 0`, `0` when `G² = 0`
    /// (including `0/0`), never NaN.
    pub fn snr(&self) -> T {
        snr_ratio(self.unbiased_grad_sq, self.noise)
    }
}

/// `signal/noise` with the crate's edge cases: 0 when `signal <= 0` (also `0/0`),
/// `+∞` when `noise <= 0 < signal`.
pub(crate) fn snr_ratio<T: Real>(signal: T, noise: T) -> T {
    if signal <= T::zero() {
        T::zero()
    } else if noise <= T::zero() {
        T::infinity()
    } else {
        signal / noise
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_cases() {
        assert!(NoiseStats::from_variance(1.0_f64, 1.0, 1, None).is_err());
        assert!(NoiseStats::from_variance(1.0_f64, 1.0, 0, None).is_err());
        assert!(NoiseStats::from_variance(1.0_f64, -1.0, 4, None).is_err());
        assert!(NoiseStats::from_variance(f64::NAN, 1.0, 4, None).is_err());
        assert!(NoiseStats::from_variance(1.0_f64, 1.0, 4, Some(3)).is_err());
        let z = NoiseStats::from_variance(0.0_f64, 0.0, 4, None).unwrap();
        assert_eq!(z.snr(), 0.0);
        let n = NoiseStats::from_variance(1.0_f64, 8.0, 4, None).unwrap();
        assert_eq!((n.noise, n.unbiased_grad_sq, n.snr()), (2.0, 0.0, 0.0));
        let n = NoiseStats::from_variance(1.0_f64, 0.0, 4, None).unwrap();
        assert_eq!(n.snr(), f64::INFINITY);
    }

    #[test]
    fn sq_norms_agree_with_sample_grads() {
        let samples = [[1.0_f64, 2.0], [3.0, -1.0], [0.5, 0.5]];
        let mean = [1.5, 0.5];
        let a =
            NoiseStats::from_sample_grads(&mean, samples.iter().map(|s| &s[..]), Some(10)).unwrap();
        let sum: f64 = samples.iter().map(|s| s[0] * s[0] + s[1] * s[1]).sum();
        let b = NoiseStats::from_sample_sq_norms(2.5, sum, 3, Some(10)).unwrap();
        assert!((a.variance - b.variance).abs() < 1e-12);
        assert!((a.noise - a.variance / 3.0 * 0.7).abs() < 1e-12);
    }
}
