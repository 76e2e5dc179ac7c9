//! The CPU engine on the embedded real digits, at the default model's shapes (where GEMM
//! blocking and threading actually kick in).

use safestep_core::adam::{Adam, AdamConfig};
use safestep_engine::{Backend, CpuBackend, ModelSpec, Regularizer};

fn default_adam() -> Adam<f32> {
    Adam::new(AdamConfig::default()).unwrap()
}

#[test]
fn default_model_is_deterministic_with_threads() {
    // The real shapes, where GEMM blocking and threading actually kick in.
    let spec = ModelSpec::default();
    let mnist = safestep_host::data::Mnist::embedded().unwrap();
    let run = |threads: usize| {
        let mut cpu = CpuBackend::new(&spec, 3)
            .unwrap()
            .with_threads(threads)
            .unwrap();
        cpu.load_task(&mnist.images[..300 * 784], &mnist.labels[..300])
            .unwrap();
        let adam = default_adam();
        let b: Vec<u32> = (0..256).collect();
        let mut bits = Vec::new();
        for t in 1..=3 {
            let out = cpu.forward_backward(&b, true).unwrap();
            bits.push(out.loss.to_bits());
            bits.extend(
                out.layers
                    .iter()
                    .map(|s| s.sum_sample_sq_norms.unwrap().to_bits()),
            );
            cpu.adam_step(&adam, &[1e-3; 3], t, &Regularizer::default())
                .unwrap();
        }
        bits.extend(
            cpu.layer_params(0)
                .unwrap()
                .iter()
                .map(|v| v.to_bits() as u64),
        );
        bits
    };
    let one = run(1);
    assert_eq!(one, run(1));
    assert_eq!(run(2), run(2));
    // Threads only split output rows: the arithmetic per element is unchanged.
    assert_eq!(one, run(2));
}

#[test]
fn training_reduces_the_loss_on_real_digits() {
    let spec = ModelSpec {
        hidden: vec![32, 32],
        ..ModelSpec::default()
    };
    let mnist = safestep_host::data::Mnist::embedded().unwrap();
    let n = 200;
    let mut cpu = CpuBackend::new(&spec, 1).unwrap();
    cpu.load_task(&mnist.images[..n * 784], &mnist.labels[..n])
        .unwrap();
    let before = cpu.evaluate().unwrap();
    let adam = default_adam();
    let mut t = 0;
    for _epoch in 0..10 {
        for start in (0..n).step_by(50) {
            t += 1;
            let b: Vec<u32> = (start as u32..(start + 50) as u32).collect();
            cpu.forward_backward(&b, false).unwrap();
            cpu.adam_step(&adam, &[3e-3; 3], t, &Regularizer::default())
                .unwrap();
        }
    }
    let after = cpu.evaluate().unwrap();
    assert!(after.loss < 0.5 * before.loss, "{before:?} -> {after:?}");
    assert!(after.accuracy() > 0.9, "{after:?}");
}
