//! The per-layer step-size scheduler (Algorithm 1 of the paper, as DESIGN.md
//! operationalises it).
//!
//! Every `K` optimizer steps ([`SchedulerConfig::is_event`]), for each layer: measure the
//! effective step `ρ`, update the layer's noise and volatility estimates, compute the bound
//! the mode selects, then
//!
//! - **cool** (`lr ← γ_cool·lr`) if `ρ > bound`;
//! - else **warm** (`lr ← γ_warm·lr`) if early in the task and `ρ < timid·bound`;
//! - else **hold**; `lr` is always clamped to `[lr_min, lr_max]`.
//!
//! Statistics in, learning rates out: the scheduler never sees tensors. That is the shape of
//! the usual learning-rate scheduler APIs — one [`LayerScheduler`] per torch param group
//! (`group["lr"] = sched.lr()`), optax's pure `init`/`update` (the scheduler is its state),
//! burn's `LrScheduler::step`, or candle's `Optimizer::set_learning_rate` per layer's
//! optimizer. A complete loop, with the statistics faked:
//!
//! ```
//! use safestep_core::noise::NoiseStats;
//! use safestep_core::scheduler::{LayerObservation, LayerScheduler, Mode, Progress, SchedulerConfig};
//!
//! let cfg = SchedulerConfig { mode: Mode::Combined, ..SchedulerConfig::<f64>::default() };
//! // One scheduler per layer ("param group"), window capacity 32 >= cfg.window.
//! let mut layers = [LayerScheduler::<f64, 32>::new(&cfg, 1e-3)?, LayerScheduler::new(&cfg, 1e-3)?];
//! for step in 0..100u64 {
//!     // ... forward/backward, then one Adam step per layer with lr = layers[l].lr() ...
//!     if cfg.is_event(step) {
//!         for sched in layers.iter_mut() {
//!             let obs = LayerObservation {
//!                 lr_used: None,
//!                 alpha_agg: sched.lr() / 1e-3, // lr/(sqrt(mean v̂)+ε) from adam's StepStats
//!                 mean_multiplier: sched.lr(),
//!                 sharpness: 5.0,                // power iteration on the layer's HVP
//!                 noise: NoiseStats::from_variance(1.0, 64.0, 32, None)?, // SNR_g = 0.5
//!             };
//!             let progress = Progress { step_in_task: step, steps_per_task: Some(100), step, total_steps: None };
//!             let report = sched.observe(&cfg, &obs, progress)?;
//!             assert!(report.lr_after >= cfg.lr_min && report.lr_after <= cfg.lr_max);
//!         }
//!     }
//! }
//! // ρ = α_agg·λ = 5 is far above the bound (< 2s = 1.6): both layers cooled every event.
//! assert!((layers[0].lr() - 1e-3 * 0.99_f64.powi(10)).abs() < 1e-12);
//! # Ok::<(), safestep_core::Error>(())
//! ```

use crate::bounds::{momentum_batch, momentum_edge, Bounds, StepMeasure};
use crate::error::{check_finite, check_nonneg};
use crate::noise::{snr_ratio, NoiseStats};
use crate::window::{CurvatureWindow, EmaVolatility};
use crate::{Error, Real};

use crate::names::named_enum;

named_enum! {
    /// Which bound the scheduler enforces.
    pub enum Mode: "mode" {
        /// Never change the learning rate (plain Adam); the numbers are still reported.
        Off = "off",
        /// Gradient-noise bound `ρ*_g`.
        Gradient = "gradient",
        /// Volatility bound `ρ*_vol`.
        Volatility = "volatility",
        /// Combined bound `ρ̃*` (the paper's scheduler; the default).
        Combined = "combined",
    }
    default Combined
}

named_enum! {
    /// How `SNR_g` is estimated at an event.
    pub enum SnrEstimator: "snr estimator" {
        /// Ratio of bias-corrected EMAs of the unbiased `‖ḡ‖² − S/B` (clamped at 0 *after*
        /// averaging, so pure noise gives `SNR_g ≈ 0`) and of the noise `S/B` across events
        /// (McCandlish et al.; the default).
        Ema = "ema",
        /// This event's raw `G²/(S/B)` (mostly sampling noise; for ablation).
        Raw = "raw",
    }
    default Ema
}

