//! The diagnosis: every indicator the paper compares, recorded per layer at the end of a
//! task (`indicators.csv`), on a fixed evaluation subset of the task (its first
//! `indicators.examples` examples, with the task's labels).
//!
//! | column | what |
//! | --- | --- |
//! | `sharpness` | the layer block's top Hessian eigenvalue (`λ_max`, by a shift when the largest-magnitude one is negative), `sharpness_iters` warm-started power iterations from the controller's direction |
//! | `network_sharpness` | the whole network's top eigenvalue (opt-in, CPU engine) |
//! | `hessian_rank` | an estimate: Ritz values of `lanczos_steps` Lanczos steps on the layer block (full reorthogonalization) whose magnitude exceeds `rank_threshold·max` (opt-in). It sees at most k eigenvalues, so it is exact for ranks below k and a lower bound above |
//! | `hessian_rank_fraction` | from the same Lanczos run, the stochastic Lanczos quadrature estimate of the fraction of the block's eigenvalues above that threshold: `Σ_j τ_j²·[|θ_j| > rank_threshold·max|θ|]`, τ_j the first component of the j-th Ritz vector (opt-in). Not capped by k: it estimates `rank/n` for any rank, with the quadrature's blur near the threshold |
//! | `weight_norm`, `grad_norm`, `grad_param_ratio` | `‖θ‖`, `‖ḡ‖` on the subset, their ratio |
//! | `unit_sign_entropy`, `dead_fraction` | hidden layers: the mean binary entropy of each unit's sign over the subset, the fraction of units never positive |
//! | `effective_rank` | hidden layers: Roy & Vetterli's effective rank of the layer's output features on the subset |
//! | `stable_rank` | `‖W‖_F²/‖W‖_2²` of the layer's weight matrix |
//! | `rho`, `rho_g`, `rho_vol`, `rho_combined` | the measured step and the three bounds at the task's last controller event |
//! | `*_mean` | the same, averaged over the task's controller events |
//!
//! The math over slices is safestep-core's ([`safestep_core::indicators`],
//! [`safestep_core::power`]); the singular values of the feature matrices and the
//! eigenvalues of Lanczos's tridiagonal matrix come from `nalgebra`.

use std::time::Instant;

use nalgebra::{DMatrix, SymmetricEigen};
use safestep_core::indicators as core_ind;
use safestep_core::power::{top_eigenvalue, PowerConfig, PowerIteration};
use safestep_engine::{Activation, Backend, LayerShape};
use serde::Serialize;

use crate::config::IndicatorsConfig;
use crate::outputs::record::Record;
use crate::trainer::{ControllerEvent, TrainError, Trainer};

/// One row of `indicators.csv`: one layer at the end of one task. Its columns are these
/// fields (empty where a value does not apply or was not asked for).
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
pub struct IndicatorRow {
    /// Task index.
    pub task: usize,
    /// Layer index.
    pub layer: usize,
    /// Examples the indicators were computed on.
    pub examples: usize,
    /// The layer block's top Hessian eigenvalue.
    pub sharpness: f64,
    /// The whole network's top Hessian eigenvalue (opt-in).
    pub network_sharpness: Option<f64>,
    /// The layer block's Hessian rank estimate by counting Ritz values (opt-in).
    pub hessian_rank: Option<f64>,
    /// The fraction of the block's eigenvalues above the rank threshold, by stochastic
    /// Lanczos quadrature (opt-in; times the block's parameter count, a rank estimate that
    /// is not capped by the Lanczos steps).
    pub hessian_rank_fraction: Option<f64>,
    /// `‖θ‖₂`.
    pub weight_norm: f64,
    /// `‖ḡ‖₂` of the mean gradient on the subset.
    pub grad_norm: f64,
    /// `‖ḡ‖/‖θ‖`.
    pub grad_param_ratio: f64,
    /// Mean unit-sign entropy (bits), hidden layers.
    pub unit_sign_entropy: Option<f64>,
    /// Fraction of units never positive on the subset, hidden layers.
    pub dead_fraction: Option<f64>,
    /// Effective rank of the layer's output features, hidden layers.
    pub effective_rank: Option<f64>,
    /// Stable rank of the weight matrix.
    pub stable_rank: f64,
    /// ρ at the task's last controller event.
    pub rho: Option<f64>,
    /// ρ*_g at the last event.
    pub rho_g: Option<f64>,
    /// ρ*_vol at the last event.
    pub rho_vol: Option<f64>,
    /// ρ̃* at the last event.
    pub rho_combined: Option<f64>,
    /// ρ averaged over the task's events.
    pub rho_mean: Option<f64>,
    /// ρ*_g averaged over the task's events.
    pub rho_g_mean: Option<f64>,
    /// ρ*_vol averaged over the task's events.
    pub rho_vol_mean: Option<f64>,
    /// ρ̃* averaged over the task's events.
    pub rho_combined_mean: Option<f64>,
}

