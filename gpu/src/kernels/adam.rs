//! Launch wrappers of `gpu/kernels/adam.cu`: the fused Adam / Adam+L2 / AdamW step with
//! the scheduler's per-layer statistics, Adam's `D^½`, and elementwise scaling; with the
//! kernel's hyper-parameters ([`AdamHyper`]).

use safestep_core::adam::{Adam, WeightDecay};

use crate::device::{arg, Family, Gpu, View};
use crate::error::{GpuError, GpuResult};
use crate::shape::{check_at_least, check_exact, reduce_blocks, THREADS};

use super::elementwise_grid;

/// Statistics per layer written by [`Gpu::adam_update`] (`kernels/adam.cu`'s `ADAM_STATS`).
pub const ADAM_STATS: usize = 4;

impl Gpu {
    /// One fused Adam step over a layer (`p`, `g`, `m`, `v` of equal length) that also
    /// writes the layer's statistics `Σ v̂`, `Σ multiplier`, `‖θ_new‖²`, `‖Δθ‖²` into
    /// `stats[slot .. slot+4]`. `guard[0]` is a squared gradient norm computed on the device
    /// beforehand: when it is not finite the kernel changes nothing.
    ///
    /// # Errors
    /// [`GpuError::Length`] for mismatched buffers; [`GpuError::Driver`] if a launch fails.
    #[allow(clippy::too_many_arguments)]
    pub fn adam_update(
        &self,
        p: View<f32>,
        g: View<f32>,
        m: View<f32>,
        v: View<f32>,
        hyper: &AdamHyper,
        guard: View<f64>,
        partials: View<f64>,
        stats: View<f64>,
        slot: usize,
    ) -> GpuResult<()> {
        let op = "adam_update";
        check_at_least(op, "guard", 1, guard.len())?;
        let n = p.len();
        for (what, x) in [("g", g), ("m", m), ("v", v)] {
            check_exact(op, what, n, x.len())?;
        }
        let blocks = reduce_blocks(n);
        check_at_least(op, "partials", ADAM_STATS * blocks as usize, partials.len())?;
        check_at_least(op, "stats", slot + ADAM_STATS, stats.len())?;
        let nn = n as i64;
        let (pp, pg, pm, pv, pguard, ppart) = (
            p.ptr(),
            g.ptr(),
            m.ptr(),
            v.ptr(),
            guard.ptr(),
            partials.ptr(),
        );
        let h = hyper;
        let args = [
            arg(&pp),
            arg(&pg),
            arg(&pm),
            arg(&pv),
            arg(&nn),
            arg(&h.lr),
            arg(&h.beta1),
            arg(&h.beta2),
            arg(&h.eps),
            arg(&h.bc1),
            arg(&h.bc2),
            arg(&h.wd_mode),
            arg(&h.wd),
            arg(&pguard),
            arg(&ppart),
        ];
        // SAFETY: signature (p, g, m, v, n, lr, beta1, beta2, eps, bc1, bc2, wd_mode, wd,
        // guard, partials); the four vectors have n elements, guard one, partials
        // ADAM_STATS·blocks (checked).
        unsafe {
            self.launch(Family::Adam, op, blocks, THREADS, &args, || {
                format!("n={n} blocks={blocks}")
            })?
        };
        self.sum_partials(partials, blocks as usize, ADAM_STATS, stats, slot)
    }

    /// `out_i = 1/sqrt(sqrt(v_i/bc2) + eps)`: Adam's `D^½`.
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short `out`; [`GpuError::Driver`] if the launch fails.
    pub fn precond_sqrt(&self, v: View<f32>, bc2: f32, eps: f32, out: View<f32>) -> GpuResult<()> {
        let n = v.len();
        check_at_least("precond_sqrt", "out", n, out.len())?;
        let grid = elementwise_grid("precond_sqrt", n)?;
        let nn = n as i64;
        let (pv, po) = (v.ptr(), out.ptr());
        let args = [arg(&pv), arg(&nn), arg(&bc2), arg(&eps), arg(&po)];
        // SAFETY: signature (v, n, bc2, eps, out); n elements each (checked).
        unsafe {
            self.launch(Family::Adam, "precond_sqrt", grid, THREADS, &args, || {
                format!("n={n}")
            })
        }
    }

    /// `y = x ⊙ d` elementwise (`y` may alias `x`).
    ///
    /// # Errors
    /// [`GpuError::Length`] for mismatched lengths; [`GpuError::Driver`] if the launch fails.
    pub fn scale_elementwise(&self, x: View<f32>, d: View<f32>, y: View<f32>) -> GpuResult<()> {
        let n = x.len();
        check_at_least("scale_elementwise", "d", n, d.len())?;
        check_at_least("scale_elementwise", "y", n, y.len())?;
        let grid = elementwise_grid("scale_elementwise", n)?;
        let nn = n as i64;
        let (px, pd, py) = (x.ptr(), d.ptr(), y.ptr());
        let args = [arg(&px), arg(&pd), arg(&nn), arg(&py)];
        // SAFETY: signature (x, d, n, y); n elements each (checked).
        unsafe {
            self.launch(
                Family::Adam,
                "scale_elementwise",
                grid,
                THREADS,
                &args,
                || format!("n={n}"),
            )
        }
    }
}

/// Adam's hyper-parameters for one layer's fused step, as the kernel takes them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamHyper {
    /// Learning rate of the layer.
    pub lr: f32,
    /// β1.
    pub beta1: f32,
    /// β2.
    pub beta2: f32,
    /// ε.
    pub eps: f32,
    /// `1 − β1^t`.
    pub bc1: f32,
    /// `1 − β2^t`.
    pub bc2: f32,
    /// 0 none, 1 coupled L2, 2 decoupled (AdamW).
    pub wd_mode: i32,
    /// Weight-decay coefficient λ.
    pub wd: f32,
}

impl AdamHyper {
    /// From a validated safestep-core [`Adam`] configuration, a learning rate and the
    /// 1-based step `t` (bias corrections computed as core does, in `f32`).
    ///
    /// # Errors
    /// [`GpuError::InvalidArgument`] for `t = 0` or a negative or non-finite `lr`.
    pub fn new(adam: &Adam<f32>, lr: f32, t: u64) -> GpuResult<AdamHyper> {
        if t == 0 {
            return Err(GpuError::InvalidArgument {
                op: "AdamHyper",
                what: "t",
                value: "0".into(),
                allowed: ">= 1 (1-based step)",
            });
        }
        if !(lr.is_finite() && lr >= 0.0) {
            return Err(GpuError::InvalidArgument {
                op: "AdamHyper",
                what: "lr",
                value: lr.to_string(),
                allowed: "finite and >= 0",
            });
        }
        let cfg = adam.config();
        let (wd_mode, wd) = match cfg.weight_decay {
            WeightDecay::None => (0, 0.0),
            WeightDecay::CoupledL2(l) => (1, l),
            WeightDecay::Decoupled(l) => (2, l),
        };
        Ok(AdamHyper {
            lr,
            beta1: cfg.beta1,
            beta2: cfg.beta2,
            eps: cfg.eps,
            bc1: bias_correction(cfg.beta1, t),
            bc2: bias_correction(cfg.beta2, t),
            wd_mode,
            wd,
        })
    }
}

/// `1 − β^t` in `f32` as safestep-core computes it.
pub fn bias_correction(beta: f32, t: u64) -> f32 {
    let pow = if t <= i32::MAX as u64 {
        beta.powi(t as i32)
    } else {
        beta.powf(t as f32)
    };
    1.0 - pow
}
