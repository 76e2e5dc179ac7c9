//! The tiled SGEMM (`gpu/kernels/gemm.cu`): row-major layouts NN / NT / TN, 64×64 and
//! 32×32 tiles, and the deterministic split-K reduction for small outputs (the plan comes
//! from [`GemmShape::plan`]).

use crate::device::{arg, Family, Gpu, View};
use crate::error::GpuResult;
use crate::shape::{GemmLayout, GemmShape, THREADS};

use super::elementwise_grid;
#[cfg(doc)]
use crate::error::GpuError;

impl Gpu {
    /// `C = alpha·op(A)·op(B) + beta·C` (row-major; see [`GemmLayout`]).
    ///
    /// # Errors
    /// [`GpuError::Length`] / [`GpuError::TooLarge`] from [`GemmShape::check`];
    /// [`GpuError::Driver`] if the launch fails.
    #[allow(clippy::too_many_arguments)]
    pub fn sgemm(
        &self,
        layout: GemmLayout,
        shape: GemmShape,
        alpha: f32,
        a: View<f32>,
        b: View<f32>,
        beta: f32,
        c: View<f32>,
    ) -> GpuResult<()> {
        shape.check("sgemm", a.len(), b.len(), c.len())?;
        if shape.m == 0 || shape.n == 0 {
            return Ok(());
        }
        let plan = shape.plan(self.multiprocessors());
        let name = match (layout, plan.tile) {
            (GemmLayout::NN, 64) => "sgemm_nn_64",
            (GemmLayout::NT, 64) => "sgemm_nt_64",
            (GemmLayout::TN, 64) => "sgemm_tn_64",
            (GemmLayout::NN, _) => "sgemm_nn_32",
            (GemmLayout::NT, _) => "sgemm_nt_32",
            (GemmLayout::TN, _) => "sgemm_tn_32",
        };
        let threads: u32 = if plan.tile == 64 { 256 } else { 128 };
        let mn = shape.m * shape.n;
        let sizes = || {
            format!(
                "{} {} tile={} splits={}",
                layout.as_str(),
                shape.describe(),
                plan.tile,
                plan.splits
            )
        };
        let (m, n, k, kchunk) = (
            shape.m as i32,
            shape.n as i32,
            shape.k as i32,
            plan.kchunk as i32,
        );
        let (pa, pb) = (a.ptr(), b.ptr());
        if plan.splits == 1 {
            let pc = c.ptr();
            let args = [
                arg(&m),
                arg(&n),
                arg(&k),
                arg(&kchunk),
                arg(&alpha),
                arg(&pa),
                arg(&pb),
                arg(&beta),
                arg(&pc),
            ];
            // SAFETY: the argument list matches `SAFESTEP_GEMM`'s signature; shape.check
            // proved A, B and C hold m·k, k·n and m·n elements, all the kernel touches with
            // one k slice (gridDim.z = 1).
            return unsafe { self.launch(Family::Gemm, name, plan.grid, threads, &args, sizes) };
        }
        let work = self.splitk_workspace(plan.splits * mn)?;
        let (one, zero) = (1.0_f32, 0.0_f32);
        let pw = work.ptr();
        let args = [
            arg(&m),
            arg(&n),
            arg(&k),
            arg(&kchunk),
            arg(&one),
            arg(&pa),
            arg(&pb),
            arg(&zero),
            arg(&pw),
        ];
        // SAFETY: as above, except that block z writes the z-th m·n slice of the workspace,
        // which holds splits·m·n elements (checked by splitk_workspace).
        unsafe { self.launch(Family::Gemm, name, plan.grid, threads, &args, sizes)? };
        let grid = elementwise_grid("sgemm_splitk_reduce", mn)?;
        let (splits, mn64, pc) = (plan.splits as i32, mn as i64, c.ptr());
        let args = [
            arg(&pw),
            arg(&splits),
            arg(&mn64),
            arg(&alpha),
            arg(&beta),
            arg(&pc),
        ];
        // SAFETY: signature (parts, splits, mn, alpha, beta, C); reads splits·mn workspace
        // elements, writes mn elements of C (checked).
        unsafe {
            self.launch(
                Family::Gemm,
                "sgemm_splitk_reduce",
                grid,
                THREADS,
                &args,
                sizes,
            )
        }
    }
}
