//! Curvature volatility: `Vol = Var(ρ)/Mean(ρ)` over recent values of the normalised step.
//!
//! Two estimators: [`CurvatureWindow`] keeps the last `W` values in a fixed-capacity
//! `heapless` queue (the default), [`EmaVolatility`] an exponentially weighted, bias-corrected
//! mean and variance (constant memory, no window edge). Both use the *unbiased* variance
//! (divisor `n − 1`, or its weighted analogue) and return `Vol = 0` with fewer than two
//! samples or a mean `<= 0`.
//!
//! ```
//! use safestep_core::window::CurvatureWindow;
//! let mut w = CurvatureWindow::<f64, 8>::new(3)?;
//! for rho in [1.0, 2.0, 3.0, 4.0] {
//!     w.push(rho)?;
//! }
//! assert_eq!(w.len(), 3);          // 2, 3, 4
//! assert_eq!(w.mean(), 3.0);
//! assert_eq!(w.variance(), 1.0);
//! assert_eq!(w.volatility(), 1.0 / 3.0);
//! # Ok::<(), safestep_core::Error>(())
//! ```

use crate::error::check_finite;
use crate::{Error, Real};
use heapless::Deque;

/// The last `w <= N` values of `ρ`, in a fixed-capacity queue (no allocation).
#[derive(Debug, Clone)]
pub struct CurvatureWindow<T, const N: usize> {
    buf: Deque<T, N>,
    w: usize,
}

impl<T: Real, const N: usize> CurvatureWindow<T, N> {
    /// An empty window holding at most `w` values.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (field `window`) unless `1 <= w <= N`.
    pub fn new(w: usize) -> Result<Self, Error> {
        if w == 0 || w > N {
            return Err(Error::InvalidConfig {
                field: "window",
                value: w as f64,
                allowed: "in [1, N] (N = the window's const capacity)",
            });
        }
        Ok(CurvatureWindow {
            buf: Deque::new(),
            w,
        })
    }

    /// Appends `rho`, dropping the oldest value when the window is full.
    ///
    /// # Errors
    /// [`Error::NonFinite`] if `rho` is not finite; [`Error::Overflow`] if the window's
    /// mean, variance or volatility would not be finite (values near the type's largest).
    /// The window is unchanged on error, so [`CurvatureWindow::volatility`] is always finite.
    pub fn push(&mut self, rho: T) -> Result<(), Error> {
        check_finite("rho", rho)?;
        let (_, mean, var) = self.stats_with(Some(rho));
        if !(mean.is_finite() && var.is_finite() && self.volatility_after(rho).is_finite()) {
            return Err(Error::Overflow {
                what: "volatility window",
                index: None,
            });
        }
        if self.buf.len() >= self.w {
            self.buf.pop_front();
        }
        // Cannot fail: len < w <= N after the pop.
        let _ = self.buf.push_back(rho);
        Ok(())
    }

    /// Number of values held (at most [`CurvatureWindow::capacity`]).
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// True when no value has been pushed since creation or [`CurvatureWindow::clear`].
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The runtime window length `w`.
    pub fn capacity(&self) -> usize {
        self.w
    }

