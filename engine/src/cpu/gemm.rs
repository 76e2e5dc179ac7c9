//! Safe, bounds-checked matrix multiplication on `f32` slices, backed by the `gemm` crate.
//!
//! # Why `gemm`
//!
//! Every dense product of the engine (forward, weight gradients, backpropagated deltas, the
//! R-operator passes of the Hessian-vector product) goes through [`matmul`]. We use
//! [`gemm`](https://crates.io/crates/gemm) (Sarah El Kazdadi; the kernel crate under `faer`
//! and `candle`) rather than `matrixmultiply` because it
//!
//! * selects its micro-kernel at run time, including AVX-512 (feature `x86-v4`), where
//!   `matrixmultiply` stops at AVX2/FMA — the engine's reference machines have AVX-512;
//! * accepts arbitrary row and column strides for all three operands, so transposed
//!   operands (`Wᵀ` in the forward pass, `Dᵀ` in the weight gradient) need no copies;
//! * is about as fast as a single core allows on these shapes: its AVX-512 micro-kernel
//!   runs the default MLP's products near the core's peak FLOP rate.
//!
//! Threading is ours, not the crate's: with the engine's worker team, a large product is cut into
//! bands of output columns (`column_bands`, where it has more rows than `raw` computes
//! by columns) or else of output rows, one single-threaded `gemm` call per band. The
//! reduction dimension is never split and a band never changes the crate's kernel choice
//! ([`row_bands`]), so every output element is summed in the same order whatever the
//! thread count, and results are bit-identical.
//!
//! The crate's entry point is an `unsafe fn` over raw pointers and strides; [`matmul`] checks
//! shapes and that every addressed element lies inside its slice before calling it.

use gemm::Parallelism;

use super::team::Team;

/// A read-only strided matrix view over a slice.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    /// Element `(i, j)` is `data[i·rs + j·cs]`.
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major `rows × cols` view of the first `rows·cols` elements of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        MatRef {
            data,
            rows,
            cols,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose (no copy).
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    /// Columns `[first, first + count)` (no copy).
    ///
    /// # Panics
    /// If they are not columns of the view (an engine invariant).
    pub fn cols(self, first: usize, count: usize) -> Self {
        self.t().rows(first, count).t()
    }

    /// Rows `[first, first + count)` (no copy).
    ///
    /// # Panics
    /// If they are not rows of the view (an engine invariant).
    pub fn rows(self, first: usize, count: usize) -> Self {
        assert!(
            first + count <= self.rows,
            "MatRef::rows: past the last row"
        );
        MatRef {
            data: &self.data[(first * self.rs).min(self.data.len())..],
            rows: count,
            ..self
        }
    }

    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < self.data.len()
    }
}

/// `dst = scale·(a·b)`, or `dst += scale·(a·b)` with `accumulate`, where `dst` is the
/// row-major `a.rows × b.cols` prefix of `dst`. With a `team`, a large product is cut into
/// one band of output rows per member (see [`row_bands`]).
///
/// # Panics
/// On inconsistent shapes or views that exceed their slices: internal invariants of the
/// engine, never user input.
pub fn matmul(
    dst: &mut [f32],
    a: MatRef<'_>,
    b: MatRef<'_>,
    scale: f32,
    accumulate: bool,
    team: Option<&Team>,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "matmul: inner dimensions differ");
    assert!(dst.len() >= m * n, "matmul: destination too small");
    assert!(a.fits() && b.fits(), "matmul: view exceeds its slice");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            dst[..m * n].fill(0.0);
        }
        return;
    }
    let (team, threads) = match team {
        Some(team) if m * n * k >= PAR_MIN_FLOPS => (team, team.threads()),
        _ => {
            raw(dst, a, b, scale, accumulate);
            return;
        }
    };
    if splits_by_columns(m, n, k, threads) {
        column_bands(dst, a, b, scale, accumulate, team);
        return;
    }
    let bands = row_bands(m, n, k, threads);
    if bands <= 1 {
        raw(dst, a, b, scale, accumulate);
        return;
    }
    let mut parts: Vec<(&mut [f32], MatRef<'_>)> = Vec::with_capacity(bands);
    let mut rest = &mut dst[..m * n];
    for t in 0..bands {
        let (top, end) = (t * m / bands, (t + 1) * m / bands);
        let (band, tail) = rest.split_at_mut((end - top) * n);
        rest = tail;
        parts.push((band, a.rows(top, end - top)));
    }
    team.for_each_mut(&mut parts, |_, (band, rows)| {
        raw(band, *rows, b, scale, accumulate)
    });
}

