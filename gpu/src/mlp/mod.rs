//! The CUDA engine: the MLP on one GPU. Parameters, Adam state, the task's data and the
//! activations stay in device memory across steps; only per-layer scalars (and the vectors
//! the caller asks for) cross to the host.
//!
//! [`GpuMlp`] implements safestep-engine's [`Backend`](safestep_engine::Backend) with the
//! engine's types, so the training loop drives it exactly as it drives the CPU engine; both
//! start from the same weights for a seed ([`safestep_engine::init_params`]). The module is
//! split by concern: this file (the device buffers, construction, state transfers), `pass`
//! (forward, backward, evaluation), `hvp` (Hessian-vector products), `adam` (the fused
//! step) and `backend` (the contract: the engine's input checks, then the device work).
//!
//! ```no_run
//! use safestep_engine::{Backend, BackendError, ModelSpec};
//! use safestep_gpu::GpuMlp;
//! match GpuMlp::open(&ModelSpec::default(), 7) {
//!     Ok(gpu) => println!("training on {}", gpu.device_name()),
//!     // "no CUDA device/driver available: cuInit failed (...)"
//!     Err(e @ BackendError::NoDevice { .. }) => eprintln!("{e}"),
//!     Err(e) => panic!("{e}"),
//! }
//! ```

mod adam;
mod backend;
mod hvp;
mod pass;

use std::sync::Arc;

use safestep_engine::checks::check_layer;
use safestep_engine::{BackendError, LayerShape, Loss, ModelSpec, Norm};

use crate::device::{Gpu, GpuBuffer, View};
use crate::error::{GpuError, GpuResult};
use crate::kernels::{Indices, SortScratch, ADAM_STATS};
use crate::shape::{check_layers, MAX_REDUCE_BLOCKS};
use crate::slots::{ScalarSlots, StepSlots};

/// Rows per chunk of [`Backend::evaluate`](safestep_engine::Backend::evaluate), and the
/// batch size the row buffers are first allocated for.
pub const EVAL_CHUNK: usize = 4096;

// The step buffer holds ‖g‖² and then what the fused Adam kernel writes, per layer.
const _: () = assert!(StepSlots::PER_LAYER == 1 + ADAM_STATS);

/// One layer's device state.
struct Layer {
    shape: LayerShape,
    params: GpuBuffer<f32>,
    grads: GpuBuffer<f32>,
    m: GpuBuffer<f32>,
    v: GpuBuffer<f32>,
    /// θ₀ sorted, weights and bias separately (the Wasserstein regulariser's reference).
    theta0_sorted: GpuBuffer<f32>,
}

impl Layer {
    fn new(gpu: &Gpu, shape: LayerShape) -> GpuResult<Layer> {
        let n = shape.params();
        Ok(Layer {
            shape,
            params: gpu.zeros(n)?,
            grads: gpu.zeros(n)?,
            m: gpu.zeros(n)?,
            v: gpu.zeros(n)?,
            theta0_sorted: gpu.zeros(n)?,
        })
    }

    /// `(offset, length)` of the weights and of the bias in the layer's vector.
    fn parts(&self) -> [(usize, usize); 2] {
        let nw = self.shape.weights();
        [(0, nw), (nw, self.shape.fan_out)]
    }

    fn weights(&self) -> GpuResult<View<f32>> {
        self.params.slice(0, self.shape.weights())
    }

