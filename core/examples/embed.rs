//! Embedding safestep-core in your own training loop: Adam over your parameter slices,
//! gradient-noise statistics and a sharpness estimate per layer, and the scheduler turning
//! them into per-layer learning rates.
//!
//! The "model" is a toy: two independent least-squares layers `f_l(θ) = ½ mean_i (x_i·θ − y_i)²`
//! with different curvature, so every quantity (per-sample gradients, Hessian-vector
//! products) is exact and short to write. Replace those two functions with your framework's.
//!
//! Run: `cargo run -p safestep-core --example embed`.

use safestep_core::adam::{adam_step, AdamConfig, StepStats};
use safestep_core::noise::NoiseStats;
use safestep_core::power::{PowerConfig, PowerIteration};
use safestep_core::scheduler::{LayerObservation, LayerScheduler, Mode, Progress, SchedulerConfig};

const DIM: usize = 8;
const BATCH: usize = 16;

/// One layer: parameters, Adam moments, the power-iteration state and the scheduler.
struct Layer {
    theta: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
    scale: f32, // input scale: curvature grows with scale²
    direction: Vec<f32>,
    hv: Vec<f32>,
    power: PowerIteration<f32>,
    sched: LayerScheduler<f32, 32>,
}

/// A deterministic "dataset" sample for step `k`, example `i`.
fn sample(scale: f32, k: usize, i: usize) -> ([f32; DIM], f32) {
    let mut x = [0.0; DIM];
    for (j, xj) in x.iter_mut().enumerate() {
        let h = ((k * 131 + i * 31 + j * 7) % 97) as f32 / 97.0 - 0.5;
        *xj = scale * h;
    }
    let y = x.iter().sum::<f32>() * 0.5 + 0.1 * (((k + i) % 5) as f32 - 2.0);
    (x, y)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let adam = AdamConfig::<f32>::default();
    let cfg = SchedulerConfig {
        mode: Mode::Combined,
        interval: 5,
        ..SchedulerConfig::default()
    };
    let power_cfg = PowerConfig::default();
    let steps = 400usize;
    let mut layers: Vec<Layer> = [1.0f32, 4.0]
        .iter()
        .map(|&scale| -> Result<Layer, safestep_core::Error> {
            Ok(Layer {
                theta: vec![0.0; DIM],
                m: vec![0.0; DIM],
                v: vec![0.0; DIM],
                scale,
                direction: (0..DIM).map(|j| 1.0 + j as f32 * 0.1).collect(),
                hv: vec![0.0; DIM],
                power: PowerIteration::new(),
                sched: LayerScheduler::new(&cfg, 5e-3)?,
            })
        })
        .collect::<Result<_, _>>()?;

    for step in 0..steps {
        for (l, layer) in layers.iter_mut().enumerate() {
            // 1. Per-sample gradients g_i = (x_i·θ − y_i) x_i, their mean, and Σ‖g_i‖².
            let mut per_sample = vec![0.0f32; BATCH * DIM];
            let mut mean = vec![0.0f32; DIM];
            let batch: Vec<_> = (0..BATCH).map(|i| sample(layer.scale, step, i)).collect();
            for (i, (x, y)) in batch.iter().enumerate() {
                let r = x.iter().zip(&layer.theta).map(|(a, b)| a * b).sum::<f32>() - y;
                for j in 0..DIM {
                    per_sample[i * DIM + j] = r * x[j];
                    mean[j] += r * x[j] / BATCH as f32;
                }
            }

            // 2. One Adam step; the same pass returns the layer's statistics.
            let mut stats = StepStats::new();
            let lr = layer.sched.lr();
            adam_step(
                &adam,
                lr,
                step as u64 + 1,
                &mut layer.theta,
                &mean,
                &mut layer.m,
                &mut layer.v,
                &mut stats,
            )?;

            // 3. Every K steps: noise, sharpness, and the scheduler's decision.
            if cfg.is_event(step as u64) {
                let noise =
                    NoiseStats::from_sample_grads(&mean, per_sample.chunks_exact(DIM), None)?;
                // Hessian of the layer's loss is mean_i x_i x_iᵀ: H·v without forming H.
                let sharpness = layer
                    .power
                    .estimate(
                        &power_cfg,
                        &mut layer.direction,
                        &mut layer.hv,
                        None,
                        |v: &[f32], out: &mut [f32]| {
                            out.fill(0.0);
                            for (x, _) in &batch {
                                let xv = x.iter().zip(v).map(|(a, b)| a * b).sum::<f32>();
                                for j in 0..DIM {
                                    out[j] += xv * x[j] / BATCH as f32;
                                }
                            }
                            Ok::<(), std::convert::Infallible>(())
                        },
                    )
                    .map_err(|e| format!("layer {l}: {e:?}"))?;
                let obs = LayerObservation {
                    lr_used: None,
                    alpha_agg: stats.alpha_agg(lr, adam.eps),
                    mean_multiplier: stats.mean_multiplier(),
                    sharpness,
                    noise,
                };
                let progress = Progress {
                    step_in_task: step as u64,
                    steps_per_task: Some(steps as u64),
                    step: step as u64,
                    total_steps: None,
                };
                let r = layer.sched.observe(&cfg, &obs, progress)?;
                if step % 100 == 0 {
                    println!(
                        "step {step:3} layer {l}: λ = {sharpness:7.3}  ρ = {:.4}  bound = {:.4}  SNR = {:.3}  {:4}  lr {:.2e} → {:.2e}",
                        r.rho, r.bound, r.snr, r.decision.as_str(), r.lr_before, r.lr_after
                    );
                }
            }
        }
    }
    for (l, layer) in layers.iter().enumerate() {
        println!("layer {l}: final lr {:.3e}", layer.sched.lr());
    }
    Ok(())
}