named_enum! {
    /// How the curvature volatility is estimated.
    pub enum VolatilityEstimator: "volatility estimator" {
        /// Last `window` values of `ρ` ([`CurvatureWindow`]; the default).
        Window = "window",
        /// Bias-corrected EMA with decay `1 − 2/(window+1)` ([`EmaVolatility`]).
        Ema = "ema",
    }
    default Window
}

named_enum! {
    /// What [`LayerScheduler::begin_task`] does at a task boundary.
    pub enum TaskBoundary: "task boundary" {
        /// Keep the SNR EMAs, the curvature window and the learning rate (the default).
        Carry = "carry",
        /// Forget the SNR EMAs and the curvature window; keep the learning rate.
        ResetStats = "reset-stats",
        /// Forget the statistics and restart the learning rate at `lr0` (per-task
        /// trajectories, like a step decay that restarts every task).
        ResetLr = "reset-lr",
    }
    default Carry
}

named_enum! {
    /// Which stability threshold the bound scales.
    pub enum Threshold: "threshold" {
        /// `2·SNR/(1+SNR)`: the descent bound of one gradient step (the default).
        Sgd = "sgd",
        /// `E·SNR/(1+SNR)` with `E = (2+2β1)/(1−β1)`, the edge of stability of Adam's
        /// momentum ([`crate::bounds::momentum_edge`], 38 at β1 = 0.9).
        Momentum = "momentum",
    }
    default Sgd
}

named_enum! {
    /// Which noise the gradient SNR compares the signal with.
    pub enum NoiseAveraging: "noise averaging" {
        /// The minibatch mean's noise `S/B` (the default).
        Minibatch = "minibatch",
        /// The noise of Adam's momentum average, `S/B_eff` with the effective batch
        /// `B_eff = B(1+β1)/(1−β1)` ([`crate::bounds::momentum_batch`]); `B_eff` also
        /// replaces `B` in `SNR_v`. `G²` is still debiased with the minibatch's `S/B`.
        Momentum = "momentum",
    }
    default Minibatch
}

named_enum! {
    /// How an event turns `ρ` and the bound into a learning-rate change.
    pub enum Control: "control" {
        /// Cool when `ρ > bound`; warm only early in a task and only when
        /// `ρ < timid·bound`; else hold (DESIGN.md's Algorithm 1; the default).
        EarlyWarm = "early-warm",
        /// Cool when `ρ > bound`, warm whenever `ρ < timid·bound`, at any time.
        Symmetric = "symmetric",
        /// `lr ← lr·clamp((bound/ρ)^κ, γ_cool, γ_warm)` (`ρ <= 0` warms by `γ_warm`).
        Proportional = "proportional",
    }
    default EarlyWarm
}

/// Every constant of the scheduler. `Default` gives DESIGN.md's values.
///
/// With the `serde` feature it (de)serialises with these field names; missing fields take
/// their defaults and unknown ones are rejected.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        default,
        deny_unknown_fields,
        bound(
            serialize = "T: serde::Serialize",
            deserialize = "T: Real + serde::Deserialize<'de>"
        )
    )
)]
pub struct SchedulerConfig<T> {
    /// Which bound to enforce (default [`Mode::Combined`]).
    pub mode: Mode,
    /// How `ρ` is measured (default [`StepMeasure::Normalized`]).
    pub measure: StepMeasure,
    /// Control interval `K`: an event every `K` optimizer steps (default 10, `>= 1`).
    pub interval: usize,
    /// Safety factor `s` (default 0.8, `> 0` and at most a quarter of the type's largest
    /// value); every bound lies in `[0, 2s]` (`[0, s·E]` with [`Threshold::Momentum`]).
    pub safety: T,
    /// Volatility weight `β` in `SNR_v = B/(β·Vol)` (default 1, `>= 0`).
    pub beta: T,
    /// Volatility window `W` (default 20, `1..=N` of the [`LayerScheduler`]).
    pub window: usize,
    /// Decay of the `G²` and noise EMAs (default 0.9, in `[0, 1)`).
    pub snr_ema_decay: T,
    /// `SNR_g` estimator (default [`SnrEstimator::Ema`]).
    pub snr_estimator: SnrEstimator,
    /// Volatility estimator (default [`VolatilityEstimator::Window`]).
    pub volatility_estimator: VolatilityEstimator,
    /// `γ_cool` (default 0.99, in `(0, 1]`).
    pub cool: T,
    /// `γ_warm` (default 1.01, finite and `>= 1`).
    pub warm: T,
    /// "Early" = the first `warm_fraction` of the task's steps (default 0.3, in `[0, 1]`).
    pub warm_fraction: T,
    /// Warm only if `ρ < timid·bound` (default 0.1, in `[0, 1]`).
    pub timid: T,
    /// Lower clamp of the learning rate (default 1e-6, finite and `> 0`).
    pub lr_min: T,
    /// Upper clamp of the learning rate (default 1e-2, finite and `>= lr_min`).
    pub lr_max: T,
    /// What a task boundary does (default [`TaskBoundary::Carry`]).
    pub boundary: TaskBoundary,
    /// The stability threshold the bound scales (default [`Threshold::Sgd`]).
    pub threshold: Threshold,
    /// The noise `SNR_g` is measured against (default [`NoiseAveraging::Minibatch`]).
    pub noise_averaging: NoiseAveraging,
    /// The control law (default [`Control::EarlyWarm`]).
    pub control: Control,
    /// Exponent `κ` of [`Control::Proportional`] (default 1, finite and `> 0`).
    pub kappa: T,
    /// Adam's `β1`, used by [`Threshold::Momentum`] and [`NoiseAveraging::Momentum`]; set it
    /// to your optimizer's (default 0.9, in `[0, 1)`).
    pub beta1: T,
}

