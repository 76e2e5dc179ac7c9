//! Engine sanity check from DESIGN.md: on random-label MNIST at the CPU-sized default
//! (N = 1000, 20 epochs per task, 20 tasks, Adam lr 1e-3), plain Adam's end-of-task training
//! accuracy rises over the first few tasks and then falls toward chance — an engine that does
//! not show this loss of trainability has a bug. CReLU or the Wasserstein regulariser should
//! hold it up.
//!
//! `cargo run --release -p safestep-host --example lot_check -- [epochs] [batch] [relu|crelu] [wasserstein]`
//!
//! Prints each task's end-of-task training accuracy.

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safestep_core::adam::AdamConfig;
use safestep_host::backend::{Activation, Backend, ModelSpec, Regularizer};
use safestep_host::cpu::CpuBackend;
use safestep_host::data::{Benchmark, Mnist, TaskStream};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let epochs: usize = args.first().map(|s| s.parse()).transpose()?.unwrap_or(20);
    let batch: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(256);
    let activation: Activation = args
        .get(2)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(Activation::Relu);
    let wasserstein: f32 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0.0);
    if batch == 0 {
        return Err("batch must be at least 1".into());
    }
    let mnist = Mnist::embedded()?;
    let stream = TaskStream::new(Benchmark::RandomLabelMnist, &mnist, 1000, 0)?;
    let spec = ModelSpec {
        activation,
        crelu_match_params: true,
        ..ModelSpec::default()
    };
    let mut cpu = CpuBackend::new(&spec, 0)?;
    let adam = AdamConfig::<f32>::default();
    let reg = Regularizer { wasserstein };
    let lrs = vec![1e-3f32; cpu.layer_param_counts().len()];
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut order: Vec<u32> = (0..stream.examples() as u32).collect();
    let mut t = 0u64;
    let start = Instant::now();
    println!("{activation}, wasserstein {wasserstein}, {epochs} epochs/task, batch {batch}:");
    for k in 0..20u64 {
        let task = stream.task(k);
        cpu.load_task(&task.images, &task.labels)?;
        for _ in 0..epochs {
            order.shuffle(&mut rng);
            for b in order.chunks(batch) {
                t += 1;
                cpu.forward_backward(b, false)?;
                cpu.adam_step(&adam, &lrs, t, &reg)?;
            }
        }
        print!("{:.3} ", cpu.evaluate()?.accuracy());
    }
    println!("\n({:.1} s)", start.elapsed().as_secs_f64());
    Ok(())
}
