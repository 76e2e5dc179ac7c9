//! Conversions shared by the classes: core errors as `ValueError`, serde values to and from
//! Python objects (through `pythonize`), and the `repr` of a field dict.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyFloat};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A core error as the `ValueError` Python sees, with the core's message (which names the
/// input and the value).
pub fn core_err(e: safestep_core::Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

/// A Rust value with `Serialize` as a Python dict (struct fields in declaration order,
/// enums by their lower-case names, floats exactly, `inf` as `inf`).
pub fn to_dict<'py, T: Serialize>(py: Python<'py>, value: &T) -> PyResult<Bound<'py, PyDict>> {
    let obj = pythonize::pythonize(py, value)
        .map_err(|e| PyValueError::new_err(format!("cannot convert to a dict: {e}")))?;
    Ok(obj.cast_into::<PyDict>()?)
}

/// Deserialises `obj` (a dict) into `T`; an error names the offending field and says what
/// was wrong with it (`what` names the type for the message, e.g. `"SchedulerConfig"`).
pub fn from_dict<T: DeserializeOwned>(what: &str, obj: &Bound<'_, PyAny>) -> PyResult<T> {
    let mut de = pythonize::Depythonizer::from_object(obj);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            return PyValueError::new_err(format!("{what}: {inner}"));
        }
        // Name the value too, when the path is a key of the dict itself.
        let value = obj
            .get_item(path.as_str())
            .ok()
            .and_then(|v| v.repr().ok())
            .map(|r| format!(" = {r}"))
            .unwrap_or_default();
        let inner = inner.to_string();
        let problem = if inner.contains("can't convert negative int to unsigned") {
            "must be an integer >= 0"
        } else {
            inner.as_str()
        };
        PyValueError::new_err(format!("{what} field {path}{value}: {problem}"))
    })
}

/// `Name(a=1, b='x', ...)` from a field dict, with floats as Python's `repr` writes them.
pub fn repr_fields(name: &str, fields: &Bound<'_, PyDict>) -> PyResult<String> {
    let mut parts = Vec::with_capacity(fields.len());
    for (k, v) in fields.iter() {
        parts.push(format!("{}={}", k.str()?, v.repr()?));
    }
    Ok(format!("{name}({})", parts.join(", ")))
}

/// A Python float (or anything with `__float__`) that must be finite, naming `what` if not.
pub fn finite(what: &str, x: f64) -> PyResult<f64> {
    if x.is_finite() {
        Ok(x)
    } else {
        Err(PyValueError::new_err(format!(
            "{what} = {x}: must be finite"
        )))
    }
}

/// A non-negative integer argument, naming `what` when it is negative.
pub fn count(what: &str, x: i64) -> PyResult<u64> {
    u64::try_from(x).map_err(|_| PyValueError::new_err(format!("{what} = {x}: must be >= 0")))
}

/// A Python float object.
pub fn float(py: Python<'_>, x: f64) -> Bound<'_, PyFloat> {
    PyFloat::new(py, x)
}
