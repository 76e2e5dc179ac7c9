//! Equivalence of the CUDA engine ([`GpuMlp`]) with the CPU engine ([`CpuBackend`]):
//! same seed and data, compared through the engine contract alone. On a machine without a
//! GPU (or built against the link-time stub driver) each device test prints a `SKIP` line
//! and passes; `.ci/cuda-check.sh` runs them on the CPU emulation of the driver (`gpu/emu`,
//! shortened by `SAFESTEP_CUDA_TEST_QUICK`) and `scripts/gpu-check.sh` on a GPU.
//!
//! The data are the embedded MNIST digits through the host's random-label task streams
//! (safestep-host is a dev-dependency for this alone).
#![cfg(feature = "cuda")]

use safestep_core::adam::{Adam, AdamConfig, StepStats, WeightDecay};
use safestep_core::power::{PowerConfig, PowerIteration};
use safestep_engine::{Activation, Backend, BackendError, CpuBackend, ModelSpec, Regularizer};
use safestep_gpu::reference::{splitmix64, uniform_at};
use safestep_gpu::GpuMlp;
use safestep_host::data::{Benchmark, Mnist, TaskStream};

/// Both backends for `spec` and `seed`, or `None` (after a SKIP line) without a GPU.
fn pair(spec: &ModelSpec, seed: u64) -> Option<(CpuBackend, GpuMlp)> {
    match GpuMlp::open(spec, seed) {
        Ok(gpu) => Some((CpuBackend::new(spec, seed).expect("cpu backend"), gpu)),
        Err(e @ BackendError::NoDevice { .. }) => {
            eprintln!("SKIP cuda test: {e}");
            None
        }
        Err(e) => panic!("GpuMlp::open failed: {e}"),
    }
}

/// Adam with `cfg`, validated.
fn validated_adam(cfg: AdamConfig<f32>) -> Adam<f32> {
    Adam::new(cfg).expect("valid Adam configuration")
}

/// Shorter runs when `SAFESTEP_CUDA_TEST_QUICK` is set (CI runs these tests on the slow
/// CPU emulation of the driver; on a GPU they run in full).
fn quick() -> bool {
    std::env::var_os("SAFESTEP_CUDA_TEST_QUICK").is_some()
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * a.abs().max(b.abs()).max(1e-30)
}

fn assert_close(what: &str, a: f64, b: f64, rel: f64) {
    assert!(
        close(a, b, rel),
        "{what}: cpu {a} vs cuda {b} (relative tolerance {rel})"
    );
}

/// ‖a − b‖ / max(‖a‖, ‖b‖).
fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let d: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - f64::from(*y)).powi(2))
        .sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum();
    let nb: f64 = b.iter().map(|x| f64::from(*x).powi(2)).sum();
    (d / na.max(nb).max(1e-60)).sqrt()
}

fn random_vec(n: usize, seed: u64) -> Vec<f32> {
    (0..n as u64)
        .map(|i| uniform_at(seed, i, -1.0, 1.0))
        .collect()
}