fn core_err(layer: usize, error: safestep_core::Error) -> TrainError {
    TrainError::Controller {
        layer,
        step: 0,
        error,
    }
}

fn power_err(layer: usize, e: impl std::fmt::Display) -> TrainError {
    TrainError::Power {
        layer,
        step: 0,
        message: e.to_string(),
    }
}

/// The indicators of every layer at the end of task `task`, from the trainer's backend
/// (task data loaded) and the task's controller `events`; returns the rows and the seconds
/// they took.
///
/// # Errors
/// A backend or core failure (the indicators change no training state, so the run could
/// continue, but a failure here means something is wrong).
pub fn record(
    trainer: &mut Trainer,
    cfg: &IndicatorsConfig,
    shapes: &[LayerShape],
    activation: Activation,
    task: usize,
    population: usize,
    events: &[ControllerEvent],
) -> Result<(Vec<IndicatorRow>, f64), TrainError> {
    let started = Instant::now();
    let directions: Vec<Vec<f32>> = (0..shapes.len())
        .map(|l| {
            trainer
                .power_direction(l)
                .map(<[f32]>::to_vec)
                .unwrap_or_default()
        })
        .collect();
    let subset: Vec<u32> = (0..cfg.examples.min(population) as u32).collect();
    let backend = trainer.backend_mut();
    let params = backend.export_state()?.params;
    let pre = backend.hidden_pre_activations(&subset)?;
    let out = backend.forward_backward(&subset, false)?;
    let network_sharpness = if cfg.network_sharpness {
        Some(network_top_eigenvalue(backend, shapes, cfg.network_iters)?)
    } else {
        None
    };
    let mut rows = Vec::with_capacity(shapes.len());
    for (l, s) in shapes.iter().enumerate() {
        let n = s.params();
        let power_cfg = PowerConfig {
            tol: 0.0,
            max_iters: cfg.sharpness_iters,
        };
        let (mut mag, mut top) = (PowerIteration::new(), PowerIteration::new());
        let mut v = directions[l].clone();
        v.resize(n, 1.0);
        let mut v_top = v.clone();
        let mut hv = vec![0.0f32; n];
        let sharpness = top_eigenvalue(
            &mut mag,
            &mut top,
            &power_cfg,
            &mut v,
            &mut v_top,
            &mut hv,
            None,
            |x: &[f32], o: &mut [f32]| backend.hvp(l, x, o),
        )
        .map_err(|e| power_err(l, e))?;
        let rank = if cfg.hessian_rank {
            let ritz = lanczos_ritz_values(
                &mut |x: &[f32], o: &mut [f32]| backend.hvp(l, x, o),
                n,
                cfg.lanczos_steps,
                l as u64,
            )?;
            Some(RankEstimate::from_ritz(&ritz, cfg.rank_threshold))
        } else {
            None
        };
        let (w, _) = params[l].split_at(s.weights());
        let weight_norm = f64::from(core_ind::weight_norm(&params[l]));
        let grad_norm = out.layers[l].mean_grad_sq.max(0.0).sqrt();
        let (entropy, dead, erank) = if s.hidden {
            let z = &pre[l];
            let units = s.fan_out;
            let features = activate(activation, z, units);
            let sv = singular_values(&features, subset.len(), features.len() / subset.len())
                .ok_or_else(|| TrainError::Indicator {
                    layer: l,
                    indicator: "effective_rank",
                    message: "the singular values of the layer's features did not converge (or the features are not finite)".into(),
                })?;
            (
                Some(f64::from(
                    core_ind::unit_sign_entropy(z, units).map_err(|e| core_err(l, e))?,
                )),
                Some(f64::from(
                    core_ind::dead_unit_fraction(z, units).map_err(|e| core_err(l, e))?,
                )),
                Some(core_ind::effective_rank(&sv).map_err(|e| core_err(l, e))?),
            )
        } else {
            (None, None, None)
        };
        let stable = stable_rank(w, s.fan_out, s.fan_in, l)?;
        let mine: Vec<&ControllerEvent> = events.iter().filter(|e| e.layer == l).collect();
        let last = mine.last().map(|e| e.report);
        let mean = |f: fn(&ControllerEvent) -> f64| {
            (!mine.is_empty()).then(|| mine.iter().map(|e| f(e)).sum::<f64>() / mine.len() as f64)
        };
        rows.push(IndicatorRow {
            task,
            layer: l,
            examples: subset.len(),
            sharpness: f64::from(sharpness),
            network_sharpness,
            hessian_rank: rank.map(|r| r.count),
            hessian_rank_fraction: rank.map(|r| r.fraction),
            weight_norm,
            grad_norm,
            grad_param_ratio: if weight_norm > 0.0 {
                grad_norm / weight_norm
            } else {
                0.0
            },
            unit_sign_entropy: entropy,
            dead_fraction: dead,
            effective_rank: erank,
            stable_rank: stable,
            rho: last.map(|r| r.rho),
            rho_g: last.map(|r| r.rho_g),
            rho_vol: last.map(|r| r.rho_vol),
            rho_combined: last.map(|r| r.rho_combined),
            rho_mean: mean(|e| e.report.rho),
            rho_g_mean: mean(|e| e.report.rho_g),
            rho_vol_mean: mean(|e| e.report.rho_vol),
            rho_combined_mean: mean(|e| e.report.rho_combined),
        });
    }
    Ok((rows, started.elapsed().as_secs_f64()))
}

