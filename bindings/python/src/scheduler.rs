//! `LayerScheduler` (one layer's cool / warm / hold scheduler) and its `Report`.

use pyo3::exceptions::{PyAttributeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use safestep_core::scheduler::{
    LayerObservation, LayerScheduler as CoreScheduler, Progress, Report as CoreReport,
    SchedulerConfig as CoreConfig,
};

use crate::config::SchedulerConfig;
use crate::convert::{core_err, count, repr_fields, to_dict};
use crate::noise::NoiseStats;
use crate::WINDOW_CAPACITY;

type Core = CoreScheduler<f64, WINDOW_CAPACITY>;

/// A decision and every number behind it (all fields of the core's `Report<f64>`;
/// `decision` is `"cool"`, `"warm"` or `"hold"`).
#[pyclass(module = "safestep._safestep", name = "Report", frozen, eq)]
pub struct Report {
    inner: CoreReport<f64>,
    fields: Py<PyDict>,
}

impl PartialEq for Report {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl Report {
    fn new(py: Python<'_>, inner: CoreReport<f64>) -> PyResult<Self> {
        Ok(Report {
            inner,
            fields: to_dict(py, &inner)?.unbind(),
        })
    }
}

#[pymethods]
impl Report {
    /// The decision: `"cool"`, `"warm"` or `"hold"`.
    #[getter]
    fn decision(&self) -> &'static str {
        self.inner.decision.as_str()
    }

    /// Learning rate after the event.
    #[getter]
    fn lr_after(&self) -> f64 {
        self.inner.lr_after
    }

    /// Every field as a new dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.fields.bind(py).copy()
    }

    fn __getattr__<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        self.fields
            .bind(py)
            .get_item(name)?
            .ok_or_else(|| PyAttributeError::new_err(format!("Report has no field {name}")))
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        repr_fields("Report", self.fields.bind(py))
    }
}

/// One layer's learning-rate scheduler: safestep-core's `LayerScheduler<f64, 256>`.
///
/// `LayerScheduler(config, lr0)`: `config` a `SchedulerConfig` (or a dict of its fields, or
/// `None` for the defaults); `lr0` within `[lr_min, lr_max]`. Call `observe` at every
/// controller event with the layer's statistics; `lr` is the rate for the next steps.
#[pyclass(module = "safestep._safestep", name = "LayerScheduler")]
pub struct LayerScheduler {
    cfg: CoreConfig<f64>,
    inner: Core,
}

impl LayerScheduler {
    fn build(cfg: CoreConfig<f64>, lr0: f64) -> PyResult<Self> {
        let inner = Core::new(&cfg, lr0).map_err(core_err)?;
        Ok(LayerScheduler { cfg, inner })
    }

    /// The scheduler from a `state_dict()`.
    fn from_state(state: &Bound<'_, PyAny>) -> PyResult<(CoreConfig<f64>, Core)> {
        let missing = |k: &str| PyValueError::new_err(format!("state_dict: missing key {k:?}"));
        let d = state
            .cast::<PyDict>()
            .map_err(|_| PyValueError::new_err("state_dict: expected a dict"))?;
        let config = d.get_item("config")?.ok_or_else(|| missing("config"))?;
        let cfg = SchedulerConfig::extract_core(Some(&config))?;
        let values: Vec<f64> = d
            .get_item("state")?
            .ok_or_else(|| missing("state"))?
            .extract()
            .map_err(|_| PyValueError::new_err("state_dict: \"state\" must be a list of floats"))?;
        let inner = Core::from_state(&cfg, &values).map_err(core_err)?;
        Ok((cfg, inner))
    }
}

#[pymethods]
impl LayerScheduler {
    #[new]
    #[pyo3(signature = (config, lr0))]
    fn new(config: Option<&Bound<'_, PyAny>>, lr0: f64) -> PyResult<Self> {
        let cfg = SchedulerConfig::extract_core(config)?;
        // Validates and checks the window capacity with the config's own messages.
        SchedulerConfig::check(&cfg)?;
        Self::build(cfg, lr0)
    }

