//! `‖g‖²` of the default MLP's gradient (269,322 f32), hot in cache: one block at a time
//! against the interleaved blocks (medians of 2000 calls).
use safestep_engine::cpu::ops::{sq_norm, sq_norm_block, SQ_NORM_BLOCK};
use std::hint::black_box;

#[path = "support/timing.rs"]
mod timing;
use timing::median_us;

fn main() {
    let x: Vec<f32> = (0..269_322)
        .map(|i| ((i * 7919) % 1000) as f32 / 999.0 - 0.5)
        .collect();
    let (mut a, mut b) = (0.0f64, 0.0f64);
    for _ in 0..3 {
        let one = median_us(200, 2000, || {
            a = black_box(&x)
                .chunks(SQ_NORM_BLOCK)
                .fold(0.0, |t, b| t + sq_norm_block(b))
        });
        let four = median_us(200, 2000, || b = sq_norm(black_box(&x)));
        assert_eq!(a.to_bits(), b.to_bits());
        println!(
            "one block at a time {one:.1} us, interleaved {four:.1} us ({:.2})",
            four / one
        );
    }
}