/// The hidden layer's output features `act(z)` (rows × e·units).
fn activate(activation: Activation, z: &[f32], units: usize) -> Vec<f32> {
    match activation {
        Activation::Relu => z.iter().map(|&x| x.max(0.0)).collect(),
        Activation::Crelu => z
            .chunks_exact(units)
            .flat_map(|row| {
                row.iter()
                    .map(|&x| x.max(0.0))
                    .chain(row.iter().map(|&x| (-x).max(0.0)))
            })
            .collect(),
    }
}

/// Singular values of a row-major `rows × cols` matrix, or `None` when neither method
/// below converges.
///
/// nalgebra's SVD produces NaN singular values from some finite, very sparse matrices (the
/// features of a collapsed network: 25 nonzeros in 256 × 256, see the test), and then
/// `singular_values()` iterates forever (a 100-epoch plain-Adam run stopped for half an
/// hour inside it) while `try_svd` panics sorting them. Here its QR sweeps are bounded as
/// LAPACK bounds them (`6·n²`) and a non-finite result is refused; the fallback is the
/// square roots of the eigenvalues of the smaller Gram matrix (bounded the same way),
/// which loses only the relative accuracy of the smallest ones.
fn singular_values(a: &[f32], rows: usize, cols: usize) -> Option<Vec<f64>> {
    if a.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let m = DMatrix::from_row_iterator(rows, cols, a.iter().map(|&x| f64::from(x)));
    let n = rows.min(cols);
    let max_sweeps = 6 * n * n + 100;
    // `try_svd` sorts its output and panics on a NaN singular value, which its iteration
    // can produce from finite input; the unordered variant leaves the check to us.
    if let Some(svd) = m
        .clone()
        .try_svd_unordered(false, false, f64::EPSILON, max_sweeps)
    {
        if svd.singular_values.iter().all(|x| x.is_finite()) {
            return Some(svd.singular_values.iter().copied().collect());
        }
    }
    singular_values_by_gram(&m, max_sweeps)
}

