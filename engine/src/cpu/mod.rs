//! The CPU engine: an MLP with softmax cross-entropy or squared error ([`crate::Loss`]),
//! exact per-sample gradient norms and per-layer Hessian-vector products, trained by
//! safestep-core's Adam.
//!
//! Every dense product goes through [`gemm::matmul`] (the `gemm` crate; why, in that
//! module). Per minibatch of B samples, with `a` a layer's input rows, `z` its
//! pre-activations and `δ_i = ∂ℓ_i/∂z_i` the per-sample deltas of sample i's loss:
//!
//! * the mean gradient is `(1/B)·Δᵀ A` for the weights and `(1/B)·Σ_i δ_i` for the bias;
//! * the per-sample gradient of sample i is `δ_i a_iᵀ` (plus `δ_i` for the bias), so its
//!   squared norm is `‖δ_i‖²·(‖a_i‖² + 1)` — exact, without materialising it, and the same
//!   for either loss once its deltas are known;
//! * the Hessian-vector product of layer ℓ's diagonal block uses Pearlmutter's R-operator
//!   restricted to that block: the tangent `R{z_ℓ} = A·V_Wᵀ + V_b` starts at layer ℓ (the
//!   layers below do not depend on its parameters), is pushed forward through the fixed
//!   activation masks (ReLU and CReLU have zero second derivative almost everywhere) to the
//!   outputs, through the loss's Hessian with respect to them — the softmax Jacobian
//!   `R{δ} = p ⊙ (R{z} − pᵀR{z})` for cross-entropy, the identity `R{δ} = R{z}` for squared
//!   error (`δ = ŷ − y`) — and back down to layer ℓ only, where `H_ℓℓ v = (1/B)·R{Δ_ℓ}ᵀ A` (bias: column sums). The layers below ℓ
//!   are never touched, so the last layer's product costs a sliver of a training step.
//!
//! With LayerNorm ([`crate::Norm::Layer`]) each hidden layer's `z` is normalised per row,
//! `u = (z − mean z)·s` with `s = 1/sqrt(var z + ε)`, and the nonlinearity reads `u`. The
//! deltas `δ_ℓ = ∂ℓ/∂z_ℓ` then pass through LayerNorm's symmetric Jacobian
//! `J = s·(I − 11ᵀ/n − uuᵀ/n)`; the gradient and per-sample norm formulas above are
//! unchanged (LayerNorm has no parameters and acts on one example at a time), and the R-operator
//! gains LayerNorm's tangent `R{u} = J·R{z}` and its second-order term on the way back (see
//! `hvp`). Unit statistics for continual backprop and ReDo stay those of the fed-forward
//! features `act(u)`: a unit's activity is measured after LayerNorm and the nonlinearity.
//!
//! Buffers are sized on the first minibatch (and grow only if a larger one comes), so the
//! training loop does not allocate apart from the small per-layer vectors of its outputs.
//! Every reduction runs in a fixed order. With several threads (a `team` of workers that
//! spin between sections instead of sleeping), a minibatch is cut into one band of rows per
//! thread for everything row-local (forward, loss, deltas, the R-operator's passes), the
//! products summed over the rows (weight gradients, `H v`) are cut by output units, and
//! Adam into fixed chunks whose statistics merge in chunk order; no cut changes how any
//! number is summed (`gemm::row_bands`), so one seed gives bit-identical results whatever
//! the thread count.
//!
//! The module is split by concern: [`buffers`](self) (scratch), `pass` (forward and
//! backward, in bands), `hvp` (the R-operator), `adam` (the chunked, all-or-nothing Adam
//! step), `team` (the threads), and the kernels [`gemm`], [`ops`] and [`wasserstein`].
//!
//! ```
//! use safestep_core::adam::{Adam, AdamConfig};
//! use safestep_engine::{Backend, CpuBackend, ModelSpec, Regularizer};
//! let spec = ModelSpec { input: 4, hidden: vec![8], classes: 3, ..ModelSpec::default() };
//! let mut cpu = CpuBackend::new(&spec, 1)?;
//! cpu.load_task(&[0.1; 4 * 6], &[0, 1, 2, 0, 1, 2])?;
//! let out = cpu.forward_backward(&[0, 2, 4], true)?;
//! assert_eq!(out.batch, 3);
//! let adam = Adam::new(AdamConfig::default()).expect("default Adam is valid");
//! let stats = cpu.adam_step(&adam, &[1e-3, 1e-3], 1, &Regularizer::default())?;
//! assert_eq!(stats.len(), 2);
//! # Ok::<(), safestep_engine::BackendError>(())
//! ```

