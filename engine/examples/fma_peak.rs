//! How close to the machine a step can get: the FMA peak of one and of all cores (a loop
//! of independent AVX-512 multiply-adds on registers only), against the `gemm` crate
//! computing the default MLP's eight products at batch 256 through the engine's `matmul`
//! on one thread (the median of 200 calls of each, summed). Compare the last with
//! `safestep bench --schedulers off --threads 1` (a whole step: the same products plus
//! everything else).
//!
//! `cargo run --release -p safestep-engine --example fma_peak`
use safestep_engine::cpu::gemm::{matmul, MatRef};
use std::time::Instant;

#[path = "support/timing.rs"]
mod timing;
use timing::median_us;

/// Multiply-adds per call of [`fma_loop`]: 12 independent accumulators of 16 lanes.
const ACCS: usize = 12;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_loop(iters: usize) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); ACCS];
    for _ in 0..iters {
        for x in acc.iter_mut() {
            *x = _mm512_fmadd_ps(*x, a, b);
        }
    }
    acc.iter().map(|&x| _mm512_reduce_add_ps(x)).sum()
}

/// GFLOP/s of `threads` threads each running the FMA loop at once.
#[cfg(target_arch = "x86_64")]
fn peak(threads: usize) -> f64 {
    let iters = 50_000_000;
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                // SAFETY: checked by the caller (`is_x86_feature_detected!("avx512f")`).
                std::hint::black_box(unsafe { fma_loop(iters) })
            });
        }
    });
    let flop = (threads * iters * ACCS * 16 * 2) as f64;
    flop / t0.elapsed().as_secs_f64() / 1e9
}

fn main() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for round in 0..3 {
            println!(
                "round {round}: FMA peak, 1 core {:.0} GFLOP/s, {cores} cores {:.0} GFLOP/s",
                peak(1),
                peak(cores)
            );
        }
    } else {
        println!("no AVX-512 here: the FMA peak loop is skipped");
    }
    let b = 256;
    // (name, m, k, n, a stored transposed (k × m), b stored transposed (n × k))
    let products: &[(&str, usize, usize, usize, bool, bool)] = &[
        ("forward 0", b, 784, 256, false, true),
        ("forward 1", b, 256, 256, false, true),
        ("forward 2", b, 256, 10, false, true),
        ("weight grad 0", 256, b, 784, true, false),
        ("weight grad 1", 256, b, 256, true, false),
        ("weight grad 2", 10, b, 256, true, false),
        ("delta 2->1", b, 10, 256, false, false),
        ("delta 1->0", b, 256, 256, false, false),
    ];
    let (mut total_us, mut total_flop) = (0.0, 0.0);
    for &(name, m, k, n, at, bt) in products {
        let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1 - 0.3).collect();
        let w: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1 - 0.2).collect();
        let av = if at {
            MatRef::row_major(&a, k, m).t()
        } else {
            MatRef::row_major(&a, m, k)
        };
        let bv = if bt {
            MatRef::row_major(&w, n, k).t()
        } else {
            MatRef::row_major(&w, k, n)
        };
        let mut c = vec![0f32; m * n];
        let us = median_us(30, 200, || matmul(&mut c, av, bv, 1.0, false, None));
        let flop = 2.0 * (m * k * n) as f64;
        println!(
            "{name:14} {m:4}x{k:4}x{n:4} {us:8.1} us {:6.1} GFLOP/s",
            flop / us / 1e3
        );
        total_us += us;
        total_flop += flop;
    }
    println!(
        "the eight products: {total_us:.0} us for {:.1} MFLOP, {:.1} GFLOP/s",
        total_flop / 1e6,
        total_flop / total_us / 1e3
    );
}
