//! What a rayon fork-join costs when its worker has gone to sleep: a round is `gap` µs of
//! serial work on the caller, then `rayon::join` of two tasks of `work` µs each, on a
//! 2-thread pool. With gaps of 20 µs and more the worker sleeps between rounds and a join
//! costs 40–90 µs more than its work on our 2-core KVM guest: why the engine has its own
//! spinning team (`engine/src/cpu/team.rs`).
//!
//! `cargo run --release -p safestep-engine --example join_cost`
use std::time::Instant;
fn spin(us: f64) {
    let t0 = Instant::now();
    while t0.elapsed().as_secs_f64() * 1e6 < us {
        std::hint::spin_loop();
    }
}
fn main() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for gap in [0.0, 5.0, 20.0, 50.0, 100.0, 300.0] {
        for work in [20.0, 100.0] {
            let reps = 2000;
            let t = pool.install(|| {
                let t0 = Instant::now();
                for _ in 0..reps {
                    spin(gap);
                    rayon::join(|| spin(work), || spin(work));
                }
                t0.elapsed().as_secs_f64() / reps as f64 * 1e6
            });
            println!("gap {gap:5} us, two tasks of {work:5} us: {t:7.1} us per round, join overhead {:6.1} us", t - gap - work);
        }
    }
}