/// The singular values of `m` as the square roots of the eigenvalues of its smaller Gram
/// matrix (unordered), with at most `max_sweeps` QR sweeps.
fn singular_values_by_gram(m: &DMatrix<f64>, max_sweeps: usize) -> Option<Vec<f64>> {
    let gram = if m.nrows() <= m.ncols() {
        m * m.transpose()
    } else {
        m.transpose() * m
    };
    SymmetricEigen::try_new(gram, f64::EPSILON, max_sweeps)
        .map(|e| e.eigenvalues.iter().map(|&l| l.max(0.0).sqrt()).collect())
}

/// `‖W‖_F²/‖W‖_2²` with `‖W‖_2² = λ_max(WᵀW)` by power iteration on the core.
fn stable_rank(w: &[f32], rows: usize, cols: usize, layer: usize) -> Result<f64, TrainError> {
    let frobenius: f64 = w.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let wd: Vec<f64> = w.iter().map(|&x| f64::from(x)).collect();
    let mut tmp = vec![0.0f64; rows];
    let gram = |x: &[f64], out: &mut [f64]| -> Result<(), std::convert::Infallible> {
        for (r, t) in tmp.iter_mut().enumerate() {
            *t = wd[r * cols..(r + 1) * cols]
                .iter()
                .zip(x)
                .map(|(a, b)| a * b)
                .sum();
        }
        out.fill(0.0);
        for (r, &t) in tmp.iter().enumerate() {
            for (o, &a) in out.iter_mut().zip(&wd[r * cols..(r + 1) * cols]) {
                *o += a * t;
            }
        }
        Ok(())
    };
    let mut v = vec![1.0f64; cols];
    let mut hv = vec![0.0f64; cols];
    let cfg = PowerConfig {
        tol: 1e-6,
        max_iters: 100,
    };
    let sigma_sq = PowerIteration::new()
        .estimate(&cfg, &mut v, &mut hv, None, gram)
        .map_err(|e| power_err(layer, e))?;
    core_ind::stable_rank(frobenius, sigma_sq.max(0.0).sqrt()).map_err(|e| core_err(layer, e))
}

/// Top eigenvalue of the whole network's Hessian (power iteration on the backend's
/// whole-network products; the largest algebraic one, by a shift when needed).
fn network_top_eigenvalue(
    backend: &mut dyn Backend,
    shapes: &[LayerShape],
    iters: usize,
) -> Result<f64, TrainError> {
    let sizes: Vec<usize> = shapes.iter().map(LayerShape::params).collect();
    let total: usize = sizes.iter().sum();
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng_state = rng_state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((rng_state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
    };
    let mut v: Vec<f32> = (0..total).map(|_| next()).collect();
    let mut v_top = v.clone();
    let mut hv = vec![0.0f32; total];
    let split = |flat: &[f32]| -> Vec<Vec<f32>> {
        let mut at = 0;
        sizes
            .iter()
            .map(|&n| {
                let part = flat[at..at + n].to_vec();
                at += n;
                part
            })
            .collect()
    };
    let hvp = |x: &[f32], out: &mut [f32]| -> Result<(), safestep_engine::BackendError> {
        let mut parts: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
        backend.hvp_network(&split(x), &mut parts)?;
        for (o, p) in out.iter_mut().zip(parts.iter().flatten()) {
            *o = *p;
        }
        Ok(())
    };
    let cfg = PowerConfig {
        tol: 0.0,
        max_iters: iters,
    };
    let (mut mag, mut top) = (PowerIteration::new(), PowerIteration::new());
    top_eigenvalue(
        &mut mag, &mut top, &cfg, &mut v, &mut v_top, &mut hv, None, hvp,
    )
    .map(f64::from)
    .map_err(|e| power_err(0, e))
}

/// One Ritz pair of a Lanczos run, as stochastic Lanczos quadrature uses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ritz {
    /// The Ritz value θ_j (an eigenvalue of the tridiagonal matrix).
    pub value: f64,
    /// Its quadrature weight τ_j²: the squared first component of its eigenvector, i.e. the
    /// share of the start vector in that Ritz direction. The weights sum to 1.
    pub weight: f64,
}