impl<T: Real> Default for SchedulerConfig<T> {
    fn default() -> Self {
        SchedulerConfig {
            mode: Mode::Combined,
            measure: StepMeasure::Normalized,
            interval: 10,
            safety: T::of(0.8),
            beta: T::one(),
            window: 20,
            snr_ema_decay: T::of(0.9),
            snr_estimator: SnrEstimator::Ema,
            volatility_estimator: VolatilityEstimator::Window,
            cool: T::of(0.99),
            warm: T::of(1.01),
            warm_fraction: T::of(0.3),
            timid: T::of(0.1),
            lr_min: T::of(1e-6),
            lr_max: T::of(1e-2),
            boundary: TaskBoundary::Carry,
            threshold: Threshold::Sgd,
            noise_averaging: NoiseAveraging::Minibatch,
            control: Control::EarlyWarm,
            kappa: T::one(),
            beta1: T::of(0.9),
        }
    }
}

fn invalid<T: Real>(field: &'static str, value: T, allowed: &'static str) -> Error {
    Error::InvalidConfig {
        field,
        value: value.as_f64(),
        allowed,
    }
}

fn in_range<T: Real>(
    field: &'static str,
    x: T,
    lo: T,
    hi: T,
    allowed: &'static str,
) -> Result<(), Error> {
    if x.is_finite() && x >= lo && x <= hi {
        Ok(())
    } else {
        Err(invalid(field, x, allowed))
    }
}

impl<T: Real> SchedulerConfig<T> {
    /// Checks every field against the range documented on it.
    ///
    /// ```
    /// use safestep_core::scheduler::SchedulerConfig;
    /// let bad = SchedulerConfig { cool: 1.5_f64, ..SchedulerConfig::default() };
    /// assert_eq!(bad.validate().unwrap_err().to_string(), "config field cool = 1.5: must be in (0, 1]");
    /// ```
    pub fn validate(&self) -> Result<(), Error> {
        // Fast path, branch-free (this runs on every event): all fields in range?
        let (zero, one) = (T::zero(), T::one());
        let fin = |x: T| x.is_finite();
        let ok = (self.interval != 0)
            & (self.window != 0)
            & fin(self.safety)
            & (self.safety > zero)
            & (self.safety <= T::max_value() / T::of(4.0))
            & fin(self.beta)
            & (self.beta >= zero)
            & (self.snr_ema_decay >= zero)
            & (self.snr_ema_decay < one)
            & (self.cool > zero)
            & (self.cool <= one)
            & fin(self.warm)
            & (self.warm >= one)
            & (self.warm_fraction >= zero)
            & (self.warm_fraction <= one)
            & (self.timid >= zero)
            & (self.timid <= one)
            & fin(self.lr_min)
            & (self.lr_min > zero)
            & fin(self.lr_max)
            & (self.lr_max >= self.lr_min)
            & fin(self.kappa)
            & (self.kappa > zero)
            & (self.beta1 >= zero)
            & (self.beta1 < one);
        if ok {
            return Ok(());
        }
        self.first_error()
    }

