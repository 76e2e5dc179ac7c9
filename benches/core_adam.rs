//! The fused Adam step + statistics against a plain Adam loop and a memcpy of the same
//! traffic, over 1M f32 parameters (criterion; figures in GB/s of memory traffic); and the
//! two ways to check a step before writing it, side by side on the CPU engine's 16k chunks:
//! `prepare` (reads θ, g, m, v) and `prepare_known` (reads g, given the bounds the last
//! `apply_bounded` left).
//!
//! Run: `cargo bench --bench core_adam -- --sample-size 30`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use safestep_core::adam::{adam_step, Adam, AdamConfig, StepStats};

const N: usize = 1 << 20;

/// Textbook Adam without statistics: the baseline the fused step must stay close to.
#[allow(clippy::too_many_arguments)]
fn plain_adam(
    lr: f32,
    b1: f32,
    b2: f32,
    eps: f32,
    t: i32,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    let bc1 = 1.0 - b1.powi(t);
    let bc2 = 1.0 - b2.powi(t);
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        *m = b1 * *m + (1.0 - b1) * g;
        *v = b2 * *v + (1.0 - b2) * g * g;
        let m_hat = *m / bc1;
        let v_hat = *v / bc2;
        *p -= lr * m_hat / (v_hat.sqrt() + eps);
    }
}

fn init(n: usize, seed: u32) -> Vec<f32> {
    let mut x = seed.wrapping_mul(2_654_435_761) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x as f32 / u32::MAX as f32 - 0.5) * 0.1
        })
        .collect()
}

fn bench_adam(c: &mut Criterion) {
    let cfg = AdamConfig::<f32>::default();
    let g = init(N, 1);
    let mut p = init(N, 2);
    let mut m = vec![0.0f32; N];
    let mut v = vec![0.0f32; N];
    // Adam reads p, g, m, v and writes p, m, v: 7 × 4 bytes per parameter.
    let traffic = 7 * 4 * N;
    let mut group = c.benchmark_group("adam_1M_f32");
    group.throughput(Throughput::Bytes(traffic as u64));
    group.bench_function("fused_step_and_stats", |b| {
        b.iter(|| {
            let mut stats = StepStats::new();
            adam_step(&cfg, 1e-3, 10, &mut p, &g, &mut m, &mut v, &mut stats).unwrap();
            black_box(stats)
        })
    });
    group.bench_function("plain_adam_loop", |b| {
        b.iter(|| {
            plain_adam(1e-3, 0.9, 0.999, 1e-8, 10, &mut p, &g, &mut m, &mut v);
            black_box(&p);
        })
    });
    // memcpy moving the same traffic: read 3.5 × 4 bytes and write 3.5 × 4 bytes per parameter.
    let src = init(traffic / 8, 3);
    let mut dst = vec![0.0f32; traffic / 8];
    group.bench_function("memcpy_same_bytes", |b| {
        b.iter(|| {
            dst.copy_from_slice(black_box(&src));
            black_box(&dst);
        })
    });
    group.finish();
}

/// One step over each 16k chunk of a 1M-parameter model, checked in full or from the last
/// step's bounds (the same update and statistics either way).
fn bench_check(c: &mut Criterion) {
    const CHUNK: usize = 1 << 14;
    let adam = Adam::new(AdamConfig::<f32>::default()).expect("valid");
    let g = init(N, 1);
    let mut p = init(N, 2);
    let mut m = vec![0.0f32; N];
    let mut v = vec![0.0f32; N];
    let mut stats = StepStats::new();
    let mut known: Vec<_> = p
        .chunks_mut(CHUNK)
        .zip(g.chunks(CHUNK))
        .zip(m.chunks_mut(CHUNK).zip(v.chunks_mut(CHUNK)))
        .map(|((p, g), (m, v))| {
            let step = adam.prepare(1e-3, 1, p, g, m, v).expect("finite");
            step.apply_bounded(&mut stats)
        })
        .collect();
    let mut group = c.benchmark_group("adam_step_16k_chunks_1M_f32");
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("prepare_then_apply", |b| {
        b.iter(|| {
            let mut stats = StepStats::new();
            let chunks = p
                .chunks_mut(CHUNK)
                .zip(g.chunks(CHUNK))
                .zip(m.chunks_mut(CHUNK).zip(v.chunks_mut(CHUNK)));
            for ((p, g), (m, v)) in chunks {
                let step = adam.prepare(1e-3, 10, p, g, m, v).expect("finite");
                step.apply(&mut stats);
            }
            black_box(stats)
        })
    });
    group.bench_function("prepare_known_then_apply_bounded", |b| {
        b.iter(|| {
            let mut stats = StepStats::new();
            let chunks = p
                .chunks_mut(CHUNK)
                .zip(g.chunks(CHUNK))
                .zip(m.chunks_mut(CHUNK).zip(v.chunks_mut(CHUNK)));
            for (((p, g), (m, v)), known) in chunks.zip(known.iter_mut()) {
                let step = adam
                    .prepare_known(1e-3, 10, p, g, m, v, known)
                    .expect("finite");
                *known = step.apply_bounded(&mut stats);
            }
            black_box(stats)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_adam, bench_check);
criterion_main!(benches);
