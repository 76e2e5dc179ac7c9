//! The crate's one error type: every variant names the input that was wrong.

use core::fmt;

/// What went wrong, naming the offending input; no allocation, so it works in `no_std`.
///
/// Every fallible function in the crate checks its inputs *before* it mutates anything,
/// so an `Err` always means "nothing was changed".
///
/// ```
/// use safestep_core::Error;
/// let e = Error::LengthMismatch { what: "grads", expected: 3, found: 2 };
/// assert_eq!(e.to_string(), "grads: length 2, expected 3");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Error {
    /// A value that must be finite was NaN or infinite. `index` is the position in a
    /// slice when the value came from one.
    NonFinite {
        /// Which input (e.g. `"grads"`, `"sharpness"`).
        what: &'static str,
        /// Position within the slice, if the input was a slice.
        index: Option<usize>,
    },
    /// Two slices that must have the same length did not.
    LengthMismatch {
        /// Which slice had the wrong length.
        what: &'static str,
        /// The length it should have had.
        expected: usize,
        /// The length it had.
        found: usize,
    },
    /// A configuration field was outside its allowed range.
    InvalidConfig {
        /// The field name as written in the config struct.
        field: &'static str,
        /// The rejected value (as `f64`).
        value: f64,
        /// What is allowed, in words (e.g. `"in (0, 1)"`).
        allowed: &'static str,
    },
    /// Finite inputs whose result would not be finite (an overflow): nothing was changed.
    /// `index` is the position in a slice when the result belongs to one.
    Overflow {
        /// Which result (e.g. `"v"`, `"params"`, `"sum_v_hat"`).
        what: &'static str,
        /// Position within the slice, if the result belongs to one.
        index: Option<usize>,
    },
    /// A runtime input was outside its allowed range (negative variance, batch of 0, ...).
    InvalidInput {
        /// Which input.
        what: &'static str,
        /// The rejected value (as `f64`).
        value: f64,
        /// What is allowed, in words.
        allowed: &'static str,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::NonFinite {
                what,
                index: Some(i),
            } => {
                write!(f, "{what}[{i}] is not finite")
            }
            Error::NonFinite { what, index: None } => write!(f, "{what} is not finite"),
            Error::Overflow {
                what,
                index: Some(i),
            } => write!(
                f,
                "{what}[{i}] would overflow (not finite); nothing was changed"
            ),
            Error::Overflow { what, index: None } => {
                write!(f, "{what} would overflow (not finite); nothing was changed")
            }
            Error::LengthMismatch {
                what,
                expected,
                found,
            } => {
                write!(f, "{what}: length {found}, expected {expected}")
            }
            Error::InvalidConfig {
                field,
                value,
                allowed,
            } => {
                write!(f, "config field {field} = {value}: must be {allowed}")
            }
            Error::InvalidInput {
                what,
                value,
                allowed,
            } => {
                write!(f, "{what} = {value}: must be {allowed}")
            }
        }
    }
}

impl core::error::Error for Error {}

/// Returns `Err(NonFinite)` unless `x` is finite.
pub(crate) fn check_finite<T: crate::Real>(what: &'static str, x: T) -> Result<T, Error> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(Error::NonFinite { what, index: None })
    }
}

/// Returns `Err` unless `x` is finite and `>= 0`.
pub(crate) fn check_nonneg<T: crate::Real>(what: &'static str, x: T) -> Result<T, Error> {
    let x = check_finite(what, x)?;
    if x >= T::zero() {
        Ok(x)
    } else {
        Err(Error::InvalidInput {
            what,
            value: x.as_f64(),
            allowed: ">= 0",
        })
    }
}

/// Returns `Err(LengthMismatch)` unless `found == expected`.
pub(crate) fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), Error> {
    if expected == found {
        Ok(())
    } else {
        Err(Error::LengthMismatch {
            what,
            expected,
            found,
        })
    }
}
