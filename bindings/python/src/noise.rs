//! `NoiseStats`: the core's gradient-noise statistics of one layer on one minibatch.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use safestep_core::noise::NoiseStats as CoreNoise;

use crate::buffer;
use crate::convert::{core_err, from_dict, repr_fields, to_dict};

/// Gradient-noise statistics `S`, `‖ḡ‖²`, the noise `S/B·fpc`, the unbiased `G²` and
/// `SNR_g`, built by one of the three constructors (computed in float64 by safestep-core).
///
/// `population=N` applies the finite-population factor `(N−B)/N` for minibatches drawn
/// without replacement from `N` examples.
#[pyclass(module = "safestep._safestep", name = "NoiseStats", frozen, eq)]
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseStats {
    /// The core statistics.
    pub inner: CoreNoise<f64>,
}

/// `P` = the number of entries of `mean_grad`, and the rows of `sample_grads` (`B × P` as a
/// 2-D buffer with `shape[0] = B`, or a 1-D buffer of length `B·P`).
fn rows(mean_len: usize, samples: &buffer::Floats) -> PyResult<usize> {
    if mean_len == 0 {
        return Err(PyValueError::new_err(
            "mean_grad: empty (a layer has at least one parameter)",
        ));
    }
    let total = samples.data.len();
    let b = match samples.shape.as_slice() {
        [] => 0,
        [_] => total / mean_len,
        [b, rest @ ..] => {
            let p: usize = rest.iter().product();
            if p != mean_len {
                return Err(PyValueError::new_err(format!(
                    "sample_grads: shape {:?} has {p} entries per sample, mean_grad has {mean_len}",
                    samples.shape
                )));
            }
            *b
        }
    };
    if b * mean_len != total {
        return Err(PyValueError::new_err(format!(
            "sample_grads: length {total} is not a multiple of len(mean_grad) = {mean_len} (expected B × P)"
        )));
    }
    Ok(b)
}

/// `population`: `None` or a count `>= 0`.
fn population(p: Option<i64>) -> PyResult<Option<usize>> {
    p.map(|n| {
        usize::try_from(n).map_err(|_| {
            PyValueError::new_err(format!("population = {n}: must be >= batch (and >= 0)"))
        })
    })
    .transpose()
}

/// A batch size argument (`>= 0`; the core requires `>= 2`).
fn batch(b: i64) -> PyResult<usize> {
    usize::try_from(b).map_err(|_| {
        PyValueError::new_err(format!(
            "batch = {b}: must be >= 2 (a variance needs two samples)"
        ))
    })
}

#[pymethods]
impl NoiseStats {
    /// From `‖ḡ‖²` and `Σ_i ‖g_i‖²` (the per-sample norm trick):
    /// `S = max(0, (Σ‖g_i‖² − B‖ḡ‖²)/(B−1))`.
    #[staticmethod]
    #[pyo3(signature = (mean_grad_sq, sum_sample_sq_norms, batch, population=None))]
    fn from_sample_sq_norms(
        mean_grad_sq: f64,
        sum_sample_sq_norms: f64,
        batch: i64,
        population: Option<i64>,
    ) -> PyResult<Self> {
        CoreNoise::from_sample_sq_norms(
            mean_grad_sq,
            sum_sample_sq_norms,
            self::batch(batch)?,
            self::population(population)?,
        )
        .map(|inner| NoiseStats { inner })
        .map_err(core_err)
    }

    /// From the minibatch-mean gradient (`P` floats) and the per-sample gradients (`B × P`:
    /// a 2-D buffer, or 1-D of length `B·P`), float32 or float64 buffers; two-pass, no
    /// cancellation.
    #[staticmethod]
    #[pyo3(signature = (mean_grad, sample_grads, population=None))]
    fn from_sample_grads(
        mean_grad: &Bound<'_, PyAny>,
        sample_grads: &Bound<'_, PyAny>,
        population: Option<i64>,
    ) -> PyResult<Self> {
        let mean = buffer::read("mean_grad", mean_grad)?;
        let samples = buffer::read("sample_grads", sample_grads)?;
        let p = mean.data.len();
        rows(p, &samples)?;
        CoreNoise::from_sample_grads(
            &mean.data,
            samples.data.chunks_exact(p),
            self::population(population)?,
        )
        .map(|inner| NoiseStats { inner })
        .map_err(core_err)
    }

