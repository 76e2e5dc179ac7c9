//! Where the device MLP keeps the scalars of a step in its two small `f64` buffers, and how
//! they are read back into the engine contract's results: [`ScalarSlots`] (what the
//! forward/backward pass and the evaluation write) and [`StepSlots`] (what the Adam step
//! writes, with the verdict on a non-finite step). Plain Rust, tested without a GPU.

use safestep_core::adam::StepStats;
use safestep_engine::{BackendError, BatchOutput, EvalOutput, LayerBatchStats};

/// Offsets into the buffer of per-batch scalars, computed once from the layer count:
/// `[loss, correct, ‖ḡ‖² per layer, Σ‖g_i‖² per layer, guard]`.
///
/// ```
/// use safestep_gpu::slots::ScalarSlots;
/// let s = ScalarSlots::new(3);
/// assert_eq!((s.loss, s.correct), (0, 1));
/// assert_eq!((s.grad(0), s.grad(2), s.sample(0), s.sample(2)), (2, 4, 5, 7));
/// assert_eq!((s.guard, s.len), (8, 9));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScalarSlots {
    /// Sum of the per-row losses (of the batch, or of the whole task in an evaluation).
    pub loss: usize,
    /// Sum of the per-row hits: always `loss + 1` (the loss-sum kernel writes both).
    pub correct: usize,
    /// The Adam step's guard `Σ_l ‖ḡ_l‖²`: when it is not finite the step changes nothing.
    pub guard: usize,
    /// Slots in all (the buffer's length).
    pub len: usize,
    /// Number of layers.
    layers: usize,
}

impl ScalarSlots {
    /// The slots of a model with `layers` layers.
    pub fn new(layers: usize) -> Self {
        ScalarSlots {
            loss: 0,
            correct: 1,
            guard: 2 + 2 * layers,
            len: 3 + 2 * layers,
            layers,
        }
    }

    /// `‖ḡ‖²` of layer `layer`'s mean data gradient (`layer` below the layer count).
    pub fn grad(&self, layer: usize) -> usize {
        debug_assert!(layer < self.layers);
        2 + layer
    }

    /// `Σ_i ‖g_i‖²` of layer `layer`'s per-sample gradients (`layer` below the layer count).
    pub fn sample(&self, layer: usize) -> usize {
        debug_assert!(layer < self.layers);
        2 + self.layers + layer
    }

    /// The result of a forward/backward pass over `rows` rows from the buffer's contents
    /// `s` (at least [`ScalarSlots::len`] values), with the per-sample norms when
    /// `sample_norms`.
    ///
    /// # Panics
    /// If `s` is shorter than [`ScalarSlots::len`].
    pub fn read_batch(&self, s: &[f64], rows: usize, sample_norms: bool) -> BatchOutput {
        BatchOutput {
            loss: s[self.loss] / rows as f64,
            correct: s[self.correct].round() as usize,
            batch: rows,
            layers: (0..self.layers)
                .map(|l| LayerBatchStats {
                    mean_grad_sq: s[self.grad(l)],
                    sum_sample_sq_norms: sample_norms.then(|| s[self.sample(l)]),
                })
                .collect(),
        }
    }

    /// The result of an evaluation of `count` examples from the loss and correct slots.
    ///
    /// # Panics
    /// If `s` is shorter than `correct + 1`.
    pub fn read_eval(&self, s: &[f64], count: usize) -> EvalOutput {
        EvalOutput {
            loss: s[self.loss] / count.max(1) as f64,
            correct: s[self.correct].round() as usize,
            count,
        }
    }
}

/// Offsets into the buffer the Adam step writes: per layer [`StepSlots::PER_LAYER`] values,
/// the squared norm of the gradient the step used (regulariser included), then the fused
/// Adam kernel's `Σ v̂`, `Σ multiplier`, `‖θ‖²` (after the step) and `‖Δθ‖²`.
///
/// ```
/// use safestep_gpu::slots::StepSlots;
/// let s = StepSlots::new(2);
/// assert_eq!((s.grad_sq(1), s.adam(1), s.len()), (5, 6, 10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepSlots {
    layers: usize,
}

impl StepSlots {
    /// Values per layer: `‖g‖²` and the Adam kernel's four statistics.
    pub const PER_LAYER: usize = 5;

    /// The slots of a model with `layers` layers.
    pub fn new(layers: usize) -> Self {
        StepSlots { layers }
    }

    /// Slots in all (the buffer's length).
    pub fn len(&self) -> usize {
        Self::PER_LAYER * self.layers
    }

    /// Whether the model has no layers (never, for a valid model).
    pub fn is_empty(&self) -> bool {
        self.layers == 0
    }

    /// Layer `layer`'s `‖g‖²`.
    pub fn grad_sq(&self, layer: usize) -> usize {
        debug_assert!(layer < self.layers);
        Self::PER_LAYER * layer
    }

    /// The first of layer `layer`'s Adam statistics (the kernel writes four from here).
    pub fn adam(&self, layer: usize) -> usize {
        self.grad_sq(layer) + 1
    }