/// [`matmul`] on a team, one band of output columns per member, each one `gemm` call
/// writing its columns of every row of `dst` in place. For a row-major destination the
/// crate computes `(a·b)ᵀ = bᵀ·aᵀ` and copies the left operand `bᵀ` into panels, so column
/// bands copy only their own part of `b`, where row bands would each copy all of it: in
/// the forward pass all of `W`, one scalar at a time (`--example gemm_split`: a column half
/// of the first layer's product takes 0.49–0.51 of the whole, a row half 0.55–0.56). Each
/// element is summed as by the whole product (the caller checks [`row_bands`] with the
/// roles of rows and columns swapped).
fn column_bands(
    dst: &mut [f32],
    a: MatRef<'_>,
    b: MatRef<'_>,
    scale: f32,
    accumulate: bool,
    team: &Team,
) {
    let (m, n) = (a.rows, b.cols);
    let bands = team.threads();
    let mut cuts: Vec<(usize, usize)> = (0..bands)
        .map(|t| (t * n / bands, (t + 1) * n / bands))
        .collect();
    let dst = SharedDst(dst[..m * n].as_mut_ptr());
    team.for_each_mut(&mut cuts, |_, &mut (first, end)| {
        let b = b.cols(first, end - first);
        assert!(a.fits() && b.fits() && b.rows == a.cols);
        let dst = &dst;
        // SAFETY: `dst` points at `m·n` elements (sliced above, and borrowed mutably until
        // `for_each_mut` returns). This band addresses element (i, j) at `i·n + first + j`
        // for `i < m`, `j < end − first ≤ n − first`: at most `m·n − 1`, inside. The bands'
        // column ranges are disjoint, so no element is written by two members, and no
        // reference to `dst`'s elements exists while they write.
        unsafe { gemm_ptr(dst.0.add(first), n, 1, a, b, scale, accumulate) };
    });
}

/// A destination that [`column_bands`] shares between a team's members, each writing its
/// own columns.
struct SharedDst(*mut f32);

// SAFETY: the members write disjoint elements through it (see `column_bands`).
unsafe impl Sync for SharedDst {}

/// How many bands of output rows an `m × k · k × n` product may be cut into for `threads`
/// members (1: do not cut). Every output element must be summed exactly as the whole
/// product sums it, so that results do not depend on the thread count. The `gemm` crate
/// picks its summation by the product's shape: dot-product kernels when `m·n ≤ 256`,
/// matrix-vector kernels for `m ≤ 1`, and a depth block `kc` that is `min(k, 512)` when
/// `m ≤ 64` and `n ≤ 64` but a cache-derived value otherwise (equal to `k` for
/// `k ≤ 512`). A band must therefore stay on the whole product's side of each of these
/// lines.
pub fn row_bands(m: usize, n: usize, k: usize, threads: usize) -> usize {
    let band = m / threads.max(1);
    let same_kernels = band >= 2 && band * n > 256;
    let same_depth_blocks = k <= 512 || band > 64 || n > 64;
    if threads > 1 && same_kernels && same_depth_blocks {
        threads
    } else {
        1
    }
}

/// Whether [`matmul`] on a team of `threads` cuts an `m × k · k × n` product into bands of
/// output columns ([`column_bands`]) rather than rows: when it is large enough to be cut,
/// has more rows than [`raw`] computes by columns, and every column band is summed as the
/// whole product ([`row_bands`] with rows and columns swapped).
pub(super) fn splits_by_columns(m: usize, n: usize, k: usize, threads: usize) -> bool {
    threads > 1
        && m * n * k >= PAR_MIN_FLOPS
        && m > *BY_COLUMNS_ROWS.end()
        && row_bands(n, m, k, threads) == threads
}

