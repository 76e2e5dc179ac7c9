//! `SchedulerConfig`: the core's `SchedulerConfig<f64>` as an immutable Python object.
//!
//! Built from keyword arguments through serde (the core's `serde` feature), so every field
//! the core declares — today's and those added later — is accepted with the core's name and
//! default, enums by their lower-case names, and an unknown keyword is a `ValueError` naming
//! it. Attribute access reads the same serialised fields.

use pyo3::exceptions::{PyAttributeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use safestep_core::scheduler::SchedulerConfig as CoreConfig;

use crate::convert::{core_err, from_dict, repr_fields, to_dict};
use crate::WINDOW_CAPACITY;

/// Every constant of the scheduler, with the core's names and defaults.
///
/// `SchedulerConfig(**fields)`; `mode` defaults to `"combined"`. Immutable and validated on
/// construction (a bad value raises `ValueError` naming the field); `replace(**changes)`
/// makes a modified copy. Equality compares every field.
#[pyclass(module = "safestep._safestep", name = "SchedulerConfig", frozen, eq)]
pub struct SchedulerConfig {
    /// The core configuration.
    pub inner: CoreConfig<f64>,
    /// The fields as a dict (built once; attribute access reads it).
    fields: Py<PyDict>,
}

impl PartialEq for SchedulerConfig {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl SchedulerConfig {
    /// Wraps a core configuration after checking it (the core's `validate`, and a `window`
    /// that fits the schedulers' capacity).
    pub fn from_core(py: Python<'_>, inner: CoreConfig<f64>) -> PyResult<Self> {
        Self::check(&inner)?;
        let fields = to_dict(py, &inner)?.unbind();
        Ok(SchedulerConfig { inner, fields })
    }

    /// The core's `validate`, and a `window` within the schedulers' capacity.
    pub fn check(inner: &CoreConfig<f64>) -> PyResult<()> {
        inner.validate().map_err(core_err)?;
        if inner.window > WINDOW_CAPACITY {
            return Err(PyValueError::new_err(format!(
                "config field window = {}: must be <= {WINDOW_CAPACITY} (the schedulers' window capacity)",
                inner.window
            )));
        }
        Ok(())
    }

    /// A configuration from a dict of fields (missing ones take the core's defaults).
    pub fn from_mapping(py: Python<'_>, fields: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let inner: CoreConfig<f64> = match fields {
            None => CoreConfig::default(),
            Some(d) => from_dict("SchedulerConfig", d.as_any())?,
        };
        Self::from_core(py, inner)
    }

    /// `obj` as a core configuration: a `SchedulerConfig`, a dict of fields, or `None`
    /// (the defaults).
    pub fn extract_core(obj: Option<&Bound<'_, PyAny>>) -> PyResult<CoreConfig<f64>> {
        let Some(obj) = obj.filter(|o| !o.is_none()) else {
            return Ok(CoreConfig::default());
        };
        if let Ok(c) = obj.cast::<SchedulerConfig>() {
            return Ok(c.get().inner);
        }
        if let Ok(d) = obj.cast::<PyDict>() {
            return Ok(Self::from_mapping(obj.py(), Some(d))?.inner);
        }
        Err(PyValueError::new_err(format!(
            "config: expected a SchedulerConfig or a dict of its fields, got {}",
            obj.get_type().name()?
        )))
    }
}

#[pymethods]
impl SchedulerConfig {
    /// `SchedulerConfig(**fields)`: every field of the core's `SchedulerConfig<f64>`.
    #[new]
    #[pyo3(signature = (**fields))]
    fn new(py: Python<'_>, fields: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        Self::from_mapping(py, fields)
    }

    /// The field names, in the core's declaration order.
    #[classattr]
    #[pyo3(name = "FIELDS")]
    fn field_names(py: Python<'_>) -> PyResult<Py<PyTuple>> {
        let d = to_dict(py, &CoreConfig::<f64>::default())?;
        Ok(PyTuple::new(py, d.keys())?.unbind())
    }

    /// Checks every field against the core's ranges (construction already did; kept for
    /// parity with the core's API).
    fn validate(&self) -> PyResult<()> {
        self.inner.validate().map_err(core_err)
    }

    /// Whether optimizer step `step` (from 0) is a controller event: `step % interval == 0`.
    fn is_event(&self, step: u64) -> bool {
        self.inner.is_event(step)
    }

    /// A copy with some fields changed.
    #[pyo3(signature = (**changes))]
    fn replace(&self, py: Python<'_>, changes: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let d = self.fields.bind(py).copy()?;
        if let Some(c) = changes {
            d.update(c.as_mapping())?;
        }
        Self::from_mapping(py, Some(&d))
    }

    /// Every field as a new dict (enums as their names).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.fields.bind(py).copy()
    }

    fn __getattr__<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        self.fields.bind(py).get_item(name)?.ok_or_else(|| {
            PyAttributeError::new_err(format!("SchedulerConfig has no field {name}"))
        })
    }

    fn __dir__<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyList>> {
        let names = slf.get_type().dir()?;
        for k in slf.get().fields.bind(slf.py()).keys() {
            names.append(k)?;
        }
        names.sort()?;
        Ok(names)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        repr_fields("SchedulerConfig", self.fields.bind(py))
    }

    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        // Consistent with `==`: -0.0 == 0.0, so floats are normalised (`x + 0.0`) first.
        let mut items = Vec::new();
        for (k, v) in self.fields.bind(py).iter() {
            let v = match v.cast::<pyo3::types::PyFloat>() {
                Ok(f) => crate::convert::float(py, f.value() + 0.0).into_any(),
                Err(_) => v,
            };
            items.push(PyTuple::new(py, [k, v])?);
        }
        PyTuple::new(py, items)?.hash()
    }

    /// Pickling: `SchedulerConfig(**self.to_dict())`.
    fn __getnewargs_ex__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
        Ok((PyTuple::empty(py), self.to_dict(py)?))
    }
}
