//! The CPU engine: an MLP with softmax cross-entropy, exact per-sample gradient norms and
//! per-layer Hessian-vector products, trained by safestep-core's Adam.
//!
//! Every dense product goes through [`gemm::matmul`] (the `gemm` crate; why, in that
//! module). Per minibatch of B samples, with `a` a layer's input rows, `z` its
//! pre-activations and `δ_i = ∂ℓ_i/∂z_i` the per-sample deltas of sample i's loss:
//!
//! * the mean gradient is `(1/B)·Δᵀ A` for the weights and `(1/B)·Σ_i δ_i` for the bias;
//! * the per-sample gradient of sample i is `δ_i a_iᵀ` (plus `δ_i` for the bias), so its
//!   squared norm is `‖δ_i‖²·(‖a_i‖² + 1)` — exact, without materialising it;
//! * the Hessian-vector product of layer ℓ's diagonal block uses Pearlmutter's R-operator
//!   restricted to that block: the tangent `R{z_ℓ} = A·V_Wᵀ + V_b` starts at layer ℓ (the
//!   layers below do not depend on its parameters), is pushed forward through the fixed
//!   activation masks (ReLU and CReLU have zero second derivative almost everywhere) to the
//!   logits, through the softmax Jacobian `R{δ} = p ⊙ (R{z} − pᵀR{z})`, and back down to
//!   layer ℓ only, where `H_ℓℓ v = (1/B)·R{Δ_ℓ}ᵀ A` (bias: column sums). The layers below ℓ
//!   are never touched, so the last layer's product costs a sliver of a training step.
//!
//! Buffers are sized on the first minibatch (and grow only if a larger one comes), so the
//! training loop does not allocate apart from the small per-layer vectors of its outputs.
//! Every reduction runs in a fixed order: with several threads, GEMMs are split only into
//! bands of output rows and Adam into fixed chunks whose statistics merge in chunk order, so
//! one seed gives bit-identical results whatever the thread count.
//!
//! ```
//! use safestep_core::adam::AdamConfig;
//! use safestep_host::backend::{Backend, ModelSpec, Regularizer};
//! use safestep_host::cpu::CpuBackend;
//! let spec = ModelSpec { input: 4, hidden: vec![8], classes: 3, ..ModelSpec::default() };
//! let mut cpu = CpuBackend::new(&spec, 1)?;
//! cpu.load_task(&[0.1; 4 * 6], &[0, 1, 2, 0, 1, 2])?;
//! let out = cpu.forward_backward(&[0, 2, 4], true)?;
//! assert_eq!(out.batch, 3);
//! let stats = cpu.adam_step(&AdamConfig::default(), &[1e-3, 1e-3], 1, &Regularizer::default())?;
//! assert_eq!(stats.len(), 2);
//! # Ok::<(), safestep_host::backend::BackendError>(())
//! ```

pub mod gemm;
pub mod ops;
pub mod wasserstein;

use safestep_core::adam::{self, AdamConfig, StepStats};

use crate::backend::{
    check_len, check_step, check_task, Activation, Backend, BackendError, BackendState,
    BatchOutput, EvalOutput, ModelSpec, Regularizer,
};
use crate::model::{init_params, LayerShape};
use gemm::{matmul, MatRef};

/// Rows per chunk of [`Backend::evaluate`].
const EVAL_ROWS: usize = 256;

/// Largest GEMM thread count accepted by [`CpuBackend::with_threads`].
pub const MAX_THREADS: usize = 64;

/// Default thread count: 1, the right choice when several runs (or other processes) share
/// the cores. A single run on an idle 2-core machine is about 1.4× faster with
/// [`CpuBackend::with_threads`]`(2)`, with bit-identical results (see
/// `benches/peer/README.md`).
pub const DEFAULT_THREADS: usize = 1;