mod adam;
mod buffers;
mod denormals;
pub mod gemm;
mod hvp;
pub mod ops;
mod pass;
mod team;
mod units;
pub mod wasserstein;

use safestep_core::adam::{Adam, StateBounds, StepStats};

use crate::backend::{
    Backend, BackendState, BatchOutput, EvalOutput, LayerBatchStats, Regularizer, UnitStats,
};
use crate::checks::{
    check_layer, check_len, check_regression_task, check_task, check_vector, Batch,
};
use crate::error::BackendError;
use crate::spec::{init_params, Activation, LayerShape, Loss, ModelSpec, Norm};
use buffers::{Activations, Tangents};
use pass::{deltas_band, forward, forward_band, weight_grads, Band};
use team::Team;

/// Rows per chunk of [`Backend::evaluate`].
const EVAL_ROWS: usize = 256;

/// Largest GEMM thread count accepted by [`CpuBackend::with_threads`].
pub const MAX_THREADS: usize = 64;

/// Default thread count: 1, the right choice when several runs (or other processes) share
/// the cores. A single run on an idle 2-core machine is about 1.6× faster with
/// [`CpuBackend::with_threads`]`(2)`, with bit-identical results (see `docs/results.md`,
/// "Speed"); when another process holds a core, the team steps aside by itself
/// (`Team::take_turn`).
pub const DEFAULT_THREADS: usize = 1;

/// The CPU implementation of [`Backend`].
#[derive(Debug)]
pub struct CpuBackend {
    spec: ModelSpec,
    shapes: Vec<LayerShape>,
    act: Activation,
    norm: Norm,
    threads: usize,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Initial parameters of the last reset.
    theta0: Vec<Vec<f32>>,
    /// Sorted initial weights and biases per layer (Wasserstein reference).
    theta0_sorted: Vec<(Vec<f32>, Vec<f32>)>,
    /// Per Adam chunk, the largest `|θ|`, `|m|` and `v` the last `adam_step` wrote, which let
    /// the next step's check read only the gradient; empty whenever anything else has
    /// written the parameters or moments since (every such writer clears it).
    state_bounds: Vec<StateBounds<f32>>,
    /// Data gradient plus regulariser gradient (allocated on first use).
    step_grads: Vec<Vec<f32>>,
    /// The worker team for `threads > 1` (None: everything on the caller's thread).
    team: Option<Team>,
    /// Whether the current engine call uses the team (see [`Team::take_turn`]).
    team_on: bool,
    /// Whether the engine's calls flush subnormals to zero (see [`Self::with_flush_denormals`]).
    flush_denormals: bool,
    /// Scratch of the Wasserstein regulariser's ranking.
    ranker: wasserstein::Ranker,
    task_x: Vec<f32>,
    task_y: Vec<u8>,
    /// Regression targets (`examples × classes`) of a squared-error model.
    task_t: Vec<f32>,
    /// Examples of the loaded task (0: none).
    examples: usize,
    batch_x: Vec<f32>,
    batch_y: Vec<u8>,
    batch_t: Vec<f32>,
    train: Activations,
    eval: Activations,
    tangents: Tangents,
    /// Rows of the last forward_backward, while its state matches the parameters.
    batch: Option<usize>,
    /// Whether `grads` holds a gradient not yet consumed by adam_step.
    grads_ready: bool,
}

