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

/// Order-preserving map of an `f32` onto `u32`: `key(a) < key(b)` iff `a.total_cmp(&b)` is
/// `Less`.
#[inline]
fn key(x: f32) -> u32 {
    let b = x.to_bits();
    if b >> 31 == 1 {
        !b
    } else {
        b | 0x8000_0000
    }
}

/// Scratch for ranking a parameter vector: an LSD radix sort (3 passes of 11 bits) of the
/// values' order-preserving keys, carrying the indices. Stable, so ties keep index order and
/// the ranking is a pure function of the values; about a millisecond for 200k weights,
/// where a comparison sort takes ten. Buffers grow to the largest vector once.
#[derive(Debug, Default, Clone)]
pub struct Ranker {
    keys: Vec<u32>,
    keys_tmp: Vec<u32>,
    idx: Vec<u32>,
    idx_tmp: Vec<u32>,
}

impl Ranker {
    /// Indices of `theta` in ascending order of value (ties by index).
    pub fn argsort(&mut self, theta: &[f32]) -> &[u32] {
        const BITS: u32 = 11;
        const BUCKETS: usize = 1 << BITS;
        let n = theta.len();
        self.keys.clear();
        self.keys.extend(theta.iter().map(|&x| key(x)));
        self.idx.clear();
        self.idx.extend(0..n as u32);
        self.keys_tmp.resize(n, 0);
        self.idx_tmp.resize(n, 0);
        let mut counts = [[0u32; BUCKETS]; 3];
        for &k in &self.keys {
            for (p, c) in counts.iter_mut().enumerate() {
                c[((k >> (BITS * p as u32)) as usize) & (BUCKETS - 1)] += 1;
            }
        }
        for (p, c) in counts.iter_mut().enumerate() {
            // A pass where every key has the same digit would only copy.
            if c.iter().any(|&x| x as usize == n) {
                continue;
            }
            let mut sum = 0u32;
            for x in c.iter_mut() {
                let here = *x;
                *x = sum;
                sum += here;
            }
            let shift = BITS * p as u32;
            for (&k, &i) in self.keys.iter().zip(&self.idx) {
                let slot = &mut c[((k >> shift) as usize) & (BUCKETS - 1)];
                self.keys_tmp[*slot as usize] = k;
                self.idx_tmp[*slot as usize] = i;
                *slot += 1;
            }
            std::mem::swap(&mut self.keys, &mut self.keys_tmp);
            std::mem::swap(&mut self.idx, &mut self.idx_tmp);
        }
        &self.idx
    }
}

/// Adds the penalty's gradient `λ·(θ_j − θ₀_sorted[rank(θ_j)])` to `out`, ranking with
/// `ranker` (ties by index).
///
/// # Panics
/// If the slices differ in length (an engine invariant).
pub fn add_grad(
    theta: &[f32],
    theta0_sorted: &[f32],
    lambda: f32,
    ranker: &mut Ranker,
    out: &mut [f32],
) {
    assert_eq!(theta.len(), theta0_sorted.len());
    assert_eq!(theta.len(), out.len());
    for (&j, &t0) in ranker.argsort(theta).iter().zip(theta0_sorted) {
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
        add_grad(&theta, &s0, 0.3, &mut Ranker::default(), &mut g);
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
    fn radix_argsort_matches_a_comparison_sort() {
        let mut x: Vec<f32> = (0..5000)
            .map(|i| {
                ((i * 7919 % 1013) as f32 - 500.0) * 1e-3 * if i % 3 == 0 { 1e-20 } else { 1.0 }
            })
            .collect();
        x.extend([0.0, -0.0, f32::MAX, f32::MIN, 1e-45, -1e-45, 0.5, 0.5]);
        let mut want: Vec<u32> = (0..x.len() as u32).collect();
        want.sort_by(|&a, &b| x[a as usize].total_cmp(&x[b as usize]).then(a.cmp(&b)));
        let mut r = Ranker::default();
        assert_eq!(r.argsort(&x), &want[..]);
        // Reuse with a shorter vector (buffers shrink logically) and a constant one.
        assert_eq!(r.argsort(&[2.0, 1.0, 3.0]), &[1, 0, 2]);
        assert_eq!(r.argsort(&[1.0; 4]), &[0, 1, 2, 3]);
        assert!(r.argsort(&[]).is_empty());
    }

    #[test]
    fn zero_at_any_permutation_of_the_initial_values() {
        let theta0: Vec<f32> = (0..10).map(|i| i as f32 * 0.1).collect();
        let mut theta = theta0.clone();
        theta.reverse();
        let mut g = vec![0.0f32; 10];
        add_grad(
            &theta,
            &sorted(&theta0),
            1.0,
            &mut Ranker::default(),
            &mut g,
        );
        assert!(g.iter().all(|&x| x == 0.0));
        assert_eq!(penalty(&theta, &sorted(&theta0), 1.0), 0.0);
    }
}