/// Per-layer activations and deltas of one minibatch (or evaluation chunk).
#[derive(Debug, Default)]
struct Activations {
    cap: usize,
    /// Pre-activations `z` per layer (`rows × fan_out`); the last layer's are the logits.
    z: Vec<Vec<f32>>,
    /// Hidden activations per hidden layer (`rows × e·fan_out`).
    h: Vec<Vec<f32>>,
    /// Per-sample deltas `∂ℓ_i/∂z` per layer (`rows × fan_out`).
    d: Vec<Vec<f32>>,
    /// Scratch: deltas w.r.t. a layer's input (`rows × fan_in`).
    dh: Vec<f32>,
    /// Scratch: per-row squared norms.
    a_sq: Vec<f64>,
    d_sq: Vec<f64>,
}

impl Activations {
    fn ensure(&mut self, shapes: &[LayerShape], expand: usize, rows: usize) {
        if rows <= self.cap && self.z.len() == shapes.len() {
            return;
        }
        let layers = shapes.len();
        self.z.resize_with(layers, Vec::new);
        self.d.resize_with(layers, Vec::new);
        self.h.resize_with(layers.saturating_sub(1), Vec::new);
        for (l, s) in shapes.iter().enumerate() {
            self.z[l].resize(rows * s.fan_out, 0.0);
            self.d[l].resize(rows * s.fan_out, 0.0);
            if s.hidden {
                self.h[l].resize(rows * expand * s.fan_out, 0.0);
            }
        }
        let max_in = shapes.iter().map(|s| s.fan_in).max().unwrap_or(0);
        self.dh.resize(rows * max_in, 0.0);
        self.a_sq.resize(rows, 0.0);
        self.d_sq.resize(rows, 0.0);
        self.cap = rows;
    }
}

/// Tangent (R-operator) buffers for [`Backend::hvp`].
#[derive(Debug, Default)]
struct Tangents {
    cap: usize,
    rz: Vec<Vec<f32>>,
    rd: Vec<Vec<f32>>,
    rh: Vec<f32>,
    rdh: Vec<f32>,
}

impl Tangents {
    fn ensure(&mut self, shapes: &[LayerShape], expand: usize, rows: usize) {
        if rows <= self.cap && self.rz.len() == shapes.len() {
            return;
        }
        self.rz.resize_with(shapes.len(), Vec::new);
        self.rd.resize_with(shapes.len(), Vec::new);
        for (l, s) in shapes.iter().enumerate() {
            self.rz[l].resize(rows * s.fan_out, 0.0);
            self.rd[l].resize(rows * s.fan_out, 0.0);
        }
        let max_h = shapes
            .iter()
            .filter(|s| s.hidden)
            .map(|s| expand * s.fan_out)
            .max()
            .unwrap_or(0);
        let max_in = shapes.iter().map(|s| s.fan_in).max().unwrap_or(0);
        self.rh.resize(rows * max_h, 0.0);
        self.rdh.resize(rows * max_in, 0.0);
        self.cap = rows;
    }
}

/// The CPU implementation of [`Backend`].
#[derive(Debug)]
pub struct CpuBackend {
    spec: ModelSpec,
    shapes: Vec<LayerShape>,
    act: Activation,
    threads: usize,
    params: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    /// Initial parameters of the last reset.
    theta0: Vec<Vec<f32>>,
    /// Sorted initial weights and biases per layer (Wasserstein reference).
    theta0_sorted: Vec<(Vec<f32>, Vec<f32>)>,
    /// Data gradient plus regulariser gradient (allocated on first use).
    step_grads: Vec<Vec<f32>>,
    /// Thread pool for `threads > 1` (None: everything on the caller's thread).
    pool: Option<std::sync::Arc<rayon::ThreadPool>>,
    /// Per-chunk Adam statistics (scratch).
    chunk_stats: Vec<StepStats<f32>>,
    /// Scratch of the Wasserstein regulariser's ranking.
    ranker: wasserstein::Ranker,
    task_x: Vec<f32>,
    task_y: Vec<u8>,
    batch_x: Vec<f32>,
    batch_y: Vec<u8>,
    train: Activations,
    eval: Activations,
    tangents: Tangents,
    /// Rows of the last forward_backward, while its state matches the parameters.
    batch: Option<usize>,
    /// Whether `grads` holds a gradient not yet consumed by adam_step.
    grads_ready: bool,
    /// `‖ḡ‖²` per layer of the gradient in `grads`.
    grad_sq: Vec<f64>,
}

