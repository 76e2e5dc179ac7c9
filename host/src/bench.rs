//! Steady-state training throughput of a [`Backend`] with plain Adam.
//!
//! [`adam_throughput`] runs the training loop exactly as a plain-Adam run does —
//! `forward_backward` (no per-sample norms) then `adam_step` on minibatches drawn from a fixed
//! seeded order of the task — first for some warm-up steps (buffers sized, caches and
//! branch predictors warm), then timed. The JAX peer in `benches/peer/jax_mlp.py` runs the
//! same loop (784-256-256-10, batch 256, Adam, 1000 examples) for comparison.
//!
//! ```
//! use safestep_host::backend::ModelSpec;
//! use safestep_host::bench::{adam_throughput, ThroughputConfig};
//! use safestep_host::cpu::CpuBackend;
//! let spec = ModelSpec { input: 784, hidden: vec![16], classes: 10, ..ModelSpec::default() };
//! let mut cpu = CpuBackend::new(&spec, 0)?;
//! let images = vec![0.5f32; 64 * 784];
//! let labels: Vec<u8> = (0..64).map(|i| (i % 10) as u8).collect();
//! let cfg = ThroughputConfig { batch: 32, warmup_steps: 2, steps: 5, ..ThroughputConfig::default() };
//! let t = adam_throughput(&mut cpu, &images, &labels, &cfg)?;
//! assert!(t.samples_per_sec > 0.0);
//! # Ok::<(), safestep_host::backend::BackendError>(())
//! ```

use std::time::Instant;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safestep_core::adam::AdamConfig;

use crate::backend::{Backend, BackendError, Regularizer};

/// What [`adam_throughput`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct ThroughputConfig {
    /// Minibatch size (default 256).
    pub batch: usize,
    /// Untimed steps first (default 20).
    pub warmup_steps: usize,
    /// Timed steps (default 200).
    pub steps: usize,
    /// Learning rate of every layer (default 1e-3).
    pub lr: f32,
    /// Seed for the parameters and the minibatch order (default 0).
    pub seed: u64,
}

impl Default for ThroughputConfig {
    fn default() -> Self {
        ThroughputConfig {
            batch: 256,
            warmup_steps: 20,
            steps: 200,
            lr: 1e-3,
            seed: 0,
        }
    }
}

/// Result of [`adam_throughput`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// Training samples per second over the timed steps.
    pub samples_per_sec: f64,
    /// Mean wall time of one step, in milliseconds.
    pub step_ms: f64,
    /// Timed steps.
    pub steps: usize,
    /// Minibatch size.
    pub batch: usize,
    /// Mean training loss over the timed steps (a sanity check that it trained).
    pub mean_loss: f64,
}

/// Measures plain-Adam training throughput of `backend` on the task (`images` row-major
/// `n × input`, `labels`). Resets the backend with `cfg.seed` and loads the task first.
///
/// # Errors
/// [`BackendError::InvalidSpec`] for a zero `batch` or `steps`, a `batch` larger than the
/// task, or a non-finite / negative `lr`; any error of the backend itself.
pub fn adam_throughput<B: Backend + ?Sized>(
    backend: &mut B,
    images: &[f32],
    labels: &[u8],
    cfg: &ThroughputConfig,
) -> Result<Throughput, BackendError> {
    let n = labels.len();
    if cfg.batch == 0 || cfg.batch > n {
        return Err(BackendError::InvalidSpec {
            field: "batch",
            value: cfg.batch.to_string(),
            allowed: "1..=number of task examples",
        });
    }
    if cfg.steps == 0 {
        return Err(BackendError::InvalidSpec {
            field: "steps",
            value: "0".to_string(),
            allowed: ">= 1",
        });
    }
    if !(cfg.lr.is_finite() && cfg.lr >= 0.0) {
        return Err(BackendError::InvalidSpec {
            field: "lr",
            value: cfg.lr.to_string(),
            allowed: "finite and >= 0",
        });
    }
    backend.reset(cfg.seed)?;
    backend.load_task(images, labels)?;
    let layers = backend.layer_param_counts().len();
    let lrs = vec![cfg.lr; layers];
    let adam = AdamConfig::<f32>::default();
    let reg = Regularizer::default();
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(cfg.seed));
    let mut batch = vec![0u32; cfg.batch];
    let mut cursor = 0usize;
    let mut t = 0u64;
    let mut loss_sum = 0.0;
    let mut step = |backend: &mut B, loss_sum: &mut f64| -> Result<(), BackendError> {
        for b in batch.iter_mut() {
            *b = order[cursor];
            cursor = (cursor + 1) % n;
        }
        t += 1;
        let out = backend.forward_backward(&batch, false)?;
        *loss_sum += out.loss;
        backend.adam_step(&adam, &lrs, t, &reg)?;
        Ok(())
    };
    for _ in 0..cfg.warmup_steps {
        step(backend, &mut loss_sum)?;
    }
    loss_sum = 0.0;
    let start = Instant::now();
    for _ in 0..cfg.steps {
        step(backend, &mut loss_sum)?;
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    Ok(Throughput {
        samples_per_sec: (cfg.steps * cfg.batch) as f64 / secs,
        step_ms: 1e3 * secs / cfg.steps as f64,
        steps: cfg.steps,
        batch: cfg.batch,
        mean_loss: loss_sum / cfg.steps as f64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ModelSpec;
    use crate::cpu::CpuBackend;

    #[test]
    fn rejects_bad_configs() {
        let spec = ModelSpec {
            input: 4,
            hidden: vec![3],
            classes: 2,
            ..ModelSpec::default()
        };
        let mut cpu = CpuBackend::new(&spec, 0).unwrap();
        let x = [0.5f32; 8];
        let y = [0u8, 1];
        let bad = ThroughputConfig {
            batch: 3,
            ..ThroughputConfig::default()
        };
        assert!(matches!(
            adam_throughput(&mut cpu, &x, &y, &bad),
            Err(BackendError::InvalidSpec { field: "batch", .. })
        ));
        let bad = ThroughputConfig {
            batch: 2,
            lr: f32::NAN,
            ..ThroughputConfig::default()
        };
        assert!(adam_throughput(&mut cpu, &x, &y, &bad).is_err());
        let ok = ThroughputConfig {
            batch: 2,
            warmup_steps: 1,
            steps: 3,
            ..ThroughputConfig::default()
        };
        let t = adam_throughput(&mut cpu, &x, &y, &ok).unwrap();
        assert_eq!((t.steps, t.batch), (3, 2));
        assert!(t.mean_loss.is_finite());
    }
}
