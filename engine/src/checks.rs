//! The input checks every engine runs, written once: task data, minibatch indices, step
//! arguments, layer indices and vector arguments.
//!
//! ```
//! use safestep_engine::checks::Batch;
//! use safestep_engine::BackendError;
//! let batch = Batch::new(&[0, 3, 2], 4)?;
//! assert_eq!(batch.len(), 3);
//! assert!(matches!(Batch::new(&[4], 4), Err(BackendError::IndexOutOfRange { index: 4, examples: 4 })));
//! assert!(matches!(Batch::new(&[], 4), Err(BackendError::EmptyBatch)));
//! assert!(matches!(Batch::new(&[0], 0), Err(BackendError::NoTask)));
//! # Ok::<(), BackendError>(())
//! ```

use crate::backend::Regularizer;
use crate::error::BackendError;
use crate::spec::{Loss, ModelSpec};

/// Minibatch indices checked against a task of `examples` examples: at least one, each
/// below `examples`. Engines take their batches through this type, so the indices are
/// checked once, however many layers of code read them.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    indices: &'a [u32],
    examples: usize,
}

impl<'a> Batch<'a> {
    /// Checks `indices` against a loaded task of `examples` examples.
    ///
    /// # Errors
    /// [`BackendError::NoTask`] when no task is loaded (`examples == 0`),
    /// [`BackendError::EmptyBatch`], or [`BackendError::IndexOutOfRange`] naming the first
    /// index not below `examples`.
    pub fn new(indices: &'a [u32], examples: usize) -> Result<Self, BackendError> {
        if examples == 0 {
            return Err(BackendError::NoTask);
        }
        if indices.is_empty() {
            return Err(BackendError::EmptyBatch);
        }
        if let Some(&bad) = indices.iter().find(|&&i| i as usize >= examples) {
            return Err(BackendError::IndexOutOfRange {
                index: bad as usize,
                examples,
            });
        }
        Ok(Batch { indices, examples })
    }

    /// The indices (each below [`Batch::examples`]).
    pub fn indices(&self) -> &'a [u32] {
        self.indices
    }

    /// The number of examples of the task the indices were checked against.
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// Number of samples (at least 1).
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Always false: a checked batch has at least one sample.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Checks task data as every [`crate::Backend::load_task`] must: at least one example,
/// `images` of `labels.len() × spec.input` finite values, every label below `spec.classes`.
///
/// # Errors
/// [`BackendError::WrongTargets`] when the model's loss is not cross-entropy,
/// [`BackendError::InvalidSpec`] (field `labels`) for no examples,
/// [`BackendError::LengthMismatch`], [`BackendError::LabelOutOfRange`] or
/// [`BackendError::NonFiniteInput`] naming the first bad entry.
pub fn check_task(spec: &ModelSpec, images: &[f32], labels: &[u8]) -> Result<(), BackendError> {
    if spec.loss != Loss::CrossEntropy {
        return Err(BackendError::WrongTargets {
            call: "load_task",
            loss: spec.loss,
            needs: "f32 targets through load_regression_task",
        });
    }
    if labels.is_empty() {
        return Err(BackendError::InvalidSpec {
            field: "labels",
            value: "0 examples".to_string(),
            allowed: "at least one example",
        });
    }
    check_len("images", labels.len() * spec.input, images.len())?;
    let classes = spec.classes;
    if let Some((index, &label)) = labels
        .iter()
        .enumerate()
        .find(|(_, &y)| y as usize >= classes)
    {
        return Err(BackendError::LabelOutOfRange {
            label,
            index,
            classes,
        });
    }
    check_finite(images)
}

/// Checks regression task data as every [`crate::Backend::load_regression_task`] must: a
/// squared-error model, at least one example, `targets` a whole number of rows of
/// `spec.classes` outputs, `inputs` of `rows × spec.input`, every value finite. Returns the
/// number of examples.
///
/// # Errors
/// [`BackendError::WrongTargets`] when the model's loss is not squared error,
/// [`BackendError::InvalidSpec`] (field `targets`) for no examples or a partial row,
/// [`BackendError::LengthMismatch`] (`inputs`) or [`BackendError::NonFiniteInput`] naming
/// the first bad entry.
pub fn check_regression_task(
    spec: &ModelSpec,
    inputs: &[f32],
    targets: &[f32],
) -> Result<usize, BackendError> {
    if spec.loss != Loss::SquaredError {
        return Err(BackendError::WrongTargets {
            call: "load_regression_task",
            loss: spec.loss,
            needs: "u8 labels through load_task",
        });
    }
    let outputs = spec.classes.max(1);
    if targets.is_empty() || !targets.len().is_multiple_of(outputs) {
        return Err(BackendError::InvalidSpec {
            field: "targets",
            value: format!("{} values", targets.len()),
            allowed: "a positive whole number of rows of the model's outputs",
        });
    }
    let rows = targets.len() / outputs;
    check_len("inputs", rows * spec.input, inputs.len())?;
    check_finite(inputs)?;
    check_finite(targets)?;
    Ok(rows)
}

