//! The CPU engine's squared-error loss against the f64 reference
//! ([`ReferenceRegressionMlp`], itself checked against finite differences): the minibatch
//! loss `(1/B)·Σ ½‖ŷ_i − y_i‖²`, its gradient, the exact per-sample gradient norms, the
//! layer-block and whole-network Hessian-vector products (output Hessian: the identity),
//! evaluation, and the refusals of the wrong kind of task data.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safestep_core::adam::{Adam, AdamConfig};
use safestep_engine::reference::ReferenceRegressionMlp;
use safestep_engine::{
    Activation, Backend, BackendError, CpuBackend, LayerShape, Loss, ModelSpec, Norm, Regularizer,
};

const N: usize = 11;
const OUT: usize = 2;

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
        classes: OUT,
        activation: act,
        crelu_match_params: false,
        loss: Loss::SquaredError,
        norm,
    }
}

fn batch() -> Vec<u32> {
    vec![3, 0, 7, 10, 5, 3, 1]
}

struct Setup {
    cpu: CpuBackend,
    shapes: Vec<LayerShape>,
    x: Vec<f32>,
    y: Vec<f32>,
}

fn setup(act: Activation, norm: Norm, seed: u64) -> Setup {
    let s = spec(act, norm);
    let cpu = CpuBackend::new(&s, seed).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed + 100);
    let x: Vec<f32> = (0..N * s.input).map(|_| rng.random::<f32>()).collect();
    let y: Vec<f32> = (0..N * OUT).map(|_| rng.random_range(-1.5..1.5)).collect();
    let mut cpu = cpu;
    cpu.load_regression_task(&x, &y).unwrap();
    Setup {
        shapes: cpu.shapes().to_vec(),
        cpu,
        x,
        y,
    }
}

impl Setup {
    fn params(&self) -> Vec<Vec<f64>> {
        (0..self.shapes.len())
            .map(|l| {
                self.cpu
                    .layer_params(l)
                    .unwrap()
                    .iter()
                    .map(|&p| f64::from(p))
                    .collect()
            })
            .collect()
    }

