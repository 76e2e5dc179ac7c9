//! CPU engine against independent references on tiny networks: a naive f64 MLP (loops, no
//! GEMM) checked itself against finite differences, materialised per-sample gradients, and
//! central differences of the gradient for the Hessian-vector products; plus bit-identical
//! determinism and the error paths.
#![allow(clippy::needless_range_loop)] // finite differences index parameters directly

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safestep_core::adam::{Adam, AdamConfig, WeightDecay};
use safestep_engine::reference::ReferenceMlp;
use safestep_engine::{
    Activation, Backend, BackendError, CpuBackend, LayerShape, Loss, ModelSpec, Norm, Regularizer,
};

/// Adam at its defaults.
fn default_adam() -> Adam<f32> {
    Adam::new(AdamConfig::default()).unwrap()
}

const B: usize = 7;
const N: usize = 11;

/// Every activation, without and with LayerNorm.
const CASES: [(Activation, Norm); 4] = [
    (Activation::Relu, Norm::None),
    (Activation::Crelu, Norm::None),
    (Activation::Relu, Norm::Layer),
    (Activation::Crelu, Norm::Layer),
];

fn spec(act: Activation, norm: Norm) -> ModelSpec {
    ModelSpec {
        input: 6,
        hidden: vec![5, 4],
        classes: 3,
        activation: act,
        crelu_match_params: false,
        loss: Loss::CrossEntropy,
        norm,
    }
}

fn task(seed: u64, n: usize, input: usize, classes: usize) -> (Vec<f32>, Vec<u8>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let x = (0..n * input).map(|_| rng.random::<f32>()).collect();
    let y = (0..n).map(|_| rng.random_range(0..classes as u8)).collect();
    (x, y)
}

fn batch() -> Vec<u32> {
    vec![3, 0, 7, 10, 5, 3, 1]
}

/// The engine's parameters, as seen by the shared f64 reference MLP.
#[derive(Clone)]
struct Reference {
    shapes: Vec<LayerShape>,
    act: Activation,
    norm: Norm,
    params: Vec<Vec<f64>>,
}

impl Reference {
    fn of(cpu: &CpuBackend) -> Self {
        let shapes = cpu.shapes().to_vec();
        let params = (0..shapes.len())
            .map(|l| {
                cpu.layer_params(l)
                    .unwrap()
                    .iter()
                    .map(|&p| p as f64)
                    .collect()
            })
            .collect();
        Reference {
            shapes,
            act: cpu.spec().activation,
            norm: cpu.spec().norm,
            params,
        }
    }

    fn mlp<'a>(&'a self, x: &'a [f32], y: &'a [u8]) -> ReferenceMlp<'a> {
        ReferenceMlp {
            shapes: &self.shapes,
            activation: self.act,
            norm: self.norm,
            params: &self.params,
            x,
            y,
        }
    }

    /// Per-sample loss and per-layer gradient (weights row-major, then bias).
    fn sample(&self, x: &[f32], y: usize) -> (f64, Vec<Vec<f64>>) {
        let y = [y as u8];
        self.mlp(x, &y).loss_and_grads()
    }

    /// Mean loss and gradient over the examples `idx`.
    fn mean(&self, xs: &[f32], ys: &[u8], idx: &[u32]) -> (f64, Vec<Vec<f64>>) {
        let input = self.shapes[0].fan_in;
        let x: Vec<f32> = idx
            .iter()
            .flat_map(|&i| {
                xs[i as usize * input..(i as usize + 1) * input]
                    .iter()
                    .copied()
            })
            .collect();
        let y: Vec<u8> = idx.iter().map(|&i| ys[i as usize]).collect();
        self.mlp(&x, &y).loss_and_grads()
    }
}

fn setup(act: Activation, norm: Norm, seed: u64) -> (CpuBackend, Vec<f32>, Vec<u8>) {
    let s = spec(act, norm);
    let mut cpu = CpuBackend::new(&s, seed).unwrap();
    let (x, y) = task(seed + 100, N, s.input, s.classes);
    cpu.load_task(&x, &y).unwrap();
    (cpu, x, y)
}

fn rel_err(a: &[f64], b: &[f64]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).powi(2))
        .sum::<f64>()
        .sqrt();
    let norm: f64 = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    diff / norm.max(1e-12)
}

#[test]
fn reference_gradient_matches_finite_differences() {
    for (act, norm) in CASES {
        let (cpu, x, y) = setup(act, norm, 1);
        let mut r = Reference::of(&cpu);
        let (_, g) = r.mean(&x, &y, &batch());
        let h = 1e-6;
        for l in 0..r.params.len() {
            for k in 0..r.params[l].len() {
                let p0 = r.params[l][k];
                r.params[l][k] = p0 + h;
                let (lp, _) = r.mean(&x, &y, &batch());
                r.params[l][k] = p0 - h;
                let (lm, _) = r.mean(&x, &y, &batch());
                r.params[l][k] = p0;
                let fd = (lp - lm) / (2.0 * h);
                assert!(
                    (fd - g[l][k]).abs() < 1e-6 + 1e-5 * fd.abs(),
                    "{act}/{norm} layer {l} param {k}: fd {fd} vs {}",
                    g[l][k]
                );
            }
        }
    }
}

