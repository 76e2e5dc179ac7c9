//! The forward pass, the forward/backward pass of a minibatch (gradients, `‖ḡ‖²` and the
//! exact per-sample norms) and the evaluation of the whole task, on the device.

use safestep_engine::checks::Batch;
use safestep_engine::{BatchOutput, EvalOutput};

use super::{GpuMlp, LastBatch, EVAL_CHUNK};
use crate::device::View;
use crate::error::GpuResult;
use crate::shape::{GemmLayout, GemmShape};

impl GpuMlp {
    /// Forward pass of `rows` rows of `input` (`rows × input`) into `z`/`act`.
    pub(super) fn forward(&self, input: View<f32>, rows: usize) -> GpuResult<()> {
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
                n: layer.shape.fan_out,
                k: layer.shape.fan_in,
            };
            g.sgemm(GemmLayout::NT, shape, 1.0, a_in, layer.weights()?, 0.0, z)?;
            if l + 1 < n {
                g.bias_act_forward(
                    z,
                    layer.bias()?,
                    rows,
                    layer.shape.fan_out,
                    Some(self.spec.activation),
                    Some(self.rows.act[l].view()),
                )?;
            } else {
                g.bias_act_forward(z, layer.bias()?, rows, layer.shape.fan_out, None, None)?;
            }
        }
        Ok(())
    }

    /// Forward and backward pass of the mean cross-entropy on a checked batch; keeps the
    /// gradient for the Adam step and the batch for the Hessian-vector products.
    pub(super) fn forward_backward_device(
        &mut self,
        batch: Batch<'_>,
        sample_norms: bool,
    ) -> GpuResult<BatchOutput> {
        let op = "forward_backward";
        self.gpu.bind()?;
        let rows = batch.len();
        self.ensure_rows(rows)?;
        self.forget_batch();
        self.rows.idx.set(batch)?;
        let task = self.task(op)?;
        let (g, spec, slots) = (&self.gpu, &self.spec, self.slots);
        let n = self.layers.len();
        g.gather_rows(
            task.images.view(),
            &self.rows.idx,
            spec.input,
            self.rows.x.view(),
        )?;
        self.forward(self.rows.x.view(), rows)?;
        let scale = 1.0 / rows as f32;
        g.softmax_xent(
            self.rows.z[n - 1].view(),
            task.labels.view(),
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
            slots.loss,
        )?;
        for l in (0..n).rev() {
            let layer = &self.layers[l];
            let (fan_in, fan_out) = (layer.shape.fan_in, layer.shape.fan_out);
            let a_in = if l == 0 {
                self.rows.x.view()
            } else {
                self.rows.act[l - 1].view()
            };
            let delta = self.rows.delta[l].view();
            let gw = layer.grads.slice(0, layer.shape.weights())?;
            let gb = layer.grads.slice(layer.shape.weights(), fan_out)?;
            g.sgemm(
                GemmLayout::TN,
                GemmShape {
                    m: fan_out,
                    n: fan_in,
                    k: rows,
                },
                1.0,
                delta,
                a_in,
                0.0,
                gw,
            )?;
            g.col_sum(delta, rows, fan_out, gb)?;
            if sample_norms {
                g.sample_sq_norm_sum(
                    delta,
                    a_in,
                    rows,
                    fan_out,
                    fan_in,
                    rows as f32,
                    self.rows.row_tmp.view(),
                    self.scalars.view(),
                    slots.sample(l),
                )?;
            }
            g.sum_sq(
                layer.grads.view(),
                self.partials.view(),
                self.scalars.view(),
                slots.grad(l),
            )?;
            if l > 0 {
                let wide = self.rows.wide.view();
                g.sgemm(
                    GemmLayout::NN,
                    GemmShape {
                        m: rows,
                        n: fan_in,
                        k: fan_out,
                    },
                    1.0,
                    delta,
                    layer.weights()?,
                    0.0,
                    wide,
                )?;
                g.act_backward(
                    spec.activation,
                    self.rows.z[l - 1].view(),
                    wide,
                    rows,
                    self.layers[l - 1].shape.fan_out,
                    self.rows.delta[l - 1].view(),
                )?;
            }
        }
        let mut s = vec![0.0_f64; slots.len];
        self.scalars.copy_prefix_to(&mut s)?;
        let out = slots.read_batch(&s, rows, sample_norms);
        self.last_batch = Some(LastBatch {
            rows,
            mean_grad_sq: out.layers.iter().map(|s| s.mean_grad_sq).collect(),
        });
        self.forward_fresh = true;
        Ok(out)
    }

    /// The hidden layers' pre-activations on a checked batch (a forward pass through the
    /// training buffers: the last batch is forgotten).
    pub(super) fn hidden_pre_activations_device(
        &mut self,
        batch: Batch<'_>,
    ) -> GpuResult<Vec<Vec<f32>>> {
        self.gpu.bind()?;
        let rows = batch.len();
        self.ensure_rows(rows)?;
        self.forget_batch();
        self.rows.idx.set(batch)?;
        let task = self.task("hidden_pre_activations")?;
        self.gpu.gather_rows(
            task.images.view(),
            &self.rows.idx,
            self.spec.input,
            self.rows.x.view(),
        )?;
        self.forward(self.rows.x.view(), rows)?;
        let hidden = self.layers.len() - 1;
        (0..hidden)
            .map(|l| {
                let mut z = vec![0.0f32; rows * self.layers[l].shape.fan_out];
                self.rows.z[l].copy_prefix_to(&mut z)?;
                Ok(z)
            })
            .collect()
    }

    /// Recomputes the forward pass of the last batch (`rows` rows) when an evaluation
    /// overwrote it since.
    pub(super) fn refresh_forward(&mut self, rows: usize) -> GpuResult<()> {
        if !self.forward_fresh {
            let labels = self.task("refresh_forward")?.labels.view();
            let n = self.layers.len();
            self.forward(self.rows.x.view(), rows)?;
            self.gpu.softmax_xent(
                self.rows.z[n - 1].view(),
                labels,
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
        Ok(())
    }

    /// Forward pass over the whole loaded task in chunks of [`EVAL_CHUNK`] rows: mean loss
    /// and correct count.
    pub(super) fn evaluate_device(&mut self) -> GpuResult<EvalOutput> {
        self.gpu.bind()?;
        let total = self.task("evaluate")?.examples;
        self.ensure_rows(EVAL_CHUNK.min(total.max(1)))?;
        let chunk = self.rows.capacity.clamp(1, EVAL_CHUNK);
        self.forward_fresh = false;
        let task = self.task("evaluate")?;
        let n = self.layers.len();
        let input = self.spec.input;
        let mut start = 0;
        while start < total {
            let rows = chunk.min(total - start);
            self.forward(task.images.slice(start * input, rows * input)?, rows)?;
            self.gpu.softmax_xent(
                self.rows.z[n - 1].view(),
                task.labels.slice(start, rows)?,
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
                self.slots.loss,
            )?;
            start += rows;
        }
        let mut s = vec![0.0_f64; self.slots.correct + 1];
        self.scalars.copy_prefix_to(&mut s)?;
        Ok(self.slots.read_eval(&s, total))
    }
}
