//! The Adam step of the CPU engine: safestep-core's fused Adam over fixed chunks of each
//! layer, checked everywhere before anything is written.

use safestep_core::adam::{Adam, PreparedStep, StateBounds, StepStats};

use super::{active_team, wasserstein, CpuBackend};
use crate::backend::Regularizer;
use crate::checks::check_step;
use crate::error::BackendError;

/// Parameters per call of the core's Adam: a layer is updated in these fixed chunks (the
/// last one shorter), whose statistics are merged in chunk order in `f64`. The chunking and
/// the merge order, and so every number, are the same for any thread count.
const ADAM_CHUNK: usize = 1 << 14;

/// `e` with the slice index it names moved by `offset` (a chunk's index → the layer's).
fn at_offset(e: safestep_core::Error, offset: usize) -> safestep_core::Error {
    use safestep_core::Error;
    match e {
        Error::NonFinite {
            what,
            index: Some(i),
        } => Error::NonFinite {
            what,
            index: Some(i + offset),
        },
        Error::Overflow {
            what,
            index: Some(i),
        } => Error::Overflow {
            what,
            index: Some(i + offset),
        },
        other => other,
    }
}

/// Whether this CPU runs the AVX2 builds of the core's Adam kernels (checked once).
#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    static AVX2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVX2.get_or_init(|| std::arch::is_x86_feature_detected!("avx2"))
}

/// [`Adam::prepare`] (the read-only checking pass), or [`Adam::prepare_known`] (which
/// reads only the gradient) where the chunk's bounds from the last step are `known`,
/// compiled for AVX2 where the CPU has it. The core is built for the baseline x86_64
/// (SSE2: 4 lanes); its kernels are written so that each lane does the same IEEE operations in the same order whatever the vector
/// width, and Rust never fuses a multiply and an add, so both builds give the same bits.
///
/// The signature is spelled out three times on purpose: a generic `on_avx2(|| …)` helper
/// (a `#[target_feature]` function calling an `#[inline(always)]` closure) compiled the
/// update so differently that a batch-16 step took 1.8× as long.
#[allow(clippy::too_many_arguments)]
fn prepare_fast<'a>(
    adam: &Adam<f32>,
    lr: f32,
    t: u64,
    p: &'a mut [f32],
    g: &'a [f32],
    m: &'a mut [f32],
    v: &'a mut [f32],
    known: Option<&StateBounds<f32>>,
) -> Result<PreparedStep<'a, f32>, safestep_core::Error> {
    #[inline(always)]
    #[allow(clippy::too_many_arguments)]
    fn either<'a>(
        adam: &Adam<f32>,
        lr: f32,
        t: u64,
        p: &'a mut [f32],
        g: &'a [f32],
        m: &'a mut [f32],
        v: &'a mut [f32],
        known: Option<&StateBounds<f32>>,
    ) -> Result<PreparedStep<'a, f32>, safestep_core::Error> {
        match known {
            Some(known) => adam.prepare_known(lr, t, p, g, m, v, known),
            None => adam.prepare(lr, t, p, g, m, v),
        }
    }
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        #[target_feature(enable = "avx2")]
        #[allow(clippy::too_many_arguments)]
        fn avx2<'a>(
            adam: &Adam<f32>,
            lr: f32,
            t: u64,
            p: &'a mut [f32],
            g: &'a [f32],
            m: &'a mut [f32],
            v: &'a mut [f32],
            known: Option<&StateBounds<f32>>,
        ) -> Result<PreparedStep<'a, f32>, safestep_core::Error> {
            either(adam, lr, t, p, g, m, v, known)
        }
        // SAFETY: this CPU supports AVX2 (`has_avx2`), the only requirement of `avx2`.
        return unsafe { avx2(adam, lr, t, p, g, m, v, known) };
    }
    either(adam, lr, t, p, g, m, v, known)
}

/// [`PreparedStep::apply_bounded`] (the fused update, and the bounds the next step's
/// [`prepare_fast`] starts from), compiled for AVX2 where the CPU has it (see
/// [`prepare_fast`]: the same bits either way).
fn apply_fast(step: PreparedStep<'_, f32>, stats: &mut StepStats<f32>) -> StateBounds<f32> {
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        #[target_feature(enable = "avx2")]
        fn avx2(step: PreparedStep<'_, f32>, stats: &mut StepStats<f32>) -> StateBounds<f32> {
            step.apply_bounded(stats)
        }
        // SAFETY: this CPU supports AVX2 (`has_avx2`), the only requirement of `avx2`.
        return unsafe { avx2(step, stats) };
    }
    step.apply_bounded(stats)
}