#[test]
fn engine_loss_and_gradient_match_reference() {
    for (act, norm) in CASES {
        let (mut cpu, x, y) = setup(act, norm, 2);
        let r = Reference::of(&cpu);
        let (loss, g) = r.mean(&x, &y, &batch());
        let out = cpu.forward_backward(&batch(), false).unwrap();
        assert!(
            (out.loss - loss).abs() < 1e-5,
            "{act}/{norm}: {} vs {loss}",
            out.loss
        );
        assert_eq!(out.batch, B);
        assert!(out.layers.iter().all(|s| s.sum_sample_sq_norms.is_none()));
        for l in 0..g.len() {
            let eg: Vec<f64> = cpu
                .layer_grad(l)
                .unwrap()
                .iter()
                .map(|&v| v as f64)
                .collect();
            assert!(rel_err(&eg, &g[l]) < 1e-5, "{act}/{norm} layer {l}");
            let sq: f64 = g[l].iter().map(|v| v * v).sum();
            assert!((out.layers[l].mean_grad_sq - sq).abs() < 1e-5 * sq + 1e-12);
        }
        // Correct count against the reference logits' arg-max is implied by evaluate below.
        let full: Vec<u32> = (0..N as u32).collect();
        let (full_loss, _) = r.mean(&x, &y, &full);
        let ev = cpu.evaluate().unwrap();
        assert_eq!(ev.count, N);
        assert!((ev.loss - full_loss).abs() < 1e-5);
        assert!((cpu.batch_loss(&full).unwrap() - full_loss).abs() < 1e-5);
    }
}

#[test]
fn per_sample_norms_match_materialised_per_sample_gradients() {
    for (act, norm) in CASES {
        let (mut cpu, x, y) = setup(act, norm, 3);
        let r = Reference::of(&cpu);
        let input = cpu.spec().input;
        let layers = cpu.shapes().len();
        // Materialise every per-sample gradient twice: with the engine on one-sample batches
        // and with the f64 reference.
        let mut engine_sum = vec![0.0f64; layers];
        let mut ref_sum = vec![0.0f64; layers];
        for &i in &batch() {
            cpu.forward_backward(&[i], false).unwrap();
            for (l, s) in engine_sum.iter_mut().enumerate() {
                *s += cpu
                    .layer_grad(l)
                    .unwrap()
                    .iter()
                    .map(|&v| (v as f64).powi(2))
                    .sum::<f64>();
            }
            let iu = i as usize;
            let (_, g) = r.sample(&x[iu * input..(iu + 1) * input], y[iu] as usize);
            for (l, s) in ref_sum.iter_mut().enumerate() {
                *s += g[l].iter().map(|v| v * v).sum::<f64>();
            }
        }
        let out = cpu.forward_backward(&batch(), true).unwrap();
        let got: Vec<f64> = out
            .layers
            .iter()
            .map(|s| s.sum_sample_sq_norms.unwrap())
            .collect();
        for l in 0..layers {
            assert!(
                (got[l] - ref_sum[l]).abs() < 1e-5 * ref_sum[l],
                "{act}/{norm} layer {l}: {} vs reference {}",
                got[l],
                ref_sum[l]
            );
            assert!((got[l] - engine_sum[l]).abs() < 1e-5 * engine_sum[l]);
            // Σ‖g_i‖² ≥ B‖ḡ‖² (variance is non-negative).
            assert!(got[l] >= B as f64 * out.layers[l].mean_grad_sq * (1.0 - 1e-6));
        }
    }
}

#[test]
fn hvp_matches_central_differences_of_the_gradient() {
    for (act, norm) in CASES {
        let (mut cpu, x, y) = setup(act, norm, 4);
        cpu.forward_backward(&batch(), false).unwrap();
        let base = Reference::of(&cpu);
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for l in 0..base.params.len() {
            let n = base.params[l].len();
            let v: Vec<f32> = (0..n).map(|_| rng.random::<f32>() - 0.5).collect();
            let mut hv = vec![0.0f32; n];
            cpu.hvp(l, &v, &mut hv).unwrap();
            let eps = 1e-5;
            let grad_at = |sign: f64| {
                let mut r = base.clone();
                for (p, &vi) in r.params[l].iter_mut().zip(&v) {
                    *p += sign * eps * vi as f64;
                }
                r.mean(&x, &y, &batch()).1
            };
            let (gp, gm) = (grad_at(1.0), grad_at(-1.0));
            let fd: Vec<f64> = gp[l]
                .iter()
                .zip(&gm[l])
                .map(|(a, b)| (a - b) / (2.0 * eps))
                .collect();
            let got: Vec<f64> = hv.iter().map(|&v| v as f64).collect();
            let e = rel_err(&got, &fd);
            assert!(e < 1e-4, "{act}/{norm} layer {l}: relative error {e}");
            // Symmetry of the block: uᵀ(Hv) = vᵀ(Hu).
            let u: Vec<f32> = (0..n).map(|_| rng.random::<f32>() - 0.5).collect();
            let mut hu = vec![0.0f32; n];
            cpu.hvp(l, &u, &mut hu).unwrap();
            let uhv: f64 = u.iter().zip(&hv).map(|(&a, &b)| a as f64 * b as f64).sum();
            let vhu: f64 = v.iter().zip(&hu).map(|(&a, &b)| a as f64 * b as f64).sum();
            assert!(
                (uhv - vhu).abs() < 1e-4 * (uhv.abs() + vhu.abs() + 1e-9),
                "{act}/{norm} layer {l}"
            );
        }
    }
}

