//! One optimizer step with the noise-curvature controller around it.
//!
//! The [`Trainer`] owns a [`Backend`] and the per-layer controller state. Each step it runs
//! forward/backward, and at every controller event (every K optimizer steps) it estimates
//! each layer's sharpness by warm-started power iteration on the backend's Hessian-vector
//! products, takes the Adam step, and hands the per-layer statistics to safestep-core's
//! scheduler, which returns the learning rates of the following steps. All bound and
//! scheduler math is safestep-core's; this module only moves numbers between the two.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safestep_core::adam::AdamConfig;
use safestep_core::bounds::StepMeasure;
use safestep_core::noise::NoiseStats;
use safestep_core::power::{PowerConfig, PowerIteration};
use safestep_core::scheduler::{
    LayerObservation, LayerScheduler, Mode, Progress, Report, SchedulerConfig,
};
use serde::{Deserialize, Serialize};

use crate::backend::{Backend, BackendError, BackendState, Regularizer};
use crate::config::RunConfig;
use crate::methods::Method;
use crate::outputs::ControllerRow;

/// Largest curvature window W a run may configure (the const capacity of the window).
pub const MAX_WINDOW: usize = 256;

/// The per-layer scheduler as the host instantiates it.
pub type HostScheduler = LayerScheduler<f64, MAX_WINDOW>;

/// What can stop a training step.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// safestep-core rejected a statistic (a non-finite value reached the controller).
    #[error("controller, layer {layer}, step {step}: {error}")]
    Controller {
        /// Layer index.
        layer: usize,
        /// Global step.
        step: u64,
        /// The core error.
        error: safestep_core::Error,
    },
    /// The power iteration failed.
    #[error("power iteration, layer {layer}, step {step}: {message}")]
    Power {
        /// Layer index.
        layer: usize,
        /// Global step.
        step: u64,
        /// What failed.
        message: String,
    },
}

/// Where the current step stands in its task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskPosition {
    /// Task index.
    pub task: usize,
    /// Steps already taken in this task.
    pub step_in_task: u64,
    /// Steps the task has in all.
    pub steps_per_task: u64,
}

/// The outcome of one training step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepOutcome {
    /// Minibatch mean loss (before the update).
    pub loss: f64,
    /// Correct predictions in the minibatch (before the update).
    pub correct: usize,
    /// Whether a controller event ran at this step.
    pub event: bool,
}

/// Per-layer controller state.
#[derive(Debug, Clone)]
struct LayerControl {
    scheduler: HostScheduler,
    power: PowerIteration<f32>,
    /// Warm-started power-iteration direction.
    direction: Vec<f32>,
    /// Scratch for H·v.
    hv: Vec<f32>,
    /// Scratch for Adam's D^½ (preconditioned measure).
    precond: Vec<f32>,
}

/// A serialisable snapshot of everything a [`Trainer`] needs to continue bit-identically.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken since the last reset.
    pub t: u64,
    /// The backend's parameters, moments and θ₀.
    pub backend: BackendState,
    /// Each layer's scheduler, as safestep-core exports it.
    pub schedulers: Vec<Vec<f64>>,
    /// Each layer's power-iteration state (last eigenvalue, whether converged once).
    pub power: Vec<(f32, bool)>,
    /// Each layer's warm-started power-iteration direction.
    pub directions: Vec<Vec<f32>>,
}

/// One MLP, its optimizer and the noise-curvature controller.
pub struct Trainer {
    backend: Box<dyn Backend>,
    adam: AdamConfig<f32>,
    reg: Regularizer,
    method: Method,
    cfg: RunConfig,
    sched: SchedulerConfig<f64>,
    power_cfg: PowerConfig<f32>,
    layers: Vec<LayerControl>,
    lrs: Vec<f32>,
    t: u64,
    events: bool,
}

