//! [`GpuError`], the error of every device operation in this crate, and its conversion into
//! safestep-engine's [`BackendError`] (which keeps it as the source).

use safestep_engine::BackendError;

/// What went wrong on (or on the way to) the GPU. Every variant names the operation and the
/// sizes or values involved, so a failing launch can be diagnosed from the message alone.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum GpuError {
    /// No usable CUDA device or driver: `cuInit`, device lookup or context creation failed.
    /// Displays the reason alone: [`BackendError::NoDevice`], which this becomes, says
    /// "no CUDA device/driver available" in front of it.
    #[error("{reason}")]
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
    /// An operation that needs earlier state (task data, a forward/backward pass) that is
    /// not there yet.
    #[error("{op} needs {needs} first")]
    MissingState {
        /// The operation attempted.
        op: &'static str,
        /// What must come first.
        needs: &'static str,
    },
}

/// Shorthand for results of this crate.
pub type GpuResult<T> = Result<T, GpuError>;

/// A device error as the engine contract reports it, keeping the device error as its
/// source: [`GpuError::NoDevice`] becomes [`BackendError::NoDevice`], every other variant
/// [`BackendError::Device`].
///
/// ```
/// use safestep_engine::BackendError;
/// use safestep_gpu::GpuError;
/// let e = BackendError::from(GpuError::NoDevice { reason: "cuInit failed".into() });
/// assert_eq!(e.to_string(), "no CUDA device/driver available: cuInit failed");
/// let source = std::error::Error::source(&e).expect("the device error is kept");
/// assert!(matches!(source.downcast_ref::<GpuError>(), Some(GpuError::NoDevice { .. })));
/// ```
impl From<GpuError> for BackendError {
    fn from(error: GpuError) -> Self {
        match error {
            GpuError::NoDevice { .. } => BackendError::NoDevice {
                source: Box::new(error),
            },
            other => BackendError::Device {
                source: Box::new(other),
            },
        }
    }
}