/// A few training steps with every feature on: sample norms, HVPs, preconditioner,
/// Wasserstein, evaluation. Returns all parameters and every statistic as bits.
fn trajectory(act: Activation, norm: Norm, seed: u64, threads: usize) -> Vec<u64> {
    trajectory_with(&spec(act, norm), B, N, seed, threads, true)
}

/// [`trajectory`] of the model `s` on minibatches of `batch` out of `examples` examples.
fn trajectory_with(
    s: &ModelSpec,
    batch: usize,
    examples: usize,
    seed: u64,
    threads: usize,
    flush: bool,
) -> Vec<u64> {
    let mut cpu = CpuBackend::new(s, seed)
        .unwrap()
        .with_threads(threads)
        .unwrap()
        .with_flush_denormals(flush)
        .unwrap();
    let (x, y) = task(seed, examples, s.input, s.classes);
    match s.loss {
        Loss::CrossEntropy => cpu.load_task(&x, &y).unwrap(),
        Loss::SquaredError => {
            let targets: Vec<f32> = (0..examples * s.classes)
                .map(|i| ((i * 7) % 11) as f32 / 11.0 - 0.5)
                .collect();
            cpu.load_regression_task(&x, &targets).unwrap()
        }
    }
    let adam = default_adam();
    let reg = Regularizer {
        wasserstein: 0.01,
        ..Regularizer::default()
    };
    let mut bits = Vec::new();
    let layers = cpu.shapes().len();
    for t in 1..=6u64 {
        let b: Vec<u32> = (0..batch as u32)
            .map(|k| (k * 3 + t as u32) % examples as u32)
            .collect();
        let out = cpu.forward_backward(&b, t % 2 == 0).unwrap();
        bits.push(out.loss.to_bits());
        bits.push(out.correct as u64);
        bits.extend(out.layers.iter().map(|s| s.mean_grad_sq.to_bits()));
        bits.extend(
            out.layers
                .iter()
                .filter_map(|s| s.sum_sample_sq_norms)
                .map(|v| v.to_bits()),
        );
        for l in 0..layers {
            let n = cpu.layer_param_counts()[l];
            let v = vec![0.5f32; n];
            let mut hv = vec![0.0f32; n];
            cpu.hvp(l, &v, &mut hv).unwrap();
            bits.extend(hv.iter().map(|v| v.to_bits() as u64));
            // `precond_sqrt` writes its own output: a buffer of its own, so the HVP's bits
            // above are not lost.
            let mut d = vec![0.0f32; n];
            cpu.precond_sqrt(l, &adam, t, &mut d).unwrap();
            bits.extend(d.iter().map(|v| v.to_bits() as u64));
        }
        let stats = cpu.adam_step(&adam, &[1e-2, 2e-2, 3e-2], t, &reg).unwrap();
        bits.extend(stats.iter().map(|s| s.sum_v_hat.to_bits()));
    }
    for l in 0..layers {
        bits.extend(
            cpu.layer_params(l)
                .unwrap()
                .iter()
                .map(|v| v.to_bits() as u64),
        );
    }
    bits.push(cpu.evaluate().unwrap().loss.to_bits());
    bits
}

#[test]
fn one_seed_gives_bit_identical_results() {
    for (act, norm) in CASES {
        for threads in [1, 2] {
            let a = trajectory(act, norm, 5, threads);
            assert_eq!(
                a,
                trajectory(act, norm, 5, threads),
                "{act}/{norm} threads {threads}"
            );
            assert_ne!(a, trajectory(act, norm, 6, threads), "{act}/{norm}");
            // Flushing subnormals changes nothing where none arise.
            assert_eq!(
                a,
                trajectory_with(&spec(act, norm), B, N, 5, threads, false),
                "{act}/{norm} no flush"
            );
        }
        // Any thread count: the same bits.
        assert_eq!(
            trajectory(act, norm, 5, 1),
            trajectory(act, norm, 5, 2),
            "{act}/{norm} 1 vs 2 threads"
        );
    }
}

