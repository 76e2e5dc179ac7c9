//! Launch wrappers of `gpu/kernels/loss.cu`: softmax cross-entropy forward and backward
//! with the correct count, loss sums, and the softmax Hessian product of the
//! Hessian-vector products.

use crate::device::{arg, Family, Gpu, View};
use crate::error::GpuResult;
use crate::shape::{check_at_least, check_dim, check_exact, THREADS};

use super::{row_grid, Indices, ROW_THREADS};
#[cfg(doc)]
use crate::error::GpuError;

impl Gpu {
    /// Softmax cross-entropy of `rows` logit rows: per-row loss and hit (arg-max equals the
    /// label), and optionally the probabilities and `dlogits = (p − onehot)·scale`.
    /// Labels are `labels[idx[r]]` with `idx`, else `labels[r]`.
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer (including `labels` shorter than the
    /// indices' bound); [`GpuError::Driver`] if the launch fails.
    #[allow(clippy::too_many_arguments)]
    pub fn softmax_xent(
        &self,
        logits: View<f32>,
        labels: View<u8>,
        idx: Option<&Indices>,
        rows: usize,
        classes: usize,
        scale: f32,
        probs: Option<View<f32>>,
        dlogits: Option<View<f32>>,
        loss: View<f32>,
        hit: View<f32>,
    ) -> GpuResult<()> {
        let op = "softmax_xent";
        check_at_least(op, "logits", rows * classes, logits.len())?;
        match idx {
            Some(i) => {
                check_exact(op, "indices", rows, i.len())?;
                check_at_least(op, "labels", i.bound(), labels.len())?;
            }
            None => check_at_least(op, "labels", rows, labels.len())?,
        }
        for (what, v) in [("probs", probs), ("dlogits", dlogits)] {
            if let Some(v) = v {
                check_at_least(op, what, rows * classes, v.len())?;
            }
        }
        check_at_least(op, "loss", rows, loss.len())?;
        check_at_least(op, "hit", rows, hit.len())?;
        let grid = row_grid(op, rows)?;
        let (r, c) = (rows as i32, classes as i32);
        let null = cust::memory::DevicePointer::<f32>::null();
        let (pl, plab) = (logits.ptr(), labels.ptr());
        let pidx = idx
            .map(|i| i.view().ptr())
            .unwrap_or_else(cust::memory::DevicePointer::null);
        let pp = probs.map(|v| v.ptr()).unwrap_or(null);
        let pd = dlogits.map(|v| v.ptr()).unwrap_or(null);
        let (ploss, phit) = (loss.ptr(), hit.ptr());
        let args = [
            arg(&pl),
            arg(&plab),
            arg(&pidx),
            arg(&r),
            arg(&c),
            arg(&scale),
            arg(&pp),
            arg(&pd),
            arg(&ploss),
            arg(&phit),
        ];
        // SAFETY: signature (logits, labels, idx, rows, classes, scale, probs, dlogits, loss,
        // hit); null probs/dlogits are skipped by the kernel; label reads stay below the
        // checked bound.
        unsafe {
            self.launch(Family::Loss, op, grid, ROW_THREADS, &args, || {
                format!("rows={rows} classes={classes}")
            })
        }
    }

    /// `out[slot] (+)= Σ loss`, `out[slot+1] (+)= Σ hit` over `rows` rows (one block,
    /// fixed order); `accumulate = false` overwrites.
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if the launch fails.
    pub fn loss_sum(
        &self,
        loss: View<f32>,
        hit: View<f32>,
        rows: usize,
        accumulate: bool,
        out: View<f64>,
        slot: usize,
    ) -> GpuResult<()> {
        check_at_least("loss_sum", "loss", rows, loss.len())?;
        check_at_least("loss_sum", "hit", rows, hit.len())?;
        check_at_least("loss_sum", "out", slot + 2, out.len())?;
        check_dim("loss_sum", "rows", rows)?;
        let (r, acc, s) = (rows as i32, accumulate as i32, slot as i32);
        let (pl, ph, po) = (loss.ptr(), hit.ptr(), out.ptr());
        let args = [arg(&pl), arg(&ph), arg(&r), arg(&acc), arg(&po), arg(&s)];
        // SAFETY: signature (loss, hit, rows, accumulate, out, slot); lengths checked.
        unsafe {
            self.launch(Family::Loss, "loss_sum", 1u32, THREADS, &args, || {
                format!("rows={rows} slot={slot}")
            })
        }
    }

    /// `rd = (p ⊙ rz − p·(p·rz))·scale` per row: the logit Hessian of the cross-entropy
    /// times `rz`.
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if the launch fails.
    pub fn softmax_hvp(
        &self,
        probs: View<f32>,
        rz: View<f32>,
        rows: usize,
        classes: usize,
        scale: f32,
        rd: View<f32>,
    ) -> GpuResult<()> {
        for (what, v) in [("probs", probs), ("rz", rz), ("rd", rd)] {
            check_at_least("softmax_hvp", what, rows * classes, v.len())?;
        }
        let grid = row_grid("softmax_hvp", rows)?;
        let (r, c) = (rows as i32, classes as i32);
        let (pp, pr, pd) = (probs.ptr(), rz.ptr(), rd.ptr());
        let args = [arg(&pp), arg(&pr), arg(&r), arg(&c), arg(&scale), arg(&pd)];
        // SAFETY: signature (probs, rz, rows, classes, scale, rd); lengths checked.
        unsafe {
            self.launch(
                Family::Loss,
                "softmax_hvp",
                grid,
                ROW_THREADS,
                &args,
                || format!("rows={rows} classes={classes}"),
            )
        }
    }
}
