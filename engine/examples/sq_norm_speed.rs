//! `‖g‖²` of the default MLP's gradient (269,322 f32), hot in cache: one block at a time
//! against the interleaved blocks (medians of 2000 calls).
use safestep_engine::cpu::ops::{sq_norm, sq_norm_block, SQ_NORM_BLOCK};
use std::time::Instant;
fn median(mut f: impl FnMut() -> f64) -> (f64, f64) {
    let mut t = vec![];
    let mut keep = 0.0;
    for r in 0..2200 {
        let t0 = Instant::now();
        keep += f();
        if r >= 200 {
            t.push(t0.elapsed().as_secs_f64());
        }
    }
    t.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (t[t.len() / 2] * 1e6, keep)
}
fn main() {
    let x: Vec<f32> = (0..269_322)
        .map(|i| ((i * 7919) % 1000) as f32 / 999.0 - 0.5)
        .collect();
    for _ in 0..3 {
        let (one, a) = median(|| {
            x.chunks(SQ_NORM_BLOCK)
                .fold(0.0, |t, b| t + sq_norm_block(b))
        });
        let (four, b) = median(|| sq_norm(&x));
        assert_eq!(a.to_bits(), b.to_bits());
        println!(
            "one block at a time {one:.1} us, interleaved {four:.1} us ({:.2})",
            four / one
        );
    }
}
