//! Plain-Rust reference implementations (accumulating in `f64`) of what each kernel
//! computes. The device tests and `safestep-gpu-check` compare every kernel against these on
//! random sizes; they are deliberately naive so they are easy to trust. The whole MLP's
//! reference is safestep-engine's [`ReferenceMlp`](safestep_engine::reference::ReferenceMlp),
//! shared with the CPU engine's tests.
//!
//! # Panics
//! Being test oracles, these functions index their slices directly: they panic when a
//! slice is shorter than the sizes passed say (the device wrappers, by contrast, check).

use crate::shape::GemmLayout;

/// `C = alpha·op(A)·op(B) + beta·C`, row-major, in the given layout.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    layout: GemmLayout,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: &[f32],
    b: &[f32],
    beta: f32,
    c: &mut [f32],
) {
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0_f64;
            for p in 0..k {
                let av = match layout {
                    GemmLayout::TN => a[p * m + i],
                    _ => a[i * k + p],
                };
                let bv = match layout {
                    GemmLayout::NT => b[j * k + p],
                    _ => b[p * n + j],
                };
                s += av as f64 * bv as f64;
            }
            let out = &mut c[i * n + j];
            let prev = if beta == 0.0 {
                0.0
            } else {
                beta as f64 * *out as f64
            };
            *out = (alpha as f64 * s + prev) as f32;
        }
    }
}

/// `z += b` per row; then `a = relu(z)` (`expansion = 1`), `a = [relu(z), relu(−z)]`
/// (`expansion = 2`), or nothing (`expansion = 0`, the logits).
pub fn bias_act_forward(
    z: &mut [f32],
    b: &[f32],
    rows: usize,
    cols: usize,
    expansion: usize,
    a: &mut [f32],
) {
    for r in 0..rows {
        for c in 0..cols {
            let v = z[r * cols + c] + b[c];
            z[r * cols + c] = v;
            match expansion {
                1 => a[r * cols + c] = v.max(0.0),
                2 => {
                    a[r * 2 * cols + c] = v.max(0.0);
                    a[r * 2 * cols + cols + c] = (-v).max(0.0);
                }
                _ => {}
            }
        }
    }
}

/// Backward of ReLU (`expansion = 1`) or CReLU (`expansion = 2`): `dz` from `da`.
pub fn act_backward(
    z: &[f32],
    da: &[f32],
    rows: usize,
    cols: usize,
    expansion: usize,
    dz: &mut [f32],
) {
    for r in 0..rows {
        for c in 0..cols {
            let v = z[r * cols + c];
            dz[r * cols + c] = if expansion == 1 {
                if v > 0.0 {
                    da[r * cols + c]
                } else {
                    0.0
                }
            } else if v > 0.0 {
                da[r * 2 * cols + c]
            } else if v < 0.0 {
                -da[r * 2 * cols + cols + c]
            } else {
                0.0
            };
        }
    }
}

/// Forward-mode product of ReLU / CReLU: `ra = act'(z)·rz`.
pub fn act_jvp(z: &[f32], rz: &[f32], rows: usize, cols: usize, expansion: usize, ra: &mut [f32]) {
    for r in 0..rows {
        for c in 0..cols {
            let (v, d) = (z[r * cols + c], rz[r * cols + c]);
            if expansion == 1 {
                ra[r * cols + c] = if v > 0.0 { d } else { 0.0 };
            } else {
                ra[r * 2 * cols + c] = if v > 0.0 { d } else { 0.0 };
                ra[r * 2 * cols + cols + c] = if v < 0.0 { -d } else { 0.0 };
            }
        }
    }
}

/// Column sums of a `rows × cols` matrix (the bias gradient).
pub fn col_sum(d: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .map(|c| (0..rows).map(|r| d[r * cols + c] as f64).sum::<f64>() as f32)
        .collect()
}

/// Softmax cross-entropy per row: returns `(probs, dlogits·scale, loss per row, hit per row)`.
pub fn softmax_xent(
    logits: &[f32],
    labels: &[u8],
    rows: usize,
    classes: usize,
    scale: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f64>, Vec<bool>) {
    let mut probs = vec![0.0; rows * classes];
    let mut d = vec![0.0; rows * classes];
    let mut loss = vec![0.0; rows];
    let mut hit = vec![false; rows];
    for r in 0..rows {
        let z = &logits[r * classes..(r + 1) * classes];
        let (mut arg, mut mx) = (0, f64::NEG_INFINITY);
        for (c, &v) in z.iter().enumerate() {
            if (v as f64) > mx {
                mx = v as f64;
                arg = c;
            }
        }
        let s: f64 = z.iter().map(|&v| (v as f64 - mx).exp()).sum();
        let label = labels[r] as usize;
        for c in 0..classes {
            let p = (z[c] as f64 - mx).exp() / s;
            probs[r * classes + c] = p as f32;
            d[r * classes + c] = ((p - if c == label { 1.0 } else { 0.0 }) * scale as f64) as f32;
        }
        loss[r] = s.ln() - (z[label] as f64 - mx);
        hit[r] = arg == label;
    }
    (probs, d, loss, hit)
}

