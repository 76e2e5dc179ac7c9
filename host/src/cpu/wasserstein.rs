//! The Wasserstein regulariser of Lewandowski et al.: keep each layer's empirical weight
//! distribution close to its initial one.
//!
//! For a parameter vector θ (a layer's weights, or its biases) with initial values θ₀, the
//! squared 1-D Wasserstein-2 distance between the two empirical distributions (up to the
//! factor 1/n) is `Σ_k (sort(θ)_k − sort(θ₀)_k)²`. The penalty is
//! `R(θ) = (λ/2)·Σ_k (sort(θ)_k − sort(θ₀)_k)²` — the `λ/2` makes its gradient
//! `λ·(θ_j − sort(θ₀)_{rank(j)})` pull with the same strength λ as coupled L2 does toward 0 —
//! and it is applied separately to each layer's weight matrix and bias vector.
//! Ties in θ are ranked by index, so the gradient is a deterministic function of θ.

/// Sorts a copy of `theta` ascending (the reference distribution, computed once at reset).
pub fn sorted(theta: &[f32]) -> Vec<f32> {
    let mut s = theta.to_vec();
    s.sort_unstable_by(f32::total_cmp);
    s
}

/// Adds the penalty's gradient `λ·(θ_j − θ₀_sorted[rank(θ_j)])` to `out`. `idx` is scratch
/// (resized to `theta.len()`; no allocation once it is large enough).
///
/// # Panics
/// If the slices differ in length (an engine invariant).
pub fn add_grad(
    theta: &[f32],
    theta0_sorted: &[f32],
    lambda: f32,
    idx: &mut Vec<u32>,
    out: &mut [f32],
) {
    assert_eq!(theta.len(), theta0_sorted.len());
    assert_eq!(theta.len(), out.len());
    idx.clear();
    idx.extend(0..theta.len() as u32);
    idx.sort_unstable_by(|&a, &b| {
        theta[a as usize]
            .total_cmp(&theta[b as usize])
            .then(a.cmp(&b))
    });
    for (&j, &t0) in idx.iter().zip(theta0_sorted) {
        let j = j as usize;
        out[j] += lambda * (theta[j] - t0);
    }
}

/// The penalty `(λ/2)·Σ_k (sort(θ)_k − θ₀_sorted_k)²`, in `f64`.
pub fn penalty(theta: &[f32], theta0_sorted: &[f32], lambda: f32) -> f64 {
    let s = sorted(theta);
    0.5 * f64::from(lambda)
        * s.iter()
            .zip(theta0_sorted)
            .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
            .sum::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let theta0: Vec<f32> = (0..40)
            .map(|i| ((i * 7 % 40) as f32 - 20.0) / 10.0)
            .collect();
        let theta: Vec<f32> = (0..40)
            .map(|i| ((i * 13 % 41) as f32 - 19.5) / 9.0)
            .collect();
        let s0 = sorted(&theta0);
        let mut g = vec![0.0f32; 40];
        let mut idx = Vec::new();
        add_grad(&theta, &s0, 0.3, &mut idx, &mut g);
        let h = 1e-3f32; // smaller than every gap between distinct values: ranks are stable
        for j in 0..40 {
            let mut p = theta.clone();
            p[j] += h;
            let mut m = theta.clone();
            m[j] -= h;
            let fd = (penalty(&p, &s0, 0.3) - penalty(&m, &s0, 0.3)) / (2.0 * h as f64);
            assert!(
                (fd - g[j] as f64).abs() < 1e-3,
                "j={j}: fd {fd} vs {}",
                g[j]
            );
        }
    }

    #[test]
    fn zero_at_any_permutation_of_the_initial_values() {
        let theta0: Vec<f32> = (0..10).map(|i| i as f32 * 0.1).collect();
        let mut theta = theta0.clone();
        theta.reverse();
        let mut g = vec![0.0f32; 10];
        add_grad(&theta, &sorted(&theta0), 1.0, &mut Vec::new(), &mut g);
        assert!(g.iter().all(|&x| x == 0.0));
        assert_eq!(penalty(&theta, &sorted(&theta0), 1.0), 0.0);
    }
}
