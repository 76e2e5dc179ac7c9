//! One optimizer step with the noise-curvature controller around it.
//!
//! The [`Trainer`] owns a [`Backend`] and the per-layer controller state. Each step it runs
//! forward/backward, and at every controller event (every K optimizer steps) it estimates
//! each layer's sharpness by warm-started power iteration on the backend's Hessian-vector
//! products, takes the Adam step, and hands the per-layer statistics to safestep-core's
//! scheduler, which returns the learning rates of the following steps. All bound and
//! scheduler math is safestep-core's; this module only moves numbers between the two, and
//! reports each event as a [`ControllerEvent`] (what to write of it is the outputs' call).

use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use safestep_core::adam::{Adam, AdamConfig, StepStats};
use safestep_core::bounds::StepMeasure;
use safestep_core::noise::NoiseStats;
use safestep_core::power::{top_eigenvalue, PowerConfig, PowerIteration};
use safestep_core::scheduler::{
    LayerObservation, LayerScheduler, Progress, Report, SchedulerConfig,
};
use safestep_engine::{Backend, BackendError, BackendState, LayerBatchStats, Regularizer};
use serde::{Deserialize, Serialize};

use crate::config::{NoiseBatch, RunConfig, Sharpness};
use crate::methods::Method;
use crate::plasticity::{Plasticity, UnitTracker};
use crate::seeds::{derive_seed, FRESH_BATCH};

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
    /// The backend refused an optimizer step (a non-finite gradient, or a step whose result
    /// would overflow): nothing was changed, the run stops.
    #[error("optimizer step {step}, layer {layer}: {error}")]
    Optimizer {
        /// Layer index.
        layer: usize,
        /// Global step (1-based, as Adam counts it).
        step: u64,
        /// What the core refused, naming the quantity.
        error: safestep_core::Error,
    },
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
    /// The end-of-task evaluation came back non-finite: the parameters are finite but the
    /// network's outputs overflow (it diverged). The run stops before committing the task.
    #[error("task {task}: the evaluation loss is {loss} (the network diverged; the last finished task's checkpoint is kept)")]
    Diverged {
        /// Task index.
        task: usize,
        /// The evaluation's mean loss.
        loss: f64,
    },
    /// An indicator of the diagnosis could not be computed.
    #[error("indicator {indicator}, layer {layer}: {message}")]
    Indicator {
        /// Layer index.
        layer: usize,
        /// The indicator (its `indicators.csv` column).
        indicator: &'static str,
        /// What failed.
        message: String,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
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

/// One layer at one controller event: everything the controller saw and decided.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ControllerEvent {
    /// Global optimizer step (steps completed before the event).
    pub step: u64,
    /// Where the step stands in its task.
    pub position: TaskPosition,
    /// Layer index (0 = first weight matrix).
    pub layer: usize,
    /// The learning rate applied at this step (the scheduler's times any method multiplier).
    pub lr_applied: f64,
    /// The engine's statistics of the minibatch the noise was measured on.
    pub batch: LayerBatchStats,
    /// Adam's statistics of the step.
    pub step_stats: StepStats<f64>,
    /// What the scheduler was given.
    pub observation: LayerObservation<f64>,
    /// What it decided, and every number behind it.
    pub report: Report<f64>,
}

/// Per-layer controller state.
#[derive(Debug, Clone)]
struct LayerControl {
    scheduler: HostScheduler,
    power: PowerIteration<f32>,
    /// The second iteration of [`Sharpness::Top`] (on the shifted block).
    power_top: PowerIteration<f32>,
    /// Warm-started power-iteration direction.
    direction: Vec<f32>,
    /// Warm-started direction of `power_top`.
    direction_top: Vec<f32>,
    /// Scratch for H·v.
    hv: Vec<f32>,
    /// Scratch for Adam's D^½ (preconditioned measure).
    precond: Vec<f32>,
}

/// A serialisable snapshot of everything a [`Trainer`] needs to continue bit-identically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken since the last reset.
    pub t: u64,
    /// The backend's parameters, moments and θ₀.
    pub backend: BackendState,
    /// Each layer's scheduler, as safestep-core exports it.
    pub schedulers: Vec<Vec<f64>>,
    /// Each layer's power-iteration states (last eigenvalue, whether converged once):
    /// the magnitude iteration and the shifted one of [`Sharpness::Top`].
    pub power: Vec<[(f32, bool); 2]>,
    /// Each layer's warm-started power-iteration directions (magnitude, then top).
    pub directions: Vec<[Vec<f32>; 2]>,
    /// Continual backprop's unit trackers (empty for other methods).
    pub units: Vec<UnitTracker>,
}