    /// The slow path of `validate`: names the first field out of range.
    fn first_error(&self) -> Result<(), Error> {
        if self.interval == 0 {
            return Err(Error::InvalidConfig {
                field: "interval",
                value: 0.0,
                allowed: ">= 1",
            });
        }
        if self.window == 0 {
            return Err(Error::InvalidConfig {
                field: "window",
                value: 0.0,
                allowed: ">= 1",
            });
        }
        if !(self.safety.is_finite()
            && self.safety > T::zero()
            && self.safety <= T::max_value() / T::of(4.0))
        {
            return Err(invalid(
                "safety",
                self.safety,
                "> 0 and at most a quarter of the type's largest value",
            ));
        }
        in_range(
            "beta",
            self.beta,
            T::zero(),
            T::max_value(),
            "finite and >= 0",
        )?;
        if !(self.snr_ema_decay.is_finite()
            && self.snr_ema_decay >= T::zero()
            && self.snr_ema_decay < T::one())
        {
            return Err(invalid("snr_ema_decay", self.snr_ema_decay, "in [0, 1)"));
        }
        if !(self.cool.is_finite() && self.cool > T::zero() && self.cool <= T::one()) {
            return Err(invalid("cool", self.cool, "in (0, 1]"));
        }
        in_range(
            "warm",
            self.warm,
            T::one(),
            T::max_value(),
            "finite and >= 1",
        )?;
        in_range(
            "warm_fraction",
            self.warm_fraction,
            T::zero(),
            T::one(),
            "in [0, 1]",
        )?;
        in_range("timid", self.timid, T::zero(), T::one(), "in [0, 1]")?;
        if !(self.lr_min.is_finite() && self.lr_min > T::zero()) {
            return Err(invalid("lr_min", self.lr_min, "finite and > 0"));
        }
        in_range(
            "lr_max",
            self.lr_max,
            self.lr_min,
            T::max_value(),
            "finite and >= lr_min",
        )?;
        if !(self.kappa.is_finite() && self.kappa > T::zero()) {
            return Err(invalid("kappa", self.kappa, "finite and > 0"));
        }
        if !(self.beta1.is_finite() && self.beta1 >= T::zero() && self.beta1 < T::one()) {
            return Err(invalid("beta1", self.beta1, "in [0, 1)"));
        }
        Ok(())
    }

    /// Whether optimizer step `step` (counted from 0) is a controller event:
    /// `step % interval == 0` (never, for an invalid `interval` of 0).
    ///
    /// ```
    /// use safestep_core::scheduler::SchedulerConfig;
    /// let cfg = SchedulerConfig::<f32>::default(); // K = 10
    /// assert!(cfg.is_event(0) && cfg.is_event(20) && !cfg.is_event(7));
    /// ```
    pub fn is_event(&self, step: u64) -> bool {
        self.interval != 0 && step.is_multiple_of(self.interval as u64)
    }
}

/// Where training is, to decide whether it is "early" (warming allowed).
///
/// Early means `step_in_task < warm_fraction · steps_per_task` when the task length is
/// known (the task-boundary hint), else `step < warm_fraction · total_steps` when the run
/// length is known, else never (no warming without a notion of "early").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Optimizer steps since the current task began.
    pub step_in_task: u64,
    /// Steps per task, if task boundaries are known.
    pub steps_per_task: Option<u64>,
    /// Optimizer steps since the run began.
    pub step: u64,
    /// Total steps of the run, if known.
    pub total_steps: Option<u64>,
}

impl Progress {
    /// Whether warming is allowed at this point (see the type's docs).
    ///
    /// ```
    /// use safestep_core::scheduler::Progress;
    /// let p = Progress { step_in_task: 20, steps_per_task: Some(100), step: 520, total_steps: None };
    /// assert!(p.is_early(0.3_f64));
    /// assert!(!p.is_early(0.2_f64));
    /// ```
    pub fn is_early<T: Real>(&self, warm_fraction: T) -> bool {
        let frac = warm_fraction.as_f64();
        match (self.steps_per_task, self.total_steps) {
            (Some(n), _) => (self.step_in_task as f64) < frac * n as f64,
            (None, Some(total)) => (self.step as f64) < frac * total as f64,
            (None, None) => false,
        }
    }
}