/// Whole steps ([`trajectory_with`]: batch 96 of 150 examples) of a model with `input`
/// inputs and `hidden` widths (12 classes), for every case and both losses, give the same
/// bits on 2, 3 and 4 threads as on one.
fn threads_give_the_one_thread_bits(input: usize, hidden: &[usize]) {
    for (act, norm) in CASES {
        for loss in [Loss::CrossEntropy, Loss::SquaredError] {
            let s = ModelSpec {
                input,
                hidden: hidden.to_vec(),
                classes: 12,
                loss,
                ..spec(act, norm)
            };
            let one = trajectory_with(&s, 96, 150, 3, 1, true);
            for threads in [2, 3, 4] {
                assert_eq!(
                    one,
                    trajectory_with(&s, 96, 150, 3, threads, true),
                    "{act}/{norm}/{loss:?}: 1 vs {threads} threads"
                );
            }
        }
    }
}

/// Large enough that 2, 3 and 4 threads cut the minibatch into row bands (every product
/// of a band keeps `band·n > 256`, see `gemm::row_bands`) and the weight gradients by
/// output units: the banded passes give the one-thread bits, for both losses. The bands'
/// 48, 32 and 24 rows also take the column-major forward products (`gemm::by_columns`)
/// that one thread's 96 rows do not, so this compares the two orientations in whole steps.
#[test]
fn row_bands_give_the_one_thread_bits() {
    threads_give_the_one_thread_bits(64, &[48, 40]);
}

/// With a first layer wide enough (`gemm::splits_by_columns`), a team computes its product
/// for the whole minibatch in bands of output units before the row bands go on
/// (`pass::whole_by_columns`), in the training step, the evaluation and the
/// Hessian-vector products' forward pass. Its fan-in of 600 crosses the `gemm` crate's
/// depth-block edge: still the one-thread bits.
#[test]
fn first_layer_column_bands_give_the_one_thread_bits() {
    threads_give_the_one_thread_bits(600, &[128, 40]);
}

/// `hvp_rows(l, r, …)` is the HVP of the first `r` rows' mean loss: bit for bit the `hvp`
/// after a `forward_backward` on those rows alone (every pass is row-local), on 1 and 2
/// threads; and a different product from the whole batch's. Row counts outside
/// `1..=batch` are refused, naming both.
#[test]
fn hvp_rows_is_the_hvp_of_the_first_rows() {
    for (act, norm) in CASES {
        for threads in [1, 2] {
            let (cpu, _, _) = setup(act, norm, 9);
            let (mut part, _, _) = setup(act, norm, 9);
            let mut cpu = cpu.with_threads(threads).unwrap();
            let rows = 4;
            cpu.forward_backward(&batch(), false).unwrap();
            part.forward_backward(&batch()[..rows], false).unwrap();
            for l in 0..cpu.shapes().len() {
                let n = cpu.layer_param_counts()[l];
                let v: Vec<f32> = (0..n).map(|i| (i % 7) as f32 / 7.0 - 0.4).collect();
                let (mut got, mut want, mut whole) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
                cpu.hvp_rows(l, rows, &v, &mut got).unwrap();
                part.hvp(l, &v, &mut want).unwrap();
                cpu.hvp(l, &v, &mut whole).unwrap();
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(
                    bits(&got),
                    bits(&want),
                    "{act}/{norm} layer {l}, {threads} threads"
                );
                assert_ne!(bits(&got), bits(&whole), "{act}/{norm} layer {l}");
                let mut same = vec![0.0; n];
                cpu.hvp_rows(l, B, &v, &mut same).unwrap();
                assert_eq!(bits(&same), bits(&whole), "all rows: the whole batch's HVP");
            }
            let n = cpu.layer_param_counts()[0];
            let mut out = vec![0.0; n];
            for bad in [0, B + 1] {
                assert!(matches!(
                    cpu.hvp_rows(0, bad, &vec![0.0; n], &mut out),
                    Err(BackendError::HvpRows { rows, batch: B }) if rows == bad
                ));
            }
        }
    }
}

#[test]
fn regulariser_changes_the_step_not_the_statistics() {
    let (mut a, _, _) = setup(Activation::Relu, Norm::None, 7);
    let (mut b, _, _) = setup(Activation::Relu, Norm::None, 7);
    let adam = default_adam();
    for t in 1..=3 {
        let oa = a.forward_backward(&batch(), true).unwrap();
        let ob = b.forward_backward(&batch(), true).unwrap();
        if t == 1 {
            assert_eq!(oa, ob);
        }
        a.adam_step(&adam, &[0.01; 3], t, &Regularizer::default())
            .unwrap();
        b.adam_step(
            &adam,
            &[0.01; 3],
            t,
            &Regularizer {
                wasserstein: 10.0,
                ..Regularizer::default()
            },
        )
        .unwrap();
    }
    assert_ne!(a.layer_params(0).unwrap(), b.layer_params(0).unwrap());
}