/// Two Hessian rank estimates from one Lanczos run (see [`lanczos_ritz_values`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankEstimate {
    /// The number of Ritz values whose magnitude exceeds `threshold` times the largest.
    /// Exact (with a start vector in general position) for ranks below the Lanczos steps,
    /// when the iteration ends early on an invariant subspace; capped by the steps above.
    pub count: f64,
    /// Stochastic Lanczos quadrature: the quadrature weight of those Ritz values, an
    /// estimate of the fraction of all `n` eigenvalues above the threshold (its expectation
    /// over start vectors is `rank/n` once the Ritz values resolve the threshold). Not
    /// capped by the steps.
    pub fraction: f64,
}

impl RankEstimate {
    /// Both estimates from the Ritz pairs of one run: a Ritz value counts when its
    /// magnitude exceeds `threshold` times the largest.
    pub fn from_ritz(ritz: &[Ritz], threshold: f64) -> Self {
        let top = ritz.iter().fold(0.0f64, |a, r| a.max(r.value.abs()));
        if top == 0.0 {
            return RankEstimate {
                count: 0.0,
                fraction: 0.0,
            };
        }
        let above = || ritz.iter().filter(|r| r.value.abs() > threshold * top);
        RankEstimate {
            count: above().count() as f64,
            fraction: above().map(|r| r.weight).sum::<f64>().min(1.0),
        }
    }
}

/// The Hessian rank estimate of a symmetric operator of size `n` by `steps` Lanczos steps
/// with full reorthogonalization: the number of Ritz values whose magnitude exceeds
/// `threshold` times the largest ([`RankEstimate::count`]).
///
/// # Errors
/// The operator's own error.
pub fn lanczos_rank<F, E>(
    mut op: F,
    n: usize,
    steps: usize,
    threshold: f64,
    seed: u64,
) -> Result<f64, TrainError>
where
    F: FnMut(&[f32], &mut [f32]) -> Result<(), E>,
    TrainError: From<E>,
{
    let ritz = lanczos_ritz_values(&mut op, n, steps, seed)?;
    Ok(RankEstimate::from_ritz(&ritz, threshold).count)
}

/// The Ritz pairs of up to `steps` Lanczos steps (fewer when an invariant subspace is
/// found), in `f64` with full reorthogonalization against every basis vector, from a start
/// vector with independent uniform coordinates drawn from `seed`.
///
/// # Errors
/// The operator's own error.
pub fn lanczos_ritz_values<F, E>(
    op: &mut F,
    n: usize,
    steps: usize,
    seed: u64,
) -> Result<Vec<Ritz>, E>
where
    F: FnMut(&[f32], &mut [f32]) -> Result<(), E>,
{
    let q = lanczos_start(n, seed);
    let (alphas, betas) = lanczos_tridiagonal(op, q, steps)?;
    let k = alphas.len();
    let mut t = DMatrix::<f64>::zeros(k, k);
    for i in 0..k {
        t[(i, i)] = alphas[i];
        if i + 1 < k {
            t[(i, i + 1)] = betas[i];
            t[(i + 1, i)] = betas[i];
        }
    }
    let eig = SymmetricEigen::new(t);
    Ok((0..k)
        .map(|j| Ritz {
            value: eig.eigenvalues[j],
            weight: eig.eigenvectors[(0, j)] * eig.eigenvectors[(0, j)],
        })
        .collect())
}

/// The unit start vector of [`lanczos_ritz_values`].
fn lanczos_start(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed ^ 0x5afe_57e9_1a4c_2095;
    let mut q: Vec<f64> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        })
        .collect();
    normalize(&mut q);
    q
}

/// Scales `v` to unit length (a zero vector stays zero); returns its former length.
fn normalize(v: &mut [f64]) -> f64 {
    let len = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if len > 0.0 {
        v.iter_mut().for_each(|x| *x /= len);
    }
    len
}