    fn bias(&self) -> GpuResult<View<f32>> {
        self.params.slice(self.shape.weights(), self.shape.fan_out)
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

impl Rows {
    fn new(gpu: &Gpu, spec: &ModelSpec, shapes: &[LayerShape], capacity: usize) -> GpuResult<Rows> {
        let mut z = Vec::new();
        let mut act = Vec::new();
        let mut delta = Vec::new();
        let mut rz = Vec::new();
        let mut widest = spec.input;
        for (l, s) in shapes.iter().enumerate() {
            z.push(gpu.zeros(capacity * s.fan_out)?);
            delta.push(gpu.zeros(capacity * s.fan_out)?);
            rz.push(gpu.zeros(capacity * s.fan_out)?);
            if let Some(next) = shapes.get(l + 1) {
                act.push(gpu.zeros(capacity * next.fan_in)?);
                widest = widest.max(next.fan_in);
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
}

/// The current task on the device.
struct Task {
    images: GpuBuffer<f32>,
    labels: GpuBuffer<u8>,
    examples: usize,
}

/// The last [`Backend::forward_backward`](safestep_engine::Backend::forward_backward)
/// batch, while its gradient and input match the parameters.
struct LastBatch {
    /// Rows of the batch (its input stays in `Rows::x`, its indices in `Rows::idx`).
    rows: usize,
    /// Each layer's `‖ḡ‖²` of the data gradient: what the Adam step's guard sums.
    mean_grad_sq: Vec<f64>,
}

/// The multilayer perceptron on one GPU with its Adam state and the current task's data:
/// safestep-engine's CUDA engine (see the module docs).
pub struct GpuMlp {
    spec: ModelSpec,
    shapes: Vec<LayerShape>,
    slots: ScalarSlots,
    step_slots: StepSlots,
    layers: Vec<Layer>,
    rows: Rows,
    task: Option<Task>,
    scalars: GpuBuffer<f64>,
    step_stats: GpuBuffer<f64>,
    partials: GpuBuffer<f64>,
    vec_in: GpuBuffer<f32>,
    vec_out: GpuBuffer<f32>,
    precond: GpuBuffer<f32>,
    sort: SortScratch,
    /// θ₀ of the last reset or import (the device keeps it sorted; this copy is exported).
    theta0: Vec<Vec<f32>>,
    last_batch: Option<LastBatch>,
    /// Whether `z`, `act` and `probs` hold the forward pass of the last batch at the
    /// current parameters (an evaluation overwrites them).
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

/// The CUDA engine's kernels compute softmax cross-entropy only: a squared-error model is
/// refused with [`BackendError::Unsupported`] naming the loss.
fn check_loss(spec: &ModelSpec) -> Result<(), BackendError> {
    match spec.loss {
        Loss::CrossEntropy => Ok(()),
        Loss::SquaredError => Err(BackendError::Unsupported {
            what:
                "the squared-error loss (its CUDA kernels are not written yet; use --backend cpu)",
            backend: "cuda",
        }),
    }
}

/// The CUDA engine's kernels have no LayerNorm: a model with [`Norm::Layer`] is refused
/// with [`BackendError::Unsupported`] naming the option.
fn check_norm(spec: &ModelSpec) -> Result<(), BackendError> {
    match spec.norm {
        Norm::None => Ok(()),
        Norm::Layer => Err(BackendError::Unsupported {
            what: "the layer-norm architecture option (--norm layer; its CUDA kernels are not written yet; use --backend cpu)",
            backend: "cuda",
        }),
    }
}

impl GpuMlp {
    /// Opens CUDA device 0, allocates the model of `spec` there and initialises it from
    /// `seed`: the parameters [`safestep_engine::CpuBackend::new`] draws for the same seed.
    ///
    /// # Errors
    /// [`BackendError::NoDevice`] without a GPU or driver (the message says which);
    /// [`BackendError::InvalidSpec`] for a spec the engine or the kernels do not accept;
    /// [`BackendError::Unsupported`] for the squared-error loss or [`Norm::Layer`] (checked
    /// before the device is opened; the CUDA kernels implement softmax cross-entropy
    /// without normalisation only);
    /// [`BackendError::Device`] naming the operation that failed.
    pub fn open(spec: &ModelSpec, seed: u64) -> Result<GpuMlp, BackendError> {
        check_loss(spec)?;
        check_norm(spec)?;
        GpuMlp::new(Gpu::new()?, spec, seed)
    }

    /// Like [`GpuMlp::open`] on an already opened `gpu`.
    ///
    /// # Errors
    /// As [`GpuMlp::open`], except [`BackendError::NoDevice`].
    pub fn new(gpu: Arc<Gpu>, spec: &ModelSpec, seed: u64) -> Result<GpuMlp, BackendError> {
        check_loss(spec)?;
        check_norm(spec)?;
        let shapes = spec.layer_shapes()?;
        check_layers(&shapes, spec.activation.expansion(), EVAL_CHUNK).map_err(|e| {
            BackendError::InvalidSpec {
                field: "hidden",
                value: format!("{:?} ({e})", spec.effective_hidden()),
                allowed: "layers whose buffers fit the CUDA kernels' 32-bit indexing",
            }
        })?;
        gpu.bind()?;
        let layers = shapes
            .iter()
            .map(|&s| Layer::new(&gpu, s))
            .collect::<GpuResult<Vec<_>>>()?;
        let max_params = shapes.iter().map(LayerShape::params).max().unwrap_or(1);
        let slots = ScalarSlots::new(shapes.len());
        let step_slots = StepSlots::new(shapes.len());
        // Room for evaluation chunks and any usual batch, so neither reallocates.
        let rows = Rows::new(&gpu, spec, &shapes, EVAL_CHUNK)?;
        let mut mlp = GpuMlp {
            scalars: gpu.zeros(slots.len)?,
            step_stats: gpu.zeros(step_slots.len())?,
            partials: gpu.zeros(ADAM_STATS * MAX_REDUCE_BLOCKS as usize)?,
            vec_in: gpu.zeros(max_params)?,
            vec_out: gpu.zeros(max_params)?,
            precond: gpu.zeros(max_params)?,
            sort: SortScratch::new(&gpu, max_params)?,
            spec: spec.clone(),
            shapes,
            slots,
            step_slots,
            layers,
            rows,
            task: None,
            theta0: Vec::new(),
            last_batch: None,
            forward_fresh: false,
            gpu,
        };
        safestep_engine::Backend::reset(&mut mlp, seed)?;
        Ok(mlp)
    }

    /// The model's spec.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Resolved per-layer shapes, input layer first.
    pub fn shapes(&self) -> &[LayerShape] {
        &self.shapes
    }

    /// The GPU the model lives on (for device-side work beyond the engine contract, e.g. the
    /// kernel checks of [`crate::selftest`]).
    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    /// The GPU's name as the driver reports it.
    pub fn device_name(&self) -> &str {
        self.gpu.name()
    }

    /// Current parameters of `layer`, copied to the host (weights row-major
    /// `fan_out × fan_in`, then bias).
    ///
    /// # Errors
    /// [`BackendError::LayerOutOfRange`]; [`BackendError::Device`] if the copy fails.
    pub fn layer_params(&self, layer: usize) -> Result<Vec<f32>, BackendError> {
        check_layer(layer, self.layers.len())?;
        self.gpu.bind()?;
        Ok(self.layers[layer].params.to_vec()?)
    }

    /// Mean data gradient of `layer` from the last
    /// [`Backend::forward_backward`](safestep_engine::Backend::forward_backward), copied to
    /// the host.
    ///
    /// # Errors
    /// [`BackendError::LayerOutOfRange`]; [`BackendError::NoBatch`] when no gradient is
    /// pending (none yet, or an Adam step consumed it); [`BackendError::Device`].
    pub fn layer_grad(&self, layer: usize) -> Result<Vec<f32>, BackendError> {
        check_layer(layer, self.layers.len())?;
        if self.last_batch.is_none() {
            return Err(BackendError::NoBatch { what: "layer_grad" });
        }
        self.gpu.bind()?;
        Ok(self.layers[layer].grads.to_vec()?)
    }

    /// Examples in the loaded task (0 before any).
    fn examples(&self) -> usize {
        self.task.as_ref().map_or(0, |t| t.examples)
    }

    /// The loaded task.
    fn task(&self, op: &'static str) -> GpuResult<&Task> {
        self.task.as_ref().ok_or(GpuError::MissingState {
            op,
            needs: "a loaded task",
        })
    }

    /// Forgets the last batch (after the parameters, the moments or the task changed).
    fn forget_batch(&mut self) {
        self.last_batch = None;
        self.forward_fresh = false;
    }

    /// Makes room for batches of `rows` rows (forgets the last batch when it reallocates).
    fn ensure_rows(&mut self, rows: usize) -> GpuResult<()> {
        if rows > self.rows.capacity {
            let capacity = rows.next_power_of_two();
            self.rows = Rows::new(&self.gpu, &self.spec, &self.shapes, capacity)?;
            self.forget_batch();
        }
        Ok(())
    }

    /// Uploads checked parameters (one vector of each layer's length per layer).
    fn upload_params(&mut self, params: &[Vec<f32>]) -> GpuResult<()> {
        for (layer, p) in self.layers.iter_mut().zip(params) {
            layer.params.copy_from(p)?;
        }
        Ok(())
    }

    /// Sorts `values` (a layer's vector already on the device) into the layer's θ₀
    /// reference, weights and bias separately, as the CPU engine does.
    fn sort_into_theta0(&mut self, layer: usize, values: View<f32>) -> GpuResult<()> {
        let layer = &self.layers[layer];
        for (start, len) in layer.parts() {
            self.gpu.sort(values.sub(start, len)?, &mut self.sort)?;
            self.gpu
                .copy_values(self.sort.sorted()?, layer.theta0_sorted.slice(start, len)?)?;
        }
        Ok(())
    }

    /// Zeroes the Adam moments and the gradients and records the current parameters as θ₀.
    fn reset_state(&mut self) -> GpuResult<()> {
        for l in 0..self.layers.len() {
            let layer = &self.layers[l];
            self.gpu.fill_value(layer.m.view(), 0.0)?;
            self.gpu.fill_value(layer.v.view(), 0.0)?;
            self.gpu.fill_value(layer.grads.view(), 0.0)?;
            let params = layer.params.view();
            self.sort_into_theta0(l, params)?;
        }
        self.gpu.synchronize("reset")
    }

    /// Uploads checked moments and θ₀ (one vector of each layer's length per layer).
    fn upload_state(
        &mut self,
        m: &[Vec<f32>],
        v: &[Vec<f32>],
        theta0: &[Vec<f32>],
    ) -> GpuResult<()> {
        for l in 0..self.layers.len() {
            self.layers[l].m.copy_from(&m[l])?;
            self.layers[l].v.copy_from(&v[l])?;
            self.vec_in.copy_prefix_from(&theta0[l])?;
            let staged = self.vec_in.slice(0, theta0[l].len())?;
            self.sort_into_theta0(l, staged)?;
            // The next layer's θ₀ is staged in the same buffer.
            self.gpu.synchronize("import_state")?;
        }
        Ok(())
    }

    /// Uploads a checked task.
    fn upload_task(&mut self, images: &[f32], labels: &[u8]) -> GpuResult<()> {
        self.task = None;
        self.task = Some(Task {
            images: self.gpu.upload(images)?,
            labels: self.gpu.upload(labels)?,
            examples: labels.len(),
        });
        Ok(())
    }
}