#[test]
fn errors_name_the_bad_input() {
    let (mut cpu, _, _) = setup(Activation::Relu, Norm::None, 8);
    let n = cpu.layer_param_counts()[1];
    let mut out = vec![0.0f32; n];
    assert!(matches!(
        cpu.hvp(1, &vec![0.0; n], &mut out),
        Err(BackendError::NoBatch { what: "hvp" })
    ));
    assert!(matches!(
        cpu.forward_backward(&[0, 11], false),
        Err(BackendError::IndexOutOfRange {
            index: 11,
            examples: 11
        })
    ));
    assert!(matches!(
        cpu.forward_backward(&[], false),
        Err(BackendError::EmptyBatch)
    ));
    let adam = default_adam();
    assert!(matches!(
        cpu.adam_step(&adam, &[0.1; 3], 1, &Regularizer::default()),
        Err(BackendError::NoBatch { .. })
    ));
    cpu.forward_backward(&batch(), false).unwrap();
    assert!(matches!(
        cpu.hvp(3, &[], &mut []),
        Err(BackendError::LayerOutOfRange {
            layer: 3,
            layers: 3
        })
    ));
    assert!(matches!(
        cpu.hvp(1, &vec![0.0; n - 1], &mut out),
        Err(BackendError::LengthMismatch { what: "v", .. })
    ));
    let before = cpu.layer_params(0).unwrap().to_vec();
    assert!(matches!(
        cpu.adam_step(&adam, &[0.1, f32::NAN, 0.1], 1, &Regularizer::default()),
        Err(BackendError::BadLearningRate { layer: 1, .. })
    ));
    assert!(matches!(
        cpu.adam_step(&adam, &[0.1; 2], 1, &Regularizer::default()),
        Err(BackendError::LengthMismatch { what: "lrs", .. })
    ));
    assert!(matches!(
        cpu.adam_step(&adam, &[0.1; 3], 0, &Regularizer::default()),
        Err(BackendError::Optimizer { .. })
    ));
    assert_eq!(cpu.layer_params(0).unwrap(), &before[..]);
    cpu.adam_step(&adam, &[0.1; 3], 1, &Regularizer::default())
        .unwrap();
    // The step consumed the batch: HVPs on stale activations are refused.
    assert!(matches!(
        cpu.hvp(1, &vec![0.0; n], &mut out),
        Err(BackendError::NoBatch { .. })
    ));
    assert!(matches!(
        cpu.load_task(&[0.5; 12], &[0, 7]),
        Err(BackendError::LabelOutOfRange {
            label: 7,
            index: 1,
            classes: 3
        })
    ));
    assert!(matches!(
        cpu.load_task(&[0.5; 11], &[0, 1]),
        Err(BackendError::LengthMismatch { what: "images", .. })
    ));
    let mut bad = vec![0.5f32; 12];
    bad[4] = f32::NAN;
    assert!(matches!(
        cpu.load_task(&bad, &[0, 1]),
        Err(BackendError::NonFiniteInput { index: 4, .. })
    ));
    assert!(CpuBackend::new(&spec(Activation::Relu, Norm::None), 1)
        .unwrap()
        .with_threads(0)
        .is_err());
}

#[test]
fn non_finite_gradients_are_refused_without_touching_the_model() {
    let (mut cpu, _, _) = setup(Activation::Relu, Norm::None, 9);
    let mut w = cpu.layer_params(2).unwrap().to_vec();
    w.iter_mut().for_each(|x| *x = 3e38);
    cpu.set_layer_params(2, &w).unwrap();
    let mut huge = cpu.layer_params(1).unwrap().to_vec();
    huge.iter_mut().for_each(|x| *x = 3e38);
    cpu.set_layer_params(1, &huge).unwrap();
    let out = cpu.forward_backward(&batch(), false).unwrap();
    assert!(
        out.layers.iter().any(|s| !s.mean_grad_sq.is_finite()),
        "{out:?}"
    );
    let before: Vec<Vec<f32>> = (0..3)
        .map(|l| cpu.layer_params(l).unwrap().to_vec())
        .collect();
    let err = cpu
        .adam_step(&default_adam(), &[0.1; 3], 1, &Regularizer::default())
        .unwrap_err();
    assert!(matches!(err, BackendError::Optimizer { .. }), "{err}");
    for (l, b) in before.iter().enumerate() {
        assert_eq!(cpu.layer_params(l).unwrap(), &b[..]);
    }
    assert!(matches!(
        cpu.set_layer_params(0, &vec![f32::INFINITY; cpu.layer_param_counts()[0]]),
        Err(BackendError::NonFiniteInput { index: 0, .. })
    ));
}

