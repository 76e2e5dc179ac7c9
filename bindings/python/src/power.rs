//! `PowerIteration` and `top_eigenvalue()`: the core's warm-started power iteration,
//! driven by a Python callable for the Hessian-vector product.
//!
//! The callable is `hvp(x) -> array-like`: it receives a fresh 1-D array `x` (a NumPy
//! array of `v`'s dtype when NumPy is installed, else a `memoryview` of format `d`/`f`) and
//! returns `H·x` as anything array-like of the same length (NumPy/JAX array, a
//! `memoryview`, a `.numpy()` of a CPU torch tensor, a list). An exception it raises
//! propagates unchanged; a result of the wrong length or with a non-finite entry raises
//! `ValueError`.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use safestep_core::power::{
    top_eigenvalue as core_top, PowerConfig, PowerError, PowerIteration as CorePower,
};

use crate::buffer::{self, Dtype, Element, Writable};
use crate::convert::core_err;

/// The core's error as a Python exception: the callable's own exception, or `ValueError`.
fn power_err(e: PowerError<PyErr>) -> PyErr {
    match e {
        PowerError::Hvp(err) => err,
        PowerError::Input(e) => PyValueError::new_err(format!("power iteration: {e}")),
    }
}

/// Calls `hvp(x)` and writes its result into `out`.
fn call_hvp<T: Element>(
    hvp: &Bound<'_, PyAny>,
    numpy: Option<&Bound<'_, PyModule>>,
    x: &[T],
    out: &mut [T],
) -> PyResult<()> {
    let py = hvp.py();
    let arg = buffer::new_array(py, numpy, x)?;
    let result = hvp.call1((arg,))?;
    let values = buffer::read_array_like("hvp output", &result)?;
    if values.len() != out.len() {
        return Err(PyValueError::new_err(format!(
            "hvp output: length {}, expected {}",
            values.len(),
            out.len()
        )));
    }
    for (o, v) in out.iter_mut().zip(values) {
        *o = T::of(v);
    }
    Ok(())
}

/// The optional preconditioner `D^½` as `T`s.
fn precond_of<T: Element>(precond: Option<&Bound<'_, PyAny>>) -> PyResult<Option<Vec<T>>> {
    precond
        .filter(|p| !p.is_none())
        .map(|p| {
            Ok(buffer::read("precond", p)?
                .data
                .into_iter()
                .map(T::of)
                .collect())
        })
        .transpose()
}

fn numpy(py: Python<'_>) -> Option<Bound<'_, PyModule>> {
    py.import("numpy").ok()
}

/// The stopping rule and scalar state of one layer's power iteration (the direction `v`
/// lives with the caller and is updated in place).
///
/// `PowerIteration(tol=1e-3, max_iters=20)`: the first `estimate` iterates until the
/// relative change of the Rayleigh quotient is below `tol` (at most `max_iters` products);
/// every later one does a single warm-started product.
#[pyclass(module = "safestep._safestep", name = "PowerIteration")]
#[derive(Debug, Clone, Copy)]
pub struct PowerIteration {
    cfg: PowerConfig<f64>,
    eigenvalue: f64,
    warm: bool,
    converged: bool,
    iterations: usize,
}

impl PowerIteration {
    fn core<T: Element>(&self) -> CorePower<T> {
        CorePower::from_parts(T::of(self.eigenvalue), self.warm)
    }

    fn cfg<T: Element>(&self) -> PowerConfig<T> {
        PowerConfig {
            tol: T::of(self.cfg.tol),
            max_iters: self.cfg.max_iters,
        }
    }

    fn store<T: Element>(&mut self, p: &CorePower<T>) {
        self.eigenvalue = p.eigenvalue().as_f64();
        self.warm = p.is_warm();
        self.converged = p.converged();
        self.iterations = p.iterations();
    }

    fn estimate_as<T: Element>(
        &mut self,
        v: &Writable<'_>,
        hvp: &Bound<'_, PyAny>,
        precond: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<f64> {
        let py = hvp.py();
        let np = numpy(py);
        let mut dir: Vec<T> = v.get()?;
        let mut hv = vec![T::zero(); dir.len()];
        let d = precond_of::<T>(precond)?;
        let mut p = self.core::<T>();
        let result = p.estimate(
            &self.cfg::<T>(),
            &mut dir,
            &mut hv,
            d.as_deref(),
            |x, out| call_hvp(hvp, np.as_ref(), x, out),
        );
        // The core leaves `v` holding a finite direction on success and on error alike.
        v.set(&dir)?;
        let lambda = result.map_err(power_err)?;
        self.store(&p);
        Ok(lambda.as_f64())
    }
}

#[pymethods]
impl PowerIteration {
    #[new]
    #[pyo3(signature = (tol=1e-3, max_iters=20))]
    fn new(tol: f64, max_iters: usize) -> PyResult<Self> {
        if !(tol.is_finite() && tol >= 0.0) {
            return Err(core_err(safestep_core::Error::InvalidConfig {
                field: "tol",
                value: tol,
                allowed: "finite and >= 0",
            }));
        }
        Ok(PowerIteration {
            cfg: PowerConfig { tol, max_iters },
            eigenvalue: 0.0,
            warm: false,
            converged: false,
            iterations: 0,
        })
    }

    /// One estimate of the top eigenvalue of `H` (of `D^½ H D^½` with `precond = D^½`):
    /// returns the Rayleigh quotient and leaves `v` (a writable float32/float64 buffer,
    /// updated in place) holding the next warm-start direction. `hvp(x)` returns `H·x`.
    /// Computed in `v`'s dtype.
    #[pyo3(signature = (v, hvp, precond=None))]
    fn estimate(
        &mut self,
        v: &Bound<'_, PyAny>,
        hvp: &Bound<'_, PyAny>,
        precond: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<f64> {
        let v = Writable::open("v", v)?;
        match v.dtype {
            Dtype::F64 => self.estimate_as::<f64>(&v, hvp, precond),
            Dtype::F32 => self.estimate_as::<f32>(&v, hvp, precond),
        }
    }

    /// Forget the history: the next estimate iterates to convergence again.
    fn restart(&mut self) {
        self.warm = false;
        self.converged = false;
    }

    /// The last estimate (0 before the first).
    #[getter]
    fn eigenvalue(&self) -> f64 {
        self.eigenvalue
    }

    /// Whether the cold start is done (the next estimate is one warm-started product).
    #[getter]
    fn is_warm(&self) -> bool {
        self.warm
    }

    /// Whether the last estimate met the tolerance.
    #[getter]
    fn converged(&self) -> bool {
        self.converged
    }

    /// Hessian-vector products the last estimate used.
    #[getter]
    fn iterations(&self) -> usize {
        self.iterations
    }

    /// `tol` of the stopping rule.
    #[getter]
    fn tol(&self) -> f64 {
        self.cfg.tol
    }

    /// `max_iters` of the stopping rule.
    #[getter]
    fn max_iters(&self) -> usize {
        self.cfg.max_iters
    }

    /// `{"tol", "max_iters", "eigenvalue", "warm"}`: with the caller's saved `v`, a
    /// restored iteration continues bit-identically.
    fn state_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        d.set_item("tol", self.cfg.tol)?;
        d.set_item("max_iters", self.cfg.max_iters)?;
        d.set_item("eigenvalue", self.eigenvalue)?;
        d.set_item("warm", self.warm)?;
        Ok(d)
    }

    /// Restores `state_dict()`.
    fn load_state_dict(&mut self, state: &Bound<'_, PyDict>) -> PyResult<()> {
        let get = |k: &str| -> PyResult<Bound<'_, PyAny>> {
            state
                .get_item(k)?
                .ok_or_else(|| PyValueError::new_err(format!("state_dict: missing key {k:?}")))
        };
        let mut p = PowerIteration::new(get("tol")?.extract()?, get("max_iters")?.extract()?)?;
        p.eigenvalue = get("eigenvalue")?.extract()?;
        p.warm = get("warm")?.extract()?;
        *self = p;
        Ok(())
    }

    fn __getstate__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.state_dict(py)
    }

    fn __setstate__(&mut self, state: &Bound<'_, PyDict>) -> PyResult<()> {
        self.load_state_dict(state)
    }

    fn __repr__(&self) -> String {
        format!(
            "PowerIteration(tol={:?}, max_iters={}, eigenvalue={:?}, warm={})",
            self.cfg.tol,
            self.cfg.max_iters,
            self.eigenvalue,
            if self.warm { "True" } else { "False" }
        )
    }
}