/// Multiply-adds below this many (m·n·k) run on the calling thread only.
const PAR_MIN_FLOPS: usize = 1 << 21;

/// Products with this many rows and a transposed right operand run through
/// [`raw_by_columns`]. Below 8 rows the crate's column-major kernel fills too little of its
/// 16-lane vectors (a step at batch 4 took 1.07× as long with it); at 8 rows it is even on
/// one thread and a gain on two, where each thread's band of a batch of 16 is 8 rows and
/// both would copy all of `W`; from 64 rows on the usual orientation is faster
/// (`--example gemm_orient`).
const BY_COLUMNS_ROWS: std::ops::RangeInclusive<usize> = 8..=48;

/// One single-threaded `gemm` call on checked views.
fn raw(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, scale: f32, accumulate: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if by_columns(m, n, k, b) {
        raw_by_columns(dst, a, b, scale, accumulate);
        return;
    }
    gemm_call(&mut dst[..m * n], n, 1, a, b, scale, accumulate);
}

/// Whether [`raw`] computes `a·b` by columns: 8 to 48 rows (a small batch) times a
/// transposed row-major matrix (the forward pass's `Wᵀ`). For a row-major destination the
/// crate computes `(a·b)ᵀ = bᵀ·aᵀ`, and `bᵀ = W` is then a left operand whose rows are
/// strided, which it copies into panels one scalar at a time: at batch 16 that copy of
/// every weight matrix was 16 % of a step. Computed column-major instead, `W`
/// is a right operand read in place. The crate sums each element along the same depth
/// blocks either way (they depend on `k` and the cache only), so the bits are the same
/// (`by_columns_keeps_the_bits`). Narrow products (`n < 16`, such as the output layer's,
/// whose `W` is a few KB) stay on the usual path.
fn by_columns(m: usize, n: usize, k: usize, b: MatRef<'_>) -> bool {
    BY_COLUMNS_ROWS.contains(&m) && n >= 16 && k > 2 && b.rs == 1 && b.cs != 1
}