/// After the state is written from outside (`set_layer_params`, `import_state`), the next
/// step checks the new values in full. The bounds the last step left would prove both
/// steps below finite, and each would then write infinities.
#[test]
fn state_written_from_outside_is_checked_in_full() {
    let (mut cpu, _, _) = setup(Activation::Relu, Norm::None, 5);
    let reg = Regularizer::default();
    for t in 1..=3 {
        cpu.forward_backward(&batch(), false).unwrap();
        cpu.adam_step(&default_adam(), &[1e-3; 3], t, &reg).unwrap();
    }
    let fresh = cpu.export_state().unwrap();

    // Weights of 1e10 under coupled L2 of 1e10: g + λθ = 1e20, whose square is beyond f32.
    let big = vec![1e10f32; cpu.layer_param_counts()[0]];
    cpu.set_layer_params(0, &big).unwrap();
    let out = cpu.forward_backward(&batch(), false).unwrap();
    assert!(
        out.layers.iter().all(|s| s.mean_grad_sq.is_finite()),
        "{out:?}"
    );
    let l2 = Adam::new(AdamConfig {
        weight_decay: WeightDecay::CoupledL2(1e10),
        ..AdamConfig::default()
    })
    .unwrap();
    let err = cpu.adam_step(&l2, &[1e-3; 3], 4, &reg).unwrap_err();
    assert!(
        matches!(err, BackendError::Optimizer { layer: 0, .. }),
        "{err}"
    );
    assert_eq!(cpu.layer_params(0).unwrap(), &big[..]);

    // First moments of 3e38 with second moments of 0: the step m/(sqrt(v̂)+ε) overflows.
    cpu.import_state(&fresh).unwrap();
    for t in 4..=5 {
        cpu.forward_backward(&batch(), false).unwrap();
        cpu.adam_step(&default_adam(), &[1e-3; 3], t, &reg).unwrap();
    }
    let mut wild = fresh.clone();
    wild.m[2].fill(3e38);
    wild.v[2].fill(0.0);
    cpu.import_state(&wild).unwrap();
    cpu.forward_backward(&batch(), false).unwrap();
    let err = cpu
        .adam_step(&default_adam(), &[1e-3; 3], 6, &reg)
        .unwrap_err();
    assert!(
        matches!(err, BackendError::Optimizer { layer: 2, .. }),
        "{err}"
    );
    assert_eq!(cpu.export_state().unwrap(), wild);
}

#[test]
fn exported_state_continues_bit_identically() {
    let s = spec(Activation::Crelu, Norm::None);
    let (x, y) = task(3, N, s.input, s.classes);
    let adam = default_adam();
    let reg = Regularizer {
        wasserstein: 0.1,
        ..Regularizer::default()
    };
    let steps = |cpu: &mut CpuBackend, from: u64| -> Vec<u32> {
        let mut bits = Vec::new();
        for t in from..from + 3 {
            let b: Vec<u32> = (0..B as u32)
                .map(|k| (k * 5 + t as u32) % N as u32)
                .collect();
            bits.push(cpu.forward_backward(&b, true).unwrap().loss.to_bits() as u32);
            cpu.adam_step(&adam, &[0.01; 3], t, &reg).unwrap();
        }
        for l in 0..3 {
            bits.extend(cpu.layer_params(l).unwrap().iter().map(|v| v.to_bits()));
        }
        bits
    };
    let mut a = CpuBackend::new(&s, 1).unwrap();
    a.load_task(&x, &y).unwrap();
    steps(&mut a, 1);
    let state = a.export_state().unwrap();
    let want = steps(&mut a, 4);

    let mut b = CpuBackend::new(&s, 99).unwrap();
    b.load_task(&x, &y).unwrap();
    b.import_state(&state).unwrap();
    assert_eq!(steps(&mut b, 4), want);

    // Mismatched or corrupt snapshots are refused and change nothing.
    let before = b.export_state().unwrap();
    let mut bad = state.clone();
    bad.m[1].pop();
    assert!(matches!(
        b.import_state(&bad),
        Err(BackendError::LengthMismatch {
            what: "state m",
            ..
        })
    ));
    let mut bad = state.clone();
    bad.params.pop();
    assert!(b.import_state(&bad).is_err());
    let mut bad = state;
    bad.v[0][3] = -1.0;
    assert!(b.import_state(&bad).is_err());
    assert_eq!(b.export_state().unwrap(), before);
}