    /// A scheduler restored from `state_dict()` (config and state).
    #[staticmethod]
    fn from_state_dict(state: &Bound<'_, PyAny>) -> PyResult<Self> {
        let (cfg, inner) = Self::from_state(state)?;
        Ok(LayerScheduler { cfg, inner })
    }

    /// The configuration.
    #[getter]
    fn config(&self, py: Python<'_>) -> PyResult<SchedulerConfig> {
        SchedulerConfig::from_core(py, self.cfg)
    }

    /// The layer's current learning rate.
    #[getter]
    fn lr(&self) -> f64 {
        self.inner.lr()
    }

    /// The learning rate it started at.
    #[getter]
    fn lr0(&self) -> f64 {
        self.inner.lr0()
    }

    /// Number of events observed.
    #[getter]
    fn events(&self) -> u64 {
        self.inner.events()
    }

    /// One controller event: the layer's statistics in, the decision and every number
    /// behind it out; `lr` is updated. On error (`ValueError`) nothing changes.
    ///
    /// `alpha_agg = lr/(sqrt(mean v̂)+ε)` with the lr applied at the step; `sharpness` the
    /// layer's top Hessian eigenvalue (preconditioned for `measure="preconditioned"`);
    /// `noise` a `NoiseStats`. Progress decides "early in the task" for warming:
    /// `step_in_task`/`steps_per_task` when the task length is known, else
    /// `step`/`total_steps`.
    #[pyo3(signature = (alpha_agg, sharpness, noise, *, mean_multiplier=0.0, lr_used=None,
        step_in_task=0, steps_per_task=None, step=0, total_steps=None))]
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        py: Python<'_>,
        alpha_agg: f64,
        sharpness: f64,
        noise: &NoiseStats,
        mean_multiplier: f64,
        lr_used: Option<f64>,
        step_in_task: i64,
        steps_per_task: Option<i64>,
        step: i64,
        total_steps: Option<i64>,
    ) -> PyResult<Report> {
        let obs = LayerObservation {
            alpha_agg,
            mean_multiplier,
            sharpness,
            noise: noise.inner,
            lr_used,
        };
        let progress = Progress {
            step_in_task: count("step_in_task", step_in_task)?,
            steps_per_task: steps_per_task
                .map(|n| count("steps_per_task", n))
                .transpose()?,
            step: count("step", step)?,
            total_steps: total_steps.map(|n| count("total_steps", n)).transpose()?,
        };
        let report = self
            .inner
            .observe(&self.cfg, &obs, progress)
            .map_err(core_err)?;
        Report::new(py, report)
    }

    /// Forget the volatility history and the SNR EMAs; keep the learning rate.
    fn reset_task(&mut self) {
        self.inner.reset_task();
    }

    /// A new task begins: what `config.boundary` says (carry, reset the statistics, or
    /// also restart the lr at `lr0`).
    fn begin_task(&mut self) {
        self.inner.begin_task(&self.cfg);
    }

    /// The exact state: `{"config": dict, "state": [floats]}` (the core's `to_state`, f64).
    /// `load_state_dict` of it continues bit-identically.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("config", to_dict(py, &self.cfg)?)?;
        d.set_item("state", self.inner.to_state().collect::<Vec<f64>>())?;
        Ok(d)
    }

    /// Restores `state_dict()`'s config and state (nothing changes on error).
    fn load_state_dict(&mut self, state: &Bound<'_, PyAny>) -> PyResult<()> {
        let (cfg, inner) = Self::from_state(state)?;
        self.cfg = cfg;
        self.inner = inner;
        Ok(())
    }

    fn __getnewargs__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(
            py,
            [
                to_dict(py, &self.cfg)?.into_any(),
                crate::convert::float(py, self.inner.lr0()).into_any(),
            ],
        )
    }

    fn __getstate__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.state_dict(py)
    }

    fn __setstate__(&mut self, state: &Bound<'_, PyAny>) -> PyResult<()> {
        self.load_state_dict(state)
    }

    fn __repr__(&self) -> String {
        format!(
            "LayerScheduler(lr={:?}, lr0={:?}, events={}, mode={:?})",
            self.inner.lr(),
            self.inner.lr0(),
            self.inner.events(),
            self.cfg.mode.as_str()
        )
    }
}
