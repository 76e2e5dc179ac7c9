//! `bounds()`: the three step-size bounds and the SNRs behind them.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use safestep_core::bounds::Bounds as CoreBounds;

use crate::convert::{core_err, repr_fields};

/// All three bounds and their SNRs for one layer at one event.
#[pyclass(module = "safestep._safestep", name = "Bounds", frozen, eq)]
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    inner: CoreBounds<f64>,
}

#[pymethods]
impl Bounds {
    /// Gradient signal-to-noise ratio `SNR_g` (as passed in).
    #[getter]
    fn snr_g(&self) -> f64 {
        self.inner.snr_g
    }
    /// Volatility SNR `SNR_v = B/(β·Vol)`.
    #[getter]
    fn snr_v(&self) -> f64 {
        self.inner.snr_v
    }
    /// Combined `SNR`, `1/SNR = 1/SNR_g + 1/SNR_v`.
    #[getter]
    fn snr(&self) -> f64 {
        self.inner.snr
    }
    /// Gradient-noise bound `ρ*_g = 2s·SNR_g/(1+SNR_g)`.
    #[getter]
    fn rho_g(&self) -> f64 {
        self.inner.rho_g
    }
    /// Volatility bound `ρ*_vol = 2s·SNR_v/(1+SNR_v)`.
    #[getter]
    fn rho_vol(&self) -> f64 {
        self.inner.rho_vol
    }
    /// Combined bound `ρ̃* = 2s·SNR/(1+SNR)`.
    #[getter]
    fn rho_combined(&self) -> f64 {
        self.inner.rho_combined
    }

    /// The six numbers as a dict.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let b = &self.inner;
        for (k, v) in [
            ("rho_g", b.rho_g),
            ("rho_vol", b.rho_vol),
            ("rho_combined", b.rho_combined),
            ("snr_g", b.snr_g),
            ("snr_v", b.snr_v),
            ("snr", b.snr),
        ] {
            d.set_item(k, v)?;
        }
        Ok(d)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        repr_fields("Bounds", &self.to_dict(py)?)
    }
}

/// `ρ*_g`, `ρ*_vol`, `ρ̃*` and the SNRs from `SNR_g`, the volatility `Vol`, the batch `B`,
/// the safety factor `s` and the volatility weight `β` (safestep-core's `Bounds::compute`).
/// `snr_g` may be `inf`; a negative or NaN input raises `ValueError`.
#[pyfunction]
#[pyo3(signature = (snr_g, vol, batch, safety=0.8, beta=1.0))]
pub fn bounds(snr_g: f64, vol: f64, batch: i64, safety: f64, beta: f64) -> PyResult<Bounds> {
    let batch = usize::try_from(batch).map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!("batch = {batch}: must be >= 1"))
    })?;
    CoreBounds::compute(safety, beta, batch, snr_g, vol)
        .map(|inner| Bounds { inner })
        .map_err(core_err)
}