impl CpuBackend {
    /// Builds the model of `spec` with parameters drawn from `seed` (see
    /// [`crate::model::init_params`]); GEMMs run on [`DEFAULT_THREADS`] threads.
    pub fn new(spec: &ModelSpec, seed: u64) -> Result<Self, BackendError> {
        let shapes = spec.layer_shapes()?;
        let zeros = |s: &LayerShape| vec![0.0f32; s.params()];
        let mut cpu = CpuBackend {
            spec: spec.clone(),
            act: spec.activation,
            threads: DEFAULT_THREADS,
            params: shapes.iter().map(zeros).collect(),
            grads: shapes.iter().map(zeros).collect(),
            m: shapes.iter().map(zeros).collect(),
            v: shapes.iter().map(zeros).collect(),
            theta0: Vec::new(),
            theta0_sorted: Vec::new(),
            step_grads: Vec::new(),
            ranker: wasserstein::Ranker::default(),
            chunk_stats: Vec::new(),
            pool: None,
            task_x: Vec::new(),
            task_y: Vec::new(),
            batch_x: Vec::new(),
            batch_y: Vec::new(),
            train: Activations::default(),
            eval: Activations::default(),
            tangents: Tangents::default(),
            batch: None,
            grads_ready: false,
            grad_sq: Vec::new(),
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
        self.pool = if threads > 1 {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("safestep-cpu-{i}"))
                .build()
                .map_err(|e| BackendError::InvalidSpec {
                    field: "threads",
                    value: format!("{threads} ({e})"),
                    allowed: "a thread count the system can start",
                })?;
            Some(std::sync::Arc::new(pool))
        } else {
            None
        };
        self.threads = threads;
        Ok(self)
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
        check_len("values", self.params[layer].len(), values.len())?;
        if let Some(index) = values.iter().position(|x| !x.is_finite()) {
            return Err(BackendError::NonFiniteInput {
                index,
                value: values[index],
            });
        }
        self.params[layer].copy_from_slice(values);
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
        self.check_batch(batch)?;
        let rows = batch.len();
        let input = self.spec.input;
        let mut x = vec![0.0f32; rows * input];
        let mut y = vec![0u8; rows];
        for (k, &i) in batch.iter().enumerate() {
            let i = i as usize;
            x[k * input..(k + 1) * input].copy_from_slice(&self.task_x[i * input..(i + 1) * input]);
            y[k] = self.task_y[i];
        }
        self.eval.ensure(&self.shapes, self.act.expansion(), rows);
        forward(
            &self.shapes,
            self.act,
            &self.params,
            &x,
            &mut self.eval,
            rows,
            self.threads,
        );
        let logits = &self.eval.z[self.shapes.len() - 1];
        let classes = self.spec.classes;
        let loss: f64 = logits[..rows * classes]
            .chunks_exact(classes)
            .zip(&y)
            .map(|(z, &yi)| ops::xent_row(z, None, yi as usize).0)
            .sum();
        Ok(loss / rows as f64)
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
        if layer >= self.shapes.len() {
            return Err(BackendError::LayerOutOfRange {
                layer,
                layers: self.shapes.len(),
            });
        }
        Ok(())
    }

    fn check_batch(&self, batch: &[u32]) -> Result<(), BackendError> {
        if self.task_y.is_empty() {
            return Err(BackendError::NoTask);
        }
        if batch.is_empty() {
            return Err(BackendError::EmptyBatch);
        }
        let n = self.task_y.len();
        if let Some(&bad) = batch.iter().find(|&&i| i as usize >= n) {
            return Err(BackendError::IndexOutOfRange {
                index: bad as usize,
                examples: n,
            });
        }
        Ok(())
    }
}

/// Parameters per call of the core's Adam step: a layer is updated in these fixed chunks
/// (the last one shorter) whose statistics are merged in chunk order in `f64`.
const ADAM_CHUNK: usize = 1 << 14;

