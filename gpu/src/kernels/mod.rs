//! Safe launch wrappers: one function per kernel, in one file per kernel family
//! (`gpu/kernels/<family>.cu` ↔ `kernels/<family>.rs`). Each wrapper checks every size and
//! buffer length it passes to the device before its `unsafe` launch, and reports a failed
//! launch as [`GpuError::Driver`] naming the kernel and the sizes.
//!
//! This module holds what the families share: the row [`Indices`] the gathers read
//! through, the [`SortScratch`] of the device sort, and the grid helpers.
//!
//! - `gemm`: the tiled SGEMM and its split-K reduction;
//! - `activation`: gather, bias, ReLU/CReLU forward, backward and forward-mode products,
//!   column sums;
//! - `loss`: softmax cross-entropy, loss sums, the softmax Hessian product;
//! - `reduce`: deterministic sums of squares and per-sample gradient norms;
//! - `adam`: the fused Adam step with its statistics ([`AdamHyper`]), Adam's `D^½`,
//!   elementwise scaling;
//! - `wasserstein`: the bitonic sort and the Wasserstein regulariser's gradient;
//! - `init`: fills and copies.

mod activation;
mod adam;
mod gemm;
mod init;
mod loss;
mod reduce;
mod wasserstein;

pub use adam::{bias_correction, AdamHyper, ADAM_STATS};

use crate::device::{Gpu, GpuBuffer, View};
use crate::error::{GpuError, GpuResult};
use crate::shape::{blocks_for, check_at_least, check_dim, sort_len, THREADS};

/// Warps per block of the one-warp-per-row kernels.
const ROW_THREADS: u32 = 256;

/// Row indices into a data set, validated on the host (`index < bound`) before upload, so
/// the gathers that read through them stay inside the data.
#[derive(Debug)]
pub struct Indices {
    buf: GpuBuffer<u32>,
    len: usize,
    bound: usize,
}

impl Indices {
    /// A buffer for up to `capacity` indices.
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the allocation fails.
    pub fn with_capacity(gpu: &Gpu, capacity: usize) -> GpuResult<Indices> {
        Ok(Indices {
            buf: gpu.zeros(capacity)?,
            len: 0,
            bound: 0,
        })
    }

    /// Uploads `idx` after checking every entry is below `bound`.
    ///
    /// # Errors
    /// [`GpuError::InvalidArgument`] naming the first index out of range;
    /// [`GpuError::Length`] if `idx` exceeds the capacity.
    pub fn set(&mut self, idx: &[u32], bound: usize) -> GpuResult<()> {
        check_at_least("Indices::set", "capacity", idx.len(), self.buf.len())?;
        if let Some((pos, &i)) = idx.iter().enumerate().find(|(_, &i)| i as usize >= bound) {
            return Err(GpuError::InvalidArgument {
                op: "Indices::set",
                what: "index",
                value: format!("{i} at position {pos}"),
                allowed: "below the number of examples",
            });
        }
        self.buf.copy_prefix_from(idx)?;
        self.len = idx.len();
        self.bound = bound;
        Ok(())
    }

    /// Number of indices set.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no index is set.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Every index is below this.
    pub fn bound(&self) -> usize {
        self.bound
    }

    fn view(&self) -> View<u32> {
        self.buf.view()
    }
}

/// Scratch for sorting one vector on the device (keys and their original positions),
/// sized for vectors of up to `capacity` elements.
#[derive(Debug)]
pub struct SortScratch {
    keys: GpuBuffer<f32>,
    idx: GpuBuffer<u32>,
    sorted_len: usize,
}

impl SortScratch {
    /// Scratch for vectors of up to `capacity` elements.
    ///
    /// # Errors
    /// [`GpuError::Driver`] if the allocation fails.
    pub fn new(gpu: &Gpu, capacity: usize) -> GpuResult<SortScratch> {
        let n = sort_len(capacity);
        Ok(SortScratch {
            keys: gpu.zeros(n)?,
            idx: gpu.zeros(n)?,
            sorted_len: 0,
        })
    }

    /// The sorted values of the last [`Gpu::sort`] (its first `n` keys).
    ///
    /// # Errors
    /// [`GpuError::MissingState`] before any sort.
    pub fn sorted(&self) -> GpuResult<View<f32>> {
        if self.sorted_len == 0 {
            return Err(GpuError::MissingState {
                op: "SortScratch::sorted",
                needs: "Gpu::sort",
            });
        }
        self.keys.slice(0, self.sorted_len)
    }
}

/// Blocks of [`THREADS`] threads for one thread per element of `n`, after checking `n`
/// fits the kernels' 32-bit indexing.
fn elementwise_grid(op: &'static str, n: usize) -> GpuResult<u32> {
    check_dim(op, "elements", n)?;
    blocks_for(op, n, THREADS)
}

/// Blocks of [`ROW_THREADS`] threads for one warp per row of `rows`, after checking `rows`
/// fits the kernels' 32-bit indexing.
fn row_grid(op: &'static str, rows: usize) -> GpuResult<u32> {
    check_dim(op, "rows", rows)?;
    blocks_for(op, rows * 32, ROW_THREADS)
}
