//! Analytic check of the descent condition on an isotropic quadratic.
//!
//! `f(θ) = (L/2)‖θ‖²` in `d` dimensions, true gradient `g = Lθ`, per-sample gradients
//! `g_i = g + σζ_i` (`ζ_i ~ N(0, I)`), minibatch mean `ĝ` over `B` samples. One SGD step of
//! size `α` changes the loss in expectation by `(L/2)(−2α‖g‖²/L + α²(‖g‖² + dσ²/B))`, which
//! crosses zero exactly at `α·L = 2·SNR/(1+SNR)`, `SNR = B‖g‖²/(dσ²)`. We simulate the steps,
//! locate the crossing of the measured mean loss change, and compare it with the bound the
//! core computes — from the true SNR and from the SNR the core *estimates* from per-sample
//! gradients. Power iteration on the quadratic's Hessian-vector product must return `L`.

mod core_support;
use core_support::{matvec, random_orthogonal, with_spectrum, Rng};
use safestep_core::bounds::bound_from_snr;
use safestep_core::noise::NoiseStats;
use safestep_core::power::{PowerConfig, PowerIteration};

const D: usize = 20;
const L: f64 = 2.5;
const B: usize = 8;

fn loss(theta: &[f64]) -> f64 {
    0.5 * L * theta.iter().map(|x| x * x).sum::<f64>()
}

struct Sim {
    /// The minibatch-mean gradients of M simulated minibatches.
    mean_grads: Vec<Vec<f64>>,
    /// Mean over minibatches of the unbiased ‖g‖² estimate and of the noise S/B.
    g2_est: f64,
    noise_est: f64,
}

fn simulate(theta: &[f64], sigma: f64, m: usize, rng: &mut Rng) -> Sim {
    let g: Vec<f64> = theta.iter().map(|x| L * x).collect();
    let mut mean_grads = Vec::with_capacity(m);
    let (mut g2, mut noise) = (0.0, 0.0);
    let mut samples = vec![0.0; B * D];
    for _ in 0..m {
        for (k, s) in samples.iter_mut().enumerate() {
            *s = g[k % D] + sigma * rng.normal();
        }
        let mean: Vec<f64> = (0..D)
            .map(|j| (0..B).map(|i| samples[i * D + j]).sum::<f64>() / B as f64)
            .collect();
        let n = NoiseStats::from_sample_grads(&mean, samples.chunks_exact(D), None).unwrap();
        g2 += n.unbiased_grad_sq_unclamped();
        noise += n.noise;
        mean_grads.push(mean);
    }
    Sim {
        mean_grads,
        g2_est: g2 / m as f64,
        noise_est: noise / m as f64,
    }
}

/// Measured mean loss change of one SGD step of size α, over the simulated minibatches.
fn mean_loss_change(theta: &[f64], sim: &Sim, alpha: f64) -> f64 {
    let f0 = loss(theta);
    let mut next = vec![0.0; D];
    let total: f64 = sim
        .mean_grads
        .iter()
        .map(|gh| {
            for j in 0..D {
                next[j] = theta[j] - alpha * gh[j];
            }
            loss(&next) - f0
        })
        .sum();
    total / sim.mean_grads.len() as f64
}

/// The α > 0 where the mean loss change crosses from negative to positive (bisection).
fn critical_step(theta: &[f64], sim: &Sim) -> f64 {
    let (mut lo, mut hi) = (1e-6 / L, 2.0 / L);
    assert!(mean_loss_change(theta, sim, lo) < 0.0 && mean_loss_change(theta, sim, hi) > 0.0);
    for _ in 0..60 {
        let mid = 0.5 * (lo + hi);
        if mean_loss_change(theta, sim, mid) < 0.0 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

#[test]
fn measured_critical_step_matches_two_snr_over_one_plus_snr() {
    let mut rng = Rng::new(2024);
    let theta: Vec<f64> = (0..D).map(|_| rng.normal()).collect();
    let g_sq: f64 = theta.iter().map(|x| (L * x) * (L * x)).sum();
    for target_snr in [0.2, 1.0, 5.0, 50.0] {
        // SNR = B‖g‖²/(dσ²)  ⇒  σ² = B‖g‖²/(d·SNR).
        let sigma = (B as f64 * g_sq / (D as f64 * target_snr)).sqrt();
        let sim = simulate(&theta, sigma, 40_000, &mut rng);
        let measured = critical_step(&theta, &sim) * L;

        let exact = bound_from_snr(1.0, target_snr).unwrap();
        assert!(
            (measured - exact).abs() < 0.03 * exact,
            "SNR {target_snr}: measured αL = {measured}, 2SNR/(1+SNR) = {exact}"
        );

        // The same bound from the SNR the core estimates out of the per-sample gradients.
        let est_snr = sim.g2_est.max(0.0) / sim.noise_est;
        let from_estimate = bound_from_snr(1.0, est_snr).unwrap();
        assert!(
            (from_estimate - measured).abs() < 0.05 * measured,
            "SNR {target_snr}: estimated SNR {est_snr} gives {from_estimate}, measured {measured}"
        );
    }
}

#[test]
fn power_iteration_on_the_quadratic_returns_l() {
    // Isotropic: H = L·I.
    let mut v = vec![0.3; D];
    let mut hv = vec![0.0; D];
    let hvp = |x: &[f64], out: &mut [f64]| -> Result<(), ()> {
        for (o, &xi) in out.iter_mut().zip(x) {
            *o = L * xi;
        }
        Ok(())
    };
    let l = PowerIteration::new()
        .estimate(&PowerConfig::default(), &mut v, &mut hv, None, hvp)
        .unwrap();
    assert!((l - L).abs() < 1e-12, "{l}");
    // Anisotropic quadratic with curvature L along one hidden direction.
    let mut rng = Rng::new(7);
    let q = random_orthogonal(D, &mut rng);
    let eig: Vec<f64> = (0..D)
        .map(|i| if i == 3 { L } else { L * 0.5 * rng.uniform() })
        .collect();
    let h = with_spectrum(&q, &eig);
    let mut v: Vec<f64> = (0..D).map(|_| rng.normal()).collect();
    let cfg = PowerConfig {
        tol: 1e-10,
        max_iters: 200,
    };
    let l = PowerIteration::new()
        .estimate(
            &cfg,
            &mut v,
            &mut hv,
            None,
            |x: &[f64], out: &mut [f64]| -> Result<(), ()> {
                matvec(&h, x, out);
                Ok(())
            },
        )
        .unwrap();
    assert!((l - L).abs() < 1e-8, "{l}");
}
