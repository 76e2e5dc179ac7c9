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
    /// [`Error::NonFinite`] (the window is unchanged) if `rho` is not finite.
    pub fn push(&mut self, rho: T) -> Result<(), Error> {
        check_finite("rho", rho)?;
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
        let Some(&shift) = self.buf.front() else {
            return T::zero();
        };
        let sum = self.buf.iter().fold(T::zero(), |a, &x| a + (x - shift));
        shift + sum / T::of_usize(self.buf.len())
    }

    /// Unbiased variance (divisor `n − 1`, two-pass on shifted data); 0 with fewer than two
    /// values.
    pub fn variance(&self) -> T {
        let n = self.buf.len();
        let Some(&shift) = self.buf.front() else {
            return T::zero();
        };
        if n < 2 {
            return T::zero();
        }
        let centre = self.buf.iter().fold(T::zero(), |a, &x| a + (x - shift)) / T::of_usize(n);
        let ss = self.buf.iter().fold(T::zero(), |a, &x| {
            let d = (x - shift) - centre;
            a + d * d
        });
        ss / T::of_usize(n - 1)
    }

    /// `Vol = Var/Mean`; 0 with fewer than two values or a mean `<= 0`.
    pub fn volatility(&self) -> T {
        volatility(self.buf.len(), self.mean(), self.variance())
    }
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
    /// [`Error::NonFinite`] (the estimator is unchanged) if `rho` is not finite.
    pub fn push(&mut self, rho: T) -> Result<(), Error> {
        check_finite("rho", rho)?;
        let d = self.decay;
        let old_weight = d * self.weight;
        self.weight = old_weight + T::one();
        self.weight_sq = d * d * self.weight_sq + T::one();
        let delta = rho - self.mean;
        self.mean = self.mean + delta / self.weight;
        self.m2 = d * self.m2 + delta * (rho - self.mean);
        self.count = self.count.saturating_add(1);
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

    /// Restores accumulators saved by `parts` (validated by the caller).
    pub(crate) fn set_parts(&mut self, p: [T; 5], count: usize) {
        self.weight = p[0];
        self.weight_sq = p[1];
        self.mean = p[2];
        self.m2 = p[3];
        self.count = count;
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