    /// The batch's inputs and targets, gathered.
    fn gather(&self, idx: &[u32]) -> (Vec<f32>, Vec<f32>) {
        let input = self.shapes[0].fan_in;
        let mut x = Vec::new();
        let mut y = Vec::new();
        for &i in idx {
            let i = i as usize;
            x.extend_from_slice(&self.x[i * input..(i + 1) * input]);
            y.extend_from_slice(&self.y[i * OUT..(i + 1) * OUT]);
        }
        (x, y)
    }
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
fn loss_gradient_and_sample_norms_match_the_reference() {
    for (act, norm) in CASES {
        let mut s = setup(act, norm, 5);
        let params = s.params();
        let (x, y) = s.gather(&batch());
        let r = ReferenceRegressionMlp {
            shapes: &s.shapes,
            activation: act,
            norm,
            params: &params,
            x: &x,
            y: &y,
        };
        let (loss, g) = r.loss_and_grads();
        let samples = r.sample_grads();
        let out = s.cpu.forward_backward(&batch(), true).unwrap();
        assert!(
            (out.loss - loss).abs() < 1e-5 * loss.max(1.0),
            "{act}/{norm}"
        );
        assert_eq!((out.correct, out.batch), (0, batch().len()));
        for (l, want) in g.iter().enumerate() {
            let got: Vec<f64> = s
                .cpu
                .layer_grad(l)
                .unwrap()
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            assert!(rel_err(&got, want) < 1e-5, "{act}/{norm} layer {l}");
            let sq: f64 = want.iter().map(|v| v * v).sum();
            assert!((out.layers[l].mean_grad_sq - sq).abs() < 1e-5 * sq + 1e-12);
            let per_sample: f64 = samples
                .iter()
                .map(|(_, gi)| gi[l].iter().map(|v| v * v).sum::<f64>())
                .sum();
            let got = out.layers[l].sum_sample_sq_norms.unwrap();
            assert!(
                per_sample > 0.0,
                "{act}/{norm} layer {l}: a dead layer tests nothing"
            );
            assert!(
                (got - per_sample).abs() < 1e-5 * per_sample,
                "{act}/{norm} layer {l}: {got} vs {per_sample}"
            );
        }
        // The whole task: mean ½‖ŷ − y‖², no accuracy.
        let full: Vec<u32> = (0..N as u32).collect();
        let (fx, fy) = s.gather(&full);
        let (full_loss, _) = ReferenceRegressionMlp {
            shapes: &s.shapes,
            activation: act,
            norm,
            params: &params,
            x: &fx,
            y: &fy,
        }
        .loss_and_grads();
        let ev = s.cpu.evaluate().unwrap();
        assert_eq!((ev.count, ev.correct), (N, 0));
        assert!((ev.loss - full_loss).abs() < 1e-5 * full_loss.max(1.0));
        assert!((s.cpu.batch_loss(&full).unwrap() - full_loss).abs() < 1e-5 * full_loss.max(1.0));
    }
}

#[test]
fn hessian_vector_products_match_the_reference_and_finite_differences() {
    for (act, norm) in CASES {
        let mut s = setup(act, norm, 2);
        let params = s.params();
        let (x, y) = s.gather(&batch());
        let r = ReferenceRegressionMlp {
            shapes: &s.shapes,
            activation: act,
            norm,
            params: &params,
            x: &x,
            y: &y,
        };
        s.cpu.forward_backward(&batch(), false).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let vs: Vec<Vec<f32>> = s
            .shapes
            .iter()
            .map(|sh| {
                (0..sh.params())
                    .map(|_| rng.random::<f32>() - 0.5)
                    .collect()
            })
            .collect();
        for (l, v) in vs.iter().enumerate() {
            let mut hv = vec![0.0f32; v.len()];
            s.cpu.hvp(l, v, &mut hv).unwrap();
            let want = r.hvp(l, &v.iter().map(|&a| f64::from(a)).collect::<Vec<_>>());
            let got: Vec<f64> = hv.iter().map(|&a| f64::from(a)).collect();
            let e = rel_err(&got, &want);
            assert!(e < 1e-5, "{act}/{norm} layer {l}: relative error {e}");
        }
        // The whole network's product against central differences of the reference gradient.
        let mut out: Vec<Vec<f32>> = vs.iter().map(|v| vec![0.0; v.len()]).collect();
        s.cpu.hvp_network(&vs, &mut out).unwrap();
        let eps = 1e-5;
        let grad_at = |sign: f64| {
            let p: Vec<Vec<f64>> = params
                .iter()
                .zip(&vs)
                .map(|(p, v)| {
                    p.iter()
                        .zip(v)
                        .map(|(a, &b)| a + sign * eps * f64::from(b))
                        .collect()
                })
                .collect();
            ReferenceRegressionMlp { params: &p, ..r }
                .loss_and_grads()
                .1
        };
        let (gp, gm) = (grad_at(1.0), grad_at(-1.0));
        for l in 0..vs.len() {
            let fd: Vec<f64> = gp[l]
                .iter()
                .zip(&gm[l])
                .map(|(a, b)| (a - b) / (2.0 * eps))
                .collect();
            let got: Vec<f64> = out[l].iter().map(|&a| f64::from(a)).collect();
            let e = rel_err(&got, &fd);
            assert!(
                e < 1e-4,
                "{act}/{norm} network layer {l}: relative error {e}"
            );
        }
    }
}

#[test]
fn adam_lowers_the_squared_error_and_regularisers_still_apply() {
    let mut s = setup(Activation::Relu, Norm::None, 3);
    let adam = Adam::new(AdamConfig::default()).unwrap();
    let all: Vec<u32> = (0..N as u32).collect();
    let before = s.cpu.evaluate().unwrap().loss;
    let reg = Regularizer {
        wasserstein: 1e-4,
        l2_init: 1e-4,
    };
    for t in 1..=200 {
        s.cpu.forward_backward(&all, false).unwrap();
        s.cpu.adam_step(&adam, &[1e-2; 3], t, &reg).unwrap();
    }
    let after = s.cpu.evaluate().unwrap().loss;
    assert!(after < 0.5 * before, "{before} -> {after}");
}

#[test]
fn the_wrong_kind_of_task_data_is_refused() {
    let mut s = setup(Activation::Relu, Norm::None, 4);
    assert!(matches!(
        s.cpu.load_task(&s.x.clone(), &[0; N]),
        Err(BackendError::WrongTargets {
            call: "load_task",
            loss: Loss::SquaredError,
            ..
        })
    ));
    // A partial row of targets, and a non-finite target.
    assert!(matches!(
        s.cpu.load_regression_task(&s.x.clone(), &[0.0; 3]),
        Err(BackendError::InvalidSpec {
            field: "targets",
            ..
        })
    ));
    let mut y = s.y.clone();
    y[5] = f32::NAN;
    assert!(matches!(
        s.cpu.load_regression_task(&s.x.clone(), &y),
        Err(BackendError::NonFiniteInput { index: 5, .. })
    ));
    // The task loaded before the refusals is still there.
    assert_eq!(s.cpu.evaluate().unwrap().count, N);
    let mut ce = CpuBackend::new(
        &ModelSpec {
            classes: 3,
            loss: Loss::CrossEntropy,
            ..spec(Activation::Relu, Norm::None)
        },
        1,
    )
    .unwrap();
    let err = ce.load_regression_task(&s.x, &[0.0; N * 3]).unwrap_err();
    assert!(matches!(
        err,
        BackendError::WrongTargets {
            call: "load_regression_task",
            loss: Loss::CrossEntropy,
            ..
        }
    ));
    assert!(err.to_string().contains("cross-entropy"), "{err}");
}