impl CpuBackend {
    /// Builds the model of `spec` with parameters drawn from `seed` (see
    /// [`crate::init_params`]); GEMMs run on [`DEFAULT_THREADS`] threads.
    pub fn new(spec: &ModelSpec, seed: u64) -> Result<Self, BackendError> {
        let shapes = spec.layer_shapes()?;
        let zeros = |s: &LayerShape| vec![0.0f32; s.params()];
        let mut cpu = CpuBackend {
            spec: spec.clone(),
            act: spec.activation,
            norm: spec.norm,
            threads: DEFAULT_THREADS,
            params: shapes.iter().map(zeros).collect(),
            grads: shapes.iter().map(zeros).collect(),
            m: shapes.iter().map(zeros).collect(),
            v: shapes.iter().map(zeros).collect(),
            theta0: Vec::new(),
            theta0_sorted: Vec::new(),
            state_bounds: Vec::new(),
            step_grads: Vec::new(),
            ranker: wasserstein::Ranker::default(),
            team: None,
            team_on: false,
            flush_denormals: true,
            task_x: Vec::new(),
            task_y: Vec::new(),
            task_t: Vec::new(),
            examples: 0,
            batch_x: Vec::new(),
            batch_y: Vec::new(),
            batch_t: Vec::new(),
            train: Activations::default(),
            eval: Activations::default(),
            tangents: Tangents::default(),
            batch: None,
            grads_ready: false,
            shapes,
        };
        cpu.reset(seed)?;
        Ok(cpu)
    }

    /// Sets the number of threads each large GEMM may use (1..=[`MAX_THREADS`]). Only the
    /// speed changes: every output element is summed in the same order whatever the count.
    pub fn with_threads(mut self, threads: usize) -> Result<Self, BackendError> {
        if threads == 0 || threads > MAX_THREADS {
            return Err(BackendError::InvalidSpec {
                field: "threads",
                value: threads.to_string(),
                allowed: "1..=64",
            });
        }
        self.team = Self::build_team(threads, self.flush_denormals)?;
        self.threads = threads;
        Ok(self)
    }

    /// Whether the engine's own arithmetic flushes subnormal numbers to zero (x86_64: the
    /// FTZ and DAZ bits of MXCSR, set only while an engine call runs and on the engine's
    /// pool threads; elsewhere a no-op). On by default: without it, Adam's first moments of
    /// parameters with exactly zero gradient (dead ReLU units) sit in the subnormal range
    /// for good and slow every step down; the default runs' outputs are bit-identical
    /// either way (see `denormals.rs` for what can differ).
    pub fn with_flush_denormals(mut self, on: bool) -> Result<Self, BackendError> {
        self.flush_denormals = on;
        self.team = Self::build_team(self.threads, on)?;
        Ok(self)
    }

    fn build_team(threads: usize, flush_denormals: bool) -> Result<Option<Team>, BackendError> {
        if threads <= 1 {
            return Ok(None);
        }
        let on_start = if flush_denormals {
            denormals::set_on_this_thread
        } else {
            || {}
        };
        let team = Team::new(threads, on_start).map_err(|e| BackendError::InvalidSpec {
            field: "threads",
            value: format!("{threads} ({e})"),
            allowed: "a thread count the system can start",
        })?;
        Ok(Some(team))
    }

    /// The model's spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Resolved per-layer shapes.
    pub fn shapes(&self) -> &[LayerShape] {
        &self.shapes
    }

    /// Current parameters of `layer` (weights row-major `fan_out × fan_in`, then bias).
    pub fn layer_params(&self, layer: usize) -> Result<&[f32], BackendError> {
        self.check_layer(layer)?;
        Ok(&self.params[layer])
    }

    /// Overwrites the parameters of `layer` (same layout); invalidates the last batch.
    pub fn set_layer_params(&mut self, layer: usize, values: &[f32]) -> Result<(), BackendError> {
        self.check_layer(layer)?;
        check_vector("values", self.params[layer].len(), values)?;
        self.params[layer].copy_from_slice(values);
        self.state_bounds.clear();
        self.batch = None;
        self.grads_ready = false;
        Ok(())
    }