/// One chunk of one layer, prepared: its layer and its checked step.
type Chunk<'a> = (usize, PreparedStep<'a, f32>);

/// One chunk's slices: its layer, its offset in the layer, parameters, gradient, moments,
/// and the bounds the last step left in them, where known.
type Slices<'a> = (
    usize,
    usize,
    &'a mut [f32],
    &'a [f32],
    &'a mut [f32],
    &'a mut [f32],
    Option<StateBounds<f32>>,
);

/// What a chunk's update yields: its layer, its statistics, the bounds it left.
type Applied = (usize, StepStats<f32>, StateBounds<f32>);

/// A chunk of the team's Adam step, as it moves from slices to a prepared step to stats.
enum ChunkWork<'a> {
    Slices(Slices<'a>),
    Prepared(Chunk<'a>),
    Failed(BackendError),
    Done(Applied),
    Taken,
}

impl<'a> ChunkWork<'a> {
    /// Prepares slices, or applies a prepared step.
    fn advance(
        &mut self,
        prepare: &(impl Fn(Slices<'a>) -> Result<Chunk<'a>, BackendError> + Sync),
        apply: &(impl Fn(Chunk<'a>) -> Applied + Sync),
    ) {
        *self = match std::mem::replace(self, ChunkWork::Taken) {
            ChunkWork::Slices(s) => match prepare(s) {
                Ok(chunk) => ChunkWork::Prepared(chunk),
                Err(e) => ChunkWork::Failed(e),
            },
            ChunkWork::Prepared(chunk) => ChunkWork::Done(apply(chunk)),
            other => other,
        }
    }

    fn take_error(&mut self) -> Option<BackendError> {
        match std::mem::replace(self, ChunkWork::Taken) {
            ChunkWork::Failed(e) => Some(e),
            other => {
                *self = other;
                None
            }
        }
    }

    fn stats(self) -> Option<Applied> {
        match self {
            ChunkWork::Done(stats) => Some(stats),
            _ => None,
        }
    }
}

impl CpuBackend {
    /// [`crate::Backend::adam_step`]: the regulariser gradients, then every chunk of every
    /// layer prepared (all checks; nothing written), then applied.
    pub(super) fn adam_step_impl(
        &mut self,
        adam: &Adam<f32>,
        lrs: &[f32],
        t: u64,
        reg: &Regularizer,
    ) -> Result<Vec<StepStats<f64>>, BackendError> {
        let layers = self.shapes.len();
        check_step(layers, lrs, reg)?;
        if !self.grads_ready {
            return Err(BackendError::NoBatch { what: "adam_step" });
        }
        if reg.any() {
            if self.step_grads.len() != layers {
                self.step_grads = self.grads.clone();
            }
            for l in 0..layers {
                let nw = self.shapes[l].weights();
                self.step_grads[l].copy_from_slice(&self.grads[l]);
                if reg.wasserstein > 0.0 {
                    let (pw, pb) = self.params[l].split_at(nw);
                    let (gw, gb) = self.step_grads[l].split_at_mut(nw);
                    let (sw, sb) = &self.theta0_sorted[l];
                    wasserstein::add_grad(pw, sw, reg.wasserstein, &mut self.ranker, gw);
                    wasserstein::add_grad(pb, sb, reg.wasserstein, &mut self.ranker, gb);
                }
                if reg.l2_init > 0.0 {
                    // ∇ λ‖θ − θ₀‖² = 2λ(θ − θ₀).
                    let two = 2.0 * reg.l2_init;
                    for ((g, &p), &p0) in self.step_grads[l]
                        .iter_mut()
                        .zip(&self.params[l])
                        .zip(&self.theta0[l])
                    {
                        *g += two * (p - p0);
                    }
                }
                // A finite data gradient whose regularised sum is not: the regulariser overflowed.
                let overflow = self.step_grads[l]
                    .iter()
                    .zip(&self.grads[l])
                    .position(|(s, g)| !s.is_finite() && g.is_finite());
                if let Some(index) = overflow {
                    return Err(BackendError::Optimizer {
                        layer: l,
                        error: safestep_core::Error::Overflow {
                            what: "regularised gradient",
                            index: Some(index),
                        },
                    });
                }
            }
        }
        let grads = if reg.any() {
            &self.step_grads
        } else {
            &self.grads
        };
        // Every chunk's slices, in layer and chunk order, with the bounds the last step left
        // in them while nothing else has written the state since (`state_bounds`).
        let mut known = self.state_bounds.iter().copied();
        let mut slices = Vec::new();
        for (l, (((p, g), m), v)) in self
            .params
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
            .enumerate()
        {
            let chunks = p
                .chunks_mut(ADAM_CHUNK)
                .zip(g.chunks(ADAM_CHUNK))
                .zip(m.chunks_mut(ADAM_CHUNK))
                .zip(v.chunks_mut(ADAM_CHUNK));
            for (k, (((p, g), m), v)) in chunks.enumerate() {
                slices.push((l, k * ADAM_CHUNK, p, g, m, v, known.next()));
            }
        }
        let prepare = |(l, offset, p, g, m, v, known): (
            usize,
            usize,
            _,
            _,
            _,
            _,
            Option<StateBounds<f32>>,
        )| {
            prepare_fast(adam, lrs[l], t, p, g, m, v, known.as_ref())
                .map(|step| (l, step))
                .map_err(|error| BackendError::Optimizer {
                    layer: l,
                    error: at_offset(error, offset),
                })
        };
        let apply = |(l, step): Chunk<'_>| {
            let mut stats = StepStats::new();
            let bounds = apply_fast(step, &mut stats);
            (l, stats, bounds)
        };
        let applied: Vec<Applied> = match active_team(&self.team, self.team_on) {
            Some(team) => {
                // Prepare every chunk on the team, then (all checks passed) apply them.
                let mut work: Vec<ChunkWork<'_>> =
                    slices.into_iter().map(ChunkWork::Slices).collect();
                team.for_each_mut_dynamic(&mut work, |_, w| w.advance(&prepare, &apply));
                if let Some(e) = work.iter_mut().find_map(ChunkWork::take_error) {
                    return Err(e);
                }
                team.for_each_mut_dynamic(&mut work, |_, w| w.advance(&prepare, &apply));
                work.into_iter().filter_map(ChunkWork::stats).collect()
            }
            None => {
                let prepared: Vec<Chunk<'_>> =
                    slices.into_iter().map(prepare).collect::<Result<_, _>>()?;
                prepared.into_iter().map(apply).collect()
            }
        };
        let mut out = vec![StepStats::<f64>::new(); layers];
        self.state_bounds.clear();
        for (l, stats, bounds) in applied {
            out[l].merge(stats.cast::<f64>());
            self.state_bounds.push(bounds);
        }
        self.batch = None;
        self.grads_ready = false;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safestep_core::adam::AdamConfig;

    /// The AVX2 builds of prepare and apply give the same bits as the baseline build.
    #[test]
    fn fast_paths_match_the_baseline_build() {
        let adam = Adam::new(AdamConfig::default()).expect("valid");
        let n = 1003;
        let x = |i: usize, s: u32| ((i as u32).wrapping_mul(2_654_435_761) ^ s) as f32 / 4e9;
        let p0: Vec<f32> = (0..n).map(|i| x(i, 1) - 0.5).collect();
        let g: Vec<f32> = (0..n).map(|i| (x(i, 2) - 0.5) * 1e-2).collect();
        let m0: Vec<f32> = (0..n).map(|i| (x(i, 3) - 0.5) * 1e-3).collect();
        let v0: Vec<f32> = (0..n).map(|i| x(i, 4) * 1e-6).collect();
        let (mut p1, mut m1, mut v1) = (p0.clone(), m0.clone(), v0.clone());
        let (mut p2, mut m2, mut v2) = (p0, m0, v0);
        let (mut s1, mut s2) = (StepStats::new(), StepStats::new());
        let step = prepare_fast(&adam, 1e-3, 9, &mut p1, &g, &mut m1, &mut v1, None).expect("ok");
        apply_fast(step, &mut s1);
        adam.prepare(1e-3, 9, &mut p2, &g, &mut m2, &mut v2)
            .expect("ok")
            .apply(&mut s2);
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&p1), bits(&p2));
        assert_eq!(bits(&m1), bits(&m2));
        assert_eq!(bits(&v1), bits(&v2));
        assert_eq!(s1, s2);
    }
}