/// Checks the arguments of [`crate::Backend::adam_step`] for a model of `layers` layers:
/// one finite, non-negative lr per layer and a finite, non-negative regulariser strength.
///
/// # Errors
/// [`BackendError::LengthMismatch`] (`lrs`), [`BackendError::BadLearningRate`] naming the
/// layer, or [`BackendError::InvalidSpec`] (`wasserstein`, `l2_init`).
pub fn check_step(layers: usize, lrs: &[f32], reg: &Regularizer) -> Result<(), BackendError> {
    check_len("lrs", layers, lrs.len())?;
    if let Some((layer, &value)) = lrs
        .iter()
        .enumerate()
        .find(|(_, lr)| !(lr.is_finite() && **lr >= 0.0))
    {
        return Err(BackendError::BadLearningRate { layer, value });
    }
    for (field, value) in [("wasserstein", reg.wasserstein), ("l2_init", reg.l2_init)] {
        if !(value.is_finite() && value >= 0.0) {
            return Err(BackendError::InvalidSpec {
                field,
                value: value.to_string(),
                allowed: "finite and >= 0",
            });
        }
    }
    Ok(())
}

/// `Ok` when `layer < layers`, else [`BackendError::LayerOutOfRange`].
pub fn check_layer(layer: usize, layers: usize) -> Result<(), BackendError> {
    if layer < layers {
        Ok(())
    } else {
        Err(BackendError::LayerOutOfRange { layer, layers })
    }
}

/// The rows a Hessian-vector product is of, given the pending batch's `batch` rows:
/// all of them ([`crate::Backend::hvp`], `first_rows` = `None`) or the first
/// `first_rows` ([`crate::Backend::hvp_rows`]), which must be in `1..=batch`.
///
/// ```
/// use safestep_engine::checks::hvp_rows;
/// use safestep_engine::BackendError;
/// assert_eq!(hvp_rows(None, 256)?, 256);
/// assert_eq!(hvp_rows(Some(64), 256)?, 64);
/// assert!(matches!(hvp_rows(Some(0), 256), Err(BackendError::HvpRows { rows: 0, batch: 256 })));
/// # Ok::<(), BackendError>(())
/// ```
///
/// # Errors
/// [`BackendError::HvpRows`] for 0 rows or more than the batch has.
pub fn hvp_rows(first_rows: Option<usize>, batch: usize) -> Result<usize, BackendError> {
    match first_rows {
        None => Ok(batch),
        Some(rows) if (1..=batch).contains(&rows) => Ok(rows),
        Some(rows) => Err(BackendError::HvpRows { rows, batch }),
    }
}

/// Checks a vector argument of a layer (e.g. [`crate::Backend::hvp`]'s `v`): the layer's
/// length and every entry finite.
///
/// # Errors
/// [`BackendError::LengthMismatch`] or [`BackendError::NonFiniteInput`].
pub fn check_vector(what: &'static str, expected: usize, v: &[f32]) -> Result<(), BackendError> {
    check_len(what, expected, v.len())?;
    check_finite(v)
}

/// `Ok` when every entry is finite, else [`BackendError::NonFiniteInput`] for the first.
///
/// Each block of entries is scanned whole, without an early exit, so that the scan runs in
/// vector registers (an HVP's `v` is checked at every controller event); only a block with
/// a non-finite entry is searched for the first one.
pub fn check_finite(values: &[f32]) -> Result<(), BackendError> {
    const BLOCK: usize = 512;
    for (b, block) in values.chunks(BLOCK).enumerate() {
        let all_finite = block.iter().fold(true, |all, x| all & x.is_finite());
        if all_finite {
            continue;
        }
        if let Some(k) = block.iter().position(|x| !x.is_finite()) {
            return Err(BackendError::NonFiniteInput {
                index: b * BLOCK + k,
                value: block[k],
            });
        }
    }
    Ok(())
}

/// `Ok` when a slice argument `what` has the `expected` length, else
/// [`BackendError::LengthMismatch`].
pub fn check_len(what: &'static str, expected: usize, found: usize) -> Result<(), BackendError> {
    if expected == found {
        Ok(())
    } else {
        Err(BackendError::LengthMismatch {
            what,
            expected,
            found,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The blocked scan names the same first entry as a plain search, wherever it is
    /// (within a block, at either side of a block edge, last) and whatever it is.
    #[test]
    fn check_finite_names_the_first_non_finite_entry() {
        for len in [0usize, 1, 511, 512, 513, 1500] {
            assert!(check_finite(&vec![1.5f32; len]).is_ok(), "len {len}");
            for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                for first in [0, 1, 510, 511, 512, 513, 1023, 1024, len.saturating_sub(1)] {
                    if first >= len {
                        continue;
                    }
                    let mut values: Vec<f32> = (0..len).map(|i| i as f32 - 700.0).collect();
                    values[first] = bad;
                    // A later bad entry must not be named instead.
                    values[len - 1] = if first == len - 1 { bad } else { f32::NAN };
                    match check_finite(&values) {
                        Err(BackendError::NonFiniteInput { index, value }) => {
                            assert_eq!(index, first, "len {len}");
                            assert_eq!(value.to_bits(), bad.to_bits(), "len {len} at {first}");
                        }
                        other => panic!("len {len}, {bad} at {first}: {other:?}"),
                    }
                }
            }
        }
    }
}
