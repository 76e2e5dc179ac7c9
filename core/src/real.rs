//! The floating-point abstraction every routine in the crate is generic over.

use core::fmt::{Debug, Display};
use num_traits::{Float, FromPrimitive};

/// A real number type the crate computes in: implemented for `f32` and `f64`.
///
/// It is [`num_traits::Float`] (with `libm` behind it, so it works without `std`) plus
/// two lossless-enough conversions the formulas need. Implement it for your own type
/// if it is a `Float`; the conversions only have to be exact for small integers.
///
/// ```
/// use safestep_core::Real;
/// fn half<T: Real>(x: T) -> T { x * T::of(0.5) }
/// assert_eq!(half(3.0_f32), 1.5);
/// assert_eq!(f64::of_usize(7), 7.0);
/// ```
pub trait Real: Float + FromPrimitive + Default + Debug + Display + Send + Sync + 'static {
    /// Converts an `f64` constant to `Self` (rounding to nearest for `f32`).
    fn of(x: f64) -> Self;
    /// Converts a count to `Self` (exact up to 2^24 for `f32`, 2^53 for `f64`).
    fn of_usize(n: usize) -> Self;
    /// Converts `self` to `f64`, exactly for `f32` and `f64`; used in error values.
    fn as_f64(self) -> f64;
}

impl Real for f32 {
    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn of_usize(n: usize) -> Self {
        n as f32
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl Real for f64 {
    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn of_usize(n: usize) -> Self {
        n as f64
    }
    #[inline(always)]
    fn as_f64(self) -> f64 {
        self
    }
}
