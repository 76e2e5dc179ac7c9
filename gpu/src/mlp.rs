//! The MLP on the device: parameters, Adam state, task data and activations stay in GPU
//! memory across steps; only per-layer scalars (and the vectors the caller asks for) cross
//! to the host.

use std::sync::Arc;

use safestep_core::adam::{AdamConfig, StepStats};

use crate::device::{Gpu, GpuBuffer, View};
use crate::error::{GpuError, GpuResult};
use crate::kernels::{AdamHyper, Indices, SortScratch, ADAM_STATS};
use crate::shape::{check_exact, GemmLayout, GemmShape, MAX_REDUCE_BLOCKS};
use crate::spec::MlpSpec;

/// Rows per chunk of [`GpuMlp::evaluate`].
pub const EVAL_CHUNK: usize = 4096;

/// Device scalars per layer written by the Adam step: `‖g‖²` then the [`ADAM_STATS`].
const STEP_SLOTS: usize = 1 + ADAM_STATS;

/// Per-layer results of [`GpuMlp::forward_backward`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BatchStats {
    /// Minibatch-mean cross-entropy.
    pub loss: f64,
    /// Samples whose arg-max logit equals the label.
    pub correct: usize,
    /// Samples in the batch.
    pub batch: usize,
    /// Per layer `‖ḡ‖²` of the mean data-loss gradient.
    pub mean_grad_sq: Vec<f64>,
    /// Per layer `Σ_i ‖g_i‖²` of the per-sample gradients, when requested.
    pub sum_sample_sq_norms: Option<Vec<f64>>,
}

/// Result of [`GpuMlp::evaluate`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct EvalStats {
    /// Mean cross-entropy over the data.
    pub loss: f64,
    /// Correctly classified examples.
    pub correct: usize,
    /// Examples evaluated.
    pub count: usize,
}

struct Layer {
    params: GpuBuffer<f32>,
    grads: GpuBuffer<f32>,
    m: GpuBuffer<f32>,
    v: GpuBuffer<f32>,
    theta0_sorted: GpuBuffer<f32>,
    fan_in: usize,
    fan_out: usize,
}

impl Layer {
    /// `(offset, length)` of the weights and of the bias in the layer's vector.
    fn parts(&self) -> [(usize, usize); 2] {
        let nw = self.fan_in * self.fan_out;
        [(0, nw), (nw, self.fan_out)]
    }
    fn weights(&self) -> GpuResult<View<f32>> {
        self.params.slice(0, self.fan_in * self.fan_out)
    }
    fn bias(&self) -> GpuResult<View<f32>> {
        self.params.slice(self.fan_in * self.fan_out, self.fan_out)
    }
}

/// Row-dependent buffers, reallocated when a larger batch arrives.
struct Rows {
    capacity: usize,
    x: GpuBuffer<f32>,
    z: Vec<GpuBuffer<f32>>,
    act: Vec<GpuBuffer<f32>>,
    delta: Vec<GpuBuffer<f32>>,
    rz: Vec<GpuBuffer<f32>>,
    wide: GpuBuffer<f32>,
    probs: GpuBuffer<f32>,
    row_loss: GpuBuffer<f32>,
    row_hit: GpuBuffer<f32>,
    row_tmp: GpuBuffer<f64>,
    idx: Indices,
}

/// The multilayer perceptron on one GPU with its Adam state and the current task's data.
///
/// Mirrors safestep-host's `Backend` operations (the host's CUDA adapter wraps it):
/// [`forward_backward`](GpuMlp::forward_backward), [`hvp`](GpuMlp::hvp),
/// [`precond_sqrt`](GpuMlp::precond_sqrt), [`adam_step`](GpuMlp::adam_step),
/// [`evaluate`](GpuMlp::evaluate).
pub struct GpuMlp {
    spec: MlpSpec,
    layers: Vec<Layer>,
    rows: Rows,
    images: Option<GpuBuffer<f32>>,
    labels: Option<GpuBuffer<u8>>,
    examples: usize,
    scalars: GpuBuffer<f64>,
    step_stats: GpuBuffer<f64>,
    partials: GpuBuffer<f64>,
    vec_in: GpuBuffer<f32>,
    vec_out: GpuBuffer<f32>,
    precond: GpuBuffer<f32>,
    sort: SortScratch,
    /// Rows of the last forward_backward batch (its input stays in `rows.x`).
    last_batch: Option<usize>,
    /// Whether `z`, `act` and `probs` hold the forward pass of `rows.x` at the current params.
    forward_fresh: bool,
    // Last: buffers above are freed before the context goes.
    gpu: Arc<Gpu>,
}

