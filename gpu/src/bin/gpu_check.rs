//! `safestep-gpu-check`: on a machine with an NVIDIA GPU, checks every kernel against the
//! plain-Rust references on random sizes and times the SGEMM (at the MLP's shapes) and the
//! MLP's training step. Used by `scripts/gpu-check.sh`, which compares the timings with
//! PyTorch on the same GPU.
//!
//! ```text
//! safestep-gpu-check [--json PATH] [--no-selftest] [--no-bench] [--steps N] [--seed N] [--quick]
//! ```
//! `--quick` times only a few iterations of the small shapes (to exercise the benchmark
//! code on the CPU emulation, not to measure).
//! Exit status: 0 all checks pass, 1 a check failed, 2 no CUDA device or driver,
//! 3 another device error, 64 bad arguments.

use std::fmt::Write as _;
use std::process::ExitCode;

use safestep_engine::{BackendError, ModelSpec};
use safestep_gpu::device::Gpu;
use safestep_gpu::selftest::{bench_mlp, bench_sgemm, run_kernel_checks};
use safestep_gpu::shape::{GemmLayout, GemmShape};

struct Args {
    json: Option<String>,
    selftest: bool,
    bench: bool,
    steps: usize,
    seed: u64,
    quick: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        json: None,
        selftest: true,
        bench: true,
        steps: 500,
        seed: 2024,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match x.as_str() {
            "--json" => a.json = Some(value("--json")?),
            "--no-selftest" => a.selftest = false,
            "--no-bench" => a.bench = false,
            "--quick" => a.quick = true,
            "--steps" => {
                a.steps = value("--steps")?
                    .parse()
                    .map_err(|e| format!("--steps: {e}"))?
            }
            "--seed" => {
                a.seed = value("--seed")?
                    .parse()
                    .map_err(|e| format!("--seed: {e}"))?
            }
            "-h" | "--help" => {
                println!("safestep-gpu-check [--json PATH] [--no-selftest] [--no-bench] [--steps N] [--seed N] [--quick]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(a)
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

/// The GEMMs of one training step of the 784-256-256-10 MLP at batch 256, plus a large
/// square for reference.
fn gemm_cases() -> Vec<(&'static str, GemmLayout, GemmShape)> {
    let s = |m, n, k| GemmShape { m, n, k };
    vec![
        ("fwd L0 X·W0ᵀ", GemmLayout::NT, s(256, 256, 784)),
        ("fwd L1 H·W1ᵀ", GemmLayout::NT, s(256, 256, 256)),
        ("fwd L2 H·W2ᵀ", GemmLayout::NT, s(256, 10, 256)),
        ("bwd dW0 = δᵀ·X", GemmLayout::TN, s(256, 784, 256)),
        ("bwd dW1 = δᵀ·H", GemmLayout::TN, s(256, 256, 256)),
        ("bwd dH1 = δ·W1", GemmLayout::NN, s(256, 256, 256)),
        ("bwd dH2 = δ·W2", GemmLayout::NN, s(256, 256, 10)),
        ("square 2048", GemmLayout::NN, s(2048, 2048, 2048)),
    ]
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("safestep-gpu-check: {e}");
            return ExitCode::from(64);
        }
    };
    let gpu = match Gpu::new().map_err(BackendError::from) {
        Ok(g) => g,
        Err(e @ BackendError::NoDevice { .. }) => {
            println!("SKIP: {e}");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("safestep-gpu-check: {e}");
            return ExitCode::from(3);
        }
    };
    let (major, minor) = gpu.compute_capability();
    println!(
        "device: {} (sm_{major}{minor}, {} SMs), PTX {}",
        gpu.name(),
        gpu.multiprocessors(),
        safestep_gpu::ptx::ARCH
    );
    let mut json = String::new();
    let _ = write!(
        json,
        "{{\"device\":\"{}\",\"compute_capability\":\"{major}.{minor}\",\"multiprocessors\":{},\"ptx_arch\":\"{}\"",
        esc(gpu.name()),
        gpu.multiprocessors(),
        safestep_gpu::ptx::ARCH
    );
    let mut failed = 0usize;
    let result: Result<(), BackendError> = (|| {
        if args.selftest {
            let checks = run_kernel_checks(&gpu, args.seed)?;
            json.push_str(",\"checks\":[");
            for (i, c) in checks.iter().enumerate() {
                let ok = c.pass();
                failed += usize::from(!ok);
                println!(
                    "{} {:<34} {:<44} err {:.3e} (tol {:.1e})",
                    if ok { "PASS" } else { "FAIL" },
                    c.name,
                    c.sizes,
                    c.max_err,
                    c.tol
                );
                let _ = write!(
                    json,
                    "{}{{\"name\":\"{}\",\"sizes\":\"{}\",\"max_err\":{},\"tol\":{},\"pass\":{ok}}}",
                    if i > 0 { "," } else { "" },
                    esc(&c.name),
                    esc(&c.sizes),
                    if c.max_err.is_finite() { format!("{:e}", c.max_err) } else { "null".into() },
                    c.tol
                );
            }
            json.push(']');
            println!(
                "kernel checks: {} passed, {failed} failed",
                checks.len() - failed
            );
        }
        if args.bench {
            json.push_str(",\"sgemm\":[");
            let cases = gemm_cases()
                .into_iter()
                .filter(|(_, _, s)| !args.quick || s.m < 2048);
            for (i, (label, layout, shape)) in cases.enumerate() {
                let iters = if args.quick {
                    2
                } else if shape.m >= 2048 {
                    20
                } else {
                    300
                };
                let t = bench_sgemm(&gpu, layout, shape, iters)?;
                println!(
                    "sgemm {:<18} {} {:<22} {:8.2} us  {:6.2} TFLOP/s",
                    label,
                    layout.as_str(),
                    shape.describe(),
                    t.seconds * 1e6,
                    t.tflops
                );
                let _ = write!(
                    json,
                    "{}{{\"label\":\"{}\",\"layout\":\"{}\",\"m\":{},\"n\":{},\"k\":{},\"seconds\":{:e},\"tflops\":{}}}",
                    if i > 0 { "," } else { "" },
                    esc(label),
                    layout.as_str(),
                    shape.m,
                    shape.n,
                    shape.k,
                    t.seconds,
                    t.tflops
                );
            }
            json.push(']');
            // The paper's 784-256-256-10 ReLU network.
            let spec = ModelSpec::default();
            let steps = if args.quick {
                args.steps.min(5)
            } else {
                args.steps
            };
            let m = bench_mlp(&gpu, &spec, 256, 10_000, steps, 10)?;
            println!(
                "mlp 784-256-256-10 batch {}: {:.0} samples/s plain Adam, {:.0} samples/s with statistics every {} steps",
                m.batch, m.adam_samples_per_sec, m.scheduled_samples_per_sec, m.interval
            );
            let _ = write!(
                json,
                ",\"mlp\":{{\"batch\":{},\"steps\":{},\"adam_samples_per_sec\":{},\"scheduled_samples_per_sec\":{},\"interval\":{}}}",
                m.batch, m.steps, m.adam_samples_per_sec, m.scheduled_samples_per_sec, m.interval
            );
        }
        Ok(())
    })();
    let _ = write!(json, ",\"failed\":{failed}");
    if let Err(e) = &result {
        let _ = write!(json, ",\"error\":\"{}\"", esc(&e.to_string()));
    }
    json.push_str("}\n");
    if let Some(path) = &args.json {
        if let Err(e) = std::fs::write(path, &json) {
            eprintln!("safestep-gpu-check: cannot write {path}: {e}");
            return ExitCode::from(3);
        }
    }
    match result {
        Err(e) => {
            eprintln!("safestep-gpu-check: {e}");
            ExitCode::from(3)
        }
        Ok(()) if failed > 0 => ExitCode::from(1),
        Ok(()) => ExitCode::SUCCESS,
    }
}