fn top_as<T: Element>(
    magnitude: &mut PowerIteration,
    top: &mut PowerIteration,
    v: &Writable<'_>,
    v_top: &Writable<'_>,
    hvp: &Bound<'_, PyAny>,
    precond: Option<&Bound<'_, PyAny>>,
) -> PyResult<f64> {
    let py = hvp.py();
    let np = numpy(py);
    let (mut dir, mut dir_top): (Vec<T>, Vec<T>) = (v.get()?, v_top.get()?);
    let mut hv = vec![T::zero(); dir.len()];
    let d = precond_of::<T>(precond)?;
    let (mut pm, mut pt) = (magnitude.core::<T>(), top.core::<T>());
    let result = core_top(
        &mut pm,
        &mut pt,
        &magnitude.cfg::<T>(),
        &mut dir,
        &mut dir_top,
        &mut hv,
        d.as_deref(),
        |x, out| call_hvp(hvp, np.as_ref(), x, out),
    );
    v.set(&dir)?;
    v_top.set(&dir_top)?;
    let lambda = result.map_err(power_err)?;
    magnitude.store(&pm);
    top.store(&pt);
    Ok(lambda.as_f64())
}

/// The top (largest algebraic) eigenvalue: power iteration `magnitude` on `v` finds the
/// largest-magnitude eigenvalue `λ_m`; if it is negative, a second warm-started iteration
/// `top` on `v_top` over `H − λ_m·I` finds `λ_max` (safestep-core's
/// `power::top_eigenvalue`; both use `magnitude`'s stopping rule). `v` and `v_top` must
/// have the same length and dtype and are updated in place.
#[pyfunction]
#[pyo3(signature = (magnitude, top, v, v_top, hvp, precond=None))]
pub fn top_eigenvalue(
    magnitude: &mut PowerIteration,
    top: &mut PowerIteration,
    v: &Bound<'_, PyAny>,
    v_top: &Bound<'_, PyAny>,
    hvp: &Bound<'_, PyAny>,
    precond: Option<&Bound<'_, PyAny>>,
) -> PyResult<f64> {
    let v = Writable::open("v", v)?;
    let v_top = Writable::open("v_top", v_top)?;
    if v.dtype != v_top.dtype {
        return Err(PyValueError::new_err("v_top: must have v's dtype"));
    }
    match v.dtype {
        Dtype::F64 => top_as::<f64>(magnitude, top, &v, &v_top, hvp, precond),
        Dtype::F32 => top_as::<f32>(magnitude, top, &v, &v_top, hvp, precond),
    }
}
