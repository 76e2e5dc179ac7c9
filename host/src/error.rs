//! [`ConfigError`]: the user-facing error for a bad configuration value — which field,
//! which value, what is allowed (`safestep` exits with status 2 on it).

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