/// One MLP, its optimizer and the noise-curvature controller.
pub struct Trainer {
    backend: Box<dyn Backend>,
    adam: Adam<f32>,
    reg: Regularizer,
    method: Method,
    cfg: RunConfig,
    sched: SchedulerConfig<f64>,
    power_cfg: PowerConfig<f32>,
    layers: Vec<LayerControl>,
    lrs: Vec<f32>,
    t: u64,
    events: bool,
    /// Continual backprop, ReDo or shrink and perturb around the step, if the method is one.
    plasticity: Option<Plasticity>,
}

/// The Adam configuration a run describes (validated once, here).
///
/// # Errors
/// [`TrainError::Optimizer`] (step 0) for constants the core refuses; `RunConfig::validate`
/// has already refused them with the config field's name.
pub fn run_adam(cfg: &RunConfig) -> Result<Adam<f32>, TrainError> {
    Adam::new(AdamConfig {
        beta1: cfg.adam.beta1 as f32,
        beta2: cfg.adam.beta2 as f32,
        eps: cfg.adam.eps as f32,
        weight_decay: cfg.method.weight_decay(&cfg.methods),
    })
    .map_err(|error| TrainError::Optimizer {
        layer: 0,
        step: 0,
        error,
    })
}

impl Trainer {
    /// Wraps `backend` (already built for the configured model) and initialises it from the
    /// configuration's seed.
    pub fn new(cfg: &RunConfig, backend: Box<dyn Backend>) -> Result<Self, TrainError> {
        let sched = cfg.scheduler;
        let mut trainer = Trainer {
            backend,
            adam: run_adam(cfg)?,
            reg: cfg.method.regularizer(&cfg.methods),
            plasticity: None,
            method: cfg.method,
            events: cfg.has_controller_events(),
            sched,
            power_cfg: PowerConfig {
                tol: cfg.statistics.power_tol as f32,
                max_iters: cfg.statistics.power_max_iters,
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
        let mut rng_top = ChaCha8Rng::seed_from_u64(seed ^ 0x5afe_57e9_0000_0002);
        let lr0 = self.cfg.lr;
        self.layers = self
            .backend
            .layer_param_counts()
            .into_iter()
            .map(|n| {
                let direction = (0..n).map(|_| rng.random::<f32>() - 0.5).collect();
                let direction_top = match self.cfg.statistics.sharpness {
                    Sharpness::Magnitude => Vec::new(),
                    Sharpness::Top => (0..n).map(|_| rng_top.random::<f32>() - 0.5).collect(),
                };
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
                    power_top: PowerIteration::new(),
                    direction,
                    direction_top,
                    hv: vec![0.0; n],
                    precond: vec![0.0; n],
                })
            })
            .collect::<Result<_, TrainError>>()?;
        self.lrs = vec![lr0 as f32; self.layers.len()];
        self.t = 0;
        let hidden: Vec<usize> = crate::runner::model_spec(&self.cfg)
            .layer_shapes()?
            .iter()
            .filter(|s| s.hidden)
            .map(|s| s.fan_out)
            .collect();
        self.plasticity = Plasticity::new(self.cfg.method, &self.cfg.methods, &hidden);
        Ok(())
    }