std::thread_local! {
    /// Each thread's column-major scratch for [`raw_by_columns`].
    static BY_COLUMNS: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `dst = scale·(a·b)` (or `dst += …` with `accumulate`) computed in a column-major
/// scratch that holds `dst` transposed, then transposed back (see [`by_columns`]).
fn raw_by_columns(dst: &mut [f32], a: MatRef<'_>, b: MatRef<'_>, scale: f32, accumulate: bool) {
    let (m, n) = (a.rows, b.cols);
    let dst = &mut dst[..m * n];
    BY_COLUMNS.with_borrow_mut(|scratch| {
        if scratch.len() < m * n {
            scratch.resize(m * n, 0.0);
        }
        let cols = &mut scratch[..m * n];
        if accumulate {
            for (i, row) in dst.chunks_exact(n).enumerate() {
                for (j, &d) in row.iter().enumerate() {
                    cols[j * m + i] = d;
                }
            }
        }
        gemm_call(cols, 1, m, a, b, scale, accumulate);
        for (i, row) in dst.chunks_exact_mut(n).enumerate() {
            for (j, d) in row.iter_mut().enumerate() {
                *d = cols[j * m + i];
            }
        }
    });
}

/// The `gemm` call itself: `dst` holds `a.rows × b.cols` elements, element `(i, j)` at
/// `i·rs + j·cs`.
fn gemm_call(
    dst: &mut [f32],
    rs: usize,
    cs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    scale: f32,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(b.rows == k && a.fits() && b.fits());
    assert!(m == 0 || n == 0 || (m - 1) * rs + (n - 1) * cs < dst.len());
    // SAFETY: shapes were checked above: every (i, j) addressed through the strides lies in
    // its slice (`fits`, and the last element of `dst` at (m−1)·rs + (n−1)·cs), and `dst`
    // is a unique borrow so it cannot alias `a` or `b`.
    unsafe { gemm_ptr(dst.as_mut_ptr(), rs, cs, a, b, scale, accumulate) }
}

/// The `gemm` call on a raw destination: element `(i, j)` of the `a.rows × b.cols` result
/// at `dst + i·rs + j·cs`.
///
/// # Safety
/// `a` and `b` must fit their slices with `b.rows == a.cols`, and every addressed element
/// of `dst` must be valid for writes and not aliased by any reference while the call runs.
unsafe fn gemm_ptr(
    dst: *mut f32,
    rs: usize,
    cs: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    scale: f32,
    accumulate: bool,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    // SAFETY: the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            cs as isize,
            rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic test entries in [-5.2, 5.2], varied by `i` and the stream `s`.
    fn value(i: usize, s: usize) -> f32 {
        (((i * 2_654_435_761 + s) % 1000) as f32 - 500.0) / 97.0
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    fn naive(a: &[f32], m: usize, k: usize, b: &[f32], n: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    c[i * n + j] += a[i * k + p] as f64 * b[p * n + j] as f64;
                }
            }
        }
        c
    }

    #[test]
    fn matches_naive_with_transposes_and_accumulation() {
        let (m, k, n) = (7, 13, 5);
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 37 % 17) as f32 - 8.0) / 8.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 11 % 13) as f32 - 6.0) / 6.0)
            .collect();
        let want = naive(&a, m, k, &b, n);
        for threads in [1, 2] {
            let team = Team::new(threads, || {}).expect("threads start");
            let team = Some(&team);
            let mut c = vec![1.0f32; m * n];
            matmul(
                &mut c,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&b, k, n),
                0.5,
                false,
                team,
            );
            for (x, y) in c.iter().zip(&want) {
                assert!((*x as f64 - 0.5 * y).abs() < 1e-5);
            }
            // bᵀ stored as n×k, viewed transposed; accumulate onto ones.
            let mut bt = vec![0.0f32; n * k];
            for p in 0..k {
                for j in 0..n {
                    bt[j * k + p] = b[p * n + j];
                }
            }
            let mut c = vec![1.0f32; m * n];
            matmul(
                &mut c,
                MatRef::row_major(&a, m, k),
                MatRef::row_major(&bt, n, k).t(),
                1.0,
                true,
                team,
            );
            for (x, y) in c.iter().zip(&want) {
                assert!((*x as f64 - (1.0 + y)).abs() < 1e-5);
            }
        }
    }

    /// Every band `row_bands` allows sums each element as the whole product does (bit for
    /// bit); and the cases it refuses are real: cutting 128 rows into bands of 64 at
    /// `n = 10`, `k = 784` moves the crate to another depth block and changes the bits.
    #[test]
    fn row_bands_keep_the_whole_products_bits() {
        let product = |m: usize, n: usize, k: usize, bands: usize| {
            let a: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
            let b: Vec<f32> = (0..n * k).map(|i| value(i, 2)).collect();
            let (av, bv) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, n, k).t());
            let mut c = vec![0.0f32; m * n];
            let mut rest = &mut c[..];
            for t in 0..bands {
                let (top, end) = (t * m / bands, (t + 1) * m / bands);
                let (band, tail) = rest.split_at_mut((end - top) * n);
                raw(band, av.rows(top, end - top), bv, 1.0, false);
                rest = tail;
            }
            bits(&c)
        };
        let mut cut = 0;
        for (m, n, k) in [
            (256, 10, 256),
            (256, 256, 784),
            (96, 12, 40),
            (64, 48, 64),
            (128, 10, 784),
            (40, 10, 600),
            (256, 3, 1000),
        ] {
            for threads in 2..=4 {
                let bands = row_bands(m, n, k, threads);
                if bands > 1 {
                    cut += 1;
                    assert_eq!(
                        product(m, n, k, 1),
                        product(m, n, k, bands),
                        "{m}x{n}x{k}/{bands}"
                    );
                }
            }
        }
        assert!(cut >= 8, "the shapes above should mostly be cut ({cut})");
        assert_eq!(row_bands(128, 10, 784, 2), 1);
        assert_ne!(product(128, 10, 784, 1), product(128, 10, 784, 2));
    }

    /// A product cut into column bands on a team ([`splits_by_columns`]) has the bits of
    /// the whole product on one thread, with and without accumulation, across the crate's
    /// depth-block edge (`k` 512) and with uneven bands.
    #[test]
    fn column_bands_keep_the_whole_products_bits() {
        let teams: Vec<Team> = (2..=4)
            .map(|t| Team::new(t, || {}).expect("threads start"))
            .collect();
        let mut cut = 0;
        for (m, n, k) in [
            (256, 256, 784),
            (96, 128, 600),
            (49, 100, 700),
            (200, 77, 300),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
            let b: Vec<f32> = (0..n * k).map(|i| value(i, 2)).collect();
            let (av, bv) = (MatRef::row_major(&a, m, k), MatRef::row_major(&b, n, k).t());
            for accumulate in [false, true] {
                let start: Vec<f32> = (0..m * n).map(|i| value(i, 3)).collect();
                let mut whole = start.clone();
                matmul(&mut whole, av, bv, 0.75, accumulate, None);
                for team in &teams {
                    if !splits_by_columns(m, n, k, team.threads()) {
                        continue;
                    }
                    cut += 1;
                    let mut banded = start.clone();
                    matmul(&mut banded, av, bv, 0.75, accumulate, Some(team));
                    assert_eq!(
                        bits(&whole),
                        bits(&banded),
                        "{m}x{n}x{k} on {}",
                        team.threads()
                    );
                }
            }
        }
        assert!(cut >= 16, "the shapes above should be cut ({cut})");
    }

    /// A small-batch product computed by columns has the bits of the usual path, with and
    /// without accumulation, across the crate's depth-block edge (`k` 512) and tail
    /// shapes.
    #[test]
    fn by_columns_keeps_the_bits() {
        let both = |m: usize, n: usize, k: usize, accumulate: bool| {
            let a: Vec<f32> = (0..m * k).map(|i| value(i, 1)).collect();
            let w: Vec<f32> = (0..n * k).map(|i| value(i, 2)).collect();
            let (av, bv) = (MatRef::row_major(&a, m, k), MatRef::row_major(&w, n, k).t());
            let start: Vec<f32> = (0..m * n).map(|i| value(i, 3)).collect();
            let mut usual = start.clone();
            gemm_call(&mut usual, n, 1, av, bv, 0.5, accumulate);
            let mut cols = start;
            raw_by_columns(&mut cols, av, bv, 0.5, accumulate);
            (bits(&usual), bits(&cols))
        };
        let mut checked = 0;
        for m in [2, 3, 7, 16, 17, 33, 64] {
            for n in [2, 10, 64, 65, 256] {
                for k in [3, 100, 512, 513, 784, 2100] {
                    for accumulate in [false, true] {
                        let (usual, cols) = both(m, n, k, accumulate);
                        assert_eq!(usual, cols, "{m}x{n}x{k}, accumulate {accumulate}");
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked, 7 * 5 * 6 * 2);
        // Which of the default MLP's forward products at small batches take this path.
        let chosen = |m: usize, n: usize, k: usize| {
            let w = vec![0.0f32; n * k];
            by_columns(m, n, k, MatRef::row_major(&w, n, k).t())
        };
        assert!(chosen(16, 256, 784) && chosen(48, 256, 256));
        assert!(chosen(8, 256, 784));
        assert!(!chosen(7, 256, 784) && !chosen(64, 256, 784) && !chosen(16, 10, 256));
    }

    #[test]
    fn empty_inner_dimension() {
        let mut c = vec![3.0f32; 4];
        matmul(
            &mut c,
            MatRef::row_major(&[], 2, 0),
            MatRef::row_major(&[], 0, 2),
            1.0,
            false,
            None,
        );
        assert_eq!(c, vec![0.0; 4]);
    }
}