/// The diagonal α and off-diagonal β of the Lanczos tridiagonal matrix from the unit start
/// vector `q`, stopping early when an invariant subspace is found.
fn lanczos_tridiagonal<F, E>(
    op: &mut F,
    mut q: Vec<f64>,
    steps: usize,
) -> Result<(Vec<f64>, Vec<f64>), E>
where
    F: FnMut(&[f32], &mut [f32]) -> Result<(), E>,
{
    let n = q.len();
    let mut basis: Vec<Vec<f64>> = Vec::new();
    let (mut alphas, mut betas) = (Vec::new(), Vec::new());
    let mut x32 = vec![0.0f32; n];
    let mut y32 = vec![0.0f32; n];
    for _ in 0..steps.min(n) {
        for (a, &b) in x32.iter_mut().zip(&q) {
            *a = b as f32;
        }
        op(&x32, &mut y32)?;
        let mut w: Vec<f64> = y32.iter().map(|&x| f64::from(x)).collect();
        let alpha: f64 = w.iter().zip(&q).map(|(a, b)| a * b).sum();
        alphas.push(alpha);
        basis.push(q.clone());
        // Full reorthogonalization (twice, for stability).
        for _ in 0..2 {
            for b in &basis {
                let c: f64 = w.iter().zip(b).map(|(a, b)| a * b).sum();
                w.iter_mut().zip(b).for_each(|(a, b)| *a -= c * b);
            }
        }
        let beta = normalize(&mut w);
        let scale = alphas
            .iter()
            .fold(0.0f64, |a, x| a.max(x.abs()))
            .max(1e-300);
        if beta <= 1e-10 * scale {
            break;
        }
        betas.push(beta);
        q = w;
    }
    Ok((alphas, betas))
}

/// The header of `indicators.csv` (the fields of [`IndicatorRow`]).
pub fn indicator_columns() -> Vec<&'static str> {
    let mut record = Record::default();
    // A struct of numbers and options always flattens.
    let _ = record.push(&IndicatorRow::default());
    record.names().to_vec()
}