impl std::fmt::Debug for GpuMlp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuMlp")
            .field("spec", &self.spec)
            .field("gpu", &self.gpu)
            .finish()
    }
}

fn slot_loss() -> usize {
    0
}
fn slot_grad(l: usize) -> usize {
    2 + l
}
fn slot_sample(layers: usize, l: usize) -> usize {
    2 + layers + l
}
fn slot_guard(layers: usize) -> usize {
    2 + 2 * layers
}

impl GpuMlp {
    /// Allocates the model on `gpu` with zero parameters (set them with
    /// [`set_params`](GpuMlp::set_params) or [`init_uniform`](GpuMlp::init_uniform)).
    ///
    /// # Errors
    /// [`GpuError::InvalidArgument`] for a bad spec; [`GpuError::Driver`] if allocation fails.
    pub fn new(gpu: Arc<Gpu>, spec: MlpSpec) -> GpuResult<GpuMlp> {
        spec.validate()?;
        gpu.bind()?;
        let n_layers = spec.layers();
        let mut layers = Vec::with_capacity(n_layers);
        let mut max_params = 0;
        for l in 0..n_layers {
            let n = spec.layer_params(l);
            max_params = max_params.max(n);
            layers.push(Layer {
                params: gpu.zeros(n)?,
                grads: gpu.zeros(n)?,
                m: gpu.zeros(n)?,
                v: gpu.zeros(n)?,
                theta0_sorted: gpu.zeros(n)?,
                fan_in: spec.fan_in(l),
                fan_out: spec.fan_out(l),
            });
        }
        // Room for evaluation chunks and any usual batch, so neither reallocates.
        let rows = Self::alloc_rows(&gpu, &spec, EVAL_CHUNK)?;
        Ok(GpuMlp {
            scalars: gpu.zeros(3 + 2 * n_layers)?,
            step_stats: gpu.zeros(STEP_SLOTS * n_layers)?,
            partials: gpu.zeros(ADAM_STATS * MAX_REDUCE_BLOCKS as usize)?,
            vec_in: gpu.zeros(max_params)?,
            vec_out: gpu.zeros(max_params)?,
            precond: gpu.zeros(max_params)?,
            sort: SortScratch::new(&gpu, max_params)?,
            spec,
            layers,
            rows,
            images: None,
            labels: None,
            examples: 0,
            last_batch: None,
            forward_fresh: false,
            gpu,
        })
    }

    fn alloc_rows(gpu: &Gpu, spec: &MlpSpec, capacity: usize) -> GpuResult<Rows> {
        let n = spec.layers();
        let mut z = Vec::new();
        let mut act = Vec::new();
        let mut delta = Vec::new();
        let mut rz = Vec::new();
        let mut widest = spec.input;
        for l in 0..n {
            z.push(gpu.zeros(capacity * spec.fan_out(l))?);
            delta.push(gpu.zeros(capacity * spec.fan_out(l))?);
            rz.push(gpu.zeros(capacity * spec.fan_out(l))?);
            if l + 1 < n {
                act.push(gpu.zeros(capacity * spec.fan_in(l + 1))?);
                widest = widest.max(spec.fan_in(l + 1));
            }
        }
        Ok(Rows {
            capacity,
            x: gpu.zeros(capacity * spec.input)?,
            z,
            act,
            delta,
            rz,
            wide: gpu.zeros(capacity * widest)?,
            probs: gpu.zeros(capacity * spec.classes)?,
            row_loss: gpu.zeros(capacity)?,
            row_hit: gpu.zeros(capacity)?,
            row_tmp: gpu.zeros(capacity)?,
            idx: Indices::with_capacity(gpu, capacity)?,
        })
    }

    fn ensure_rows(&mut self, rows: usize) -> GpuResult<()> {
        if rows > self.rows.capacity {
            let cap = rows.next_power_of_two();
            self.rows = Self::alloc_rows(&self.gpu, &self.spec, cap)?;
            self.last_batch = None;
            self.forward_fresh = false;
        }
        Ok(())
    }

    /// The model's shape.
    pub fn spec(&self) -> &MlpSpec {
        &self.spec
    }

