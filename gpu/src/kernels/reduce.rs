//! Launch wrappers of `gpu/kernels/reduce.cu`: two-stage deterministic sums of squares
//! (fixed order, `f64`) and the exact sum of per-sample gradient squared norms.

use crate::device::{arg, Family, Gpu, View};
use crate::error::GpuResult;
use crate::shape::{check_at_least, check_dim, reduce_blocks, THREADS};

#[cfg(doc)]
use super::ADAM_STATS;
use super::{row_grid, ROW_THREADS};
#[cfg(doc)]
use crate::error::GpuError;

impl Gpu {
    /// `out[slot] = Σ x_i²` (in `f64`, deterministic), using `partials` as scratch (at
    /// least [`crate::shape::MAX_REDUCE_BLOCKS`]·[`ADAM_STATS`] values).
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if a launch fails.
    pub fn sum_sq(
        &self,
        x: View<f32>,
        partials: View<f64>,
        out: View<f64>,
        slot: usize,
    ) -> GpuResult<()> {
        let n = x.len();
        let blocks = reduce_blocks(n);
        check_at_least(
            "sum_sq_partials",
            "partials",
            blocks as usize,
            partials.len(),
        )?;
        let nn = n as i64;
        let (px, pp) = (x.ptr(), partials.ptr());
        let args = [arg(&px), arg(&nn), arg(&pp)];
        // SAFETY: signature (x, n, partials); reads n elements of x, writes `blocks` partials.
        unsafe {
            self.launch(
                Family::Reduce,
                "sum_sq_partials",
                blocks,
                THREADS,
                &args,
                || format!("n={n} blocks={blocks}"),
            )?;
        }
        self.sum_partials(partials, blocks as usize, 1, out, slot)
    }

    /// `out[slot + v] = Σ_{i<n} partials[v·n + i]` for `v < values` (one block per value).
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if the launch fails.
    pub fn sum_partials(
        &self,
        partials: View<f64>,
        n: usize,
        values: usize,
        out: View<f64>,
        slot: usize,
    ) -> GpuResult<()> {
        check_at_least("sum_partials", "partials", n * values, partials.len())?;
        check_at_least("sum_partials", "out", slot + values, out.len())?;
        check_dim("sum_partials", "n", n)?;
        let (nn, s) = (n as i32, slot as i32);
        let (pp, po) = (partials.ptr(), out.ptr());
        let args = [arg(&pp), arg(&nn), arg(&po), arg(&s)];
        // SAFETY: signature (partials, n, out, slot); grid = values blocks, each reads n
        // partials and writes out[slot + v]; lengths checked.
        unsafe {
            self.launch(
                Family::Reduce,
                "sum_partials",
                values as u32,
                THREADS,
                &args,
                || format!("n={n} values={values} slot={slot}"),
            )
        }
    }

    /// `out[slot] = Σ_r scale²·‖δ_r‖²·(‖a_r‖² + 1)`: the sum over the batch of per-sample
    /// gradient squared norms of a dense layer (`tmp` holds `rows` doubles of scratch).
    ///
    /// # Errors
    /// [`GpuError::Length`] for a short buffer; [`GpuError::Driver`] if a launch fails.
    #[allow(clippy::too_many_arguments)]
    pub fn sample_sq_norm_sum(
        &self,
        delta: View<f32>,
        a: View<f32>,
        rows: usize,
        dcols: usize,
        acols: usize,
        scale: f32,
        tmp: View<f64>,
        out: View<f64>,
        slot: usize,
    ) -> GpuResult<()> {
        let op = "sample_sq_norms";
        check_at_least(op, "delta", rows * dcols, delta.len())?;
        check_at_least(op, "a", rows * acols, a.len())?;
        check_at_least(op, "tmp", rows, tmp.len())?;
        check_dim(op, "dcols", dcols)?;
        check_dim(op, "acols", acols)?;
        let grid = row_grid(op, rows)?;
        let (r, dc, ac) = (rows as i32, dcols as i32, acols as i32);
        let (pd, pa, pt) = (delta.ptr(), a.ptr(), tmp.ptr());
        let args = [
            arg(&pd),
            arg(&pa),
            arg(&r),
            arg(&dc),
            arg(&ac),
            arg(&scale),
            arg(&pt),
        ];
        // SAFETY: signature (delta, a, rows, dcols, acols, scale, out); lengths checked.
        unsafe {
            self.launch(Family::Reduce, op, grid, ROW_THREADS, &args, || {
                format!("rows={rows} dcols={dcols} acols={acols}")
            })?
        };
        self.sum_partials(tmp, rows, 1, out, slot)
    }
}