/// One layer's statistics at a controller event (everything the scheduler needs).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LayerObservation<T> {
    /// `α_agg = lr/(sqrt(mean v̂)+ε)` ([`crate::adam::StepStats::alpha_agg`]) with the lr
    /// applied at the step, `>= 0`.
    pub alpha_agg: T,
    /// The literal mean multiplier ([`crate::adam::StepStats::mean_multiplier`]), `>= 0`.
    pub mean_multiplier: T,
    /// The layer's sharpness `λ` ([`crate::power`]); for [`StepMeasure::Preconditioned`]
    /// the preconditioned `λ_max(D^½ H D^½)`. Finite, any sign.
    pub sharpness: T,
    /// Gradient-noise statistics on the event's minibatch ([`NoiseStats`]).
    pub noise: NoiseStats<T>,
    /// The learning rate actually applied at the event's step, when it differs from
    /// [`LayerScheduler::lr`] (e.g. times a step-decay multiplier); `None` means the
    /// scheduler's own lr. [`StepMeasure::Preconditioned`] measures `ρ = lr_used·λ`.
    pub lr_used: Option<T>,
}

named_enum! {
    /// The scheduler's decision for a layer at an event.
    pub enum Decision: "decision" {
        /// `ρ` was above the bound (or, proportional control, the factor was below 1):
        /// the lr went down.
        Cool = "cool",
        /// `ρ` well below the bound (or a factor above 1): the lr went up.
        Warm = "warm",
        /// Neither (or mode off).
        Hold = "hold",
    }
    default Hold
}

/// A decision and every number behind it, for logging.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Report<T> {
    /// What was done.
    pub decision: Decision,
    /// Learning rate before the event.
    pub lr_before: T,
    /// Learning rate after it (clamped to `[lr_min, lr_max]`).
    pub lr_after: T,
    /// The step measure `ρ` compared with the bound.
    pub rho: T,
    /// Curvature volatility `Vol` after pushing this `ρ`.
    pub vol: T,
    /// `SNR_g` as the estimator produced it (against the noise [`NoiseAveraging`] selects).
    pub snr_g: T,
    /// `SNR_v = B/(β·Vol)` (`B_eff` with [`NoiseAveraging::Momentum`]).
    pub snr_v: T,
    /// Combined `SNR`.
    pub snr: T,
    /// Gradient-noise bound `ρ*_g`.
    pub rho_g: T,
    /// Volatility bound `ρ*_vol`.
    pub rho_vol: T,
    /// Combined bound `ρ̃*`.
    pub rho_combined: T,
    /// The bound the mode uses (`rho_combined` for mode off, reported only).
    pub bound: T,
    /// Bias-corrected EMA of the unbiased `‖ḡ‖² − S/B` after this event, clamped at 0.
    pub g2_ema: T,
    /// Bias-corrected EMA of the noise `S/B` after this event.
    pub noise_ema: T,
}

/// Number of fixed entries in [`LayerScheduler::to_state`] before the window values.
pub const STATE_HEADER: usize = 13;

/// The format number [`LayerScheduler::to_state`] writes first.
pub const STATE_FORMAT: u32 = 2;

/// One layer's scheduler state: its learning rate, volatility estimator and SNR EMAs.
/// `N` is the volatility window's capacity (`cfg.window <= N`).
#[derive(Debug, Clone)]
pub struct LayerScheduler<T, const N: usize> {
    lr: T,
    lr0: T,
    window: CurvatureWindow<T, N>,
    ema_vol: EmaVolatility<T>,
    g2_sum: T,
    noise_sum: T,
    ema_weight: T,
    events: u64,
}