    /// The GPU the model lives on.
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// Parameters per layer.
    pub fn layer_param_counts(&self) -> Vec<usize> {
        (0..self.spec.layers())
            .map(|l| self.spec.layer_params(l))
            .collect()
    }

    fn layer_index(&self, layer: usize) -> GpuResult<()> {
        if layer >= self.layers.len() {
            Err(GpuError::LayerOutOfRange {
                layer,
                layers: self.layers.len(),
            })
        } else {
            Ok(())
        }
    }

    /// Overwrites layer `layer`'s parameters (weights row-major `fan_out × fan_in`, then bias).
    ///
    /// # Errors
    /// [`GpuError::LayerOutOfRange`], [`GpuError::Length`], [`GpuError::Driver`].
    pub fn set_params(&mut self, layer: usize, params: &[f32]) -> GpuResult<()> {
        self.layer_index(layer)?;
        self.gpu.bind()?;
        self.layers[layer].params.copy_from(params)?;
        self.forward_fresh = false;
        Ok(())
    }

    /// Layer `layer`'s parameters, copied to the host.
    ///
    /// # Errors
    /// [`GpuError::LayerOutOfRange`], [`GpuError::Driver`].
    pub fn params(&self, layer: usize) -> GpuResult<Vec<f32>> {
        self.layer_index(layer)?;
        self.gpu.bind()?;
        self.layers[layer].params.to_vec()
    }

    /// Layer `layer`'s Adam moments `(m, v)`, copied to the host.
    ///
    /// # Errors
    /// [`GpuError::LayerOutOfRange`], [`GpuError::Driver`].
    pub fn moments(&self, layer: usize) -> GpuResult<(Vec<f32>, Vec<f32>)> {
        self.layer_index(layer)?;
        self.gpu.bind()?;
        Ok((
            self.layers[layer].m.to_vec()?,
            self.layers[layer].v.to_vec()?,
        ))
    }

    /// Overwrites layer `layer`'s Adam moments (same layout as the parameters).
    ///
    /// # Errors
    /// [`GpuError::LayerOutOfRange`], [`GpuError::Length`], [`GpuError::Driver`].
    pub fn set_moments(&mut self, layer: usize, m: &[f32], v: &[f32]) -> GpuResult<()> {
        self.layer_index(layer)?;
        self.gpu.bind()?;
        self.layers[layer].m.copy_from(m)?;
        self.layers[layer].v.copy_from(v)?;
        self.last_batch = None;
        Ok(())
    }

    /// Sets layer `layer`'s θ₀ (the Wasserstein regulariser's reference; stored sorted,
    /// weights and bias separately).
    ///
    /// # Errors
    /// [`GpuError::LayerOutOfRange`], [`GpuError::Length`], [`GpuError::Driver`].
    pub fn set_theta0(&mut self, layer: usize, theta0: &[f32]) -> GpuResult<()> {
        self.layer_index(layer)?;
        check_exact(
            "set_theta0",
            "theta0",
            self.spec.layer_params(layer),
            theta0.len(),
        )?;
        self.gpu.bind()?;
        self.vec_in.copy_prefix_from(theta0)?;
        let layer = &self.layers[layer];
        for (start, len) in layer.parts() {
            self.gpu
                .sort(self.vec_in.slice(start, len)?, &mut self.sort)?;
            self.gpu
                .copy_values(self.sort.sorted()?, layer.theta0_sorted.slice(start, len)?)?;
        }
        self.gpu.synchronize("set_theta0")
    }

    /// Layer `layer`'s mean data gradient from the last
    /// [`forward_backward`](GpuMlp::forward_backward), copied to the host.
    ///
    /// # Errors
    /// [`GpuError::LayerOutOfRange`], [`GpuError::Driver`].
    pub fn grads(&self, layer: usize) -> GpuResult<Vec<f32>> {
        self.layer_index(layer)?;
        self.gpu.bind()?;
        self.layers[layer].grads.to_vec()
    }

    /// Initialises every layer on the device, PyTorch-style `U(−1/√fan_in, 1/√fan_in)` for
    /// weights and biases, from `seed` (counter-based: independent of the GPU), then
    /// [`reset_state`](GpuMlp::reset_state).
    ///
    /// # Errors
    /// [`GpuError::Driver`] if a launch fails.
    pub fn init_uniform(&mut self, seed: u64) -> GpuResult<()> {
        self.gpu.bind()?;
        for (l, layer) in self.layers.iter().enumerate() {
            let bound = 1.0 / (layer.fan_in as f32).sqrt();
            let layer_seed =
                crate::reference::splitmix64(seed ^ (l as u64).wrapping_mul(0xd1b5_4a32_d192_ed03));
            self.gpu
                .fill_uniform(layer.params.view(), layer_seed, -bound, bound)?;
        }
        self.reset_state()
    }

