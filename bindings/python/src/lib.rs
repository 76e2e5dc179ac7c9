//! `safestep._safestep`: the Python extension module over safestep-core.
//!
//! Every number is computed by safestep-core (`f64`, `LayerScheduler<f64, 256>` as the host
//! uses it); this crate only converts between Python objects and the core's types:
//!
//! - [`config`]: `SchedulerConfig`, built from keyword arguments through serde, so every
//!   field of the core's `SchedulerConfig<f64>` appears with its name and default;
//! - [`noise`]: `NoiseStats` and its three constructors;
//! - [`scheduler`]: `LayerScheduler` and `Report`;
//! - [`bounds`]: `bounds()` and `Bounds`;
//! - [`power`]: `PowerIteration` and `top_eigenvalue()`, driven by a Python callable;
//! - [`buffer`]: reading and writing float buffers through `memoryview`;
//! - [`convert`]: serde values to and from Python, and core errors as `ValueError`.
//!
//! The Python package `safestep` (in `python/safestep/`) re-exports all of it.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use safestep_core::bounds::StepMeasure;
use safestep_core::scheduler::{
    Control, Decision, Mode, NoiseAveraging, SnrEstimator, TaskBoundary, Threshold,
    VolatilityEstimator,
};

pub mod bounds;
pub mod buffer;
pub mod config;
pub mod convert;
pub mod noise;
pub mod power;
pub mod scheduler;

/// The volatility window capacity of every `LayerScheduler` (as the host's `MAX_WINDOW`):
/// a config's `window` may be at most this.
pub const WINDOW_CAPACITY: usize = 256;

/// The accepted names of every option field of `SchedulerConfig` (and of `Decision`).
fn options<'py>(py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("mode", Mode::NAMES.to_vec())?;
    d.set_item("measure", StepMeasure::NAMES.to_vec())?;
    d.set_item("snr_estimator", SnrEstimator::NAMES.to_vec())?;
    d.set_item("volatility_estimator", VolatilityEstimator::NAMES.to_vec())?;
    d.set_item("boundary", TaskBoundary::NAMES.to_vec())?;
    d.set_item("threshold", Threshold::NAMES.to_vec())?;
    d.set_item("noise_averaging", NoiseAveraging::NAMES.to_vec())?;
    d.set_item("control", Control::NAMES.to_vec())?;
    d.set_item("decision", Decision::NAMES.to_vec())?;
    Ok(d)
}

/// The extension module.
#[pymodule]
fn _safestep(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("WINDOW_CAPACITY", WINDOW_CAPACITY)?;
    m.add(
        "STATE_FORMAT",
        safestep_core::scheduler::STATE_FORMAT as usize,
    )?;
    m.add("OPTIONS", options(m.py())?)?;
    m.add_class::<config::SchedulerConfig>()?;
    m.add_class::<noise::NoiseStats>()?;
    m.add_class::<scheduler::LayerScheduler>()?;
    m.add_class::<scheduler::Report>()?;
    m.add_class::<bounds::Bounds>()?;
    m.add_class::<power::PowerIteration>()?;
    m.add_function(wrap_pyfunction!(bounds::bounds, m)?)?;
    m.add_function(wrap_pyfunction!(power::top_eigenvalue, m)?)?;
    Ok(())
}