/// The softmax cross-entropy's logit Hessian times `rz`, per row, times `scale`.
pub fn softmax_hvp(probs: &[f32], rz: &[f32], rows: usize, classes: usize, scale: f32) -> Vec<f32> {
    let mut out = vec![0.0; rows * classes];
    for r in 0..rows {
        let p = &probs[r * classes..(r + 1) * classes];
        let v = &rz[r * classes..(r + 1) * classes];
        let dot: f64 = p.iter().zip(v).map(|(&a, &b)| a as f64 * b as f64).sum();
        for c in 0..classes {
            out[r * classes + c] = (p[c] as f64 * (v[c] as f64 - dot) * scale as f64) as f32;
        }
    }
    out
}

/// `Σ_r scale²·‖δ_r‖²·(‖a_r‖² + 1)`: the sum of per-sample gradient squared norms of a dense
/// layer with output gradients `delta` (`rows × dcols`) and inputs `a` (`rows × acols`).
pub fn sample_sq_norm_sum(
    delta: &[f32],
    a: &[f32],
    rows: usize,
    dcols: usize,
    acols: usize,
    scale: f32,
) -> f64 {
    (0..rows)
        .map(|r| {
            let d2: f64 = delta[r * dcols..(r + 1) * dcols]
                .iter()
                .map(|&x| (x as f64).powi(2))
                .sum();
            let a2: f64 = a[r * acols..(r + 1) * acols]
                .iter()
                .map(|&x| (x as f64).powi(2))
                .sum();
            (scale as f64).powi(2) * d2 * (a2 + 1.0)
        })
        .sum()
}

/// `Σ x_i²` in `f64`.
pub fn sum_sq(x: &[f32]) -> f64 {
    x.iter().map(|&v| (v as f64).powi(2)).sum()
}

/// Gradient `λ·(θ_j − sort(θ₀)_{rank(j)})` of the Wasserstein penalty
/// `(λ/2)·Σ_k (sort(θ)_k − sort(θ₀)_k)²`, added into `grad` (ties broken by index), the
/// convention of safestep-host's CPU engine.
pub fn wasserstein_grad(theta: &[f32], theta0: &[f32], lambda: f32, grad: &mut [f32]) {
    let mut order: Vec<usize> = (0..theta.len()).collect();
    order.sort_by(|&i, &j| theta[i].total_cmp(&theta[j]).then(i.cmp(&j)));
    let mut sorted0 = theta0.to_vec();
    sorted0.sort_by(f32::total_cmp);
    let coef = lambda;
    for (rank, &i) in order.iter().enumerate() {
        grad[i] += coef * (theta[i] - sorted0[rank]);
    }
}

