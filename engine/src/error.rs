//! [`BackendError`]: everything that can go wrong inside an engine; each variant names the
//! bad input, and device failures keep the device's own error as their source.

/// Everything that can go wrong inside a backend; each variant names the bad input.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A [`crate::ModelSpec`] (or other configuration) field has a value that is not allowed.
    #[error("invalid model spec: {field} = {value} (allowed: {allowed})")]
    InvalidSpec {
        /// Field name.
        field: &'static str,
        /// The offending value, rendered.
        value: String,
        /// What is allowed.
        allowed: &'static str,
    },
    /// A slice argument has the wrong length.
    #[error("{what}: expected length {expected}, found {found}")]
    LengthMismatch {
        /// Which argument.
        what: &'static str,
        /// Required length.
        expected: usize,
        /// Length given.
        found: usize,
    },
    /// A layer index beyond the model's layers.
    #[error("layer {layer} out of range (the model has {layers} layers)")]
    LayerOutOfRange {
        /// Index given.
        layer: usize,
        /// Number of layers.
        layers: usize,
    },
    /// A minibatch index beyond the loaded task.
    #[error("batch index {index} out of range (the task has {examples} examples)")]
    IndexOutOfRange {
        /// Index given.
        index: usize,
        /// Examples in the task.
        examples: usize,
    },
    /// A label not below the number of classes.
    #[error("label {label} at example {index} out of range (the model has {classes} classes)")]
    LabelOutOfRange {
        /// Label value.
        label: u8,
        /// Example index.
        index: usize,
        /// Number of classes.
        classes: usize,
    },
    /// Task data of the wrong kind for the model's loss: labels for a squared-error model,
    /// or real-valued targets for a cross-entropy one.
    #[error("{call} does not fit the model's {loss} loss ({needs})")]
    WrongTargets {
        /// The call made (`load_task`, `load_regression_task`).
        call: &'static str,
        /// The model's loss.
        loss: crate::spec::Loss,
        /// What that loss takes.
        needs: &'static str,
    },
    /// An input value that is not finite.
    #[error("input value {value} at position {index} is not finite")]
    NonFiniteInput {
        /// Flat index into the buffer.
        index: usize,
        /// The value.
        value: f32,
    },
    /// A minibatch with no samples.
    #[error("empty minibatch")]
    EmptyBatch,
    /// An operation that needs task data before [`crate::Backend::load_task`] was called.
    #[error("no task loaded: call load_task first")]
    NoTask,
    /// An operation that needs a preceding [`crate::Backend::forward_backward`].
    #[error("{what} needs a preceding forward_backward on the current parameters")]
    NoBatch {
        /// The operation attempted.
        what: &'static str,
    },
    /// A sub-batch Hessian-vector product asked for more rows than the batch has, or none.
    #[error("hvp rows = {rows} (allowed: 1 to the last batch's {batch} rows)")]
    HvpRows {
        /// The rows asked for.
        rows: usize,
        /// The last `forward_backward` batch's size.
        batch: usize,
    },
    /// A learning rate that is negative or not finite.
    #[error("learning rate {value} for layer {layer} is not a finite non-negative number")]
    BadLearningRate {
        /// Layer index.
        layer: usize,
        /// The value.
        value: f32,
    },
    /// safestep-core refused an optimizer step (a non-finite gradient, or a step whose
    /// result would overflow); the model is unchanged.
    #[error("optimizer step for layer {layer}: {error}")]
    Optimizer {
        /// Layer index.
        layer: usize,
        /// The core error, naming the quantity.
        error: safestep_core::Error,
    },
    /// An operation this engine does not offer.
    #[error("{what} is not available on the {backend} engine")]
    Unsupported {
        /// The operation.
        what: &'static str,
        /// The engine's name.
        backend: &'static str,
    },
    /// No usable device or driver (the CUDA engine on a machine without a GPU).
    #[error("no CUDA device/driver available: {source}")]
    NoDevice {
        /// What the driver or loader reported.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A device-side failure (a launch, a copy, an allocation), with the device's error.
    #[error("device: {source}")]
    Device {
        /// The device engine's own error.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}