    /// Mean data gradient of `layer` from the last [`Backend::forward_backward`].
    pub fn layer_grad(&self, layer: usize) -> Result<&[f32], BackendError> {
        self.check_layer(layer)?;
        if !self.grads_ready {
            return Err(BackendError::NoBatch { what: "layer_grad" });
        }
        Ok(&self.grads[layer])
    }

    /// Mean data loss on the task examples `batch`, forward only (leaves the state of the
    /// last `forward_backward` intact).
    pub fn batch_loss(&mut self, batch: &[u32]) -> Result<f64, BackendError> {
        let batch = Batch::new(batch, self.examples)?.indices();
        let rows = batch.len();
        let input = self.spec.input;
        let mut x = vec![0.0f32; rows * input];
        for (k, &i) in batch.iter().enumerate() {
            let i = i as usize;
            x[k * input..(k + 1) * input].copy_from_slice(&self.task_x[i * input..(i + 1) * input]);
        }
        self.eval
            .ensure(&self.shapes, self.act.expansion(), self.norm, rows);
        forward(
            &self.shapes,
            self.act,
            self.norm,
            &self.params,
            &x,
            &mut self.eval,
            rows,
            active_team(&self.team, self.team_on),
        );
        let outputs = &self.eval.z[self.shapes.len() - 1];
        let classes = self.spec.classes;
        let loss: f64 = outputs[..rows * classes]
            .chunks_exact(classes)
            .zip(batch)
            .map(|(z, &i)| self.example_loss(z, i as usize).0)
            .sum();
        Ok(loss / rows as f64)
    }

    /// The loss of task example `i` given its outputs `z`, and whether it is classified
    /// correctly (never, for the squared-error loss).
    fn example_loss(&self, z: &[f32], i: usize) -> (f64, bool) {
        match self.spec.loss {
            Loss::CrossEntropy => ops::xent_row(z, None, self.task_y[i] as usize),
            Loss::SquaredError => {
                let c = self.spec.classes;
                (
                    ops::squared_error_row(z, &self.task_t[i * c..(i + 1) * c]),
                    false,
                )
            }
        }
    }

    /// The hidden layers' pre-activations on `batch`, through the evaluation buffers (the
    /// training batch's state is left intact): the nonlinearity's inputs, so with
    /// [`Norm::Layer`] the normalised `u = LN(z)`.
    fn hidden_pre_activations_impl(
        &mut self,
        batch: &[u32],
    ) -> Result<Vec<Vec<f32>>, BackendError> {
        let batch = Batch::new(batch, self.examples)?.indices();
        let rows = batch.len();
        let input = self.spec.input;
        let mut x = vec![0.0f32; rows * input];
        for (k, &i) in batch.iter().enumerate() {
            let i = i as usize;
            x[k * input..(k + 1) * input].copy_from_slice(&self.task_x[i * input..(i + 1) * input]);
        }
        self.eval
            .ensure(&self.shapes, self.act.expansion(), self.norm, rows);
        forward(
            &self.shapes,
            self.act,
            self.norm,
            &self.params,
            &x,
            &mut self.eval,
            rows,
            active_team(&self.team, self.team_on),
        );
        Ok(self
            .shapes
            .iter()
            .enumerate()
            .filter(|(_, s)| s.hidden)
            .map(|(l, s)| self.eval.act_in(l)[..rows * s.fan_out].to_vec())
            .collect())
    }

    /// Recomputes the sorted Wasserstein reference from `theta0`.
    fn sort_theta0(&mut self) {
        self.theta0_sorted = self
            .shapes
            .iter()
            .zip(&self.theta0)
            .map(|(s, p)| {
                let (w, b) = p.split_at(s.weights());
                (wasserstein::sorted(w), wasserstein::sorted(b))
            })
            .collect();
    }

