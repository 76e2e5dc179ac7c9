//! Host-side size checks and launch geometry, shared by every kernel wrapper.
//!
//! Everything here is plain Rust (no CUDA), so the checks that guard each `unsafe` launch
//! are unit-tested on machines without a GPU.

use safestep_engine::LayerShape;

use crate::error::{GpuError, GpuResult};

/// Largest element count or dimension a kernel's 32-bit index arithmetic accepts.
pub const MAX_DIM: usize = i32::MAX as usize;

/// Threads per block of the elementwise and reduction kernels.
pub const THREADS: u32 = 256;

/// Upper bound on the blocks of a two-stage reduction (the partials buffer holds this many
/// values per statistic).
pub const MAX_REDUCE_BLOCKS: u32 = 256;

/// Elements per block of the shared-memory bitonic sort stages (`SORT_CHUNK` in
/// `kernels/wasserstein.cu`).
pub const SORT_CHUNK: usize = 1024;

/// Operand layout of a row-major GEMM `C = alpha·op(A)·op(B) + beta·C`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GemmLayout {
    /// `C[m,n] = A[m,k] · B[k,n]`.
    NN,
    /// `C[m,n] = A[m,k] · B[n,k]ᵀ`.
    NT,
    /// `C[m,n] = A[k,m]ᵀ · B[k,n]`.
    TN,
}

impl GemmLayout {
    /// Lower-case name (`nn`, `nt`, `tn`) as used in the kernel names.
    pub fn as_str(self) -> &'static str {
        match self {
            GemmLayout::NN => "nn",
            GemmLayout::NT => "nt",
            GemmLayout::TN => "tn",
        }
    }
}

/// Shape of one GEMM: `C` is `m × n`, the inner dimension is `k`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GemmShape {
    /// Rows of `C`.
    pub m: usize,
    /// Columns of `C`.
    pub n: usize,
    /// Inner dimension.
    pub k: usize,
}

impl GemmShape {
    /// Checks the dimensions fit the kernel and the operands hold enough elements
    /// (`a ≥ m·k`, `b ≥ k·n`, `c ≥ m·n`), naming the operand that is short.
    ///
    /// ```
    /// use safestep_gpu::shape::GemmShape;
    /// let s = GemmShape { m: 3, n: 5, k: 7 };
    /// assert!(s.check("sgemm", 21, 35, 15).is_ok());
    /// assert!(s.check("sgemm", 20, 35, 15).is_err());
    /// ```
    pub fn check(&self, op: &'static str, a: usize, b: usize, c: usize) -> GpuResult<()> {
        for (what, value) in [("m", self.m), ("n", self.n), ("k", self.k)] {
            check_dim(op, what, value)?;
        }
        check_at_least(op, "A", self.m * self.k, a)?;
        check_at_least(op, "B", self.k * self.n, b)?;
        check_at_least(op, "C", self.m * self.n, c)
    }

    /// Floating-point operations of one GEMM (`2·m·n·k`).
    pub fn flops(&self) -> f64 {
        2.0 * self.m as f64 * self.n as f64 * self.k as f64
    }

    /// The tile edge (64 or 32) the wrapper launches: 64 when the 64×64 grid alone gives at
    /// least `sms` blocks, else 32 so more blocks keep more multiprocessors busy.
    pub fn tile(&self, sms: usize) -> usize {
        let blocks64 = self.m.div_ceil(64) * self.n.div_ceil(64);
        if blocks64 >= sms.max(1) {
            64
        } else {
            32
        }
    }

    /// Grid `(x = column tiles, y = row tiles)` for a tile edge.
    pub fn grid(&self, tile: usize) -> (u32, u32) {
        (self.n.div_ceil(tile) as u32, self.m.div_ceil(tile) as u32)
    }

