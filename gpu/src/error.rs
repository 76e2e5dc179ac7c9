//! The error type of every fallible operation in this crate.

/// What went wrong on (or on the way to) the GPU. Every variant names the operation and the
/// sizes or values involved, so a failing launch can be diagnosed from the message alone.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuError {
    /// No usable CUDA device or driver: `cuInit`, device lookup or context creation failed.
    #[error("no CUDA device/driver available: {reason}")]
    NoDevice {
        /// What the driver (or the loader) reported.
        reason: String,
    },
    /// A CUDA driver call failed (a launch, a copy, an allocation, a synchronisation).
    #[error("CUDA error in {op} ({sizes}): {code}")]
    Driver {
        /// The kernel or driver operation.
        op: &'static str,
        /// The sizes involved, rendered (`m=256 n=784 k=256`, `len=1024`, …).
        sizes: String,
        /// The driver's error, by name and description.
        code: String,
    },
    /// A buffer is shorter (or a host slice longer/shorter) than the launch needs.
    #[error("{op}: {what} has length {found}, expected {expected}")]
    Length {
        /// The kernel or operation.
        op: &'static str,
        /// Which argument.
        what: &'static str,
        /// Length required.
        expected: usize,
        /// Length given.
        found: usize,
    },
    /// A size beyond what a kernel's index arithmetic supports.
    #[error("{op}: {what} = {value} exceeds the supported maximum {max}")]
    TooLarge {
        /// The kernel or operation.
        op: &'static str,
        /// Which size.
        what: &'static str,
        /// The size given.
        value: usize,
        /// The largest allowed.
        max: usize,
    },
    /// An argument outside its allowed range.
    #[error("{op}: {what} = {value} (allowed: {allowed})")]
    InvalidArgument {
        /// The kernel or operation.
        op: &'static str,
        /// Which argument.
        what: &'static str,
        /// The value, rendered.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A layer index beyond the model's layers.
    #[error("layer {layer} out of range (the model has {layers} layers)")]
    LayerOutOfRange {
        /// Index given.
        layer: usize,
        /// Number of layers.
        layers: usize,
    },
    /// An operation that needs earlier state (task data, a forward/backward pass) that is
    /// not there yet.
    #[error("{op} needs {needs} first")]
    MissingState {
        /// The operation attempted.
        op: &'static str,
        /// What must come first.
        needs: &'static str,
    },
    /// A gradient with a non-finite entry reached the optimizer; nothing was updated.
    #[error("optimizer step: the gradient of layer {layer} is not finite (|g|^2 = {grad_sq})")]
    NonFiniteGradient {
        /// Layer index.
        layer: usize,
        /// The squared norm the device computed.
        grad_sq: f64,
    },
}

/// Shorthand for results of this crate.
pub type GpuResult<T> = Result<T, GpuError>;