    /// The Adam step's result under the engine contract, from the squared norms of the
    /// batch's data gradients (`data_grad_sq`, what the device guard summed), the step's
    /// statistics `raw` ([`StepSlots::len`] values) and the layers' parameter counts:
    ///
    /// * a non-finite data gradient tripped the guard and the step changed nothing:
    ///   [`BackendError::Optimizer`] with [`safestep_core::Error::NonFinite`] (`grads`) for
    ///   the first such layer;
    /// * otherwise a non-finite statistic means finite inputs overflowed. The device
    ///   detects this after the step, it does not prevent it (unlike the CPU engine and
    ///   safestep-core, which refuse such a step before writing): the parameters are
    ///   changed, the run stops with [`BackendError::Optimizer`] and
    ///   [`safestep_core::Error::Overflow`] (`adam step statistics`) for the first such
    ///   layer, and its last checkpoint is intact;
    /// * else every layer's [`StepStats`].
    ///
    /// ```
    /// use safestep_engine::BackendError;
    /// use safestep_gpu::slots::StepSlots;
    /// let s = StepSlots::new(1);
    /// let ok = s.result(&[1.0], &[1.0, 2.0, 3.0, 4.0, 5.0], &[7]).unwrap();
    /// assert_eq!((ok[0].count, ok[0].grad_sq, ok[0].update_sq), (7, 1.0, 5.0));
    /// let overflow = s.result(&[1.0], &[1.0, 2.0, 3.0, f64::INFINITY, 5.0], &[7]);
    /// assert!(matches!(overflow, Err(BackendError::Optimizer { layer: 0, .. })));
    /// ```
    ///
    /// # Errors
    /// As above.
    ///
    /// # Panics
    /// If `raw` is shorter than [`StepSlots::len`] or `data_grad_sq` and `counts` have
    /// fewer values than the layers.
    pub fn result(
        &self,
        data_grad_sq: &[f64],
        raw: &[f64],
        counts: &[usize],
    ) -> Result<Vec<StepStats<f64>>, BackendError> {
        if let Some(layer) = (0..self.layers).find(|&l| !data_grad_sq[l].is_finite()) {
            return Err(BackendError::Optimizer {
                layer,
                error: safestep_core::Error::NonFinite {
                    what: "grads",
                    index: None,
                },
            });
        }
        let layer_raw = |l: usize| &raw[self.grad_sq(l)..self.grad_sq(l) + Self::PER_LAYER];
        if let Some(layer) = (0..self.layers).find(|&l| layer_raw(l).iter().any(|x| !x.is_finite()))
        {
            return Err(BackendError::Optimizer {
                layer,
                error: safestep_core::Error::Overflow {
                    what: "adam step statistics",
                    index: None,
                },
            });
        }
        Ok((0..self.layers)
            .map(|l| {
                let r = layer_raw(l);
                StepStats {
                    count: counts[l],
                    sum_v_hat: r[1],
                    sum_multiplier: r[2],
                    param_sq: r[3],
                    grad_sq: r[0],
                    update_sq: r[4],
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_slots_are_distinct_and_fill_the_buffer() {
        for layers in 1..5 {
            let s = ScalarSlots::new(layers);
            let mut all = vec![s.loss, s.correct, s.guard];
            all.extend((0..layers).map(|l| s.grad(l)));
            all.extend((0..layers).map(|l| s.sample(l)));
            all.sort_unstable();
            assert_eq!(all, (0..s.len).collect::<Vec<_>>(), "{layers} layers");
        }
    }

    #[test]
    fn batch_and_eval_outputs_are_read_from_their_slots() {
        let s = ScalarSlots::new(2);
        let buf = [8.0, 3.0, 0.5, 0.25, 40.0, 20.0, 0.75];
        let out = s.read_batch(&buf, 4, true);
        assert_eq!((out.loss, out.correct, out.batch), (2.0, 3, 4));
        assert_eq!(out.layers[1].mean_grad_sq, 0.25);
        assert_eq!(out.layers[0].sum_sample_sq_norms, Some(40.0));
        assert!(s.read_batch(&buf, 4, false).layers[0]
            .sum_sample_sq_norms
            .is_none());
        let e = s.read_eval(&buf, 16);
        assert_eq!((e.loss, e.correct, e.count), (0.5, 3, 16));
    }

    #[test]
    fn step_result_names_the_layer_and_what_was_not_finite() {
        let s = StepSlots::new(2);
        let mut raw = vec![1.0; s.len()];
        let counts = [3, 4];
        let ok = s.result(&[1.0, 1.0], &raw, &counts).unwrap();
        assert_eq!(ok.iter().map(|x| x.count).collect::<Vec<_>>(), [3, 4]);
        // A non-finite data gradient: the guard held the step back.
        match s.result(&[1.0, f64::NAN], &raw, &counts) {
            Err(BackendError::Optimizer {
                layer: 1,
                error: safestep_core::Error::NonFinite { what: "grads", .. },
            }) => {}
            other => panic!("{other:?}"),
        }
        // Finite data gradients, a statistic that overflowed in the step.
        raw[s.adam(1) + 2] = f64::INFINITY;
        match s.result(&[1.0, 1.0], &raw, &counts) {
            Err(BackendError::Optimizer {
                layer: 1,
                error:
                    safestep_core::Error::Overflow {
                        what: "adam step statistics",
                        ..
                    },
            }) => {}
            other => panic!("{other:?}"),
        }
        // The regularised gradient overflowed while the data gradient is finite.
        raw[s.adam(1) + 2] = 1.0;
        raw[s.grad_sq(0)] = f64::INFINITY;
        assert!(matches!(
            s.result(&[1.0, 1.0], &raw, &counts),
            Err(BackendError::Optimizer {
                layer: 0,
                error: safestep_core::Error::Overflow { .. }
            })
        ));
    }
}