impl<T: Real, const N: usize> LayerScheduler<T, N> {
    /// A fresh layer starting at learning rate `lr0`.
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] from [`SchedulerConfig::validate`] or for `cfg.window > N`;
    /// [`Error::InvalidInput`] for an `lr0` outside `[lr_min, lr_max]` (so the invariant
    /// "lr within its clamp" holds from the start, also in mode off).
    pub fn new(cfg: &SchedulerConfig<T>, lr0: T) -> Result<Self, Error> {
        cfg.validate()?;
        let window = CurvatureWindow::new(cfg.window)?;
        let ema_vol = EmaVolatility::new(EmaVolatility::<T>::decay_for_window(cfg.window))?;
        if !(lr0.is_finite() && lr0 >= cfg.lr_min && lr0 <= cfg.lr_max) {
            return Err(Error::InvalidInput {
                what: "lr0",
                value: lr0.as_f64(),
                allowed: "finite and within [lr_min, lr_max]",
            });
        }
        Ok(LayerScheduler {
            lr: lr0,
            lr0,
            window,
            ema_vol,
            g2_sum: T::zero(),
            noise_sum: T::zero(),
            ema_weight: T::zero(),
            events: 0,
        })
    }

    /// The layer's current learning rate.
    pub fn lr(&self) -> T {
        self.lr
    }

    /// The learning rate the layer started at ([`TaskBoundary::ResetLr`] returns to it).
    pub fn lr0(&self) -> T {
        self.lr0
    }

    /// Number of events observed.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// The whole state as a flat list of numbers, for checkpoints (collect it into a
    /// `Vec`, or write it into a buffer of [`LayerScheduler::state_len`] values). Layout
    /// (format [`STATE_FORMAT`] = 2): `[2, lr, lr0, g2_sum, noise_sum, ema_weight, events,
    /// ema_weight, ema_weight_sq, ema_mean, ema_m2, ema_count, k, window values (k, oldest
    /// first)]`. Restore with [`LayerScheduler::from_state`]; the continuation is
    /// bit-identical (counts are exact up to 2^24 events in `f32`, 2^53 in `f64`).
    ///
    /// ```
    /// use safestep_core::noise::NoiseStats;
    /// use safestep_core::scheduler::{LayerObservation, LayerScheduler, Progress, SchedulerConfig};
    /// let cfg = SchedulerConfig::<f64>::default();
    /// let mut a = LayerScheduler::<f64, 32>::new(&cfg, 1e-3)?;
    /// let obs = LayerObservation { alpha_agg: 0.5, sharpness: 3.0,
    ///     noise: NoiseStats::from_variance(1.0, 2.0, 16, None)?, ..LayerObservation::default() };
    /// a.observe(&cfg, &obs, Progress::default())?;
    /// let saved: Vec<f64> = a.to_state().collect();
    /// let mut b = LayerScheduler::<f64, 32>::from_state(&cfg, &saved)?;
    /// assert_eq!(a.observe(&cfg, &obs, Progress::default())?, b.observe(&cfg, &obs, Progress::default())?);
    /// # Ok::<(), safestep_core::Error>(())
    /// ```
    pub fn to_state(&self) -> impl Iterator<Item = T> + '_ {
        let e = self.ema_vol.parts();
        let head = [
            T::of(f64::from(STATE_FORMAT)),
            self.lr,
            self.lr0,
            self.g2_sum,
            self.noise_sum,
            self.ema_weight,
            T::of(self.events as f64),
            e[0],
            e[1],
            e[2],
            e[3],
            e[4],
            T::of_usize(self.window.len()),
        ];
        head.into_iter().chain(self.window.iter())
    }

    /// Number of values [`LayerScheduler::to_state`] yields.
    pub fn state_len(&self) -> usize {
        STATE_HEADER + self.window.len()
    }

    /// Rebuilds a scheduler from [`LayerScheduler::to_state`]'s numbers, for the same
    /// `cfg` (its window and clamp are checked against the state).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] from `cfg`; [`Error::LengthMismatch`] (what `"state"`) for a
    /// truncated state; [`Error::InvalidInput`] for a format other than [`STATE_FORMAT`],
    /// an `lr` or `lr0` outside the clamp, more window values than `cfg.window`, or a count
    /// that is not a whole number; [`Error::NonFinite`] for a non-finite entry.
    pub fn from_state(cfg: &SchedulerConfig<T>, state: &[T]) -> Result<Self, Error> {
        if state.len() < STATE_HEADER {
            return Err(Error::LengthMismatch {
                what: "state",
                expected: STATE_HEADER,
                found: state.len(),
            });
        }
        if let Some(i) = state.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite {
                what: "state",
                index: Some(i),
            });
        }
        if state[0] != T::of(f64::from(STATE_FORMAT)) {
            return Err(Error::InvalidInput {
                what: "state format",
                value: state[0].as_f64(),
                allowed: "2 (this version's format)",
            });
        }
        let count = |what: &'static str, x: T| -> Result<u64, Error> {
            let v = x.as_f64();
            if v >= 0.0 && libm::trunc(v) == v && v < 1.8e19 {
                Ok(v as u64)
            } else {
                Err(Error::InvalidInput {
                    what,
                    value: v,
                    allowed: "a whole number >= 0",
                })
            }
        };
        let k = count("state window length", state[12])? as usize;
        if k > cfg.window {
            return Err(Error::InvalidInput {
                what: "state window length",
                value: k as f64,
                allowed: "<= cfg.window",
            });
        }
        crate::error::check_len("state", STATE_HEADER + k, state.len())?;
        let mut s = Self::new(cfg, state[2])?;
        if !(state[1] >= cfg.lr_min && state[1] <= cfg.lr_max) {
            return Err(Error::InvalidInput {
                what: "state lr",
                value: state[1].as_f64(),
                allowed: "within [lr_min, lr_max]",
            });
        }
        s.lr = state[1];
        s.g2_sum = state[3];
        s.noise_sum = check_nonneg("state noise_sum", state[4])?;
        s.ema_weight = check_nonneg("state ema_weight", state[5])?;
        s.events = count("state events", state[6])?;
        let ema_count = count("state ema count", state[11])? as usize;
        s.ema_vol.set_parts(
            [state[7], state[8], state[9], state[10], T::zero()],
            ema_count,
        )?;
        for &rho in &state[STATE_HEADER..] {
            s.window.push(rho)?;
        }
        Ok(s)
    }

    /// Forget the volatility history and the SNR EMAs (the statistics of the old task say
    /// little about the new one). The learning rate is kept.
    pub fn reset_task(&mut self) {
        self.window.clear();
        self.ema_vol.clear();
        self.g2_sum = T::zero();
        self.noise_sum = T::zero();
        self.ema_weight = T::zero();
    }

    /// A new task begins: carry, reset the statistics, or also restart the lr at `lr0`, as
    /// `cfg.boundary` says.
    ///
    /// ```
    /// use safestep_core::scheduler::{LayerScheduler, SchedulerConfig, TaskBoundary};
    /// let cfg = SchedulerConfig { boundary: TaskBoundary::ResetLr, ..SchedulerConfig::<f64>::default() };
    /// let mut s = LayerScheduler::<f64, 32>::from_state(&cfg,
    ///     &[2.0, 5e-4, 1e-3, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])?;
    /// assert_eq!(s.lr(), 5e-4);
    /// s.begin_task(&cfg);
    /// assert_eq!(s.lr(), 1e-3);
    /// # Ok::<(), safestep_core::Error>(())
    /// ```
    pub fn begin_task(&mut self, cfg: &SchedulerConfig<T>) {
        match cfg.boundary {
            TaskBoundary::Carry => {}
            TaskBoundary::ResetStats => self.reset_task(),
            TaskBoundary::ResetLr => {
                self.reset_task();
                self.lr = self.lr0;
            }
        }
    }

    /// One controller event: takes the layer's statistics, updates the estimates, decides
    /// and applies cool / warm / hold, and reports every number behind the decision.
    ///
    /// `cfg` must be the configuration the scheduler was created with (its `window` is
    /// checked). Deterministic: the same sequence of inputs gives bit-identical outputs.
    ///
    /// # Errors
    /// Invalid `cfg` (or a `window` different from creation), a non-finite or negative
    /// observation field (`sharpness` may be negative), a noise `batch` of 0, or
    /// [`Error::Overflow`] when the inputs are so large that an estimate would not be
    /// finite. On error the state is unchanged.
    pub fn observe(
        &mut self,
        cfg: &SchedulerConfig<T>,
        obs: &LayerObservation<T>,
        progress: Progress,
    ) -> Result<Report<T>, Error> {
        cfg.validate()?;
        if cfg.window != self.window.capacity() {
            return Err(Error::InvalidConfig {
                field: "window",
                value: cfg.window as f64,
                allowed: "the value the LayerScheduler was created with",
            });
        }
        let alpha = check_nonneg("alpha_agg", obs.alpha_agg)?;
        let mean_mult = check_nonneg("mean_multiplier", obs.mean_multiplier)?;
        let sharp = check_finite("sharpness", obs.sharpness)?;
        let g2 = check_nonneg("noise.unbiased_grad_sq", obs.noise.unbiased_grad_sq)?;
        let noise = check_nonneg("noise.noise", obs.noise.noise)?;
        let mgs = check_nonneg("noise.mean_grad_sq", obs.noise.mean_grad_sq)?;
        let lr_used = match obs.lr_used {
            Some(lr) => check_nonneg("lr_used", lr)?,
            None => self.lr,
        };
        if obs.noise.batch == 0 {
            return Err(Error::InvalidInput {
                what: "noise.batch",
                value: 0.0,
                allowed: ">= 1",
            });
        }
        let rho = match cfg.measure {
            StepMeasure::Normalized => alpha * sharp,
            StepMeasure::Preconditioned => lr_used * sharp,
            StepMeasure::Mean => mean_mult,
        };
        if !rho.is_finite() {
            return Err(Error::Overflow {
                what: "rho",
                index: None,
            });
        }

        // Tentative updates on copies; committed only once everything succeeded.
        let d = cfg.snr_ema_decay;
        let c = T::one() - d;
        let g2_sum = d * self.g2_sum + c * (mgs - noise);
        let noise_sum = d * self.noise_sum + c * noise;
        let ema_weight = d * self.ema_weight + c;
        if !(g2_sum.is_finite() && noise_sum.is_finite()) {
            return Err(Error::Overflow {
                what: "snr ema",
                index: None,
            });
        }
        let g2_ema = (g2_sum / ema_weight).max(T::zero());
        let noise_ema = noise_sum / ema_weight;
        // The noise the signal is compared with, and the batch in SNR_v.
        let (noise_scale, batch) = match cfg.noise_averaging {
            NoiseAveraging::Minibatch => (T::one(), T::of_usize(obs.noise.batch)),
            NoiseAveraging::Momentum => {
                let eff = momentum_batch(obs.noise.batch, cfg.beta1)?;
                (T::of_usize(obs.noise.batch) / eff, eff)
            }
        };
        let snr_g = match cfg.snr_estimator {
            SnrEstimator::Ema => snr_ratio(g2_ema, noise_ema * noise_scale),
            SnrEstimator::Raw => snr_ratio(g2, noise * noise_scale),
        };
        // The volatility estimate is computed as if ρ were pushed and committed with the
        // rest, so an error leaves the state unchanged.
        let mut ema_vol = self.ema_vol;
        let vol = match cfg.volatility_estimator {
            VolatilityEstimator::Window => self.window.volatility_after(rho),
            VolatilityEstimator::Ema => {
                ema_vol.push(rho)?;
                ema_vol.volatility()
            }
        };
        if !vol.is_finite() {
            return Err(Error::Overflow {
                what: "volatility",
                index: None,
            });
        }
        let safety = match cfg.threshold {
            Threshold::Sgd => cfg.safety,
            Threshold::Momentum => cfg.safety * momentum_edge(cfg.beta1)? / T::of(2.0),
        };
        let b = Bounds::with_effective_batch(safety, cfg.beta, batch, snr_g, vol)?;
        if cfg.volatility_estimator == VolatilityEstimator::Window {
            self.window.push(rho)?;
        }
        self.ema_vol = ema_vol;
        self.g2_sum = g2_sum;
        self.noise_sum = noise_sum;
        self.ema_weight = ema_weight;
        self.events += 1;

        let bound = match cfg.mode {
            Mode::Off | Mode::Combined => b.rho_combined,
            Mode::Gradient => b.rho_g,
            Mode::Volatility => b.rho_vol,
        };
        let lr_before = self.lr;
        let factor = if cfg.mode == Mode::Off {
            T::one()
        } else {
            control_factor(cfg, rho, bound, progress)
        };
        let decision = if factor < T::one() {
            Decision::Cool
        } else if factor > T::one() {
            Decision::Warm
        } else {
            Decision::Hold
        };
        let lr_after = match decision {
            Decision::Hold => lr_before,
            _ => (lr_before * factor).max(cfg.lr_min).min(cfg.lr_max),
        };
        self.lr = lr_after;
        Ok(Report {
            decision,
            lr_before,
            lr_after,
            rho,
            vol,
            snr_g: b.snr_g,
            snr_v: b.snr_v,
            snr: b.snr,
            rho_g: b.rho_g,
            rho_vol: b.rho_vol,
            rho_combined: b.rho_combined,
            bound,
            g2_ema,
            noise_ema,
        })
    }
}

/// The factor an event multiplies the lr by, before the clamp: `γ_cool`, `γ_warm` or 1 for
/// the threshold laws, `clamp((bound/ρ)^κ, γ_cool, γ_warm)` for proportional control.
fn control_factor<T: Real>(cfg: &SchedulerConfig<T>, rho: T, bound: T, progress: Progress) -> T {
    match cfg.control {
        Control::EarlyWarm | Control::Symmetric => {
            let may_warm =
                cfg.control == Control::Symmetric || progress.is_early(cfg.warm_fraction);
            if rho > bound {
                cfg.cool
            } else if may_warm && rho < cfg.timid * bound {
                cfg.warm
            } else {
                T::one()
            }
        }
        Control::Proportional => {
            if rho <= T::zero() {
                return cfg.warm;
            }
            let ratio = (bound / rho).powf(cfg.kappa);
            if ratio.is_nan() {
                T::one()
            } else {
                ratio.max(cfg.cool).min(cfg.warm)
            }
        }
    }
}