    /// Forgets every value.
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    /// The values held, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.buf.iter().copied()
    }

    /// Mean of the values held; 0 when empty. Computed about the oldest value (shifted
    /// data), so a constant series has exactly its value as mean and exactly 0 variance.
    pub fn mean(&self) -> T {
        self.stats_with(None).1
    }

    /// Unbiased variance (divisor `n − 1`, on data shifted by the oldest value); 0 with
    /// fewer than two values.
    pub fn variance(&self) -> T {
        self.stats_with(None).2
    }

    /// `Vol = Var/Mean`; 0 with fewer than two values or a mean `<= 0`.
    pub fn volatility(&self) -> T {
        let (n, mean, var) = self.stats_with(None);
        volatility(n, mean, var)
    }

    /// The volatility the window would have after `push(rho)`, without changing it
    /// (lets a caller commit the push only once everything else succeeded). Not finite
    /// exactly when that push would fail with [`Error::Overflow`].
    ///
    /// ```
    /// use safestep_core::window::CurvatureWindow;
    /// let mut w = CurvatureWindow::<f64, 4>::new(2)?;
    /// w.push(1.0)?;
    /// let peek = w.volatility_after(3.0);
    /// w.push(3.0)?;
    /// assert_eq!(peek, w.volatility());
    /// # Ok::<(), safestep_core::Error>(())
    /// ```
    pub fn volatility_after(&self, rho: T) -> T {
        let (n, mean, var) = self.stats_with(Some(rho));
        volatility(n, mean, var)
    }

    /// `(count, mean, unbiased variance)` of the values held, plus `extra` as if pushed
    /// (dropping the oldest when full).
    fn stats_with(&self, extra: Option<T>) -> (usize, T, T) {
        let (a, b) = self.buf.as_slices();
        let skip = usize::from(extra.is_some() && self.buf.len() >= self.w);
        let (a, b) = if skip <= a.len() {
            (&a[skip..], b)
        } else {
            (&b[skip - a.len()..], &b[..0])
        };
        let extra = extra.as_slice();
        let n = a.len() + b.len() + extra.len();
        let Some(&shift) = a.first().or(b.first()).or(extra.first()) else {
            return (0, T::zero(), T::zero());
        };
        // Four accumulators assigned by age (value k goes to lane k mod 4): short dependency
        // chains, and the same sums wherever the ring buffer wraps (so a restored
        // checkpoint computes bit-identically).
        let parts = [a, b, extra];
        // One pass over data shifted by the oldest value: Σd and Σd², d = x − shift. The
        // shift is one of the values, so |d| never exceeds the window's range and the
        // cancellation in Σd² − (Σd)²/n is benign; a constant series gives exactly 0.
        let (s1, s2) = sum_by_age(&parts, shift);
        let nt = T::of_usize(n);
        let centre = s1 / nt;
        let mean = shift + centre;
        if n < 2 {
            return (n, mean, T::zero());
        }
        let ss = (s2 - s1 * centre).max(T::zero());
        (n, mean, ss / T::of_usize(n - 1))
    }
}

/// `(Σ d, Σ d²)` with `d = x − shift`, over consecutive runs of values in age order; value
/// `k` is summed in lane `k mod 4` and the lanes combined pairwise, so the result depends
/// only on the values and their order, not on how they are split into runs.
#[inline(always)]
fn sum_by_age<T: Real>(parts: &[&[T]; 3], shift: T) -> (T, T) {
    let mut s1 = [T::zero(); 4];
    let mut s2 = [T::zero(); 4];
    let mut age = 0;
    for xs in parts {
        let lead = ((4 - age % 4) % 4).min(xs.len());
        let (head, rest) = xs.split_at(lead);
        for (i, &x) in head.iter().enumerate() {
            let lane = (age + i) % 4;
            let d = x - shift;
            s1[lane] = s1[lane] + d;
            s2[lane] = s2[lane] + d * d;
        }
        for chunk in rest.chunks(4) {
            for (lane, &x) in chunk.iter().enumerate() {
                let d = x - shift;
                s1[lane] = s1[lane] + d;
                s2[lane] = s2[lane] + d * d;
            }
        }
        age += xs.len();
    }
    (
        (s1[0] + s1[1]) + (s1[2] + s1[3]),
        (s2[0] + s2[1]) + (s2[2] + s2[3]),
    )
}

fn volatility<T: Real>(n: usize, mean: T, var: T) -> T {
    if n < 2 || mean <= T::zero() {
        T::zero()
    } else {
        var / mean
    }
}

/// Exponentially weighted, bias-corrected mean and variance of `ρ` (weights `decay^age`).
///
/// The mean is `Σ d^k x_{n−k} / Σ d^k` (the bias-corrected EMA) and the variance the
/// reliability-weighted unbiased variance `Σ w(x − μ)² / (W − Σw²/W)`, updated stably
/// (West 1979). `decay < 1` is required; use [`CurvatureWindow`] for equal weights.
///
/// ```
/// use safestep_core::window::EmaVolatility;
/// let mut e = EmaVolatility::new(0.9_f64)?;
/// e.push(2.0)?;
/// assert_eq!((e.mean(), e.volatility()), (2.0, 0.0)); // one sample: no volatility yet
/// e.push(4.0)?;
/// assert!(e.volatility() > 0.0);
/// # Ok::<(), safestep_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EmaVolatility<T> {
    decay: T,
    weight: T,
    weight_sq: T,
    mean: T,
    m2: T,
    count: usize,
}