#[test]
fn network_hvp_matches_central_differences_of_the_whole_gradient() {
    for (act, norm) in CASES {
        let (mut cpu, x, y) = setup(act, norm, 12);
        cpu.forward_backward(&batch(), false).unwrap();
        let base = Reference::of(&cpu);
        let mut rng = ChaCha8Rng::seed_from_u64(21);
        let v: Vec<Vec<f32>> = base
            .params
            .iter()
            .map(|p| (0..p.len()).map(|_| rng.random::<f32>() - 0.5).collect())
            .collect();
        let mut hv: Vec<Vec<f32>> = v.iter().map(|p| vec![0.0; p.len()]).collect();
        cpu.hvp_network(&v, &mut hv).unwrap();
        let eps = 1e-5;
        let grad_at = |sign: f64| {
            let mut r = base.clone();
            for (pl, vl) in r.params.iter_mut().zip(&v) {
                for (p, &vi) in pl.iter_mut().zip(vl) {
                    *p += sign * eps * vi as f64;
                }
            }
            r.mean(&x, &y, &batch()).1
        };
        let (gp, gm) = (grad_at(1.0), grad_at(-1.0));
        let fd: Vec<f64> = gp
            .iter()
            .flatten()
            .zip(gm.iter().flatten())
            .map(|(a, b)| (a - b) / (2.0 * eps))
            .collect();
        let got: Vec<f64> = hv.iter().flatten().map(|&x| x as f64).collect();
        let e = rel_err(&got, &fd);
        assert!(e < 1e-4, "{act}/{norm}: relative error {e}");
        // The diagonal blocks agree with the block products.
        for (l, vl) in v.iter().enumerate() {
            let mut block = vec![0.0f32; vl.len()];
            let mut only = v.iter().map(|p| vec![0.0f32; p.len()]).collect::<Vec<_>>();
            only[l].clone_from(vl);
            let mut full = only
                .iter()
                .map(|p| vec![0.0f32; p.len()])
                .collect::<Vec<_>>();
            cpu.hvp(l, vl, &mut block).unwrap();
            cpu.hvp_network(&only, &mut full).unwrap();
            let (a, b): (Vec<f64>, Vec<f64>) = (
                block.iter().map(|&x| x as f64).collect(),
                full[l].iter().map(|&x| x as f64).collect(),
            );
            assert!(rel_err(&a, &b) < 1e-5, "{act}/{norm} layer {l}");
        }
    }
}

#[test]
fn hidden_pre_activations_match_the_reference_and_keep_the_batch() {
    let (mut cpu, x, _) = setup(Activation::Relu, Norm::None, 13);
    cpu.forward_backward(&batch(), false).unwrap();
    let z = cpu.hidden_pre_activations(&[2, 5]).unwrap();
    assert_eq!(z.len(), 2);
    let r = Reference::of(&cpu);
    for (row, &i) in [2usize, 5].iter().enumerate() {
        // z of the first hidden layer by hand: W x + b.
        let s = r.shapes[0];
        for j in 0..s.fan_out {
            let want: f64 = r.params[0][s.weights() + j]
                + (0..s.fan_in)
                    .map(|k| r.params[0][j * s.fan_in + k] * x[i * s.fan_in + k] as f64)
                    .sum::<f64>();
            assert!((z[0][row * s.fan_out + j] as f64 - want).abs() < 1e-5);
        }
    }
    // The training batch is intact: an HVP still works.
    let n = cpu.layer_param_counts()[0];
    cpu.hvp(0, &vec![0.1; n], &mut vec![0.0; n]).unwrap();
}

/// With LayerNorm the hidden pre-activations reported are the normalised ones (the
/// nonlinearity's input): per example, mean 0 and variance 1 (up to ε), and exactly LN of
/// `W x + b` by hand for the first layer.
#[test]
fn layer_norm_pre_activations_have_zero_mean_and_unit_variance() {
    for act in [Activation::Relu, Activation::Crelu] {
        let (mut cpu, x, _) = setup(act, Norm::Layer, 17);
        let rows: Vec<u32> = (0..N as u32).collect();
        let u = cpu.hidden_pre_activations(&rows).unwrap();
        let r = Reference::of(&cpu);
        for (l, ul) in u.iter().enumerate() {
            let w = r.shapes[l].fan_out;
            assert_eq!(ul.len(), N * w);
            for row in ul.chunks_exact(w) {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / w as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / w as f64;
                assert!(mean.abs() < 1e-6, "{act} layer {l}: mean {mean}");
                assert!((var - 1.0).abs() < 1e-3, "{act} layer {l}: variance {var}");
            }
        }
        let s = r.shapes[0];
        for i in 0..N {
            let z: Vec<f64> = (0..s.fan_out)
                .map(|j| {
                    r.params[0][s.weights() + j]
                        + (0..s.fan_in)
                            .map(|k| r.params[0][j * s.fan_in + k] * x[i * s.fan_in + k] as f64)
                            .sum::<f64>()
                })
                .collect();
            let n = s.fan_out as f64;
            let mean = z.iter().sum::<f64>() / n;
            let var = z.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
            for j in 0..s.fan_out {
                let want = (z[j] - mean) / (var + 1e-5).sqrt();
                let got = u[0][i * s.fan_out + j] as f64;
                assert!(
                    (got - want).abs() < 1e-5,
                    "{act} [{i}, {j}]: {got} vs {want}"
                );
            }
        }
    }
}