/// Appends `rows` to `out` as CSV, writing the header first when `out` is empty.
pub fn append_indicator_rows(out: &mut String, rows: &[IndicatorRow]) {
    let mut writer = csv::WriterBuilder::new().from_writer(Vec::new());
    // Writing strings into memory cannot fail.
    if out.is_empty() {
        let _ = writer.write_record(indicator_columns());
    }
    for row in rows {
        let mut record = Record::default();
        let _ = record.push(row);
        let _ = writer.write_record(record.values());
    }
    if let Ok(bytes) = writer.into_inner() {
        out.push_str(&String::from_utf8_lossy(&bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A symmetric `n × n` operator of rank `r`: `Σ_k λ_k u_k u_kᵀ` with orthonormal `u`.
    fn low_rank(n: usize, eig: &[f64], seed: u64) -> Vec<Vec<f64>> {
        let mut state = seed;
        let mut rand = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) - 0.5
        };
        let mut us: Vec<Vec<f64>> = Vec::new();
        while us.len() < eig.len() {
            let mut u: Vec<f64> = (0..n).map(|_| rand()).collect();
            for b in &us {
                let c: f64 = u.iter().zip(b).map(|(a, b)| a * b).sum();
                u.iter_mut().zip(b).for_each(|(a, b)| *a -= c * b);
            }
            let len = u.iter().map(|x| x * x).sum::<f64>().sqrt();
            u.iter_mut().for_each(|x| *x /= len);
            us.push(u);
        }
        us.into_iter()
            .zip(eig)
            .map(|(u, &l)| u.into_iter().map(|x| x * l.abs().sqrt()).collect())
            .collect()
    }

    #[test]
    fn lanczos_rank_is_exact_on_matrices_of_known_rank() {
        for (n, rank, seed) in [(50, 3, 1u64), (80, 10, 2), (120, 17, 3), (60, 1, 4)] {
            let eig: Vec<f64> = (0..rank)
                .map(|k| {
                    if k % 3 == 2 {
                        -(k as f64 + 1.0)
                    } else {
                        k as f64 + 1.0
                    }
                })
                .collect();
            let factors = low_rank(n, &eig, seed);
            let sign: Vec<f64> = eig.iter().map(|l| l.signum()).collect();
            let op = |x: &[f32], out: &mut [f32]| -> Result<(), TrainError> {
                out.fill(0.0);
                for (f, s) in factors.iter().zip(&sign) {
                    // f = sqrt|λ| u: λ u uᵀ x = s · f (fᵀ x).
                    let c: f64 = f.iter().zip(x).map(|(a, &b)| a * f64::from(b)).sum();
                    for (o, a) in out.iter_mut().zip(f) {
                        *o += (s * a * c) as f32;
                    }
                }
                Ok(())
            };
            let got = lanczos_rank(op, n, 32, 1e-3, 7).unwrap();
            assert_eq!(got, rank as f64, "n {n} rank {rank}");
        }
    }

    #[test]
    fn quadrature_fraction_is_the_start_vectors_share_of_the_range() {
        // When Lanczos ends on an invariant subspace (k > rank), the weight of the nonzero
        // Ritz values is exactly ‖P q₀‖², P the projection onto the operator's range.
        for (n, rank, seed) in [(50, 3, 1u64), (80, 10, 2), (120, 17, 3)] {
            let eig: Vec<f64> = (0..rank).map(|k| (k as f64 + 1.0) * 0.5).collect();
            let factors = low_rank(n, &eig, seed);
            let mut op = |x: &[f32], out: &mut [f32]| -> Result<(), TrainError> {
                out.fill(0.0);
                for f in &factors {
                    let c: f64 = f.iter().zip(x).map(|(a, &b)| a * f64::from(b)).sum();
                    for (o, a) in out.iter_mut().zip(f) {
                        *o += (a * c) as f32;
                    }
                }
                Ok(())
            };
            let ritz = lanczos_ritz_values(&mut op, n, 32, 9).unwrap();
            let got = RankEstimate::from_ritz(&ritz, 1e-3);
            let q0 = lanczos_start(n, 9);
            let share: f64 = factors
                .iter()
                .map(|f| {
                    let len = f.iter().map(|x| x * x).sum::<f64>().sqrt();
                    let c: f64 = f.iter().zip(&q0).map(|(a, b)| a * b).sum::<f64>() / len;
                    c * c
                })
                .sum();
            assert_eq!(got.count, rank as f64);
            assert!(
                (got.fraction - share).abs() < 1e-4,
                "n {n} rank {rank}: {} vs {share}",
                got.fraction
            );
        }
    }

    #[test]
    fn quadrature_fraction_estimates_rank_over_n_beyond_the_steps() {
        // A diagonal operator of size 2000 and rank 500 (log-spread eigenvalues over two
        // decades): 32 steps cannot count 500 Ritz values, the quadrature still finds
        // rank/n = 0.25 (its standard deviation over start vectors is about 0.01).
        let n = 2000;
        let diag: Vec<f64> = (0..n)
            .map(|i| {
                if i % 4 == 0 {
                    10f64.powf(-2.0 * (i as f64 / n as f64))
                } else {
                    0.0
                }
            })
            .collect();
        for seed in 0..3u64 {
            let mut op = |x: &[f32], out: &mut [f32]| -> Result<(), TrainError> {
                for ((o, &a), &d) in out.iter_mut().zip(x).zip(&diag) {
                    *o = (f64::from(a) * d) as f32;
                }
                Ok(())
            };
            let ritz = lanczos_ritz_values(&mut op, n, 32, seed).unwrap();
            let got = RankEstimate::from_ritz(&ritz, 1e-3);
            assert!(got.count <= 32.0);
            assert!(
                (got.fraction - 0.25).abs() < 0.04,
                "seed {seed}: fraction {}",
                got.fraction
            );
        }
    }

    #[test]
    fn singular_values_of_dead_and_tiny_features() {
        // Features of a collapsed layer: most columns dead (exactly 0), the rest tiny or
        // duplicated. The singular values of [[3, 0, 0], [0, 4, 0]] scaled by 1e-30, with
        // two dead columns added: 4e-30 and 3e-30.
        let rows = 2;
        let a = [3e-30f32, 0.0, 0.0, 0.0, 0.0, 0.0, 4e-30, 0.0, 0.0, 0.0];
        let mut sv = singular_values(&a, rows, 5).unwrap();
        sv.sort_by(|x, y| y.total_cmp(x));
        assert!(
            (sv[0] / 4e-30 - 1.0).abs() < 1e-6 && (sv[1] / 3e-30 - 1.0).abs() < 1e-6,
            "{sv:?}"
        );
        assert!(singular_values(&[1.0, f32::NAN], 1, 2).is_none());
    }

    #[test]
    fn features_of_a_collapsed_network_have_finite_singular_values() {
        // The first hidden layer's features at task 6 of a 100-epoch plain-Adam run
        // (results/diagnosis/e100, seed 2): 25 nonzeros in 256 × 256. nalgebra's SVD
        // returns NaN singular values for it (before the bound it never returned at all).
        const NONZEROS: [(usize, usize, u32); 25] = [
            (1, 26, 0x3ebae570),
            (9, 126, 0x3fbabad9),
            (9, 181, 0x3fbceac2),
            (18, 45, 0x3cbd5e20),
            (24, 157, 0x3e0809ac),
            (27, 45, 0x3e7c23ec),
            (45, 126, 0x3cc51700),
            (47, 76, 0x3f348794),
            (64, 76, 0x3ffc9710),
            (79, 196, 0x3f1d28d7),
            (82, 112, 0x3cbd14d0),
            (108, 76, 0x409867b0),
            (108, 92, 0x3fc19c95),
            (113, 26, 0x3f87c669),
            (121, 13, 0x40276eda),
            (121, 45, 0x3ccbf2c0),
            (144, 26, 0x400a8a8a),
            (159, 99, 0x3feca511),
            (200, 45, 0x3fcd9a68),
            (206, 45, 0x3f59c7c6),
            (207, 76, 0x3ed93b78),
            (207, 92, 0x401446c3),
            (209, 76, 0x3f3c6ea4),
            (214, 26, 0x3d085b40),
            (244, 45, 0x3fa6e3f2),
        ];
        let n = 256;
        let mut a = vec![0.0f32; n * n];
        for &(r, c, bits) in &NONZEROS {
            a[r * n + c] = f32::from_bits(bits);
        }
        let sv = singular_values(&a, n, n).expect("singular values");
        assert!(sv.iter().all(|x| x.is_finite() && *x >= 0.0));
        // Σσ² is the squared Frobenius norm, and only the 11 nonzero columns give σ > 0.
        let frobenius: f64 = a.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        let sum_sq: f64 = sv.iter().map(|x| x * x).sum();
        assert!(
            (sum_sq - frobenius).abs() < 1e-9 * frobenius,
            "{sum_sq} vs {frobenius}"
        );
        let top = sv.iter().fold(0.0f64, |m, &x| m.max(x));
        assert_eq!(sv.iter().filter(|&&x| x > 1e-6 * top).count(), 11);
        assert!(core_ind::effective_rank(&sv).unwrap().is_finite());
    }

    #[test]
    fn the_gram_fallback_agrees_with_the_svd() {
        let (rows, cols) = (12, 7);
        let mut state = 3u64;
        let a: Vec<f32> = (0..rows * cols)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 40) as f32 / (1u64 << 24) as f32) - 0.5
            })
            .collect();
        let mut svd = singular_values(&a, rows, cols).unwrap();
        let m = DMatrix::from_row_iterator(rows, cols, a.iter().map(|&x| f64::from(x)));
        let mut gram = singular_values_by_gram(&m, 1000).unwrap();
        svd.sort_by(|x, y| y.total_cmp(x));
        gram.sort_by(|x, y| y.total_cmp(x));
        assert_eq!(svd.len(), gram.len());
        for (s, g) in svd.iter().zip(&gram) {
            assert!((s - g).abs() < 1e-9 * svd[0], "{svd:?} vs {gram:?}");
        }
    }

    #[test]
    fn stable_rank_of_a_diagonal_matrix() {
        // diag(3, 4) as 2×2: ‖W‖_F² = 25, ‖W‖_2 = 4.
        let s = stable_rank(&[3.0, 0.0, 0.0, 4.0], 2, 2, 0).unwrap();
        assert!((s - 25.0 / 16.0).abs() < 1e-5, "{s}");
    }

    #[test]
    fn singular_values_and_effective_rank_of_orthogonal_features() {
        // Rows are orthonormal: two equal singular values, effective rank 2.
        let sv = singular_values(&[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], 2, 3).unwrap();
        let e = core_ind::effective_rank(&sv).unwrap();
        assert!((e - 2.0).abs() < 1e-9, "{sv:?} {e}");
    }
}