    /// A new task begins: each layer's scheduler carries, resets its statistics, or also
    /// restarts its lr, as `scheduler.boundary` says.
    pub fn begin_task(&mut self) {
        for layer in &mut self.layers {
            layer.scheduler.begin_task(&self.sched);
        }
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

    /// Layer `layer`'s warm-started power-iteration direction (the diagnosis starts its
    /// own iterations from a copy).
    pub fn power_direction(&self, layer: usize) -> Option<&[f32]> {
        self.layers.get(layer).map(|l| l.direction.as_slice())
    }

    /// Optimizer steps since the last reset.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// One training step on the examples `batch` of the loaded task (`population`
    /// examples). The layers' controller events of this step are appended to `events`.
    pub fn step(
        &mut self,
        batch: &[u32],
        pos: TaskPosition,
        population: usize,
        events: &mut Vec<ControllerEvent>,
    ) -> Result<StepOutcome, TrainError> {
        let event = self.events && self.t > 0 && self.sched.is_event(self.t);
        let fresh = event && self.cfg.statistics.noise_batch == NoiseBatch::Fresh;
        let noise_source = if fresh {
            let size = match self.cfg.statistics.fresh_batch {
                0 => batch.len(),
                n => n,
            };
            Some(self.fresh_batch(size, population)?)
        } else {
            None
        };
        let out = self.backend.forward_backward(batch, event && !fresh)?;
        let noise_batch = match noise_source {
            Some(stats) => stats,
            None => (out.batch, out.layers.clone()),
        };
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
        let step = self.t;
        let unit_stats = match &self.plasticity {
            Some(p) if p.needs_unit_stats(step) => Some(self.backend.unit_stats()?),
            _ => None,
        };
        let stats = self
            .backend
            .adam_step(&self.adam, &self.lrs, step + 1, &self.reg)
            .map_err(|e| match e {
                BackendError::Optimizer { layer, error } => TrainError::Optimizer {
                    layer,
                    step: step + 1,
                    error,
                },
                other => TrainError::Backend(other),
            })?;
        self.t += 1;
        if let Some(p) = &mut self.plasticity {
            p.after_step(
                self.backend.as_mut(),
                unit_stats.as_deref(),
                step,
                self.cfg.seed,
            )?;
        }
        if event {
            self.observe(
                step,
                pos,
                population,
                multiplier,
                noise_batch,
                &sharpness,
                &stats,
                events,
            )?;
        }
        Ok(StepOutcome {
            loss: out.loss,
            correct: out.correct,
            event,
        })
    }

    /// The engine statistics (with per-sample norms) of a fresh diagnostic minibatch of
    /// `size` distinct examples, drawn from the step number alone (nothing to checkpoint).
    fn fresh_batch(
        &mut self,
        size: usize,
        population: usize,
    ) -> Result<(usize, Vec<LayerBatchStats>), TrainError> {
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(self.cfg.seed, FRESH_BATCH, self.t));
        let picked: Vec<u32> = index::sample(&mut rng, population, size.min(population))
            .into_iter()
            .map(|i| i as u32)
            .collect();
        let out = self.backend.forward_backward(&picked, true)?;
        Ok((out.batch, out.layers))
    }