    /// The launch plan on a GPU with `sms` multiprocessors: the tile, and a split of `k`
    /// over `splits` blocks per tile when the tiles alone would leave multiprocessors idle
    /// (about two blocks per multiprocessor, each slice at least four 16-deep slabs).
    ///
    /// ```
    /// use safestep_gpu::shape::GemmShape;
    /// let p = GemmShape { m: 256, n: 256, k: 784 }.plan(132);
    /// assert_eq!((p.tile, p.splits), (32, 5));
    /// assert_eq!(p.kchunk * p.splits >= 784, true);
    /// // 200 tiles of 32x32 already cover the SMs once; a 2-way split balances two waves.
    /// assert_eq!(GemmShape { m: 256, n: 784, k: 256 }.plan(132).splits, 2);
    /// assert_eq!(GemmShape { m: 2048, n: 2048, k: 2048 }.plan(132).splits, 1);
    /// ```
    pub fn plan(&self, sms: usize) -> GemmPlan {
        const BK: usize = 16;
        let tile = self.tile(sms);
        let (gx, gy) = self.grid(tile);
        let blocks = (gx as usize * gy as usize).max(1);
        let want = (2 * sms.max(1)).div_ceil(blocks);
        let most = (self.k / (4 * BK)).max(1);
        let splits = want.min(most).clamp(1, 16);
        let kchunk = if splits == 1 {
            self.k.max(1)
        } else {
            self.k.div_ceil(splits).div_ceil(BK) * BK
        };
        let splits = if splits == 1 {
            1
        } else {
            self.k.div_ceil(kchunk)
        };
        GemmPlan {
            tile,
            splits,
            kchunk,
            grid: (gx, gy, splits as u32),
        }
    }
    /// Renders `m=… n=… k=…` for error messages.
    pub fn describe(&self) -> String {
        format!("m={} n={} k={}", self.m, self.n, self.k)
    }
}

/// How one GEMM is launched (see [`GemmShape::plan`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GemmPlan {
    /// Tile edge: 64 or 32.
    pub tile: usize,
    /// Blocks along `k` per output tile (1 = no split).
    pub splits: usize,
    /// Depth of `k` each split block sums (a multiple of 16 when split).
    pub kchunk: usize,
    /// Launch grid `(column tiles, row tiles, splits)`.
    pub grid: (u32, u32, u32),
}

/// Errors unless `value` fits the kernels' 32-bit dimension arithmetic.
pub fn check_dim(op: &'static str, what: &'static str, value: usize) -> GpuResult<()> {
    if value > MAX_DIM {
        Err(GpuError::TooLarge {
            op,
            what,
            value,
            max: MAX_DIM,
        })
    } else {
        Ok(())
    }
}

/// Errors unless a buffer of `found` elements holds the `expected` a launch touches.
pub fn check_at_least(
    op: &'static str,
    what: &'static str,
    expected: usize,
    found: usize,
) -> GpuResult<()> {
    if found < expected {
        Err(GpuError::Length {
            op,
            what,
            expected,
            found,
        })
    } else {
        Ok(())
    }
}

/// Errors unless `found == expected` (host slices copied to or from a buffer).
pub fn check_exact(
    op: &'static str,
    what: &'static str,
    expected: usize,
    found: usize,
) -> GpuResult<()> {
    if found != expected {
        Err(GpuError::Length {
            op,
            what,
            expected,
            found,
        })
    } else {
        Ok(())
    }
}

/// Blocks of `threads` covering `n` items, checking the count fits a grid dimension.
///
/// ```
/// use safestep_gpu::shape::blocks_for;
/// assert_eq!(blocks_for("k", 1000, 256).unwrap(), 4);
/// assert_eq!(blocks_for("k", 0, 256).unwrap(), 1);
/// ```
pub fn blocks_for(op: &'static str, n: usize, threads: u32) -> GpuResult<u32> {
    let blocks = n.div_ceil(threads as usize).max(1);
    if blocks > u32::MAX as usize / 2 {
        return Err(GpuError::TooLarge {
            op,
            what: "blocks",
            value: blocks,
            max: u32::MAX as usize / 2,
        });
    }
    Ok(blocks as u32)
}

/// Blocks of a two-stage reduction over `n` items: about four items per thread, at most
/// [`MAX_REDUCE_BLOCKS`]. Depends on `n` alone, so the summation order (and the result)
/// is the same on every GPU.
///
/// ```
/// use safestep_gpu::shape::reduce_blocks;
/// assert_eq!(reduce_blocks(10), 1);
/// assert_eq!(reduce_blocks(200_960), 197);
/// assert_eq!(reduce_blocks(10_000_000), 256);
/// ```
pub fn reduce_blocks(n: usize) -> u32 {
    (n.div_ceil(THREADS as usize * 4)).clamp(1, MAX_REDUCE_BLOCKS as usize) as u32
}

/// Smallest power of two `≥ max(n, SORT_CHUNK)`: the padded length of the bitonic sort.
///
/// ```
/// use safestep_gpu::shape::sort_len;
/// assert_eq!(sort_len(10), 1024);
/// assert_eq!(sort_len(200_960), 262_144);
/// ```
pub fn sort_len(n: usize) -> usize {
    n.max(SORT_CHUNK).next_power_of_two()
}