impl<T: Real> EmaVolatility<T> {
    /// An empty estimator with weight decay `decay`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] (field `decay`) unless `0 <= decay < 1`.
    pub fn new(decay: T) -> Result<Self, Error> {
        if !(decay.is_finite() && decay >= T::zero() && decay < T::one()) {
            return Err(Error::InvalidConfig {
                field: "decay",
                value: decay.as_f64(),
                allowed: "in [0, 1)",
            });
        }
        Ok(EmaVolatility {
            decay,
            weight: T::zero(),
            weight_sq: T::zero(),
            mean: T::zero(),
            m2: T::zero(),
            count: 0,
        })
    }

    /// The decay that matches a window of `w` values in average age: `1 − 2/(w+1)`.
    ///
    /// ```
    /// use safestep_core::window::EmaVolatility;
    /// assert_eq!(EmaVolatility::<f64>::decay_for_window(19), 0.9);
    /// ```
    pub fn decay_for_window(w: usize) -> T {
        T::one() - T::of(2.0) / T::of_usize(w.saturating_add(1).max(1))
    }

    /// Adds one value.
    ///
    /// # Errors
    /// [`Error::NonFinite`] if `rho` is not finite; [`Error::Overflow`] if the mean or the
    /// variance would not be finite (values near the type's largest). The estimator is
    /// unchanged on error.
    pub fn push(&mut self, rho: T) -> Result<(), Error> {
        check_finite("rho", rho)?;
        let d = self.decay;
        let weight = d * self.weight + T::one();
        let weight_sq = d * d * self.weight_sq + T::one();
        let delta = rho - self.mean;
        let mean = self.mean + delta / weight;
        let m2 = d * self.m2 + delta * (rho - mean);
        let next = EmaVolatility {
            weight,
            weight_sq,
            mean,
            m2,
            count: self.count.saturating_add(1),
            ..*self
        };
        if !(delta.is_finite() && mean.is_finite() && m2.is_finite() && next.variance().is_finite())
        {
            return Err(Error::Overflow {
                what: "volatility estimate",
                index: None,
            });
        }
        *self = next;
        Ok(())
    }

    /// The raw accumulators `[weight, weight_sq, mean, m2, count]` (for checkpoints).
    pub(crate) fn parts(&self) -> [T; 5] {
        [
            self.weight,
            self.weight_sq,
            self.mean,
            self.m2,
            T::of_usize(self.count),
        ]
    }

    /// Restores accumulators saved by `parts`: all finite, weights `>= 0` (`m2` may be
    /// slightly negative from rounding; the variance clamps it).
    pub(crate) fn set_parts(&mut self, p: [T; 5], count: usize) -> Result<(), Error> {
        let what = "state volatility estimate";
        if p.iter().any(|x| !x.is_finite()) {
            return Err(Error::NonFinite { what, index: None });
        }
        if p[0] < T::zero() || p[1] < T::zero() {
            return Err(Error::InvalidInput {
                what,
                value: p[0].min(p[1]).as_f64(),
                allowed: "weights >= 0",
            });
        }
        self.weight = p[0];
        self.weight_sq = p[1];
        self.mean = p[2];
        self.m2 = p[3];
        self.count = count;
        Ok(())
    }

    /// Number of values pushed since creation or [`EmaVolatility::clear`].
    pub fn count(&self) -> usize {
        self.count
    }

    /// Forgets every value (keeps the decay).
    pub fn clear(&mut self) {
        self.weight = T::zero();
        self.weight_sq = T::zero();
        self.mean = T::zero();
        self.m2 = T::zero();
        self.count = 0;
    }

    /// Bias-corrected weighted mean; 0 when empty.
    pub fn mean(&self) -> T {
        self.mean
    }

    /// Reliability-weighted unbiased variance; 0 with fewer than two values (or `decay = 0`).
    pub fn variance(&self) -> T {
        if self.count < 2 {
            return T::zero();
        }
        let denom = self.weight - self.weight_sq / self.weight;
        if denom > T::zero() {
            (self.m2 / denom).max(T::zero())
        } else {
            T::zero()
        }
    }

    /// `Vol = Var/Mean`; 0 with fewer than two values or a mean `<= 0`.
    pub fn volatility(&self) -> T {
        volatility(self.count, self.mean(), self.variance())
    }
}