/// Adam on one layer: fixed chunks of [`ADAM_CHUNK`] parameters, each one call of
/// `safestep_core::adam::adam_step` with its own statistics, merged in chunk order in `f64`.
/// With `threads > 1` contiguous runs of chunks go to different threads; the chunking and
/// the merge order, and so every number, are the same for any thread count. `scratch`
/// holds the per-chunk statistics (no allocation once it is large enough).
#[allow(clippy::too_many_arguments)]
fn adam_layer(
    cfg: &AdamConfig<f32>,
    lr: f32,
    t: u64,
    params: &mut [f32],
    grads: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    threads: usize,
    scratch: &mut Vec<StepStats<f32>>,
) -> Result<StepStats<f64>, safestep_core::Error> {
    let chunks = params.len().div_ceil(ADAM_CHUNK);
    scratch.clear();
    scratch.resize(chunks, StepStats::new());
    let run = |p: &mut [f32],
               g: &[f32],
               m: &mut [f32],
               v: &mut [f32],
               stats: &mut [StepStats<f32>]|
     -> Result<(), safestep_core::Error> {
        for ((((p, g), m), v), st) in p
            .chunks_mut(ADAM_CHUNK)
            .zip(g.chunks(ADAM_CHUNK))
            .zip(m.chunks_mut(ADAM_CHUNK))
            .zip(v.chunks_mut(ADAM_CHUNK))
            .zip(stats.iter_mut())
        {
            adam::adam_step(cfg, lr, t, p, g, m, v, st)?;
        }
        Ok(())
    };
    adam_chunks(&run, params, grads, m, v, scratch, threads.max(1))?;
    let mut total = StepStats::<f64>::new();
    for st in scratch.iter() {
        total.merge(st.cast::<f64>());
    }
    Ok(total)
}

/// Runs `run` over the chunks of a layer split into `parts` contiguous runs of whole
/// chunks, in parallel by recursive `rayon::join` (no allocation).
fn adam_chunks<F>(
    run: &F,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
    stats: &mut [StepStats<f32>],
    parts: usize,
) -> Result<(), safestep_core::Error>
where
    F: Fn(
            &mut [f32],
            &[f32],
            &mut [f32],
            &mut [f32],
            &mut [StepStats<f32>],
        ) -> Result<(), safestep_core::Error>
        + Sync,
{
    if parts <= 1 || stats.len() < 2 {
        return run(p, g, m, v, stats);
    }
    let left_parts = parts / 2;
    let left = stats.len() * left_parts / parts;
    let at = (left * ADAM_CHUNK).min(p.len());
    let (p1, p2) = p.split_at_mut(at);
    let (g1, g2) = g.split_at(at);
    let (m1, m2) = m.split_at_mut(at);
    let (v1, v2) = v.split_at_mut(at);
    let (s1, s2) = stats.split_at_mut(left);
    let (r1, r2) = rayon::join(
        || adam_chunks(run, p1, g1, m1, v1, s1, left_parts),
        || adam_chunks(run, p2, g2, m2, v2, s2, parts - left_parts),
    );
    r1.and(r2)
}

/// Forward pass of `rows` input rows `x` through all layers into `ws`.
fn forward(
    shapes: &[LayerShape],
    act: Activation,
    params: &[Vec<f32>],
    x: &[f32],
    ws: &mut Activations,
    rows: usize,
    threads: usize,
) {
    for (l, s) in shapes.iter().enumerate() {
        let (w, b) = params[l].split_at(s.weights());
        let input = if l == 0 { x } else { &ws.h[l - 1][..] };
        let z = &mut ws.z[l];
        ops::fill_rows(z, b, rows);
        matmul(
            z,
            MatRef::row_major(input, rows, s.fan_in),
            MatRef::row_major(w, s.fan_out, s.fan_in).t(),
            1.0,
            true,
            threads,
        );
        if s.hidden {
            ops::activate(act, &ws.z[l], &mut ws.h[l], rows, s.fan_out);
        }
    }
}