    fn check_layer(&self, layer: usize) -> Result<(), BackendError> {
        check_layer(layer, self.shapes.len())
    }
}

/// The bodies of the heavy [`Backend`] methods, run inside the backend's thread pool.
impl CpuBackend {
    /// Runs `f` with the calling thread flushing subnormals when `flush_denormals` is on
    /// (the team's members always do).
    /// Decides whether this call uses the team ([`Team::take_turn`]).
    fn in_pool<R>(&mut self, f: impl FnOnce(&mut Self) -> R) -> R {
        let _flush = self.flush_denormals.then(denormals::FlushDenormals::new);
        self.team_on = self.team.as_ref().is_some_and(Team::take_turn);
        f(self)
    }

    fn forward_backward_impl(
        &mut self,
        batch: &[u32],
        sample_norms: bool,
    ) -> Result<BatchOutput, BackendError> {
        let batch = Batch::new(batch, self.examples)?.indices();
        let rows = batch.len();
        let input = self.spec.input;
        let classes = self.spec.classes;
        let layers = self.shapes.len();
        let loss = self.spec.loss;
        self.train
            .ensure(&self.shapes, self.act.expansion(), self.norm, rows);
        self.batch_x.resize(rows * input, 0.0);
        self.batch_y.resize(rows, 0);
        if loss == Loss::SquaredError {
            self.batch_t.resize(rows * classes, 0.0);
        }
        let team = active_team(&self.team, self.team_on);
        let parts = team.map_or(1, |t| pass::band_count(&self.shapes, rows, t.threads()));
        let (shapes, act, norm, params) = (&self.shapes, self.act, self.norm, &self.params);
        let (task_x, task_y, task_t) = (&self.task_x, &self.task_y, &self.task_t);
        let cuts: Vec<usize> = (0..=parts).map(|t| t * rows / parts).collect();
        let targets_width = if loss == Loss::SquaredError {
            classes
        } else {
            0
        };
        // The band's rows of the minibatch: inputs `x`, labels `y` or targets `t`.
        let gather = |indices: &[u32], x: &mut [f32], y: &mut [u8], t: &mut [f32]| {
            for (k, &i) in indices.iter().enumerate() {
                let i = i as usize;
                x[k * input..(k + 1) * input].copy_from_slice(&task_x[i * input..(i + 1) * input]);
                match loss {
                    Loss::CrossEntropy => y[k] = task_y[i],
                    Loss::SquaredError => t[k * classes..(k + 1) * classes]
                        .copy_from_slice(&task_t[i * classes..(i + 1) * classes]),
                }
            }
        };
        // With `first_done`, the rows are gathered and the first layer's product computed
        // for the whole minibatch before the band section (`pass::whole_by_columns`).
        let first_done = match team {
            Some(team) if pass::whole_by_columns(shapes[0], rows, parts, team.threads()) => {
                let s0 = shapes[0];
                let (w0, bias) = params[0].split_at(s0.weights());
                let mut parts_of: Vec<GatherPart<'_>> =
                    pass::split_rows(&mut self.batch_x, input, &cuts)
                        .into_iter()
                        .zip(pass::split_rows(&mut self.batch_y, 1, &cuts))
                        .zip(pass::split_rows(&mut self.batch_t, targets_width, &cuts))
                        .zip(pass::split_rows(&mut self.train.z[0], s0.fan_out, &cuts))
                        .zip(cuts.windows(2))
                        .map(|((((x, y), t), z), w)| GatherPart {
                            indices: &batch[w[0]..w[1]],
                            x,
                            y,
                            t,
                            z,
                        })
                        .collect();
                team.for_each_mut(&mut parts_of, |_, part| {
                    gather(part.indices, part.x, part.y, part.t);
                    ops::fill_rows(part.z, bias, part.indices.len());
                });
                drop(parts_of);
                pass::whole_product(s0, w0, &self.batch_x, &mut self.train.z[0], rows, team);
                true
            }
            _ => false,
        };
        let mut work: Vec<BandWork<'_>> = self
            .train
            .bands(shapes, act.expansion(), rows, parts)
            .into_iter()
            .zip(pass::split_rows(&mut self.batch_x, input, &cuts))
            .zip(pass::split_rows(&mut self.batch_y, 1, &cuts))
            .zip(pass::split_rows(&mut self.batch_t, targets_width, &cuts))
            .map(|(((band, x), y), t)| BandWork {
                indices: &batch[band.first..band.first + band.rows],
                band,
                x,
                y,
                t,
                correct: 0,
            })
            .collect();
        let last = layers - 1;
        // `inner`: the team to split each product on; none within a band section, where each
        // member runs its products alone.
        let run_band = |w: &mut BandWork<'_>, inner: Option<&Team>| {
            if !first_done {
                gather(w.indices, w.x, w.y, w.t);
            }
            forward_band(
                shapes,
                act,
                norm,
                params,
                w.x,
                &mut w.band,
                first_done,
                inner,
            );
            let band = &mut w.band;
            let (z, d) = (&band.z[last][..], &mut band.d[last][..]);
            match loss {
                Loss::CrossEntropy => {
                    for (k, ((zr, dr), &y)) in z
                        .chunks_exact(classes)
                        .zip(d.chunks_exact_mut(classes))
                        .zip(&*w.y)
                        .enumerate()
                    {
                        let (l, ok) = ops::xent_row(zr, Some(dr), y as usize);
                        band.row_loss[k] = l;
                        w.correct += usize::from(ok);
                    }
                }
                Loss::SquaredError => {
                    // The deltas only: the loss is summed over all rows below, in order.
                    ops::squared_error(z, w.t, d);
                }
            }
            deltas_band(shapes, act, norm, params, w.x, band, sample_norms, inner);
        };
        match team {
            Some(team) if parts > 1 => team.for_each_mut(&mut work, |_, w| run_band(w, None)),
            _ => work.iter_mut().for_each(|w| run_band(w, team)),
        }
        let correct = work.iter().map(|w| w.correct).sum();
        drop(work);
        let loss_sum = match loss {
            Loss::CrossEntropy => self.train.row_loss[..rows]
                .iter()
                .fold(0.0f64, |sum, &l| sum + l),
            Loss::SquaredError => {
                let e = &self.train.d[last][..rows * classes];
                0.5 * e
                    .iter()
                    .fold(0.0f64, |sum, &e| sum + f64::from(e) * f64::from(e))
            }
        };
        let sample_sq: Option<Vec<f64>> = sample_norms.then(|| {
            self.train
                .row_sq
                .iter()
                .map(|sq| sq[..rows].iter().sum())
                .collect()
        });
        weight_grads(
            &self.shapes,
            &self.batch_x,
            &self.train,
            rows,
            &mut self.grads,
            active_team(&self.team, self.team_on),
        );
        let mean_grad_sq = grad_sq_norms(&self.grads, active_team(&self.team, self.team_on));
        let layer_stats = mean_grad_sq
            .into_iter()
            .enumerate()
            .map(|(l, mean_grad_sq)| LayerBatchStats {
                mean_grad_sq,
                sum_sample_sq_norms: sample_sq.as_ref().map(|sq| sq[l]),
            })
            .collect();
        self.batch = Some(rows);
        self.grads_ready = true;
        Ok(BatchOutput {
            loss: loss_sum / rows as f64,
            correct,
            batch: rows,
            layers: layer_stats,
        })
    }

    fn evaluate_impl(&mut self) -> Result<EvalOutput, BackendError> {
        let n = self.examples;
        if n == 0 {
            return Err(BackendError::NoTask);
        }
        let input = self.spec.input;
        let classes = self.spec.classes;
        let last = self.shapes.len() - 1;
        self.eval.ensure(
            &self.shapes,
            self.act.expansion(),
            self.norm,
            EVAL_ROWS.min(n),
        );
        let mut loss = 0.0f64;
        let mut correct = 0usize;
        let mut start = 0;
        while start < n {
            let rows = EVAL_ROWS.min(n - start);
            forward(
                &self.shapes,
                self.act,
                self.norm,
                &self.params,
                &self.task_x[start * input..(start + rows) * input],
                &mut self.eval,
                rows,
                active_team(&self.team, self.team_on),
            );
            for (k, z) in self.eval.z[last][..rows * classes]
                .chunks_exact(classes)
                .enumerate()
            {
                let (l, ok) = self.example_loss(z, start + k);
                loss += l;
                correct += usize::from(ok);
            }
            start += rows;
        }
        Ok(EvalOutput {
            loss: loss / n as f64,
            correct,
            count: n,
        })
    }
}

