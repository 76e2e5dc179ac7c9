//! [`ConfigError`]: the user-facing error for a bad configuration value — which field,
//! which value, what is allowed (`safestep` exits with status 2 on it) — and the checks
//! shared by every settings module (so `methods` and `config` need not import each other).

use std::fmt;

/// A user-facing configuration error: which field, which value, what is allowed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid {field} = {value}: {allowed}")]
pub struct ConfigError {
    /// The configuration field (as spelled in `config.toml` / on the command line).
    pub field: String,
    /// The rejected value, as the user gave it.
    pub value: String,
    /// What is allowed instead.
    pub allowed: String,
}

impl ConfigError {
    /// Builds an error for `field` holding `value`, explaining what is `allowed`.
    pub fn new(field: &str, value: impl fmt::Display, allowed: &str) -> Self {
        Self {
            field: field.to_string(),
            value: value.to_string(),
            allowed: allowed.to_string(),
        }
    }
}

/// `value` of `field` must be at least `min` (an integer setting).
pub(crate) fn at_least<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    min: T,
) -> Result<(), ConfigError> {
    if value >= min {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            value,
            &format!("an integer >= {min}"),
        ))
    }
}

/// The engine computes in `f32`: a value valid in `f64` must stay finite there, a positive
/// one must not round to 0, and one below 1 must not round to 1.
pub(crate) fn representable_in_f32(field: &str, value: f64) -> Result<(), ConfigError> {
    let single = value as f32;
    let allowed = if !single.is_finite() {
        "a value within f32's range (the engine computes in f32; at most 3.4e38)"
    } else if value > 0.0 && single == 0.0 {
        "a value f32 can tell from 0 (the engine computes in f32; at least 1.2e-38)"
    } else if value < 1.0 && single >= 1.0 {
        "a value below 1 that f32 can tell from 1 (the engine computes in f32; at most 1 − 6e-8)"
    } else {
        return Ok(());
    };
    Err(ConfigError::new(field, value, allowed))
}
