//! The Adam step on the device: the Wasserstein regulariser's gradient, then per layer the
//! squared gradient norm and the fused Adam update with the scheduler's statistics, all
//! behind one guard (a non-finite data gradient anywhere changes no layer).

use safestep_core::adam::Adam;

use super::GpuMlp;
use crate::error::GpuResult;
use crate::kernels::AdamHyper;

impl GpuMlp {
    /// One Adam step (1-based `t`, checked arguments) with per-layer learning rates `lrs`
    /// on the gradient of the last batch, plus the Wasserstein regulariser's gradient when
    /// `wasserstein > 0`. Consumes the batch. Returns the raw per-layer statistics (laid out
    /// by [`crate::slots::StepSlots`]), which say whether the guard held the step back or
    /// the step overflowed.
    pub(super) fn adam_step_device(
        &mut self,
        adam: &Adam<f32>,
        lrs: &[f32],
        t: u64,
        wasserstein: f32,
    ) -> GpuResult<Vec<f64>> {
        let n = self.layers.len();
        let hypers = lrs
            .iter()
            .map(|&lr| AdamHyper::new(adam, lr, t))
            .collect::<GpuResult<Vec<_>>>()?;
        self.gpu.bind()?;
        // A step consumes the batch (hvp and a second step need a new one), like the CPU
        // engine's; the regulariser gradient below is added to the stored gradient in place.
        self.forget_batch();
        let (g, slots, steps) = (&self.gpu, self.slots, self.step_slots);
        // Guard: the sum over layers of the data gradients' squared norms (from
        // forward_backward). If any entry is not finite, no layer is updated.
        let guard = self.scalars.slice(slots.guard, 1)?;
        g.sum_partials(
            self.scalars.slice(slots.grad(0), n)?,
            n,
            1,
            self.scalars.view(),
            slots.guard,
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
                steps.grad_sq(l),
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
                steps.adam(l),
            )?;
        }
        let mut raw = vec![0.0_f64; steps.len()];
        self.step_stats.copy_prefix_to(&mut raw)?;
        Ok(raw)
    }
}