/// `batch` distinct indices below `n`, deterministic in `(seed, step)`.
fn batch_indices(n: usize, batch: usize, seed: u64, step: u64) -> Vec<u32> {
    let mut idx: Vec<u32> = (0..n as u32).collect();
    let mut s = splitmix64(seed ^ step.wrapping_mul(0x9e37_79b9));
    for i in 0..batch.min(n) {
        s = splitmix64(s);
        let j = i + (s % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(batch);
    idx
}

fn random_label_task(examples: usize, seed: u64, k: u64) -> (Vec<f32>, Vec<u8>) {
    let mnist = Mnist::embedded().expect("embedded digits");
    let stream =
        TaskStream::new(Benchmark::RandomLabelMnist, &mnist, examples, seed).expect("stream");
    let task = stream.task(k);
    (task.images, task.labels)
}

/// Loads the random-label task `random_label_task(examples, seed, k)` into both engines.
fn load_both(cpu: &mut CpuBackend, gpu: &mut GpuMlp, examples: usize, seed: u64, k: u64) {
    let (images, labels) = random_label_task(examples, seed, k);
    cpu.load_task(&images, &labels).unwrap();
    gpu.load_task(&images, &labels).unwrap();
}

/// Compares per-layer Adam statistics at relative 1e-3, except the sum of multipliers at
/// `mult_tol`.
fn compare_stats(step: u64, cpu: &[StepStats<f64>], gpu: &[StepStats<f64>], mult_tol: f64) {
    for (l, (c, g)) in cpu.iter().zip(gpu).enumerate() {
        assert_eq!(c.count, g.count);
        let w = |f: &str| format!("step {step} layer {l} {f}");
        assert_close(&w("sum_v_hat"), c.sum_v_hat, g.sum_v_hat, 1e-3);
        // Σ lr/((1−β1^t)(sqrt(v̂)+ε)) is dominated by parameters whose gradient is at
        // rounding level (each contributes up to lr/ε), where the backends' summation
        // orders decide the last bits. Where exact zeros dominate it (the MNIST-sized
        // model: weights on blank pixels) 1e-3 holds; small models get a looser tolerance.
        assert_close(
            &w("sum_multiplier"),
            c.sum_multiplier,
            g.sum_multiplier,
            mult_tol,
        );
        assert_close(&w("param_sq"), c.param_sq, g.param_sq, 1e-3);
        assert_close(&w("grad_sq"), c.grad_sq, g.grad_sq, 1e-3);
        assert_close(&w("update_sq"), c.update_sq, g.update_sq, 1e-3);
    }
}

#[test]
fn cuda_backend_can_move_between_threads() {
    fn is_send<T: Send>() {}
    is_send::<GpuMlp>();
}

#[test]
fn cuda_without_device_fails_with_a_clear_message() {
    match GpuMlp::open(&ModelSpec::default(), 1) {
        Ok(b) => assert_eq!(b.name(), "cuda"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("no CUDA device/driver available"),
                "unclear error: {msg}"
            );
        }
    }
}

#[test]
fn cuda_matches_cpu_on_the_first_controller_events() {
    let spec = ModelSpec::default();
    let Some((mut cpu, mut gpu)) = pair(&spec, 11) else {
        return;
    };
    load_both(&mut cpu, &mut gpu, 1000, 5, 0);
    let adam = validated_adam(AdamConfig::default());
    let lrs = vec![1e-3_f32; 3];
    let reg = Regularizer::default();
    let counts = cpu.layer_param_counts();
    assert_eq!(counts, gpu.layer_param_counts());
    let mut power_cpu: Vec<PowerIteration<f32>> = vec![PowerIteration::new(); 3];
    let mut power_gpu: Vec<PowerIteration<f32>> = vec![PowerIteration::new(); 3];
    let mut dir_cpu: Vec<Vec<f32>> = counts
        .iter()
        .enumerate()
        .map(|(l, &n)| random_vec(n, 100 + l as u64))
        .collect();
    let mut dir_gpu = dir_cpu.clone();
    let cfg = PowerConfig::default();
    let steps = if quick() { 12 } else { 40 };
    for step in 0..steps {
        let batch = batch_indices(1000, 256, 21, step);
        let event = step % 10 == 0;
        let c = cpu.forward_backward(&batch, event).unwrap();
        let g = gpu.forward_backward(&batch, event).unwrap();
        assert_eq!((c.batch, g.batch), (256, 256));
        assert_close(&format!("step {step} loss"), c.loss, g.loss, 1e-4);
        assert!(
            (c.correct as i64 - g.correct as i64).abs() <= 2,
            "step {step} correct {} vs {}",
            c.correct,
            g.correct
        );
        for l in 0..3 {
            assert_close(
                &format!("step {step} layer {l} mean_grad_sq"),
                c.layers[l].mean_grad_sq,
                g.layers[l].mean_grad_sq,
                1e-3,
            );
        }
        if event {
            for l in 0..3 {
                assert_close(
                    &format!("step {step} layer {l} sum_sample_sq_norms"),
                    c.layers[l].sum_sample_sq_norms.unwrap(),
                    g.layers[l].sum_sample_sq_norms.unwrap(),
                    1e-3,
                );
                let mut hv = vec![0.0_f32; counts[l]];
                let lc = power_cpu[l]
                    .estimate(&cfg, &mut dir_cpu[l], &mut hv, None, |v, out| {
                        cpu.hvp(l, v, out)
                    })
                    .unwrap();
                let lg = power_gpu[l]
                    .estimate(&cfg, &mut dir_gpu[l], &mut hv, None, |v, out| {
                        gpu.hvp(l, v, out)
                    })
                    .unwrap();
                assert_close(
                    &format!("step {step} layer {l} sharpness"),
                    f64::from(lc),
                    f64::from(lg),
                    1e-3,
                );
                // One product on a common vector, compared directly.
                let v = random_vec(counts[l], 7 + step);
                let (mut hc, mut hg) = (vec![0.0_f32; counts[l]], vec![0.0_f32; counts[l]]);
                cpu.hvp(l, &v, &mut hc).unwrap();
                gpu.hvp(l, &v, &mut hg).unwrap();
                let d = rel_diff(&hc, &hg);
                assert!(
                    d < 1e-3,
                    "step {step} layer {l} hvp relative difference {d}"
                );
            }
        }
        let sc = cpu.adam_step(&adam, &lrs, step + 1, &reg).unwrap();
        let sg = gpu.adam_step(&adam, &lrs, step + 1, &reg).unwrap();
        compare_stats(step, &sc, &sg, 1e-3);
    }
    for l in 0..3 {
        let d = rel_diff(cpu.layer_params(l).unwrap(), &gpu.layer_params(l).unwrap());
        assert!(
            d < 1e-3,
            "layer {l} parameters differ by {d} after 40 steps"
        );
    }
}

#[test]
fn cuda_matches_cpu_task_accuracies_on_a_short_random_label_run() {
    let spec = ModelSpec::default();
    let Some((mut cpu, mut gpu)) = pair(&spec, 3) else {
        return;
    };
    let adam = validated_adam(AdamConfig::default());
    let lrs = vec![1e-3_f32; 3];
    let reg = Regularizer::default();
    let (examples, batch, epochs) = (512usize, 64usize, if quick() { 2 } else { 6 });
    let mut t = 0u64;
    for task in 0..if quick() { 2 } else { 3u64 } {
        load_both(&mut cpu, &mut gpu, examples, 9, task);
        for epoch in 0..epochs {
            let order = batch_indices(examples, examples, 77 + task, epoch);
            for b in order.chunks(batch) {
                t += 1;
                cpu.forward_backward(b, false).unwrap();
                gpu.forward_backward(b, false).unwrap();
                cpu.adam_step(&adam, &lrs, t, &reg).unwrap();
                gpu.adam_step(&adam, &lrs, t, &reg).unwrap();
            }
        }
        let (ec, eg) = (cpu.evaluate().unwrap(), gpu.evaluate().unwrap());
        assert_eq!(ec.count, eg.count);
        let (ac, ag) = (ec.accuracy() * 100.0, eg.accuracy() * 100.0);
        eprintln!("task {task}: accuracy cpu {ac:.2}% cuda {ag:.2}%");
        assert!(
            (ac - ag).abs() <= 1.0,
            "task {task}: accuracy cpu {ac}% vs cuda {ag}%"
        );
        assert_close(&format!("task {task} eval loss"), ec.loss, eg.loss, 1e-3);
    }
}

#[test]
fn cuda_matches_cpu_with_crelu_wasserstein_and_weight_decay() {
    let spec = ModelSpec {
        input: 784,
        hidden: vec![48, 40],
        classes: 10,
        activation: Activation::Crelu,
        crelu_match_params: false,
        loss: safestep_engine::Loss::CrossEntropy,
        norm: safestep_engine::Norm::None,
    };
    for (name, wd, lambda) in [
        (
            "adamw+wasserstein",
            WeightDecay::Decoupled(0.01_f32),
            0.05_f32,
        ),
        ("adam+l2", WeightDecay::CoupledL2(1e-3), 0.0),
    ] {
        let Some((mut cpu, mut gpu)) = pair(&spec, 5) else {
            return;
        };
        load_both(&mut cpu, &mut gpu, 300, 2, 1);
        let adam = validated_adam(AdamConfig {
            weight_decay: wd,
            ..AdamConfig::default()
        });
        let lrs = [3e-3_f32, 2e-3, 1e-3];
        let reg = Regularizer {
            wasserstein: lambda,
            ..Regularizer::default()
        };
        let counts = cpu.layer_param_counts();
        for step in 0..if quick() { 3 } else { 8u64 } {
            let batch = batch_indices(300, 50, 4, step);
            cpu.forward_backward(&batch, true).unwrap();
            gpu.forward_backward(&batch, true).unwrap();
            for (l, &n) in counts.iter().enumerate() {
                let v = random_vec(n, 40 + step);
                let (mut hc, mut hg) = (vec![0.0_f32; n], vec![0.0_f32; n]);
                cpu.hvp(l, &v, &mut hc).unwrap();
                gpu.hvp(l, &v, &mut hg).unwrap();
                let d = rel_diff(&hc, &hg);
                assert!(d < 1e-3, "{name} step {step} layer {l} hvp differs by {d}");
            }
            let sc = cpu.adam_step(&adam, &lrs, step + 1, &reg).unwrap();
            let sg = gpu.adam_step(&adam, &lrs, step + 1, &reg).unwrap();
            compare_stats(step, &sc, &sg, 2e-2);
            for (l, &n) in counts.iter().enumerate() {
                let d = rel_diff(cpu.layer_params(l).unwrap(), &gpu.layer_params(l).unwrap());
                assert!(
                    d < 1e-3,
                    "{name} step {step} layer {l} params differ by {d}"
                );
                let (mut pc, mut pg) = (vec![0.0_f32; n], vec![0.0_f32; n]);
                cpu.precond_sqrt(l, &adam, step + 1, &mut pc).unwrap();
                gpu.precond_sqrt(l, &adam, step + 1, &mut pg).unwrap();
                // D^½ = 1/sqrt(sqrt(v̂)+ε) amplifies last-bit differences of near-zero
                // gradients (where the backends' summation orders decide the rounding):
                // 99% of the entries must agree within 1e-3, the whole vector within 2e-2.
                let mut rel: Vec<f64> = pc
                    .iter()
                    .zip(&pg)
                    .map(|(a, b)| f64::from((a - b).abs() / a.abs().max(b.abs())))
                    .collect();
                rel.sort_by(f64::total_cmp);
                let p99 = rel[(rel.len() * 99) / 100];
                assert!(
                    p99 < 1e-3,
                    "{name} step {step} layer {l} precond: 99th percentile of entry differences {p99}"
                );
                let d = rel_diff(&pc, &pg);
                assert!(
                    d < 2e-2,
                    "{name} step {step} layer {l} precond differs by {d}"
                );
            }
        }
    }
}

#[test]
fn cuda_hvp_rows_matches_cpu_and_is_the_first_rows_product() {
    for activation in [Activation::Relu, Activation::Crelu] {
        let spec = ModelSpec {
            hidden: vec![48, 40],
            activation,
            ..ModelSpec::default()
        };
        let Some((mut cpu, mut gpu)) = pair(&spec, 6) else {
            return;
        };
        load_both(&mut cpu, &mut gpu, 300, 3, 2);
        let batch = batch_indices(300, 64, 8, 0);
        cpu.forward_backward(&batch, false).unwrap();
        gpu.forward_backward(&batch, false).unwrap();
        for (l, n) in cpu.layer_param_counts().into_iter().enumerate() {
            let v = random_vec(n, 60 + l as u64);
            let hvp_rows = |b: &mut dyn Backend, rows| {
                let mut out = vec![0.0_f32; n];
                b.hvp_rows(l, rows, &v, &mut out).unwrap();
                out
            };
            let mut whole = vec![0.0_f32; n];
            gpu.hvp(l, &v, &mut whole).unwrap();
            for rows in [1, 17, 64] {
                let (hc, hg) = (hvp_rows(&mut cpu, rows), hvp_rows(&mut gpu, rows));
                let d = rel_diff(&hc, &hg);
                assert!(
                    d < 1e-3,
                    "{activation:?} layer {l} rows {rows}: hvp_rows differs by {d}"
                );
                // All the rows are the whole batch's product; fewer rows are another one.
                let same = hg
                    .iter()
                    .zip(&whole)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert_eq!(same, rows == 64, "{activation:?} layer {l} rows {rows}");
            }
            // A sub-batch product leaves the whole batch's forward pass in place.
            let mut again = vec![0.0_f32; n];
            gpu.hvp(l, &v, &mut again).unwrap();
            assert_eq!(again, whole, "{activation:?} layer {l}: hvp after hvp_rows");
            for rows in [0, 65] {
                let mut out = vec![0.0_f32; n];
                assert!(matches!(
                    gpu.hvp_rows(l, rows, &v, &mut out),
                    Err(BackendError::HvpRows { rows: r, batch: 64 }) if r == rows
                ));
            }
        }
    }
}

#[test]
fn cuda_state_round_trips_through_the_cpu_backend() {
    let spec = ModelSpec {
        hidden: vec![32, 16],
        ..ModelSpec::default()
    };
    let Some((mut cpu, mut gpu)) = pair(&spec, 8) else {
        return;
    };
    load_both(&mut cpu, &mut gpu, 200, 3, 0);
    let adam = validated_adam(AdamConfig::default());
    let reg = Regularizer {
        wasserstein: 0.1,
        ..Regularizer::default()
    };
    let lrs = [1e-3_f32; 3];
    // Train the CPU a little, move its state to the GPU, step both identically.
    for t in 1..=5u64 {
        let b = batch_indices(200, 40, 1, t);
        cpu.forward_backward(&b, false).unwrap();
        cpu.adam_step(&adam, &lrs, t, &reg).unwrap();
    }
    let state = cpu.export_state().unwrap();
    gpu.import_state(&state).unwrap();
    let back = gpu.export_state().unwrap();
    assert_eq!(back, state, "GPU export differs from the imported state");
    let b = batch_indices(200, 40, 1, 6);
    cpu.forward_backward(&b, false).unwrap();
    gpu.forward_backward(&b, false).unwrap();
    let sc = cpu.adam_step(&adam, &lrs, 6, &reg).unwrap();
    let sg = gpu.adam_step(&adam, &lrs, 6, &reg).unwrap();
    compare_stats(6, &sc, &sg, 2e-2);
    for l in 0..3 {
        let d = rel_diff(cpu.layer_params(l).unwrap(), &gpu.layer_params(l).unwrap());
        assert!(
            d < 1e-5,
            "layer {l} params differ by {d} after import and one step"
        );
    }
    let mut bad = state.clone();
    bad.v[1][0] = -1.0;
    assert!(matches!(
        gpu.import_state(&bad),
        Err(BackendError::InvalidSpec {
            field: "state v",
            ..
        })
    ));
}

#[test]
fn cuda_rejects_bad_inputs_like_cpu() {
    let spec = ModelSpec {
        hidden: vec![16],
        ..ModelSpec::default()
    };
    let Some((_, mut gpu)) = pair(&spec, 1) else {
        return;
    };
    assert!(matches!(
        gpu.forward_backward(&[0], false),
        Err(BackendError::NoTask)
    ));
    assert!(matches!(gpu.evaluate(), Err(BackendError::NoTask)));
    let (images, mut labels) = random_label_task(20, 1, 0);
    labels[3] = 10;
    assert!(matches!(
        gpu.load_task(&images, &labels),
        Err(BackendError::LabelOutOfRange { index: 3, .. })
    ));
    labels[3] = 1;
    gpu.load_task(&images, &labels).unwrap();
    assert!(matches!(
        gpu.forward_backward(&[], false),
        Err(BackendError::EmptyBatch)
    ));
    assert!(matches!(
        gpu.forward_backward(&[20], false),
        Err(BackendError::IndexOutOfRange {
            index: 20,
            examples: 20
        })
    ));
    let n = gpu.layer_param_counts()[0];
    let mut out = vec![0.0_f32; n];
    assert!(matches!(
        gpu.hvp(0, &vec![0.0; n], &mut out),
        Err(BackendError::NoBatch { .. })
    ));
    let adam = validated_adam(AdamConfig::default());
    assert!(matches!(
        gpu.adam_step(&adam, &[1e-3, 1e-3], 1, &Regularizer::default()),
        Err(BackendError::NoBatch { .. })
    ));
    gpu.forward_backward(&[0, 1, 2], false).unwrap();
    assert!(matches!(
        gpu.hvp(5, &[], &mut []),
        Err(BackendError::LayerOutOfRange {
            layer: 5,
            layers: 2
        })
    ));
    assert!(matches!(
        gpu.hvp(0, &[0.0; 3], &mut out),
        Err(BackendError::LengthMismatch { what: "v", .. })
    ));
    assert!(matches!(
        gpu.adam_step(&adam, &[1e-3, -1.0], 1, &Regularizer::default()),
        Err(BackendError::BadLearningRate { layer: 1, .. })
    ));
    assert!(matches!(
        gpu.adam_step(&adam, &[1e-3], 1, &Regularizer::default()),
        Err(BackendError::LengthMismatch { what: "lrs", .. })
    ));
    gpu.adam_step(&adam, &[1e-3, 1e-3], 1, &Regularizer::default())
        .unwrap();
    let e = gpu.evaluate().unwrap();
    assert_eq!(e.count, 20);
}