/// Checks that a model's layers fit the kernels' 32-bit index arithmetic: every layer's
/// parameter count, and every activation buffer of `rows` rows (`rows × fan_in`, and
/// `rows × fan_out·expansion` after a hidden layer), at most [`MAX_DIM`].
///
/// ```
/// use safestep_engine::ModelSpec;
/// use safestep_gpu::shape::check_layers;
/// let shapes = ModelSpec::default().layer_shapes()?;
/// assert!(check_layers(&shapes, 1, 4096).is_ok());
/// let wide = ModelSpec { input: 1, hidden: vec![1 << 20], classes: 2, ..ModelSpec::default() };
/// assert!(check_layers(&wide.layer_shapes()?, 1, 4096).is_err()); // 2^32 activations
/// # Ok::<(), safestep_engine::BackendError>(())
/// ```
///
/// # Errors
/// [`GpuError::TooLarge`] naming the size.
pub fn check_layers(shapes: &[LayerShape], expansion: usize, rows: usize) -> GpuResult<()> {
    for s in shapes {
        check_dim("GpuMlp", "layer parameters", s.params())?;
        let out = if s.hidden {
            s.fan_out.saturating_mul(expansion)
        } else {
            s.fan_out
        };
        check_dim(
            "GpuMlp",
            "rows x layer width",
            rows.saturating_mul(s.fan_in.max(out)),
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_check_names_the_short_operand() {
        let s = GemmShape { m: 4, n: 6, k: 5 };
        assert!(s.check("g", 20, 30, 24).is_ok());
        match s.check("g", 20, 29, 24) {
            Err(GpuError::Length {
                what: "B",
                expected: 30,
                found: 29,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        match s.check("g", 20, 30, 23) {
            Err(GpuError::Length {
                what: "C",
                expected: 24,
                found: 23,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn gemm_check_rejects_huge_dims() {
        let s = GemmShape {
            m: MAX_DIM + 1,
            n: 1,
            k: 1,
        };
        assert!(matches!(
            s.check("g", usize::MAX, usize::MAX, usize::MAX),
            Err(GpuError::TooLarge { what: "m", .. })
        ));
    }

    #[test]
    fn gemm_tile_prefers_more_blocks_for_small_outputs() {
        let small = GemmShape {
            m: 256,
            n: 256,
            k: 784,
        };
        assert_eq!(small.tile(132), 32);
        let large = GemmShape {
            m: 4096,
            n: 4096,
            k: 64,
        };
        assert_eq!(large.tile(132), 64);
        assert_eq!(small.grid(32), (8, 8));
        assert_eq!(GemmShape { m: 65, n: 1, k: 1 }.grid(64), (1, 2));
    }

    #[test]
    fn gemm_plans_cover_k_exactly_once() {
        for &(m, n, k) in &[
            (256, 256, 784),
            (256, 256, 256),
            (256, 10, 256),
            (256, 784, 256),
            (256, 256, 10),
            (1, 1, 1),
            (3, 5, 100_000),
        ] {
            for sms in [1, 16, 132] {
                let p = GemmShape { m, n, k }.plan(sms);
                assert!(p.splits >= 1 && p.splits <= 16, "{p:?}");
                // Every slice non-empty, together exactly 0..k.
                assert!(
                    p.kchunk * (p.splits - 1) < k.max(1) && p.kchunk * p.splits >= k,
                    "{m} {n} {k}: {p:?}"
                );
                if p.splits > 1 {
                    assert_eq!(p.kchunk % 16, 0);
                }
                assert_eq!(p.grid.2 as usize, p.splits);
            }
        }
        assert_eq!(
            GemmShape {
                m: 256,
                n: 256,
                k: 10
            }
            .plan(132)
            .splits,
            1
        );
    }

    #[test]
    fn reduce_and_sort_geometry() {
        for n in [0, 1, 255, 1024, 1025, 262_144, 1 << 30] {
            let b = reduce_blocks(n) as usize;
            assert!((1..=MAX_REDUCE_BLOCKS as usize).contains(&b));
            let s = sort_len(n);
            assert!(s.is_power_of_two() && s >= n && s >= SORT_CHUNK);
        }
        assert_eq!(blocks_for("k", 257, 256).unwrap(), 2);
    }

    #[test]
    fn exact_and_at_least() {
        assert!(check_exact("op", "x", 3, 3).is_ok());
        assert!(check_exact("op", "x", 3, 4).is_err());
        assert!(check_at_least("op", "x", 3, 4).is_ok());
        assert!(check_at_least("op", "x", 5, 4).is_err());
    }
}