#[test]
fn reinit_units_redraws_inputs_zeroes_outputs_and_their_moments_only() {
    for (act, norm) in CASES {
        let (mut cpu, _, _) = setup(act, norm, 14);
        let adam = default_adam();
        for t in 1..=3 {
            cpu.forward_backward(&batch(), false).unwrap();
            cpu.adam_step(&adam, &[0.01; 3], t, &Regularizer::default())
                .unwrap();
        }
        let before = cpu.export_state().unwrap();
        cpu.reinit_units(0, &[1, 3], 99).unwrap();
        let after = cpu.export_state().unwrap();
        let shapes = cpu.shapes().to_vec();
        let (s0, s1) = (shapes[0], shapes[1]);
        let e = act.expansion();
        let bound = 1.0 / (s0.fan_in as f32).sqrt();
        for (i, (&b, &a)) in before.params[0].iter().zip(&after.params[0]).enumerate() {
            let unit = if i < s0.weights() {
                i / s0.fan_in
            } else {
                i - s0.weights()
            };
            if unit == 1 || unit == 3 {
                assert!(a.abs() <= bound && a != b, "layer 0 entry {i}");
                assert_eq!((after.m[0][i], after.v[0][i]), (0.0, 0.0));
            } else {
                assert_eq!(a, b, "layer 0 entry {i} must not change");
                assert_eq!(after.m[0][i], before.m[0][i]);
            }
        }
        for (i, (&b, &a)) in before.params[1].iter().zip(&after.params[1]).enumerate() {
            let outgoing = i < s1.weights() && [1, 3].contains(&((i % s1.fan_in) % s0.fan_out));
            if outgoing {
                assert_eq!(
                    (a, after.m[1][i], after.v[1][i]),
                    (0.0, 0.0, 0.0),
                    "layer 1 entry {i}"
                );
            } else {
                assert_eq!(a, b, "layer 1 entry {i} must not change");
            }
        }
        assert_eq!(before.params[2], after.params[2]);
        assert_eq!(e * s0.fan_out, s1.fan_in);
        assert!(matches!(
            cpu.reinit_units(2, &[0], 1),
            Err(BackendError::InvalidSpec { field: "layer", .. })
        ));
        assert!(cpu.reinit_units(0, &[s0.fan_out], 1).is_err());
    }
}

#[test]
fn shrink_perturb_shrinks_and_perturbs_by_exactly_its_constants() {
    let (mut cpu, _, _) = setup(Activation::Relu, Norm::None, 15);
    let before = cpu.export_state().unwrap();
    cpu.shrink_perturb(0.1, 0.0, 3).unwrap();
    let shrunk = cpu.export_state().unwrap();
    for (b, a) in before
        .params
        .iter()
        .flatten()
        .zip(shrunk.params.iter().flatten())
    {
        assert_eq!(*a, 0.9 * b);
    }
    cpu.shrink_perturb(0.0, 0.5, 3).unwrap();
    let noisy = cpu.export_state().unwrap();
    for ((l, s), (b, a)) in cpu
        .shapes()
        .iter()
        .enumerate()
        .flat_map(|(l, s)| std::iter::repeat_n((l, *s), s.params()))
        .zip(
            shrunk
                .params
                .iter()
                .flatten()
                .zip(noisy.params.iter().flatten()),
        )
    {
        let bound = 0.5 / (s.fan_in as f32).sqrt();
        assert!((a - b).abs() <= bound * 1.0001, "layer {l}: {b} -> {a}");
    }
    assert_ne!(shrunk.params, noisy.params);
    assert!(cpu.shrink_perturb(1.0, 0.0, 0).is_err());
}

#[test]
fn l2_init_adds_twice_lambda_times_the_drift_to_the_step_gradient() {
    // One plain step moves θ away from θ₀; the next step's gradient (its ‖g‖² statistic)
    // must then be the data gradient plus 2λ(θ − θ₀), computed here by hand.
    let (mut cpu, _, _) = setup(Activation::Relu, Norm::None, 16);
    let adam = default_adam();
    cpu.forward_backward(&batch(), false).unwrap();
    cpu.adam_step(&adam, &[0.01; 3], 1, &Regularizer::default())
        .unwrap();
    let drifted = cpu.export_state().unwrap();
    let lambda = 0.5f32;
    let reg = Regularizer {
        l2_init: lambda,
        ..Regularizer::default()
    };
    cpu.forward_backward(&batch(), false).unwrap();
    let g: Vec<Vec<f32>> = (0..3)
        .map(|l| cpu.layer_grad(l).unwrap().to_vec())
        .collect();
    let stats = cpu.adam_step(&adam, &[0.01; 3], 2, &reg).unwrap();
    for (l, gl) in g.iter().enumerate() {
        let want: f64 = gl
            .iter()
            .zip(&drifted.params[l])
            .zip(&drifted.theta0[l])
            .map(|((&g, &p), &p0)| f64::from(g + 2.0 * lambda * (p - p0)).powi(2))
            .sum();
        let got = stats[l].grad_sq;
        assert!(
            (got - want).abs() <= 1e-5 * want,
            "layer {l}: {got} vs {want}"
        );
    }
}
