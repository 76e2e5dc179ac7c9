//! [`Backend`] for [`GpuMlp`]: every call runs the engine's input checks
//! ([`safestep_engine::checks`]) once, then the device work; device failures come back as
//! [`BackendError::Device`] with the [`crate::GpuError`] as their source.

use safestep_core::adam::{Adam, StepStats};
use safestep_engine::checks::{
    check_layer, check_len, check_step, check_task, check_vector, hvp_rows, Batch,
};
use safestep_engine::{
    init_params, Backend, BackendError, BackendState, BatchOutput, EvalOutput, LayerShape,
    Regularizer,
};

use super::GpuMlp;

impl GpuMlp {
    /// The rows of the last batch, or [`BackendError::NoBatch`] naming `what` needs it.
    pub(super) fn batch_rows(&self, what: &'static str) -> Result<usize, BackendError> {
        self.last_batch
            .as_ref()
            .map(|b| b.rows)
            .ok_or(BackendError::NoBatch { what })
    }

    /// Checks the arguments of a Hessian-vector product on `layer`, in the CPU engine's
    /// order: the layer, a pending batch, the rows (`first_rows`: all of the batch, or
    /// `1..=` its size, [`BackendError::HvpRows`]), `v` (the layer's length, finite) and
    /// `out` (the layer's length).
    pub(super) fn check_hvp(
        &self,
        what: &'static str,
        layer: usize,
        first_rows: Option<usize>,
        v: &[f32],
        out: &[f32],
    ) -> Result<ProductRows, BackendError> {
        check_layer(layer, self.layers.len())?;
        let batch = self.batch_rows(what)?;
        let rows = hvp_rows(first_rows, batch)?;
        let n = self.shapes[layer].params();
        check_vector("v", n, v)?;
        check_len("out", n, out.len())?;
        Ok(ProductRows { batch, rows })
    }
}

/// The rows of a Hessian-vector product: the pending batch's (the forward pass is over
/// all of them) and the first ones whose mean loss the product is of.
#[derive(Clone, Copy, Debug)]
pub(super) struct ProductRows {
    /// The last `forward_backward` batch's size.
    pub batch: usize,
    /// The product's rows, `1..=batch`.
    pub rows: usize,
}

/// Checks the step number `t` as safestep-core's Adam does (`t ≥ 1`), naming `layer`.
pub(super) fn check_step_number(
    adam: &Adam<f32>,
    layer: usize,
    t: u64,
) -> Result<(), BackendError> {
    // With no slices and a zero learning rate only `t` can be refused.
    adam.check(0.0, t, &[], &[], &[], &[])
        .map_err(|error| BackendError::Optimizer { layer, error })
}

impl Backend for GpuMlp {
    fn name(&self) -> &'static str {
        "cuda"
    }

    fn layer_param_counts(&self) -> Vec<usize> {
        self.shapes.iter().map(LayerShape::params).collect()
    }

    fn reset(&mut self, seed: u64) -> Result<(), BackendError> {
        let params = init_params(&self.shapes, seed);
        self.forget_batch();
        self.gpu.bind()?;
        self.upload_params(&params)?;
        self.reset_state()?;
        self.theta0 = params;
        Ok(())
    }

    fn load_task(&mut self, images: &[f32], labels: &[u8]) -> Result<(), BackendError> {
        check_task(&self.spec, images, labels)?;
        self.forget_batch();
        self.gpu.bind()?;
        self.upload_task(images, labels)?;
        Ok(())
    }

    fn forward_backward(
        &mut self,
        batch: &[u32],
        sample_norms: bool,
    ) -> Result<BatchOutput, BackendError> {
        let batch = Batch::new(batch, self.examples())?;
        Ok(self.forward_backward_device(batch, sample_norms)?)
    }

    fn hidden_pre_activations(&mut self, batch: &[u32]) -> Result<Vec<Vec<f32>>, BackendError> {
        let batch = Batch::new(batch, self.examples())?;
        Ok(self.hidden_pre_activations_device(batch)?)
    }

    fn hvp(&mut self, layer: usize, v: &[f32], out: &mut [f32]) -> Result<(), BackendError> {
        let rows = self.check_hvp("hvp", layer, None, v, out)?;
        Ok(self.hvp_device(layer, rows, v, out)?)
    }

    fn hvp_rows(
        &mut self,
        layer: usize,
        rows: usize,
        v: &[f32],
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        let rows = self.check_hvp("hvp", layer, Some(rows), v, out)?;
        Ok(self.hvp_device(layer, rows, v, out)?)
    }

    fn precond_sqrt(
        &mut self,
        layer: usize,
        adam: &Adam<f32>,
        t: u64,
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        check_layer(layer, self.layers.len())?;
        check_len("out", self.shapes[layer].params(), out.len())?;
        check_step_number(adam, layer, t)?;
        Ok(self.precond_sqrt_device(layer, adam, t, out)?)
    }

    /// One fused Adam step on the device. A non-finite data gradient is refused before
    /// anything changes, as the contract asks; an overflow of finite inputs, however, is
    /// detected after the step from its statistics (the kernel writes as it goes), so the
    /// parameters have changed when that error comes back: the run stops and its last
    /// checkpoint is intact (see [`crate::slots::StepSlots::result`]).
    fn adam_step(
        &mut self,
        adam: &Adam<f32>,
        lrs: &[f32],
        t: u64,
        reg: &Regularizer,
    ) -> Result<Vec<StepStats<f64>>, BackendError> {
        check_step(self.layers.len(), lrs, reg)?;
        let Some(batch) = self.last_batch.take() else {
            return Err(BackendError::NoBatch { what: "adam_step" });
        };
        if let Err(e) = check_step_number(adam, 0, t) {
            self.last_batch = Some(batch);
            return Err(e);
        }
        if reg.l2_init > 0.0 {
            return Err(BackendError::Unsupported {
                what: "the L2-Init regulariser",
                backend: "cuda",
            });
        }
        let raw = self.adam_step_device(adam, lrs, t, reg.wasserstein)?;
        self.step_slots
            .result(&batch.mean_grad_sq, &raw, &self.layer_param_counts())
    }

    fn evaluate(&mut self) -> Result<EvalOutput, BackendError> {
        if self.task.is_none() {
            return Err(BackendError::NoTask);
        }
        Ok(self.evaluate_device()?)
    }

    fn export_state(&mut self) -> Result<BackendState, BackendError> {
        self.gpu.bind()?;
        let mut state = BackendState {
            params: Vec::with_capacity(self.layers.len()),
            m: Vec::with_capacity(self.layers.len()),
            v: Vec::with_capacity(self.layers.len()),
            theta0: self.theta0.clone(),
        };
        for layer in &self.layers {
            state.params.push(layer.params.to_vec()?);
            state.m.push(layer.m.to_vec()?);
            state.v.push(layer.v.to_vec()?);
        }
        Ok(state)
    }

    fn import_state(&mut self, state: &BackendState) -> Result<(), BackendError> {
        state.validate(&self.layer_param_counts())?;
        self.forget_batch();
        self.gpu.bind()?;
        self.upload_params(&state.params)?;
        self.upload_state(&state.m, &state.v, &state.theta0)?;
        self.theta0.clone_from(&state.theta0);
        Ok(())
    }
}
