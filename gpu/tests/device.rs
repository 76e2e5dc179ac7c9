//! Device tests: every kernel against the plain-Rust references, and the MLP's Hessian-vector
//! product against finite differences. Without a GPU (or with the link-time stub driver)
//! each test prints a `SKIP` line and passes.
#![cfg(feature = "cuda")]

use std::sync::Arc;

use safestep_core::adam::{Adam, AdamConfig};
use safestep_engine::{Activation, Backend, BackendError, ModelSpec, Regularizer};
use safestep_gpu::device::Gpu;
use safestep_gpu::{GpuError, GpuMlp};

fn gpu() -> Option<Arc<Gpu>> {
    match Gpu::new() {
        Ok(g) => Some(g),
        Err(e @ GpuError::NoDevice { .. }) => {
            eprintln!("SKIP device test: {e}");
            None
        }
        Err(e) => panic!("Gpu::new failed: {e}"),
    }
}

#[test]
fn no_device_error_is_clear() {
    if let Err(e) = Gpu::new() {
        assert!(matches!(e, GpuError::NoDevice { .. }), "{e:?}");
        let e = BackendError::from(e);
        let msg = e.to_string();
        assert!(
            msg.starts_with("no CUDA device/driver available: ")
                && msg.matches("no CUDA device").count() == 1,
            "{msg}"
        );
    }
}

/// LayerNorm has no CUDA kernels: `open` refuses it, naming the option, before it looks
/// for a device (so this holds on machines without one too).
#[test]
fn layer_norm_is_refused_naming_the_option() {
    let spec = ModelSpec {
        hidden: vec![16],
        norm: safestep_engine::Norm::Layer,
        ..ModelSpec::default()
    };
    match GpuMlp::open(&spec, 1) {
        Err(e @ BackendError::Unsupported { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("--norm layer") && msg.contains("cuda"),
                "{msg}"
            );
        }
        other => panic!("expected Unsupported, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn every_kernel_matches_its_reference() {
    let Some(gpu) = gpu() else { return };
    let checks = safestep_gpu::selftest::run_kernel_checks(&gpu, 7).expect("kernel checks ran");
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| !c.pass())
        .map(|c| {
            format!(
                "{} [{}]: {:.3e} > {:.1e}",
                c.name, c.sizes, c.max_err, c.tol
            )
        })
        .collect();
    assert!(
        failed.is_empty(),
        "kernel checks failed:\n{}",
        failed.join("\n")
    );
}

#[test]
fn size_errors_name_the_kernel_and_operand() {
    let Some(gpu) = gpu() else { return };
    let a = gpu.zeros::<f32>(10).unwrap();
    let err = gpu
        .sgemm(
            safestep_gpu::shape::GemmLayout::NN,
            safestep_gpu::shape::GemmShape { m: 4, n: 4, k: 4 },
            1.0,
            a.view(),
            a.view(),
            0.0,
            a.view(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            GpuError::Length {
                op: "sgemm",
                what: "A",
                expected: 16,
                found: 10
            }
        ),
        "{err:?}"
    );
}

#[test]
fn mlp_trains_and_is_deterministic() {
    let Some(gpu) = gpu() else { return };
    let spec = ModelSpec {
        input: 20,
        hidden: vec![16],
        classes: 3,
        activation: Activation::Relu,
        crelu_match_params: false,
        loss: safestep_engine::Loss::CrossEntropy,
        norm: safestep_engine::Norm::None,
    };
    let run = || -> Vec<f64> {
        let mut mlp = GpuMlp::new(gpu.clone(), &spec, 5).unwrap();
        // Linearly separable: the class is the arg-max of the first three inputs.
        let mut rng = safestep_gpu::selftest::TestRng::new(1);
        let x = rng.vec(200 * 20, 0.0, 1.0);
        let y: Vec<u8> = (0..200)
            .map(|i| {
                let r = &x[i * 20..i * 20 + 3];
                (0..3).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap() as u8
            })
            .collect();
        mlp.load_task(&x, &y).unwrap();
        let adam = Adam::new(AdamConfig::<f32>::default()).unwrap();
        let mut losses = Vec::new();
        for t in 1..=300u64 {
            let batch: Vec<u32> = (0..50).map(|i| ((t * 50 + i) % 200) as u32).collect();
            losses.push(mlp.forward_backward(&batch, t % 10 == 0).unwrap().loss);
            mlp.adam_step(&adam, &[1e-2, 1e-2], t, &Regularizer::default())
                .unwrap();
        }
        let e = mlp.evaluate().unwrap();
        losses.push(e.correct as f64 / e.count as f64);
        losses
    };
    let (a, b) = (run(), run());
    assert_eq!(a, b, "two runs with one seed differ");
    assert!(
        a[a.len() - 2] < 0.5 * a[0],
        "loss did not fall: {} -> {}",
        a[0],
        a[a.len() - 2]
    );
    assert!(a[a.len() - 1] > 0.8, "accuracy {}", a[a.len() - 1]);
}
