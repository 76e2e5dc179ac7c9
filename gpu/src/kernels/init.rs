//! Launch wrappers of `gpu/kernels/init.cu`: counter-based uniform fills, constant fills
//! and copies.

use crate::device::{arg, Family, Gpu, View};
use crate::error::GpuResult;
use crate::shape::{check_exact, THREADS};

use super::elementwise_grid;
#[cfg(doc)]
use crate::error::GpuError;

impl Gpu {
    /// `x_i = lo + (hi − lo)·u_i` with `u_i` from splitmix64 of `(seed, i)`
    /// ([`crate::reference::uniform_at`]).
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the launch fails.
    pub fn fill_uniform(&self, x: View<f32>, seed: u64, lo: f32, hi: f32) -> GpuResult<()> {
        let n = x.len();
        let grid = elementwise_grid("fill_uniform", n)?;
        let nn = n as i64;
        let px = x.ptr();
        let args = [arg(&px), arg(&nn), arg(&seed), arg(&lo), arg(&hi)];
        // SAFETY: signature (x, n, seed, lo, hi); writes n elements of x.
        unsafe {
            self.launch(Family::Init, "fill_uniform", grid, THREADS, &args, || {
                format!("n={n}")
            })
        }
    }

    /// `x_i = value`.
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the launch fails.
    pub fn fill_value(&self, x: View<f32>, value: f32) -> GpuResult<()> {
        let n = x.len();
        let grid = elementwise_grid("fill_value", n)?;
        let nn = n as i64;
        let px = x.ptr();
        let args = [arg(&px), arg(&nn), arg(&value)];
        // SAFETY: signature (x, n, value); writes n elements of x.
        unsafe {
            self.launch(Family::Init, "fill_value", grid, THREADS, &args, || {
                format!("n={n}")
            })
        }
    }

    /// `dst = src` (equal lengths).
    ///
    /// # Errors
    /// [`GpuError::Length`] on a mismatch; [`GpuError::Driver`] if the launch fails.
    pub fn copy_values(&self, src: View<f32>, dst: View<f32>) -> GpuResult<()> {
        let n = src.len();
        check_exact("copy_values", "dst", n, dst.len())?;
        let grid = elementwise_grid("copy_values", n)?;
        let nn = n as i64;
        let (ps, pd) = (src.ptr(), dst.ptr());
        let args = [arg(&ps), arg(&nn), arg(&pd)];
        // SAFETY: signature (src, n, dst); n elements each (checked).
        unsafe {
            self.launch(Family::Init, "copy_values", grid, THREADS, &args, || {
                format!("n={n}")
            })
        }
    }
}