/// Backward pass from the deltas already in `ws.d[last]`: writes the mean gradients into
/// `grads` and, with `sample_sq`, each layer's `Σ_i ‖g_i‖²`.
#[allow(clippy::too_many_arguments)]
fn backward(
    shapes: &[LayerShape],
    act: Activation,
    params: &[Vec<f32>],
    x: &[f32],
    ws: &mut Activations,
    rows: usize,
    grads: &mut [Vec<f32>],
    mut sample_sq: Option<&mut [f64]>,
    threads: usize,
) {
    let inv = 1.0 / rows as f32;
    for l in (0..shapes.len()).rev() {
        let s = shapes[l];
        let input = if l == 0 { x } else { &ws.h[l - 1][..] };
        let d = &ws.d[l];
        let (gw, gb) = grads[l].split_at_mut(s.weights());
        matmul(
            gw,
            MatRef::row_major(d, rows, s.fan_out).t(),
            MatRef::row_major(input, rows, s.fan_in),
            inv,
            false,
            threads,
        );
        ops::column_sums(d, rows, s.fan_out, inv, gb);
        if let Some(sq) = sample_sq.as_deref_mut() {
            ops::row_sq_norms(input, rows, s.fan_in, &mut ws.a_sq);
            ops::row_sq_norms(d, rows, s.fan_out, &mut ws.d_sq);
            sq[l] = ws.a_sq[..rows]
                .iter()
                .zip(&ws.d_sq[..rows])
                .map(|(&a, &dd)| dd * (a + 1.0))
                .sum();
        }
        if l > 0 {
            let w = &params[l][..s.weights()];
            matmul(
                &mut ws.dh,
                MatRef::row_major(&ws.d[l], rows, s.fan_out),
                MatRef::row_major(w, s.fan_out, s.fan_in),
                1.0,
                false,
                threads,
            );
            let below = shapes[l - 1].fan_out;
            let (lower, _) = ws.d.split_at_mut(l);
            ops::activate_backward(act, &ws.z[l - 1], &ws.dh, &mut lower[l - 1], rows, below);
        }
    }
}

/// The bodies of the heavy [`Backend`] methods, run inside the backend's thread pool.
impl CpuBackend {
    /// Runs `f` on the backend's own thread pool when it has one (threads > 1), so the
    /// `rayon::join` splits inside start on a pool thread instead of paying a hand-off from
    /// the caller's thread on every product.
    fn in_pool<R: Send>(&mut self, f: impl FnOnce(&mut Self) -> R + Send) -> R {
        match self.pool.clone() {
            Some(pool) => pool.install(|| f(self)),
            None => f(self),
        }
    }

    fn forward_backward_impl(
        &mut self,
        batch: &[u32],
        sample_norms: bool,
    ) -> Result<BatchOutput, BackendError> {
        self.check_batch(batch)?;
        let rows = batch.len();
        let input = self.spec.input;
        let classes = self.spec.classes;
        let layers = self.shapes.len();
        self.train.ensure(&self.shapes, self.act.expansion(), rows);
        self.batch_x.resize(rows * input, 0.0);
        self.batch_y.resize(rows, 0);
        for (k, &i) in batch.iter().enumerate() {
            let i = i as usize;
            self.batch_x[k * input..(k + 1) * input]
                .copy_from_slice(&self.task_x[i * input..(i + 1) * input]);
            self.batch_y[k] = self.task_y[i];
        }
        forward(
            &self.shapes,
            self.act,
            &self.params,
            &self.batch_x,
            &mut self.train,
            rows,
            self.threads,
        );
        let last = layers - 1;
        let (loss_sum, correct) = ops::softmax_xent(
            &self.train.z[last][..rows * classes],
            &self.batch_y[..rows],
            &mut self.train.d[last][..rows * classes],
            classes,
        );
        let mut sample_sq = if sample_norms {
            Some(vec![0.0f64; layers])
        } else {
            None
        };
        backward(
            &self.shapes,
            self.act,
            &self.params,
            &self.batch_x,
            &mut self.train,
            rows,
            &mut self.grads,
            sample_sq.as_deref_mut(),
            self.threads,
        );
        let mean_grad_sq: Vec<f64> = self.grads.iter().map(|g| ops::sq_norm(g)).collect();
        self.grad_sq.clone_from(&mean_grad_sq);
        self.batch = Some(rows);
        self.grads_ready = true;
        Ok(BatchOutput {
            loss: loss_sum / rows as f64,
            correct,
            batch: rows,
            mean_grad_sq,
            sum_sample_sq_norms: sample_sq,
        })
    }