    /// From `‖ḡ‖²` and an already computed unbiased variance `S`.
    #[staticmethod]
    #[pyo3(signature = (mean_grad_sq, variance, batch, population=None))]
    fn from_variance(
        mean_grad_sq: f64,
        variance: f64,
        batch: i64,
        population: Option<i64>,
    ) -> PyResult<Self> {
        CoreNoise::from_variance(
            mean_grad_sq,
            variance,
            self::batch(batch)?,
            self::population(population)?,
        )
        .map(|inner| NoiseStats { inner })
        .map_err(core_err)
    }

    /// Rebuilds statistics from `to_dict()`'s fields, exactly (no recomputation), after
    /// checking them: `batch >= 2`, every value finite, `variance` and `noise` `>= 0`, and
    /// `unbiased_grad_sq == max(0, mean_grad_sq - noise)`.
    #[staticmethod]
    fn from_dict(fields: &Bound<'_, PyAny>) -> PyResult<Self> {
        let inner: CoreNoise<f64> = from_dict("NoiseStats", fields)?;
        let bad = |field: &str, value: String, allowed: &str| {
            Err(PyValueError::new_err(format!(
                "NoiseStats field {field} = {value}: {allowed}"
            )))
        };
        if inner.batch < 2 {
            return bad("batch", inner.batch.to_string(), "must be >= 2");
        }
        for (field, value) in [
            ("mean_grad_sq", inner.mean_grad_sq),
            ("variance", inner.variance),
            ("noise", inner.noise),
            ("unbiased_grad_sq", inner.unbiased_grad_sq),
        ] {
            if !value.is_finite() || value < 0.0 {
                return bad(field, format!("{value:?}"), "must be finite and >= 0");
            }
        }
        let expected = (inner.mean_grad_sq - inner.noise).max(0.0);
        if inner.unbiased_grad_sq != expected {
            return bad(
                "unbiased_grad_sq",
                format!("{:?}", inner.unbiased_grad_sq),
                &format!("must equal max(0, mean_grad_sq - noise) = {expected:?}"),
            );
        }
        Ok(NoiseStats { inner })
    }

    /// Minibatch size `B`.
    #[getter]
    fn batch(&self) -> usize {
        self.inner.batch
    }

    /// `‖ḡ‖²`, the squared norm of the minibatch-mean gradient.
    #[getter]
    fn mean_grad_sq(&self) -> f64 {
        self.inner.mean_grad_sq
    }

    /// `S`, the unbiased per-sample gradient variance summed over the layer.
    #[getter]
    fn variance(&self) -> f64 {
        self.inner.variance
    }

    /// `S/B·fpc`: the variance of the minibatch mean (the noise in `‖ḡ‖²`).
    #[getter]
    fn noise(&self) -> f64 {
        self.inner.noise
    }

    /// `G² = max(0, ‖ḡ‖² − noise)`: the unbiased estimate of the true `‖g‖²`, clamped.
    #[getter]
    fn unbiased_grad_sq(&self) -> f64 {
        self.inner.unbiased_grad_sq
    }

    /// Alias of `unbiased_grad_sq` (the core's former name; it is not `‖ḡ‖²`).
    #[getter]
    fn grad_sq(&self) -> f64 {
        self.inner.unbiased_grad_sq
    }

    /// `‖ḡ‖² − noise` before the clamp at 0 (may be negative).
    #[getter]
    fn unbiased_grad_sq_unclamped(&self) -> f64 {
        self.inner.unbiased_grad_sq_unclamped()
    }

    /// `SNR_g = G²/noise` (`inf` without noise and `G² > 0`, `0` when `G² = 0`).
    #[getter]
    fn snr_g(&self) -> f64 {
        self.inner.snr()
    }

    /// The core fields as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        to_dict(py, &self.inner)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        repr_fields("NoiseStats", &to_dict(py, &self.inner)?)
    }

    /// Pickling: `NoiseStats.from_dict(self.to_dict())`.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let py = slf.py();
        let ctor = slf.get_type().getattr("from_dict")?;
        let args = PyTuple::new(py, [slf.get().to_dict(py)?])?;
        Ok((ctor, args))
    }
}
