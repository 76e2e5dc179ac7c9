//! One thread's share of a split product: each of the default MLP's large products
//! (batch 256) timed whole, as its first half of rows and as its first half of columns, on
//! one thread (medians of 270 calls). A perfect split would take 0.50 of the whole; the
//! row halves are what the engine's bands compute (see docs/results.md, "Two threads").
//!
//! `cargo run --release -p safestep-engine --example gemm_split`
use safestep_engine::cpu::gemm::{matmul, MatRef};
#[path = "support/timing.rs"]
mod timing;
use timing::median_us;

fn main() {
    // name, m, k, n, a stored transposed, b stored transposed
    let shapes: &[(&str, usize, usize, usize, bool, bool)] = &[
        ("fwd0 X.W0t", 256, 784, 256, false, true),
        ("fwd1 H.W1t", 256, 256, 256, false, true),
        ("gw1 D1t.H", 256, 256, 256, true, false),
        ("dh1 D1.W1", 256, 256, 256, false, false),
        ("gw0 D0t.X", 256, 256, 784, true, false),
    ];
    for &(name, m, k, n, at, bt) in shapes {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
        let av = if at {
            MatRef::row_major(&a, k, m).t()
        } else {
            MatRef::row_major(&a, m, k)
        };
        let bv = if bt {
            MatRef::row_major(&b, n, k).t()
        } else {
            MatRef::row_major(&b, k, n)
        };
        let mut c = vec![0f32; m * n];
        let whole = median_us(30, 270, || matmul(&mut c, av, bv, 1.0, false, None));
        let mut c2 = vec![0f32; m * n / 2];
        let rows = median_us(30, 270, || {
            matmul(&mut c2, av.rows(0, m / 2), bv, 1.0, false, None)
        });
        let bt_ = bv.t();
        let cols = median_us(30, 270, || {
            matmul(&mut c2, av, bt_.rows(0, n / 2).t(), 1.0, false, None)
        });
        println!("{name:12} whole {whole:7.1} us | half rows {rows:7.1} us ({:.2} of whole) | half cols {cols:7.1} us ({:.2})", rows / whole, cols / whole);
    }
}