impl Trainer {
    /// Wraps `backend` (already built for the configured model) and initialises it from the
    /// configuration's seed.
    pub fn new(cfg: &RunConfig, backend: Box<dyn Backend>) -> Result<Self, TrainError> {
        let sched = cfg.scheduler.to_core();
        let adam = AdamConfig {
            beta1: cfg.adam.beta1 as f32,
            beta2: cfg.adam.beta2 as f32,
            eps: cfg.adam.eps as f32,
            weight_decay: cfg.method.weight_decay(&cfg.methods),
        };
        let mut trainer = Trainer {
            backend,
            adam,
            reg: Regularizer {
                wasserstein: cfg.method.wasserstein(&cfg.methods),
            },
            method: cfg.method,
            events: sched.mode != Mode::Off || cfg.diagnostics,
            sched,
            power_cfg: PowerConfig {
                tol: cfg.scheduler.power_tol as f32,
                max_iters: cfg.scheduler.power_max_iters,
            },
            cfg: cfg.clone(),
            layers: Vec::new(),
            lrs: Vec::new(),
            t: 0,
        };
        trainer.reset(cfg.seed)?;
        Ok(trainer)
    }

    /// Re-initialises network, optimizer and controller from `seed`.
    pub fn reset(&mut self, seed: u64) -> Result<(), TrainError> {
        self.backend.reset(seed)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5afe_57e9_0000_0001);
        let lr0 = self.cfg.lr;
        self.layers = self
            .backend
            .layer_param_counts()
            .into_iter()
            .map(|n| {
                let direction = (0..n).map(|_| rng.random::<f32>() - 0.5).collect();
                let scheduler = HostScheduler::new(&self.sched, lr0).map_err(|error| {
                    TrainError::Controller {
                        layer: 0,
                        step: 0,
                        error,
                    }
                })?;
                Ok(LayerControl {
                    scheduler,
                    power: PowerIteration::new(),
                    direction,
                    hv: vec![0.0; n],
                    precond: vec![0.0; n],
                })
            })
            .collect::<Result<_, TrainError>>()?;
        self.lrs = vec![lr0 as f32; self.layers.len()];
        self.t = 0;
        Ok(())
    }

    /// The backend (for loading task data and evaluating).
    pub fn backend_mut(&mut self) -> &mut dyn Backend {
        self.backend.as_mut()
    }

    /// Number of layers.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Each layer's scheduled learning rate (before any method multiplier).
    pub fn scheduled_lrs(&self) -> Vec<f64> {
        self.layers.iter().map(|l| l.scheduler.lr()).collect()
    }

    /// Optimizer steps since the last reset.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// One training step on the examples `batch` of the loaded task. Controller rows of an
    /// event are appended to `rows`.
    pub fn step(
        &mut self,
        batch: &[u32],
        pos: TaskPosition,
        population: usize,
        rows: &mut Vec<ControllerRow>,
    ) -> Result<StepOutcome, TrainError> {
        let event = self.events && self.t > 0 && self.sched.is_event(self.t);
        let out = self.backend.forward_backward(batch, event)?;
        let mut sharpness = Vec::new();
        if event {
            sharpness = self.sharpness()?;
        }
        let multiplier =
            self.method
                .lr_multiplier(&self.cfg.methods, pos.step_in_task, pos.steps_per_task);
        for (lr, layer) in self.lrs.iter_mut().zip(&self.layers) {
            *lr = (layer.scheduler.lr() * multiplier) as f32;
        }
        let stats = self
            .backend
            .adam_step(&self.adam, &self.lrs, self.t + 1, &self.reg)?;
        let step = self.t;
        self.t += 1;
        if event {
            let sums = match out.sum_sample_sq_norms.as_deref() {
                Some(sums) if sums.len() == self.layers.len() => sums,
                other => {
                    return Err(TrainError::Backend(BackendError::LengthMismatch {
                        what: "per-sample gradient norms at a controller event",
                        expected: self.layers.len(),
                        found: other.map_or(0, <[f64]>::len),
                    }))
                }
            };
            let finite_population = self.cfg.scheduler.finite_population.then_some(population);
            let progress = Progress {
                step_in_task: pos.step_in_task,
                steps_per_task: Some(pos.steps_per_task),
                step,
                total_steps: None,
            };
            for (l, layer) in self.layers.iter_mut().enumerate() {
                let controller = |error| TrainError::Controller {
                    layer: l,
                    step,
                    error,
                };
                let noise = NoiseStats::from_sample_sq_norms(
                    out.mean_grad_sq[l],
                    sums[l],
                    out.batch,
                    finite_population,
                )
                .map_err(controller)?;
                let lr_used = f64::from(self.lrs[l]);
                let obs = LayerObservation {
                    alpha_agg: stats[l].alpha_agg(lr_used, self.cfg.adam.eps),
                    mean_multiplier: stats[l].mean_multiplier(),
                    sharpness: f64::from(sharpness[l]),
                    noise,
                    // The applied lr in f64 (before the engine's f32 rounding).
                    lr_used: Some(layer.scheduler.lr() * multiplier),
                };
                let report = layer
                    .scheduler
                    .observe(&self.sched, &obs, progress)
                    .map_err(controller)?;
                rows.push(controller_row(step, pos.task, l, lr_used, &obs, &report));
            }
        }
        Ok(StepOutcome {
            loss: out.loss,
            correct: out.correct,
            event,
        })
    }

    /// Each layer's sharpness λ (or preconditioned sharpness) by warm-started power iteration.
    fn sharpness(&mut self) -> Result<Vec<f32>, TrainError> {
        let preconditioned = self.sched.measure == StepMeasure::Preconditioned;
        let step = self.t;
        let mut out = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let backend = self.backend.as_mut();
            if preconditioned {
                backend.precond_sqrt(l, &self.adam, self.t, &mut layer.precond)?;
            }
            let precond = preconditioned.then_some(layer.precond.as_slice());
            let lambda = layer
                .power
                .estimate(
                    &self.power_cfg,
                    &mut layer.direction,
                    &mut layer.hv,
                    precond,
                    |v: &[f32], hv: &mut [f32]| backend.hvp(l, v, hv),
                )
                .map_err(|e| TrainError::Power {
                    layer: l,
                    step,
                    message: format!("{e:?}"),
                })?;
            out.push(lambda);
        }
        Ok(out)
    }

    /// Everything needed to continue this trainer bit-identically later.
    pub fn export_state(&mut self) -> Result<TrainerState, TrainError> {
        Ok(TrainerState {
            t: self.t,
            backend: self.backend.export_state()?,
            schedulers: self
                .layers
                .iter()
                .map(|l| l.scheduler.to_state().collect())
                .collect(),
            power: self
                .layers
                .iter()
                .map(|l| (l.power.eigenvalue(), l.power.is_warm()))
                .collect(),
            directions: self.layers.iter().map(|l| l.direction.clone()).collect(),
        })
    }

    /// Restores a snapshot taken by [`Trainer::export_state`] on the same configuration.
    pub fn import_state(&mut self, state: &TrainerState) -> Result<(), TrainError> {
        let layers = self.layers.len();
        let mismatch = |what, found| {
            TrainError::Backend(BackendError::LengthMismatch {
                what,
                expected: layers,
                found,
            })
        };
        if state.schedulers.len() != layers {
            return Err(mismatch("checkpoint schedulers", state.schedulers.len()));
        }
        if state.power.len() != layers || state.directions.len() != layers {
            return Err(mismatch("checkpoint power iterations", state.power.len()));
        }
        self.backend.import_state(&state.backend)?;
        for (l, layer) in self.layers.iter_mut().enumerate() {
            if state.directions[l].len() != layer.direction.len() {
                return Err(TrainError::Backend(BackendError::LengthMismatch {
                    what: "checkpoint power direction",
                    expected: layer.direction.len(),
                    found: state.directions[l].len(),
                }));
            }
            layer.scheduler = HostScheduler::from_state(&self.sched, &state.schedulers[l])
                .map_err(|error| TrainError::Controller {
                    layer: l,
                    step: state.t,
                    error,
                })?;
            let (eigenvalue, warm) = state.power[l];
            layer.power = PowerIteration::from_parts(eigenvalue, warm);
            layer.direction.copy_from_slice(&state.directions[l]);
        }
        self.t = state.t;
        Ok(())
    }
}

fn controller_row(
    step: u64,
    task: usize,
    layer: usize,
    lr: f64,
    obs: &LayerObservation<f64>,
    report: &Report<f64>,
) -> ControllerRow {
    ControllerRow {
        step,
        task,
        layer,
        lr,
        alpha_agg: obs.alpha_agg,
        sharpness: obs.sharpness,
        rho: report.rho,
        mean_grad_sq: obs.noise.mean_grad_sq,
        variance: obs.noise.variance,
        grad_sq: obs.noise.unbiased_grad_sq,
        snr_g: report.snr_g,
        vol: report.vol,
        rho_g: report.rho_g,
        rho_vol: report.rho_vol,
        rho_combined: report.rho_combined,
        decision: report.decision.as_str().to_string(),
        lr_next: report.lr_after,
    }
}
