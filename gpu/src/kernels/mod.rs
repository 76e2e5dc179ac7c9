//! Safe launch wrappers: one function per kernel, in one file per kernel family
//! (`gpu/kernels/<family>.cu` ↔ `kernels/<family>.rs`). Each wrapper checks every size and
//! buffer length it passes to the device before its `unsafe` launch, and reports a failed
//! launch as [`GpuError::Driver`] naming the kernel and the sizes.
//!
//! This module holds what the families share: the minibatch [`Indices`] the gathers read
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

use safestep_engine::checks::Batch;

use crate::device::{Gpu, GpuBuffer, View};
use crate::error::{GpuError, GpuResult};
use crate::shape::{blocks_for, check_at_least, check_dim, sort_len, THREADS};

/// Warps per block of the one-warp-per-row kernels.
const ROW_THREADS: u32 = 256;

/// Row indices into a data set, uploaded from a [`Batch`] (so every index is below the
/// number of examples it was checked against, [`Indices::bound`]): the gathers that read
/// through them stay inside the data once their wrappers check the data holds `bound` rows.
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

    /// Uploads a checked minibatch; its task size becomes [`Indices::bound`].
    ///
    /// # Errors
    /// [`GpuError::Length`] if the batch exceeds the capacity; [`GpuError::Driver`] if the
    /// copy fails.
    pub fn set(&mut self, batch: Batch<'_>) -> GpuResult<()> {
        check_at_least("Indices::set", "capacity", batch.len(), self.buf.len())?;
        self.buf.copy_prefix_from(batch.indices())?;
        self.len = batch.len();
        self.bound = batch.examples();
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