    fn hvp_impl(&mut self, layer: usize, v: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
        self.check_layer(layer)?;
        let rows = self.batch.ok_or(BackendError::NoBatch { what: "hvp" })?;
        let s = self.shapes[layer];
        check_len("v", s.params(), v.len())?;
        check_len("out", s.params(), out.len())?;
        if let Some(index) = v.iter().position(|x| !x.is_finite()) {
            return Err(BackendError::NonFiniteInput {
                index,
                value: v[index],
            });
        }
        let shapes = &self.shapes;
        let act = self.act;
        let threads = self.threads;
        let classes = self.spec.classes;
        let ws = &self.train;
        let t = &mut self.tangents;
        t.ensure(shapes, act.expansion(), rows);
        let input = if layer == 0 {
            &self.batch_x[..]
        } else {
            &ws.h[layer - 1][..]
        };
        // R-forward: the tangent starts at this layer's pre-activations.
        let (vw, vb) = v.split_at(s.weights());
        ops::fill_rows(&mut t.rz[layer], vb, rows);
        matmul(
            &mut t.rz[layer],
            MatRef::row_major(input, rows, s.fan_in),
            MatRef::row_major(vw, s.fan_out, s.fan_in).t(),
            1.0,
            true,
            threads,
        );
        for k in layer + 1..shapes.len() {
            let (below, sk) = (shapes[k - 1], shapes[k]);
            ops::activate_tangent(
                act,
                &ws.z[k - 1],
                &t.rz[k - 1],
                &mut t.rh,
                rows,
                below.fan_out,
            );
            matmul(
                &mut t.rz[k],
                MatRef::row_major(&t.rh, rows, sk.fan_in),
                MatRef::row_major(&self.params[k][..sk.weights()], sk.fan_out, sk.fan_in).t(),
                1.0,
                false,
                threads,
            );
        }
        // Softmax Jacobian: R{δ} = p ⊙ (R{z} − pᵀR{z}), with p = δ + onehot(y).
        let last = shapes.len() - 1;
        for (i, ((rd, rz), d)) in t.rd[last][..rows * classes]
            .chunks_exact_mut(classes)
            .zip(t.rz[last].chunks_exact(classes))
            .zip(ws.d[last].chunks_exact(classes))
            .enumerate()
        {
            let y = self.batch_y[i] as usize;
            let p = |j: usize| d[j] + if j == y { 1.0 } else { 0.0 };
            let dot: f32 = (0..classes).map(|j| p(j) * rz[j]).sum();
            for j in 0..classes {
                rd[j] = p(j) * (rz[j] - dot);
            }
        }
        // R-backward down to this layer only.
        for k in (layer + 1..shapes.len()).rev() {
            let (below, sk) = (shapes[k - 1], shapes[k]);
            matmul(
                &mut t.rdh,
                MatRef::row_major(&t.rd[k], rows, sk.fan_out),
                MatRef::row_major(&self.params[k][..sk.weights()], sk.fan_out, sk.fan_in),
                1.0,
                false,
                threads,
            );
            let (lower, _) = t.rd.split_at_mut(k);
            ops::activate_backward(
                act,
                &ws.z[k - 1],
                &t.rdh,
                &mut lower[k - 1],
                rows,
                below.fan_out,
            );
        }
        let inv = 1.0 / rows as f32;
        let (ow, ob) = out.split_at_mut(s.weights());
        matmul(
            ow,
            MatRef::row_major(&t.rd[layer], rows, s.fan_out).t(),
            MatRef::row_major(input, rows, s.fan_in),
            inv,
            false,
            threads,
        );
        ops::column_sums(&t.rd[layer], rows, s.fan_out, inv, ob);
        Ok(())
    }