    /// Hands each layer's statistics to its scheduler and records the events.
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        step: u64,
        pos: TaskPosition,
        population: usize,
        multiplier: f64,
        (batch_size, batch_stats): (usize, Vec<LayerBatchStats>),
        sharpness: &[f32],
        stats: &[StepStats<f64>],
        events: &mut Vec<ControllerEvent>,
    ) -> Result<(), TrainError> {
        let layers = self.layers.len();
        if batch_stats.len() != layers {
            return Err(TrainError::Backend(BackendError::LengthMismatch {
                what: "per-layer batch statistics",
                expected: layers,
                found: batch_stats.len(),
            }));
        }
        let finite_population = self.cfg.statistics.finite_population.then_some(population);
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
            let Some(sum_sq) = batch_stats[l].sum_sample_sq_norms else {
                return Err(TrainError::Backend(BackendError::LengthMismatch {
                    what: "per-sample gradient norms at a controller event",
                    expected: layers,
                    found: l,
                }));
            };
            let noise = NoiseStats::from_sample_sq_norms(
                batch_stats[l].mean_grad_sq,
                sum_sq,
                batch_size,
                finite_population,
            )
            .map_err(controller)?;
            let lr_f32 = f64::from(self.lrs[l]);
            // The applied lr in f64 (before the engine's f32 rounding).
            let lr_applied = layer.scheduler.lr() * multiplier;
            let observation = LayerObservation {
                alpha_agg: stats[l].alpha_agg(lr_f32, self.cfg.adam.eps),
                mean_multiplier: stats[l].mean_multiplier(),
                sharpness: f64::from(sharpness[l]),
                noise,
                lr_used: Some(lr_applied),
            };
            let report = layer
                .scheduler
                .observe(&self.sched, &observation, progress)
                .map_err(controller)?;
            events.push(ControllerEvent {
                step,
                position: pos,
                layer: l,
                lr_applied,
                batch: batch_stats[l],
                step_stats: stats[l],
                observation,
                report,
            });
        }
        Ok(())
    }

    /// Each layer's sharpness λ (or preconditioned sharpness) by warm-started power
    /// iteration: the largest-magnitude eigenvalue, or the top one ([`Sharpness`]).
    fn sharpness(&mut self) -> Result<Vec<f32>, TrainError> {
        let preconditioned = self.sched.measure == StepMeasure::Preconditioned;
        let top = self.cfg.statistics.sharpness == Sharpness::Top;
        let step = self.t;
        let mut out = Vec::with_capacity(self.layers.len());
        for (l, layer) in self.layers.iter_mut().enumerate() {
            let backend = self.backend.as_mut();
            if preconditioned {
                backend.precond_sqrt(l, &self.adam, self.t, &mut layer.precond)?;
            }
            let precond = preconditioned.then_some(layer.precond.as_slice());
            let rows = self.cfg.statistics.hvp_rows;
            let hvp = |v: &[f32], hv: &mut [f32]| match rows {
                0 => backend.hvp(l, v, hv),
                rows => backend.hvp_rows(l, rows, v, hv),
            };
            let lambda = if top {
                top_eigenvalue(
                    &mut layer.power,
                    &mut layer.power_top,
                    &self.power_cfg,
                    &mut layer.direction,
                    &mut layer.direction_top,
                    &mut layer.hv,
                    precond,
                    hvp,
                )
            } else {
                layer.power.estimate(
                    &self.power_cfg,
                    &mut layer.direction,
                    &mut layer.hv,
                    precond,
                    hvp,
                )
            }
            .map_err(|e| TrainError::Power {
                layer: l,
                step,
                message: e.to_string(),
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
                .map(|l| {
                    [
                        (l.power.eigenvalue(), l.power.is_warm()),
                        (l.power_top.eigenvalue(), l.power_top.is_warm()),
                    ]
                })
                .collect(),
            directions: self
                .layers
                .iter()
                .map(|l| [l.direction.clone(), l.direction_top.clone()])
                .collect(),
            units: self
                .plasticity
                .as_ref()
                .map(|p| p.trackers().to_vec())
                .unwrap_or_default(),
        })
    }

    /// Restores a snapshot taken by [`Trainer::export_state`] on the same configuration.
    /// Everything is checked before anything changes.
    pub fn import_state(&mut self, state: &TrainerState) -> Result<(), TrainError> {
        let layers = self.layers.len();
        let mismatch = |what, expected, found| {
            TrainError::Backend(BackendError::LengthMismatch {
                what,
                expected,
                found,
            })
        };
        if state.schedulers.len() != layers {
            return Err(mismatch(
                "checkpoint schedulers",
                layers,
                state.schedulers.len(),
            ));
        }
        if state.power.len() != layers || state.directions.len() != layers {
            return Err(mismatch(
                "checkpoint power iterations",
                layers,
                state.power.len(),
            ));
        }
        let mut schedulers = Vec::with_capacity(layers);
        for (l, layer) in self.layers.iter().enumerate() {
            let [dir, dir_top] = &state.directions[l];
            if dir.len() != layer.direction.len() {
                return Err(mismatch(
                    "checkpoint power direction",
                    layer.direction.len(),
                    dir.len(),
                ));
            }
            if dir_top.len() != layer.direction_top.len() {
                return Err(mismatch(
                    "checkpoint top power direction",
                    layer.direction_top.len(),
                    dir_top.len(),
                ));
            }
            if let Some(i) = dir.iter().chain(dir_top).position(|x| !x.is_finite()) {
                return Err(TrainError::Backend(BackendError::NonFiniteInput {
                    index: i,
                    value: f32::NAN,
                }));
            }
            schedulers.push(
                HostScheduler::from_state(&self.sched, &state.schedulers[l]).map_err(|error| {
                    TrainError::Controller {
                        layer: l,
                        step: state.t,
                        error,
                    }
                })?,
            );
        }
        if let Some(p) = &mut self.plasticity {
            p.set_trackers(&state.units)?;
        }
        self.backend.import_state(&state.backend)?;
        for ((l, layer), scheduler) in self.layers.iter_mut().enumerate().zip(schedulers) {
            layer.scheduler = scheduler;
            let [(eigenvalue, warm), (eigenvalue_top, warm_top)] = state.power[l];
            layer.power = PowerIteration::from_parts(eigenvalue, warm);
            layer.power_top = PowerIteration::from_parts(eigenvalue_top, warm_top);
            let [dir, dir_top] = &state.directions[l];
            layer.direction.copy_from_slice(dir);
            layer.direction_top.copy_from_slice(dir_top);
        }
        self.t = state.t;
        Ok(())
    }
}
