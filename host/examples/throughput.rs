//! Plain-Adam training throughput of the CPU engine on the default MLP (784-256-256-10,
//! batch 256, 1000 random-label MNIST examples), plus the cost of the controller's
//! per-event extras (per-sample norms, one Hessian-vector product per layer).
//!
//! `cargo run --release -p safestep-host --example throughput -- [threads] [steps]`

use std::time::Instant;

use safestep_host::backend::{Backend, ModelSpec};
use safestep_host::bench::{adam_throughput, ThroughputConfig};
use safestep_host::cpu::CpuBackend;
use safestep_host::data::{Benchmark, Mnist, TaskStream};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(1);
    let steps: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(300);
    let mnist = Mnist::embedded()?;
    let task = TaskStream::new(Benchmark::RandomLabelMnist, &mnist, 1000, 0)?.task(0);
    let spec = ModelSpec::default();
    let mut cpu = CpuBackend::new(&spec, 0)?.with_threads(threads)?;
    let cfg = ThroughputConfig {
        steps,
        ..ThroughputConfig::default()
    };
    let mut best = 0.0f64;
    let mut best_cpu = 0.0f64;
    for rep in 0..3 {
        let cpu_before = cpu_seconds();
        let t = adam_throughput(&mut cpu, &task.images, &task.labels, &cfg)?;
        // CPU time of the whole call (warm-up included): samples per CPU-second is robust
        // to other processes competing for the cores.
        let cpu_used = cpu_seconds() - cpu_before;
        let samples = ((cfg.warmup_steps + cfg.steps) * cfg.batch) as f64;
        println!(
            "rep {rep}: {:.0} samples/s ({:.3} ms/step, threads {threads}, mean loss {:.3}); {:.0} samples per CPU-second",
            t.samples_per_sec,
            t.step_ms,
            t.mean_loss,
            samples / cpu_used
        );
        best = best.max(t.samples_per_sec);
        best_cpu = best_cpu.max(samples / cpu_used);
    }
    println!("best: {best:.0} samples/s; {best_cpu:.0} samples per CPU-second");

    // Controller extras on one batch: sample norms and one HVP per layer.
    let batch: Vec<u32> = (0..256).collect();
    let reps = 50;
    let start = Instant::now();
    for _ in 0..reps {
        cpu.forward_backward(&batch, false)?;
    }
    let fb = start.elapsed().as_secs_f64() / reps as f64;
    let start = Instant::now();
    for _ in 0..reps {
        cpu.forward_backward(&batch, true)?;
    }
    let fb_norms = start.elapsed().as_secs_f64() / reps as f64;
    println!(
        "forward_backward {:.3} ms, with sample norms {:.3} ms",
        1e3 * fb,
        1e3 * fb_norms
    );
    let adam = safestep_core::adam::AdamConfig::<f32>::default();
    let reg = safestep_host::backend::Regularizer::default();
    let lrs = [1e-3f32; 3];
    let mut adam_time = 0.0;
    for t in 1..=reps as u64 {
        cpu.forward_backward(&batch, false)?;
        let start = Instant::now();
        cpu.adam_step(&adam, &lrs, 1000 + t, &reg)?;
        adam_time += start.elapsed().as_secs_f64();
    }
    println!("adam_step {:.3} ms", 1e3 * adam_time / reps as f64);
    let wreg = safestep_host::backend::Regularizer { wasserstein: 1e-3 };
    let mut w_time = 0.0;
    for t in 1..=reps as u64 {
        cpu.forward_backward(&batch, false)?;
        let start = Instant::now();
        cpu.adam_step(&adam, &lrs, 2000 + t, &wreg)?;
        w_time += start.elapsed().as_secs_f64();
    }
    println!(
        "adam_step with Wasserstein {:.3} ms",
        1e3 * w_time / reps as f64
    );
    cpu.forward_backward(&batch, true)?;
    for (l, &n) in cpu.layer_param_counts().iter().enumerate() {
        let v = vec![0.01f32; n];
        let mut out = vec![0.0f32; n];
        let start = Instant::now();
        for _ in 0..reps {
            cpu.hvp(l, &v, &mut out)?;
        }
        let h = start.elapsed().as_secs_f64() / reps as f64;
        println!(
            "hvp layer {l}: {:.3} ms ({:.2} x forward_backward)",
            1e3 * h,
            h / fb
        );
    }
    Ok(())
}

/// CPU time of this process so far (all threads), from /proc (Linux); 0 elsewhere.
fn cpu_seconds() -> f64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<f64>().ok())
        .sum::<f64>()
        * 1e-9
}
