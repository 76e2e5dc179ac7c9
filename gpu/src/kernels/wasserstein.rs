//! Launch wrappers of `gpu/kernels/wasserstein.cu`: the bitonic sort of (value, index)
//! pairs into a [`SortScratch`] and the Wasserstein regulariser's gradient.

use crate::device::{arg, Family, Gpu, View};
use crate::error::GpuResult;
use crate::shape::{check_at_least, check_dim, check_exact, sort_len, SORT_CHUNK, THREADS};

use super::{elementwise_grid, SortScratch};
#[cfg(doc)]
use crate::error::GpuError;

impl Gpu {
    /// Sorts `x` ascending into `scratch` (values, with their original positions; ties by
    /// position).
    ///
    /// # Errors
    /// [`GpuError::Length`] if `x` exceeds the scratch capacity; [`GpuError::Driver`] if a
    /// launch fails.
    pub fn sort(&self, x: View<f32>, scratch: &mut SortScratch) -> GpuResult<()> {
        let n = x.len();
        let total = sort_len(n);
        check_at_least("sort", "scratch", total, scratch.keys.len())?;
        check_dim("sort", "n", total)?;
        let (nn, tt) = (n as i32, total as i32);
        let (px, pk, pi) = (x.ptr(), scratch.keys.view().ptr(), scratch.idx.view().ptr());
        let sizes = || format!("n={n} padded={total}");
        let args = [arg(&px), arg(&nn), arg(&tt), arg(&pk), arg(&pi)];
        let grid = elementwise_grid("sort_prepare", total)?;
        // SAFETY: signature (x, n, N, keys, idx); reads n of x, writes N keys and indices,
        // and the scratch holds at least N (checked).
        unsafe {
            self.launch(
                Family::Wasserstein,
                "sort_prepare",
                grid,
                THREADS,
                &args,
                sizes,
            )?
        };
        let chunks = (total / SORT_CHUNK) as u32;
        let local = |k: i32| -> GpuResult<()> {
            let args = [arg(&pk), arg(&pi), arg(&tt), arg(&k)];
            // SAFETY: signature (keys, idx, N, k); each block sorts its own SORT_CHUNK
            // elements of the N (a multiple of SORT_CHUNK, checked) in shared memory.
            unsafe {
                self.launch(
                    Family::Wasserstein,
                    "bitonic_local",
                    chunks,
                    (SORT_CHUNK / 2) as u32,
                    &args,
                    sizes,
                )
            }
        };
        local(0)?;
        let mut k = 2 * SORT_CHUNK;
        while k <= total {
            let mut j = k / 2;
            while j >= SORT_CHUNK {
                let (jj, kk) = (j as i32, k as i32);
                let args = [arg(&pk), arg(&pi), arg(&tt), arg(&jj), arg(&kk)];
                // SAFETY: signature (keys, idx, N, j, k); threads index i < N and partners
                // i ^ j < N since N is a power of two above j.
                unsafe {
                    self.launch(
                        Family::Wasserstein,
                        "bitonic_global",
                        grid,
                        THREADS,
                        &args,
                        sizes,
                    )?
                };
                j /= 2;
            }
            local(k as i32)?;
            k *= 2;
        }
        scratch.sorted_len = n;
        Ok(())
    }

    /// `grad[pos_r] += coef·(sorted_r − sorted0_r)` for the ranks `r` of the last
    /// [`Gpu::sort`] of θ (`coef = λ` for the Wasserstein penalty `(λ/2)·Σ_r (sorted_r −
    /// sorted0_r)²`).
    ///
    /// # Errors
    /// [`GpuError::Length`] if `sorted0` or `grad` do not match the sorted length;
    /// [`GpuError::MissingState`] before a sort; [`GpuError::Driver`] if the launch fails.
    pub fn wasserstein_grad(
        &self,
        scratch: &SortScratch,
        sorted0: View<f32>,
        coef: f32,
        grad: View<f32>,
    ) -> GpuResult<()> {
        let keys = scratch.sorted()?;
        let n = keys.len();
        check_exact("wasserstein_grad", "sorted0", n, sorted0.len())?;
        check_exact("wasserstein_grad", "grad", n, grad.len())?;
        let grid = elementwise_grid("wasserstein_grad", n)?;
        let nn = n as i32;
        let (pk, pi, ps, pg) = (
            keys.ptr(),
            scratch.idx.view().ptr(),
            sorted0.ptr(),
            grad.ptr(),
        );
        let args = [arg(&pk), arg(&pi), arg(&ps), arg(&nn), arg(&coef), arg(&pg)];
        // SAFETY: signature (keys, idx, sorted0, n, coef, grad); the first n sorted
        // positions are a permutation of 0..n (padding sorts last), so writes stay in grad.
        unsafe {
            self.launch(
                Family::Wasserstein,
                "wasserstein_grad",
                grid,
                THREADS,
                &args,
                || format!("n={n}"),
            )
        }
    }
}
