//! Forward products `X·Wᵀ` (`X` batch × fan-in, `W` fan-out × fan-in, both row-major) by
//! the two orientations the `gemm` crate can be asked for: into a row-major destination
//! (it then computes `W·Xᵀ` and copies `W` into panels, one scalar at a time) or into a
//! column-major one, transposed afterwards (`W` is read in place). Medians of 540 calls on
//! one thread, operands hot in cache, and whether the bits agree: the evidence for
//! `BY_COLUMNS_ROWS` in `engine/src/cpu/gemm.rs`.
//!
//! `cargo run --release -p safestep-engine --example gemm_orient`
#[path = "support/timing.rs"]
mod timing;
use timing::median_us;

/// `dst = x·wᵀ` by the `gemm` crate, `dst`'s element `(i, j)` at `i·rs + j·cs`.
#[allow(clippy::too_many_arguments)]
fn product(
    dst: &mut [f32],
    cs: usize,
    rs: usize,
    x: &[f32],
    w: &[f32],
    m: usize,
    k: usize,
    n: usize,
) {
    assert!(dst.len() >= m * n && x.len() >= m * k && w.len() >= n * k);
    assert!((m - 1) * rs + (n - 1) * cs < dst.len());
    // SAFETY: the asserts above keep every addressed element inside its slice; `dst` is a
    // unique borrow, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            cs as isize,
            rs as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            w.as_ptr(),
            k as isize,
            1,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}

fn main() {
    for &(m, k, n) in &[
        (2, 784, 256),
        (4, 784, 256),
        (8, 784, 256),
        (12, 784, 256),
        (16, 784, 256),
        (24, 784, 256),
        (32, 784, 256),
        (48, 784, 256),
        (64, 784, 256),
        (128, 784, 256),
        (256, 784, 256),
        (16, 256, 256),
        (64, 256, 256),
        (256, 256, 256),
        (16, 256, 10),
        (16, 784, 2048),
        (16, 2048, 2048),
    ] {
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 2_654_435_761 % 1000) as f32 - 500.0) / 97.0)
            .collect();
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 40503 % 997) as f32 - 498.0) / 91.0)
            .collect();
        let mut c = vec![0f32; m * n];
        let mut ct = vec![0f32; m * n];
        let mut c2 = vec![0f32; m * n];
        // c (m × n, row-major) = x (m × k, row-major) · wᵀ (w: n × k, row-major)
        let row = median_us(60, 540, || product(&mut c, 1, n, &x, &w, m, k, n));
        let col = median_us(60, 540, || {
            product(&mut ct, m, 1, &x, &w, m, k, n);
            for j in 0..n {
                for i in 0..m {
                    c2[i * n + j] = ct[j * m + i];
                }
            }
        });
        let same = c.iter().zip(&c2).all(|(a, b)| a.to_bits() == b.to_bits());
        println!("{m:4}x{k:4}x{n:4}: row-major dst {row:8.1} us, col-major + transpose {col:8.1} us ({:.2}), bits equal: {same}", col / row);
    }
}