    /// Zeroes the Adam moments and records the current parameters as θ₀ (sorted, for the
    /// Wasserstein regulariser).
    ///
    /// # Errors
    /// [`GpuError::Driver`] if a launch fails.
    pub fn reset_state(&mut self) -> GpuResult<()> {
        self.gpu.bind()?;
        for layer in &self.layers {
            self.gpu.fill_value(layer.m.view(), 0.0)?;
            self.gpu.fill_value(layer.v.view(), 0.0)?;
            self.gpu.fill_value(layer.grads.view(), 0.0)?;
            // Weights and bias are sorted separately, as safestep-host's CPU engine does.
            for (start, len) in layer.parts() {
                self.gpu
                    .sort(layer.params.slice(start, len)?, &mut self.sort)?;
                self.gpu
                    .copy_values(self.sort.sorted()?, layer.theta0_sorted.slice(start, len)?)?;
            }
        }
        self.last_batch = None;
        self.forward_fresh = false;
        self.gpu.synchronize("reset_state")
    }

    /// Uploads a task: `images` row-major `n × input` (finite), `labels` (`< classes`).
    ///
    /// # Errors
    /// [`GpuError::Length`] on a size mismatch; [`GpuError::InvalidArgument`] naming the
    /// first bad label or non-finite pixel; [`GpuError::Driver`] if the upload fails.
    pub fn load_data(&mut self, images: &[f32], labels: &[u8]) -> GpuResult<()> {
        let n = labels.len();
        check_exact("load_data", "images", n * self.spec.input, images.len())?;
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= self.spec.classes)
        {
            return Err(GpuError::InvalidArgument {
                op: "load_data",
                what: "label",
                value: format!("{l} at example {i}"),
                allowed: "below the number of classes",
            });
        }
        if let Some((i, v)) = images.iter().enumerate().find(|(_, v)| !v.is_finite()) {
            return Err(GpuError::InvalidArgument {
                op: "load_data",
                what: "image value",
                value: format!("{v} at position {i}"),
                allowed: "finite",
            });
        }
        self.gpu.bind()?;
        self.images = None;
        self.labels = None;
        self.images = Some(self.gpu.upload(images)?);
        self.labels = Some(self.gpu.upload(labels)?);
        self.examples = n;
        self.last_batch = None;
        self.forward_fresh = false;
        Ok(())
    }

    /// Examples in the loaded task.
    pub fn examples(&self) -> usize {
        self.examples
    }

    /// Forward pass of `rows` rows of `input` (`rows × input`) into `z`/`act`.
    fn forward(&self, input: View<f32>, rows: usize) -> GpuResult<()> {
        let g = &self.gpu;
        let n = self.layers.len();
        for (l, layer) in self.layers.iter().enumerate() {
            let a_in = if l == 0 {
                input
            } else {
                self.rows.act[l - 1].view()
            };
            let z = self.rows.z[l].view();
            let shape = GemmShape {
                m: rows,
                n: layer.fan_out,
                k: layer.fan_in,
            };
            g.sgemm(GemmLayout::NT, shape, 1.0, a_in, layer.weights()?, 0.0, z)?;
            if l + 1 < n {
                g.bias_act_forward(
                    z,
                    layer.bias()?,
                    rows,
                    layer.fan_out,
                    Some(self.spec.activation),
                    Some(self.rows.act[l].view()),
                )?;
            } else {
                g.bias_act_forward(z, layer.bias()?, rows, layer.fan_out, None, None)?;
            }
        }
        Ok(())
    }

    fn data(&self, op: &'static str) -> GpuResult<(&GpuBuffer<f32>, &GpuBuffer<u8>)> {
        match (&self.images, &self.labels) {
            (Some(i), Some(l)) => Ok((i, l)),
            _ => Err(GpuError::MissingState {
                op,
                needs: "load_data",
            }),
        }
    }

    /// Forward and backward pass of the mean cross-entropy on the examples `batch`; keeps
    /// the gradient for [`adam_step`](GpuMlp::adam_step) and the batch for
    /// [`hvp`](GpuMlp::hvp).
    ///
    /// # Errors
    /// [`GpuError::MissingState`] without data; [`GpuError::InvalidArgument`] for an empty
    /// batch or an index out of range; [`GpuError::Driver`] if a launch fails.
    pub fn forward_backward(&mut self, batch: &[u32], sample_norms: bool) -> GpuResult<BatchStats> {
        let op = "forward_backward";
        if batch.is_empty() {
            return Err(GpuError::InvalidArgument {
                op,
                what: "batch",
                value: "[]".into(),
                allowed: "at least one index",
            });
        }
        self.data(op)?;
        self.gpu.bind()?;
        let rows = batch.len();
        self.ensure_rows(rows)?;
        self.last_batch = None;
        self.forward_fresh = false;
        self.rows.idx.set(batch, self.examples)?;
        let (images, labels) = self.data(op)?;
        let g = &self.gpu;
        let spec = &self.spec;
        let n = self.layers.len();
        g.gather_rows(
            images.view(),
            &self.rows.idx,
            spec.input,
            self.rows.x.view(),
        )?;
        self.forward(self.rows.x.view(), rows)?;
        let scale = 1.0 / rows as f32;
        g.softmax_xent(
            self.rows.z[n - 1].view(),
            labels.view(),
            Some(&self.rows.idx),
            rows,
            spec.classes,
            scale,
            Some(self.rows.probs.view()),
            Some(self.rows.delta[n - 1].view()),
            self.rows.row_loss.view(),
            self.rows.row_hit.view(),
        )?;
        g.loss_sum(
            self.rows.row_loss.view(),
            self.rows.row_hit.view(),
            rows,
            false,
            self.scalars.view(),
            slot_loss(),
        )?;
        for l in (0..n).rev() {
            let layer = &self.layers[l];
            let a_in = if l == 0 {
                self.rows.x.view()
            } else {
                self.rows.act[l - 1].view()
            };
            let delta = self.rows.delta[l].view();
            let gw = layer.grads.slice(0, layer.fan_in * layer.fan_out)?;
            let gb = layer
                .grads
                .slice(layer.fan_in * layer.fan_out, layer.fan_out)?;
            g.sgemm(
                GemmLayout::TN,
                GemmShape {
                    m: layer.fan_out,
                    n: layer.fan_in,
                    k: rows,
                },
                1.0,
                delta,
                a_in,
                0.0,
                gw,
            )?;
            g.col_sum(delta, rows, layer.fan_out, gb)?;
            if sample_norms {
                g.sample_sq_norm_sum(
                    delta,
                    a_in,
                    rows,
                    layer.fan_out,
                    layer.fan_in,
                    rows as f32,
                    self.rows.row_tmp.view(),
                    self.scalars.view(),
                    slot_sample(n, l),
                )?;
            }
            g.sum_sq(
                layer.grads.view(),
                self.partials.view(),
                self.scalars.view(),
                slot_grad(l),
            )?;
            if l > 0 {
                let wide = self.rows.wide.view();
                g.sgemm(
                    GemmLayout::NN,
                    GemmShape {
                        m: rows,
                        n: layer.fan_in,
                        k: layer.fan_out,
                    },
                    1.0,
                    delta,
                    layer.weights()?,
                    0.0,
                    wide,
                )?;
                let prev = &self.layers[l - 1];
                g.act_backward(
                    spec.activation,
                    self.rows.z[l - 1].view(),
                    wide,
                    rows,
                    prev.fan_out,
                    self.rows.delta[l - 1].view(),
                )?;
            }
        }
        let mut s = vec![0.0_f64; 2 + 2 * n];
        self.scalars.copy_prefix_to(&mut s)?;
        self.last_batch = Some(rows);
        self.forward_fresh = true;
        Ok(BatchStats {
            loss: s[slot_loss()] / rows as f64,
            correct: s[slot_loss() + 1].round() as usize,
            batch: rows,
            mean_grad_sq: (0..n).map(|l| s[slot_grad(l)]).collect(),
            sum_sample_sq_norms: sample_norms
                .then(|| (0..n).map(|l| s[slot_sample(n, l)]).collect()),
        })
    }

    /// Recomputes the forward pass of the last batch when parameters changed since.
    fn refresh_forward(&mut self, op: &'static str) -> GpuResult<usize> {
        let rows = self.last_batch.ok_or(GpuError::MissingState {
            op,
            needs: "forward_backward",
        })?;
        if !self.forward_fresh {
            let (_, labels) = self.data(op)?;
            let n = self.layers.len();
            self.forward(self.rows.x.view(), rows)?;
            self.gpu.softmax_xent(
                self.rows.z[n - 1].view(),
                labels.view(),
                Some(&self.rows.idx),
                rows,
                self.spec.classes,
                1.0,
                Some(self.rows.probs.view()),
                None,
                self.rows.row_loss.view(),
                self.rows.row_hit.view(),
            )?;
            self.forward_fresh = true;
        }
        Ok(rows)
    }

    /// `out = H_ll·v` for layer `layer`'s diagonal Hessian block of the mean cross-entropy on
    /// the last [`forward_backward`](GpuMlp::forward_backward) batch, at the current
    /// parameters (exact: Pearlmutter's R-operator through the piecewise-linear network).
    ///
    /// # Errors
    /// [`GpuError::LayerOutOfRange`], [`GpuError::Length`] (`v`, `out` of the layer's
    /// length), [`GpuError::MissingState`] before a batch, [`GpuError::Driver`].
    pub fn hvp(&mut self, layer: usize, v: &[f32], out: &mut [f32]) -> GpuResult<()> {
        self.layer_index(layer)?;
        let p = self.spec.layer_params(layer);
        check_exact("hvp", "v", p, v.len())?;
        check_exact("hvp", "out", p, out.len())?;
        self.gpu.bind()?;
        let rows = self.refresh_forward("hvp")?;
        let vin = self.vec_in.slice(0, p)?;
        self.upload_prefix(v)?;
        let vout = self.vec_out.slice(0, p)?;
        self.hvp_device(layer, rows, vin, vout)?;
        self.vec_out.copy_prefix_to(out)
    }

    /// `out = D^½ H_ll D^½ v` with Adam's preconditioner at step `t` (computed on the device
    /// from the layer's second moments): the preconditioned sharpness operator.
    ///
    /// # Errors
    /// As [`hvp`](GpuMlp::hvp), plus [`GpuError::InvalidArgument`] for a bad `t`/config.
    pub fn hvp_preconditioned(
        &mut self,
        layer: usize,
        adam: &AdamConfig<f32>,
        t: u64,
        v: &[f32],
        out: &mut [f32],
    ) -> GpuResult<()> {
        self.layer_index(layer)?;
        let p = self.spec.layer_params(layer);
        check_exact("hvp_preconditioned", "v", p, v.len())?;
        check_exact("hvp_preconditioned", "out", p, out.len())?;
        let hyper = AdamHyper::new(adam, 0.0, t)?;
        self.gpu.bind()?;
        let rows = self.refresh_forward("hvp_preconditioned")?;
        let (vin, vout, d) = (
            self.vec_in.slice(0, p)?,
            self.vec_out.slice(0, p)?,
            self.precond.slice(0, p)?,
        );
        self.upload_prefix(v)?;
        self.gpu
            .precond_sqrt(self.layers[layer].v.view(), hyper.bc2, hyper.eps, d)?;
        self.gpu.scale_elementwise(vin, d, vin)?;
        self.hvp_device(layer, rows, vin, vout)?;
        self.gpu.scale_elementwise(vout, d, vout)?;
        self.vec_out.copy_prefix_to(out)
    }

    fn upload_prefix(&mut self, v: &[f32]) -> GpuResult<()> {
        self.vec_in.copy_prefix_from(v)
    }

    /// The R-operator pass: `vout = H_ll vin` on the device (forward must be fresh).
    fn hvp_device(&self, l: usize, rows: usize, vin: View<f32>, vout: View<f32>) -> GpuResult<()> {
        let g = &self.gpu;
        let n = self.layers.len();
        let act = self.spec.activation;
        let layer = &self.layers[l];
        let a_in = if l == 0 {
            self.rows.x.view()
        } else {
            self.rows.act[l - 1].view()
        };
        let wsize = layer.fan_in * layer.fan_out;
        // R(z_l) = a_{l-1} V_W^T + v_b
        g.sgemm(
            GemmLayout::NT,
            GemmShape {
                m: rows,
                n: layer.fan_out,
                k: layer.fan_in,
            },
            1.0,
            a_in,
            vin.sub(0, wsize)?,
            0.0,
            self.rows.rz[l].view(),
        )?;
        g.bias_act_forward(
            self.rows.rz[l].view(),
            vin.sub(wsize, layer.fan_out)?,
            rows,
            layer.fan_out,
            None,
            None,
        )?;
        // R(z_k) = act'(z_{k-1}) R(z_{k-1}) W_k^T for the layers above.
        for k in l + 1..n {
            let lk = &self.layers[k];
            let wide = self.rows.wide.view();
            g.act_jvp(
                act,
                self.rows.z[k - 1].view(),
                self.rows.rz[k - 1].view(),
                rows,
                self.layers[k - 1].fan_out,
                wide,
            )?;
            g.sgemm(
                GemmLayout::NT,
                GemmShape {
                    m: rows,
                    n: lk.fan_out,
                    k: lk.fan_in,
                },
                1.0,
                wide,
                lk.weights()?,
                0.0,
                self.rows.rz[k].view(),
            )?;
        }
        // R(δ_L) = softmax Hessian · R(z_L) / B, then back down to layer l.
        g.softmax_hvp(
            self.rows.probs.view(),
            self.rows.rz[n - 1].view(),
            rows,
            self.spec.classes,
            1.0 / rows as f32,
            self.rows.delta[n - 1].view(),
        )?;
        for k in (l + 1..n).rev() {
            let lk = &self.layers[k];
            let wide = self.rows.wide.view();
            g.sgemm(
                GemmLayout::NN,
                GemmShape {
                    m: rows,
                    n: lk.fan_in,
                    k: lk.fan_out,
                },
                1.0,
                self.rows.delta[k].view(),
                lk.weights()?,
                0.0,
                wide,
            )?;
            g.act_backward(
                act,
                self.rows.z[k - 1].view(),
                wide,
                rows,
                self.layers[k - 1].fan_out,
                self.rows.delta[k - 1].view(),
            )?;
        }
        // H v = R(δ_l)^T a_{l-1} and column sums of R(δ_l).
        let rd = self.rows.delta[l].view();
        g.sgemm(
            GemmLayout::TN,
            GemmShape {
                m: layer.fan_out,
                n: layer.fan_in,
                k: rows,
            },
            1.0,
            rd,
            a_in,
            0.0,
            vout.sub(0, wsize)?,
        )?;
        g.col_sum(rd, rows, layer.fan_out, vout.sub(wsize, layer.fan_out)?)
    }

    /// `out_i = 1/sqrt(sqrt(v̂_i)+ε)` for layer `layer` at step `t`.
    ///
    /// # Errors
    /// [`GpuError::LayerOutOfRange`], [`GpuError::Length`], [`GpuError::InvalidArgument`],
    /// [`GpuError::Driver`].
    pub fn precond_sqrt(
        &mut self,
        layer: usize,
        adam: &AdamConfig<f32>,
        t: u64,
        out: &mut [f32],
    ) -> GpuResult<()> {
        self.layer_index(layer)?;
        let p = self.spec.layer_params(layer);
        check_exact("precond_sqrt", "out", p, out.len())?;
        let hyper = AdamHyper::new(adam, 0.0, t)?;
        self.gpu.bind()?;
        let d = self.precond.slice(0, p)?;
        self.gpu
            .precond_sqrt(self.layers[layer].v.view(), hyper.bc2, hyper.eps, d)?;
        self.precond.copy_prefix_to(out)
    }

    /// One Adam step (1-based `t`) with per-layer learning rates on the gradient of the last
    /// batch, plus the Wasserstein regulariser's gradient when `wasserstein > 0`; returns
    /// each layer's statistics (see safestep-core's `StepStats`).
    ///
    /// # Errors
    /// [`GpuError::MissingState`] without a preceding batch; [`GpuError::Length`] when `lrs`
    /// does not have one rate per layer; [`GpuError::InvalidArgument`] for bad
    /// hyper-parameters; [`GpuError::NonFiniteGradient`] (that layer is left unchanged);
    /// [`GpuError::Driver`].
    pub fn adam_step(
        &mut self,
        adam: &AdamConfig<f32>,
        lrs: &[f32],
        t: u64,
        wasserstein: f32,
    ) -> GpuResult<Vec<StepStats<f64>>> {
        let n = self.layers.len();
        check_exact("adam_step", "lrs", n, lrs.len())?;
        if self.last_batch.is_none() {
            return Err(GpuError::MissingState {
                op: "adam_step",
                needs: "forward_backward",
            });
        }
        if !(wasserstein.is_finite() && wasserstein >= 0.0) {
            return Err(GpuError::InvalidArgument {
                op: "adam_step",
                what: "wasserstein",
                value: wasserstein.to_string(),
                allowed: "finite and >= 0",
            });
        }
        let hypers = lrs
            .iter()
            .map(|&lr| AdamHyper::new(adam, lr, t))
            .collect::<GpuResult<Vec<_>>>()?;
        self.gpu.bind()?;
        let g = &self.gpu;
        // Guard: the sum over layers of the data gradients' squared norms (from
        // forward_backward). If any entry is not finite, no layer is updated.
        let guard = self.scalars.slice(slot_guard(n), 1)?;
        g.sum_partials(
            self.scalars.slice(slot_grad(0), n)?,
            n,
            1,
            self.scalars.view(),
            slot_guard(n),
        )?;
        for (l, layer) in self.layers.iter().enumerate() {
            if wasserstein > 0.0 {
                // Penalty (λ/2)·Σ (sort(θ) − sort(θ₀))², weights and bias separately.
                for (start, len) in layer.parts() {
                    g.sort(layer.params.slice(start, len)?, &mut self.sort)?;
                    g.wasserstein_grad(
                        &self.sort,
                        layer.theta0_sorted.slice(start, len)?,
                        wasserstein,
                        layer.grads.slice(start, len)?,
                    )?;
                }
            }
            g.sum_sq(
                layer.grads.view(),
                self.partials.view(),
                self.step_stats.view(),
                STEP_SLOTS * l,
            )?;
            g.adam_update(
                layer.params.view(),
                layer.grads.view(),
                layer.m.view(),
                layer.v.view(),
                &hypers[l],
                guard,
                self.partials.view(),
                self.step_stats.view(),
                STEP_SLOTS * l + 1,
            )?;
        }
        // Like the CPU engine: a step consumes the batch (hvp and a second step need a new one).
        self.last_batch = None;
        self.forward_fresh = false;
        let mut s = vec![0.0_f64; STEP_SLOTS * n];
        self.step_stats.copy_prefix_to(&mut s)?;
        if let Some(l) = (0..n).find(|&l| !s[STEP_SLOTS * l].is_finite()) {
            return Err(GpuError::NonFiniteGradient {
                layer: l,
                grad_sq: s[STEP_SLOTS * l],
            });
        }
        let mut out = Vec::with_capacity(n);
        for l in 0..n {
            let r = &s[STEP_SLOTS * l..STEP_SLOTS * (l + 1)];
            out.push(StepStats {
                count: self.spec.layer_params(l),
                sum_v_hat: r[1],
                sum_multiplier: r[2],
                param_sq: r[3],
                grad_sq: r[0],
                update_sq: r[4],
            });
        }
        Ok(out)
    }

    /// Forward pass over the whole loaded task in chunks of [`EVAL_CHUNK`] rows: mean loss
    /// and correct count.
    ///
    /// # Errors
    /// [`GpuError::MissingState`] without data; [`GpuError::Driver`] if a launch fails.
    pub fn evaluate(&mut self) -> GpuResult<EvalStats> {
        self.data("evaluate")?;
        self.gpu.bind()?;
        let total = self.examples;
        self.ensure_rows(EVAL_CHUNK.min(total.max(1)))?;
        let chunk = self.rows.capacity.clamp(1, EVAL_CHUNK);
        self.forward_fresh = false;
        let (images, labels) = self.data("evaluate")?;
        let n = self.layers.len();
        let input = self.spec.input;
        let mut start = 0;
        while start < total {
            let rows = chunk.min(total - start);
            self.forward(images.slice(start * input, rows * input)?, rows)?;
            self.gpu.softmax_xent(
                self.rows.z[n - 1].view(),
                labels.slice(start, rows)?,
                None,
                rows,
                self.spec.classes,
                1.0,
                None,
                None,
                self.rows.row_loss.view(),
                self.rows.row_hit.view(),
            )?;
            self.gpu.loss_sum(
                self.rows.row_loss.view(),
                self.rows.row_hit.view(),
                rows,
                start > 0,
                self.scalars.view(),
                slot_loss(),
            )?;
            start += rows;
        }
        if total == 0 {
            return Ok(EvalStats::default());
        }
        let mut s = [0.0_f64; 2];
        self.scalars.copy_prefix_to(&mut s)?;
        Ok(EvalStats {
            loss: s[0] / total as f64,
            correct: s[1].round() as usize,
            count: total,
        })
    }
}
