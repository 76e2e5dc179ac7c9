//! The examples' one timing helper (included with `#[path]`; not an example itself).
use std::time::Instant;

/// The median wall time in µs of `timed` calls of `f`, after `warmup` untimed ones.
pub fn median_us(warmup: usize, timed: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..warmup {
        f();
    }
    let mut t: Vec<f64> = (0..timed)
        .map(|_| {
            let t0 = Instant::now();
            f();
            t0.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(|a, b| a.total_cmp(b));
    t[t.len() / 2] * 1e6
}
