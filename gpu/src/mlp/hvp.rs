//! Hessian-vector products on the device: the exact layer-block product by Pearlmutter's
//! R-operator through the piecewise-linear network (on the last batch, at the current
//! parameters), Adam's preconditioner `D^½` and the preconditioned product `D^½ H D^½ v`.

use safestep_core::adam::Adam;
use safestep_engine::BackendError;

use super::backend::{check_step_number, ProductRows};
use super::GpuMlp;
use crate::device::View;
use crate::error::GpuResult;
use crate::kernels::AdamHyper;
use crate::shape::{GemmLayout, GemmShape};

impl GpuMlp {
    /// `out = D^½ H_ll D^½ v`, with Adam's preconditioner `D^½` at step `t` computed on the
    /// device from layer `layer`'s second moments: the operator of the preconditioned
    /// sharpness, in one device round trip (the engine contract composes it from
    /// [`precond_sqrt`](safestep_engine::Backend::precond_sqrt) and
    /// [`hvp`](safestep_engine::Backend::hvp)).
    ///
    /// # Errors
    /// As [`hvp`](safestep_engine::Backend::hvp), plus [`BackendError::Optimizer`] for
    /// `t = 0`.
    pub fn hvp_preconditioned(
        &mut self,
        layer: usize,
        adam: &Adam<f32>,
        t: u64,
        v: &[f32],
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        let rows = self.check_hvp("hvp_preconditioned", layer, None, v, out)?;
        check_step_number(adam, layer, t)?;
        let hyper = AdamHyper::new(adam, 0.0, t)?;
        let p = v.len();
        self.gpu.bind()?;
        self.refresh_forward(rows.batch)?;
        let (vin, vout, d) = (
            self.vec_in.slice(0, p)?,
            self.vec_out.slice(0, p)?,
            self.precond.slice(0, p)?,
        );
        self.vec_in.copy_prefix_from(v)?;
        self.gpu
            .precond_sqrt(self.layers[layer].v.view(), hyper.bc2, hyper.eps, d)?;
        self.gpu.scale_elementwise(vin, d, vin)?;
        self.r_operator(layer, rows.rows, vin, vout)?;
        self.gpu.scale_elementwise(vout, d, vout)?;
        Ok(self.vec_out.copy_prefix_to(out)?)
    }

    /// `out = H_ll·v` for checked arguments (`v`, `out` of the layer's length; a batch of
    /// `rows.batch` rows pending), with `H_ll` the layer's Hessian block of the mean loss of
    /// the batch's first `rows.rows` rows (every row-wise buffer keeps a row's values at its
    /// place in the batch, so those rows are a prefix of each).
    pub(super) fn hvp_device(
        &mut self,
        layer: usize,
        rows: ProductRows,
        v: &[f32],
        out: &mut [f32],
    ) -> GpuResult<()> {
        let p = v.len();
        self.gpu.bind()?;
        self.refresh_forward(rows.batch)?;
        let (vin, vout) = (self.vec_in.slice(0, p)?, self.vec_out.slice(0, p)?);
        self.vec_in.copy_prefix_from(v)?;
        self.r_operator(layer, rows.rows, vin, vout)?;
        self.vec_out.copy_prefix_to(out)
    }

    /// `out_i = 1/sqrt(sqrt(v̂_i)+ε)` for layer `layer` at step `t` (checked arguments).
    pub(super) fn precond_sqrt_device(
        &mut self,
        layer: usize,
        adam: &Adam<f32>,
        t: u64,
        out: &mut [f32],
    ) -> GpuResult<()> {
        let hyper = AdamHyper::new(adam, 0.0, t)?;
        self.gpu.bind()?;
        let d = self.precond.slice(0, out.len())?;
        self.gpu
            .precond_sqrt(self.layers[layer].v.view(), hyper.bc2, hyper.eps, d)?;
        self.precond.copy_prefix_to(out)
    }

    /// The R-operator pass: `vout = H_ll vin` on the device (forward must be fresh).
    fn r_operator(&self, l: usize, rows: usize, vin: View<f32>, vout: View<f32>) -> GpuResult<()> {
        let g = &self.gpu;
        let n = self.layers.len();
        let act = self.spec.activation;
        let layer = &self.layers[l];
        let a_in = if l == 0 {
            self.rows.x.view()
        } else {
            self.rows.act[l - 1].view()
        };
        let wsize = layer.shape.weights();
        // R(z_l) = a_{l-1} V_W^T + v_b
        g.sgemm(
            GemmLayout::NT,
            GemmShape {
                m: rows,
                n: layer.shape.fan_out,
                k: layer.shape.fan_in,
            },
            1.0,
            a_in,
            vin.sub(0, wsize)?,
            0.0,
            self.rows.rz[l].view(),
        )?;
        g.bias_act_forward(
            self.rows.rz[l].view(),
            vin.sub(wsize, layer.shape.fan_out)?,
            rows,
            layer.shape.fan_out,
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
                self.layers[k - 1].shape.fan_out,
                wide,
            )?;
            g.sgemm(
                GemmLayout::NT,
                GemmShape {
                    m: rows,
                    n: lk.shape.fan_out,
                    k: lk.shape.fan_in,
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
                    n: lk.shape.fan_in,
                    k: lk.shape.fan_out,
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
                self.layers[k - 1].shape.fan_out,
                self.rows.delta[k - 1].view(),
            )?;
        }
        // H v = R(δ_l)^T a_{l-1} and column sums of R(δ_l).
        let rd = self.rows.delta[l].view();
        g.sgemm(
            GemmLayout::TN,
            GemmShape {
                m: layer.shape.fan_out,
                n: layer.shape.fan_in,
                k: rows,
            },
            1.0,
            rd,
            a_in,
            0.0,
            vout.sub(0, wsize)?,
        )?;
        g.col_sum(
            rd,
            rows,
            layer.shape.fan_out,
            vout.sub(wsize, layer.shape.fan_out)?,
        )
    }
}