impl Backend for CpuBackend {
    fn forward_backward(
        &mut self,
        batch: &[u32],
        sample_norms: bool,
    ) -> Result<BatchOutput, BackendError> {
        self.in_pool(|cpu| cpu.forward_backward_impl(batch, sample_norms))
    }

    fn hvp(&mut self, layer: usize, v: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
        self.in_pool(|cpu| cpu.hvp_impl(layer, None, v, out))
    }

    fn hvp_rows(
        &mut self,
        layer: usize,
        rows: usize,
        v: &[f32],
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        self.in_pool(|cpu| cpu.hvp_impl(layer, Some(rows), v, out))
    }

    fn hvp_network(&mut self, v: &[Vec<f32>], out: &mut [Vec<f32>]) -> Result<(), BackendError> {
        self.in_pool(|cpu| cpu.hvp_network_impl(v, out))
    }

    fn hidden_pre_activations(&mut self, batch: &[u32]) -> Result<Vec<Vec<f32>>, BackendError> {
        self.in_pool(|cpu| cpu.hidden_pre_activations_impl(batch))
    }

    fn unit_stats(&mut self) -> Result<Vec<UnitStats>, BackendError> {
        self.unit_stats_impl()
    }

    fn reinit_units(
        &mut self,
        layer: usize,
        units: &[usize],
        seed: u64,
    ) -> Result<(), BackendError> {
        self.state_bounds.clear();
        self.reinit_units_impl(layer, units, seed)
    }