/// splitmix64, as in `kernels/init.cu`.
pub fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Element `i` of `fill_uniform(seed, lo, hi)`.
pub fn uniform_at(seed: u64, i: u64, lo: f32, hi: f32) -> f32 {
    let r = splitmix64(seed ^ splitmix64(i));
    let u = (r >> 40) as f32 * (1.0 / 16_777_216.0);
    lo + (hi - lo) * u
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gemm_layouts_agree_on_transposed_operands() {
        let (m, n, k) = (3, 4, 5);
        let a: Vec<f32> = (0..m * k).map(|i| i as f32 * 0.5 - 3.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| 1.0 - i as f32 * 0.25).collect();
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut c1 = vec![0.0; m * n];
        let mut c2 = vec![0.0; m * n];
        let mut c3 = vec![0.0; m * n];
        gemm(GemmLayout::NN, m, n, k, 1.0, &a, &b, 0.0, &mut c1);
        gemm(GemmLayout::NT, m, n, k, 1.0, &a, &bt, 0.0, &mut c2);
        gemm(GemmLayout::TN, m, n, k, 1.0, &at, &b, 0.0, &mut c3);
        assert_eq!(c1, c2);
        assert_eq!(c1, c3);
        // c[0][0] by hand: sum_p a[0][p] * b[p][0]
        let hand: f32 = (0..k).map(|p| a[p] * b[p * n]).sum();
        assert!((c1[0] - hand).abs() < 1e-4);
    }

    #[test]
    fn softmax_hvp_matches_finite_difference_of_gradient() {
        let (rows, classes) = (2, 5);
        let z: Vec<f32> = (0..rows * classes)
            .map(|i| (i as f32 * 0.7).sin())
            .collect();
        let labels = [1u8, 3];
        let rz: Vec<f32> = (0..rows * classes)
            .map(|i| (i as f32 * 1.3).cos())
            .collect();
        let (p, _, _, _) = softmax_xent(&z, &labels, rows, classes, 1.0);
        let hv = softmax_hvp(&p, &rz, rows, classes, 1.0);
        let h = 1e-3_f32;
        let zp: Vec<f32> = z.iter().zip(&rz).map(|(a, b)| a + h * b).collect();
        let zm: Vec<f32> = z.iter().zip(&rz).map(|(a, b)| a - h * b).collect();
        let (_, dp, _, _) = softmax_xent(&zp, &labels, rows, classes, 1.0);
        let (_, dm, _, _) = softmax_xent(&zm, &labels, rows, classes, 1.0);
        for i in 0..rows * classes {
            let fd = (dp[i] - dm[i]) / (2.0 * h);
            assert!((fd - hv[i]).abs() < 1e-3, "{i}: {fd} vs {}", hv[i]);
        }
    }

    #[test]
    fn crelu_backward_is_adjoint_of_jvp() {
        let (rows, cols) = (3, 4);
        let z: Vec<f32> = (0..rows * cols).map(|i| (i as f32 - 5.5) * 0.3).collect();
        let rz: Vec<f32> = (0..rows * cols).map(|i| (i as f32 * 0.9).sin()).collect();
        let da: Vec<f32> = (0..rows * 2 * cols)
            .map(|i| (i as f32 * 0.4).cos())
            .collect();
        let mut ra = vec![0.0; rows * 2 * cols];
        let mut dz = vec![0.0; rows * cols];
        act_jvp(&z, &rz, rows, cols, 2, &mut ra);
        act_backward(&z, &da, rows, cols, 2, &mut dz);
        let lhs: f32 = ra.iter().zip(&da).map(|(a, b)| a * b).sum();
        let rhs: f32 = rz.iter().zip(&dz).map(|(a, b)| a * b).sum();
        assert!((lhs - rhs).abs() < 1e-5);
    }

    #[test]
    fn sample_norms_match_explicit_per_sample_gradients() {
        let (rows, dcols, acols) = (3, 2, 4);
        let delta: Vec<f32> = (0..rows * dcols).map(|i| (i as f32 * 0.8).sin()).collect();
        let a: Vec<f32> = (0..rows * acols).map(|i| (i as f32 * 0.3).cos()).collect();
        let mut explicit = 0.0_f64;
        for r in 0..rows {
            for o in 0..dcols {
                let d = 3.0 * delta[r * dcols + o] as f64;
                for i in 0..acols {
                    explicit += (d * a[r * acols + i] as f64).powi(2);
                }
                explicit += d * d;
            }
        }
        let fast = sample_sq_norm_sum(&delta, &a, rows, dcols, acols, 3.0);
        assert!((fast - explicit).abs() < 1e-9 * explicit.max(1.0));
    }

    #[test]
    fn wasserstein_gradient_matches_finite_difference() {
        let theta = [0.3_f32, -0.2, 0.9, 0.1];
        let theta0 = [0.0_f32, 0.5, -0.4, 0.2];
        let lambda = 0.7;
        let mut g = [0.0; 4];
        wasserstein_grad(&theta, &theta0, lambda, &mut g);
        let pen = |t: &[f32]| {
            let mut s: Vec<f32> = t.to_vec();
            s.sort_by(f32::total_cmp);
            let mut s0 = theta0.to_vec();
            s0.sort_by(f32::total_cmp);
            s.iter()
                .zip(&s0)
                .map(|(a, b)| 0.5 * lambda as f64 * ((a - b) as f64).powi(2))
                .sum::<f64>()
        };
        for i in 0..4 {
            let mut tp = theta;
            let mut tm = theta;
            tp[i] += 1e-3;
            tm[i] -= 1e-3;
            let fd = (pen(&tp) - pen(&tm)) / 2e-3;
            assert!((fd - g[i] as f64).abs() < 1e-3, "{i}: {fd} vs {}", g[i]);
        }
    }

    #[test]
    fn uniform_is_in_range_and_seeded() {
        let xs: Vec<f32> = (0..1000).map(|i| uniform_at(7, i, -0.5, 0.5)).collect();
        assert!(xs.iter().all(|&x| (-0.5..0.5).contains(&x)));
        let mean: f32 = xs.iter().sum::<f32>() / 1000.0;
        assert!(mean.abs() < 0.05);
        assert_ne!(uniform_at(7, 3, 0.0, 1.0), uniform_at(8, 3, 0.0, 1.0));
    }
}