    fn adam_step_impl(
        &mut self,
        adam: &AdamConfig<f32>,
        lrs: &[f32],
        t: u64,
        reg: &Regularizer,
    ) -> Result<Vec<StepStats<f64>>, BackendError> {
        let layers = self.shapes.len();
        check_step(layers, lrs, reg)?;
        if !self.grads_ready {
            return Err(BackendError::NoBatch { what: "adam_step" });
        }
        adam.validate()
            .map_err(|error| BackendError::Optimizer { layer: 0, error })?;
        if t == 0 {
            return Err(BackendError::Optimizer {
                layer: 0,
                error: safestep_core::Error::InvalidInput {
                    what: "t",
                    value: 0.0,
                    allowed: ">= 1 (1-based step)",
                },
            });
        }
        // Check every layer before touching any, so an error leaves the model unchanged.
        // A non-finite entry makes the layer's ‖ḡ‖² (computed by forward_backward) non-finite,
        // so only such layers need the scan for the offending index.
        for (layer, g) in self.grads.iter().enumerate() {
            if self.grad_sq[layer].is_finite() {
                continue;
            }
            if let Some(index) = g.iter().position(|x| !x.is_finite()) {
                return Err(BackendError::Optimizer {
                    layer,
                    error: safestep_core::Error::NonFinite {
                        what: "grads",
                        index: Some(index),
                    },
                });
            }
        }
        let lambda = reg.wasserstein;
        if lambda > 0.0 {
            if self.step_grads.len() != layers {
                self.step_grads = self.grads.clone();
            }
            for l in 0..layers {
                let nw = self.shapes[l].weights();
                self.step_grads[l].copy_from_slice(&self.grads[l]);
                let (pw, pb) = self.params[l].split_at(nw);
                let (gw, gb) = self.step_grads[l].split_at_mut(nw);
                let (sw, sb) = &self.theta0_sorted[l];
                wasserstein::add_grad(pw, sw, lambda, &mut self.ranker, gw);
                wasserstein::add_grad(pb, sb, lambda, &mut self.ranker, gb);
            }
        }
        let mut out = Vec::with_capacity(layers);
        for (l, &lr) in lrs.iter().enumerate() {
            let grads = if lambda > 0.0 {
                &self.step_grads[l]
            } else {
                &self.grads[l]
            };
            let stats = adam_layer(
                adam,
                lr,
                t,
                &mut self.params[l],
                grads,
                &mut self.m[l],
                &mut self.v[l],
                self.threads,
                &mut self.chunk_stats,
            )
            .map_err(|error| BackendError::Optimizer { layer: l, error })?;
            out.push(stats);
        }
        self.batch = None;
        self.grads_ready = false;
        Ok(out)
    }

    fn evaluate_impl(&mut self) -> Result<EvalOutput, BackendError> {
        let n = self.task_y.len();
        if n == 0 {
            return Err(BackendError::NoTask);
        }
        let input = self.spec.input;
        let classes = self.spec.classes;
        let last = self.shapes.len() - 1;
        self.eval
            .ensure(&self.shapes, self.act.expansion(), EVAL_ROWS.min(n));
        let mut loss = 0.0f64;
        let mut correct = 0usize;
        let mut start = 0;
        while start < n {
            let rows = EVAL_ROWS.min(n - start);
            forward(
                &self.shapes,
                self.act,
                &self.params,
                &self.task_x[start * input..(start + rows) * input],
                &mut self.eval,
                rows,
                self.threads,
            );
            for (z, &y) in self.eval.z[last][..rows * classes]
                .chunks_exact(classes)
                .zip(&self.task_y[start..start + rows])
            {
                let (l, ok) = ops::xent_row(z, None, y as usize);
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
        self.in_pool(|cpu| cpu.hvp_impl(layer, v, out))
    }

    fn adam_step(
        &mut self,
        adam: &AdamConfig<f32>,
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
        self.batch = None;
        Ok(())
    }

    fn precond_sqrt(
        &mut self,
        layer: usize,
        adam: &AdamConfig<f32>,
        t: u64,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        self.check_layer(layer)?;
        check_len("out", self.v[layer].len(), out.len())?;
        adam::preconditioner_sqrt(&self.v[layer], adam.beta2, t, adam.eps, out)
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
        self.theta0.clone_from(&state.theta0);
        self.sort_theta0();
        self.batch = None;
        self.grads_ready = false;
        Ok(())
    }
}