    fn shrink_perturb(&mut self, shrink: f32, scale: f32, seed: u64) -> Result<(), BackendError> {
        self.state_bounds.clear();
        self.shrink_perturb_impl(shrink, scale, seed)
    }

    fn adam_step(
        &mut self,
        adam: &Adam<f32>,
        lrs: &[f32],
        t: u64,
        reg: &Regularizer,
    ) -> Result<Vec<StepStats<f64>>, BackendError> {
        self.in_pool(|cpu| cpu.adam_step_impl(adam, lrs, t, reg))
    }

    fn evaluate(&mut self) -> Result<EvalOutput, BackendError> {
        self.in_pool(|cpu| cpu.evaluate_impl())
    }

    fn name(&self) -> &'static str {
        "cpu"
    }

    fn layer_param_counts(&self) -> Vec<usize> {
        self.shapes.iter().map(LayerShape::params).collect()
    }

    fn reset(&mut self, seed: u64) -> Result<(), BackendError> {
        self.params = init_params(&self.shapes, seed);
        self.state_bounds.clear();
        for l in 0..self.shapes.len() {
            self.m[l].fill(0.0);
            self.v[l].fill(0.0);
            self.grads[l].fill(0.0);
        }
        self.theta0 = self.params.clone();
        self.sort_theta0();
        self.batch = None;
        self.grads_ready = false;
        Ok(())
    }

    fn load_task(&mut self, images: &[f32], labels: &[u8]) -> Result<(), BackendError> {
        check_task(&self.spec, images, labels)?;
        self.task_x.clear();
        self.task_x.extend_from_slice(images);
        self.task_y.clear();
        self.task_y.extend_from_slice(labels);
        self.examples = labels.len();
        self.batch = None;
        Ok(())
    }

    fn load_regression_task(
        &mut self,
        inputs: &[f32],
        targets: &[f32],
    ) -> Result<(), BackendError> {
        let rows = check_regression_task(&self.spec, inputs, targets)?;
        self.task_x.clear();
        self.task_x.extend_from_slice(inputs);
        self.task_t.clear();
        self.task_t.extend_from_slice(targets);
        self.examples = rows;
        self.batch = None;
        Ok(())
    }

    fn precond_sqrt(
        &mut self,
        layer: usize,
        adam: &Adam<f32>,
        t: u64,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        self.check_layer(layer)?;
        check_len("out", self.v[layer].len(), out.len())?;
        let cfg = adam.config();
        safestep_core::adam::preconditioner_sqrt(&self.v[layer], cfg.beta2, t, cfg.eps, out)
            .map_err(|error| BackendError::Optimizer { layer, error })
    }

    fn export_state(&mut self) -> Result<BackendState, BackendError> {
        Ok(BackendState {
            params: self.params.clone(),
            m: self.m.clone(),
            v: self.v.clone(),
            theta0: self.theta0.clone(),
        })
    }

    fn import_state(&mut self, state: &BackendState) -> Result<(), BackendError> {
        let counts: Vec<usize> = self.shapes.iter().map(|s| s.params()).collect();
        state.validate(&counts)?;
        self.params.clone_from(&state.params);
        self.m.clone_from(&state.m);
        self.v.clone_from(&state.v);
        self.state_bounds.clear();
        self.theta0.clone_from(&state.theta0);
        self.sort_theta0();
        self.batch = None;
        self.grads_ready = false;
        Ok(())
    }
}

