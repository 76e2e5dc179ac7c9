//! Text names of the crate's option enums: `Display`, `FromStr` and (with the `serde`
//! feature) serialisation all use the same lower-case, hyphenated spelling.
//!
//! ```
//! use safestep_core::scheduler::Mode;
//! assert_eq!("combined".parse::<Mode>(), Ok(Mode::Combined));
//! assert_eq!(Mode::Gradient.to_string(), "gradient");
//! let err = "fast".parse::<Mode>().unwrap_err();
//! assert_eq!(err.to_string(), "unknown mode: expected one of off, gradient, volatility, combined");
//! ```

use core::fmt;

/// A name that is not one of an option's spellings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseNameError {
    /// The option being parsed (e.g. `"mode"`).
    pub what: &'static str,
    /// The accepted names, comma-separated.
    pub expected: &'static str,
}

impl fmt::Display for ParseNameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {}: expected one of {}",
            self.what, self.expected
        )
    }
}

impl core::error::Error for ParseNameError {}

/// Declares an option enum whose variants have fixed text names, with `NAMES`, `ALL`,
/// `as_str`, `Display`, `FromStr` and, with the `serde` feature, `Serialize`/`Deserialize`
/// by the same names.
macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident : $what:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
        default $default:ident
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                #[cfg_attr(feature = "serde", serde(rename = $text))]
                $variant,
            )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            /// Every variant's name, in declaration order.
            pub const NAMES: &'static [&'static str] = &[$($text),+];

            /// The variant's name.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)+
                }
            }
        }

        impl core::default::Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl core::str::FromStr for $name {
            type Err = $crate::names::ParseNameError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::names::ParseNameError {
                        what: $what,
                        expected: concat!($($text, ", "),+).trim_end_matches(", "),
                    }),
                }
            }
        }
    };
}

pub(crate) use named_enum;
