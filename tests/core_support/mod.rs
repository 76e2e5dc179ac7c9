//! Shared helpers for the core tests: a tiny deterministic RNG, Gaussian samples, random
//! orthogonal matrices and a Jacobi eigenvalue reference (all f64, independent of the core).
#![allow(dead_code)]

/// splitmix64: deterministic, seedable, good enough for Monte Carlo tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform index in [0, n).
    pub fn below(&mut self, n: usize) -> usize {
        (self.uniform() * n as f64) as usize % n
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.uniform();
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
    }
}

/// Row-major n×n random orthogonal matrix (Gram-Schmidt on Gaussian columns).
pub fn random_orthogonal(n: usize, rng: &mut Rng) -> Vec<f64> {
    let mut q = vec![0.0; n * n];
    for c in 0..n {
        loop {
            let mut col: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
            for p in 0..c {
                let dot: f64 = (0..n).map(|r| q[r * n + p] * col[r]).sum();
                for (r, x) in col.iter_mut().enumerate() {
                    *x -= dot * q[r * n + p];
                }
            }
            let len = col.iter().map(|x| x * x).sum::<f64>().sqrt();
            if len > 1e-6 {
                for r in 0..n {
                    q[r * n + c] = col[r] / len;
                }
                break;
            }
        }
    }
    q
}

/// `Q diag(eig) Qᵀ`, row-major.
pub fn with_spectrum(q: &[f64], eig: &[f64]) -> Vec<f64> {
    let n = eig.len();
    let mut a = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            a[i * n + j] = (0..n).map(|k| q[i * n + k] * eig[k] * q[j * n + k]).sum();
        }
    }
    a
}

/// `out = A·v` for a row-major n×n matrix.
pub fn matvec(a: &[f64], v: &[f64], out: &mut [f64]) {
    let n = v.len();
    for i in 0..n {
        out[i] = (0..n).map(|j| a[i * n + j] * v[j]).sum();
    }
}

/// Eigenvalues of a symmetric matrix by cyclic Jacobi rotations (reference, f64).
pub fn jacobi_eigenvalues(a: &[f64], n: usize) -> Vec<f64> {
    let mut a = a.to_vec();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off < 1e-24 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let akp = a[k * n + p];
                    let akq = a[k * n + q];
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let apk = a[p * n + k];
                    let aqk = a[q * n + k];
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
            }
        }
    }
    (0..n).map(|i| a[i * n + i]).collect()
}

/// Mean and standard error of the mean.
pub fn mean_se(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// The proptest configuration of a property with `cases` cases, multiplied by the
/// environment's `SAFESTEP_PROPTEST_SCALE` (a positive integer, 1 when unset), so that a
/// longer search before a push is one command:
/// `SAFESTEP_PROPTEST_SCALE=50 cargo test --release -p safestep --tests`.
pub fn proptest_cases(cases: u32) -> proptest::test_runner::Config {
    let scale = match std::env::var("SAFESTEP_PROPTEST_SCALE") {
        Err(_) => 1,
        Ok(s) => match s.parse::<u32>() {
            Ok(k) if k > 0 => k,
            _ => panic!("SAFESTEP_PROPTEST_SCALE must be a positive integer, got {s:?}"),
        },
    };
    proptest::test_runner::Config::with_cases(cases.saturating_mul(scale))
}