/// The team when the current call uses it.
fn active_team(team: &Option<Team>, on: bool) -> Option<&Team> {
    team.as_ref().filter(|_| on)
}

/// One member's rows of the minibatch when the first layer's product runs before
/// [`CpuBackend::forward_backward`]'s band section (`pass::whole_by_columns`): the
/// examples to gather, where their inputs and labels or targets go, and their first-layer
/// pre-activations (filled with the bias here, the product added for the whole minibatch).
struct GatherPart<'a> {
    indices: &'a [u32],
    x: &'a mut [f32],
    y: &'a mut [u8],
    t: &'a mut [f32],
    z: &'a mut [f32],
}

/// One member's share of [`CpuBackend::forward_backward`]'s band section: its rows of the
/// activations, of the gathered inputs and labels or targets, and its correct count.
struct BandWork<'a> {
    band: Band<'a>,
    indices: &'a [u32],
    x: &'a mut [f32],
    y: &'a mut [u8],
    t: &'a mut [f32],
    correct: usize,
}

/// `‖g_l‖²` of every layer's gradient ([`ops::sq_norm`], bit for bit), its groups of
/// blocks ([`ops::sq_norm_blocks`]) summed on the team and added in order.
fn grad_sq_norms(grads: &[Vec<f32>], team: Option<&Team>) -> Vec<f64> {
    let Some(team) = team else {
        return grads.iter().map(|g| ops::sq_norm(g)).collect();
    };
    const GROUP: usize = ops::SQ_NORM_INTERLEAVE;
    let mut groups: Vec<(usize, &[f32], [f64; GROUP], usize)> = grads
        .iter()
        .enumerate()
        .flat_map(|(l, g)| {
            g.chunks(GROUP * ops::SQ_NORM_BLOCK)
                .map(move |group| (l, group, [0.0; GROUP], 0))
        })
        .collect();
    team.for_each_mut(&mut groups, |_, (_, group, sums, blocks)| {
        *blocks = ops::sq_norm_blocks(group, sums)
    });
    let mut totals = vec![0.0f64; grads.len()];
    for (l, _, sums, blocks) in groups {
        totals[l] = sums[..blocks].iter().fold(totals[l], |t, &s| t + s);
    }
    totals
}
