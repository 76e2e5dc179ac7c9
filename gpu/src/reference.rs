//! Plain-Rust reference implementations (accumulating in `f64`) of what each kernel
//! computes. The device tests and `safestep-gpu-check` compare every kernel against these on
//! random sizes; they are deliberately naive so they are easy to trust.
//!
//! # Panics
//! Being test oracles, these functions index their slices directly: they panic when a
//! slice is shorter than the sizes passed say (the device wrappers, by contrast, check).

use crate::shape::GemmLayout;
use crate::spec::MlpSpec;

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

/// A whole MLP in `f64` (naive loops): the mean cross-entropy, its gradient and the exact
/// layer-block Hessian-vector product, as references for the device MLP.
///
/// `params[l]` is layer `l`'s vector (weights row-major `fan_out × fan_in`, then bias);
/// `x` is `rows × input`, `y` holds `rows` labels.
pub struct MlpReference<'a> {
    /// The network's shape.
    pub spec: &'a MlpSpec,
    /// Parameters per layer.
    pub params: &'a [Vec<f64>],
    /// Inputs, row-major.
    pub x: &'a [f32],
    /// Labels.
    pub y: &'a [u8],
}

struct Pass {
    /// Inputs to each layer (a_{l-1}), rows × fan_in(l).
    inputs: Vec<Vec<f64>>,
    /// Pre-activations per layer, rows × fan_out(l).
    z: Vec<Vec<f64>>,
    probs: Vec<f64>,
    loss: f64,
}

impl MlpReference<'_> {
    fn rows(&self) -> usize {
        self.y.len()
    }

    fn act_fwd(&self, z: &[f64], cols: usize) -> Vec<f64> {
        let e = self.spec.activation.expansion();
        let rows = z.len() / cols;
        let mut a = vec![0.0; rows * cols * e];
        for r in 0..rows {
            for c in 0..cols {
                let v = z[r * cols + c];
                a[r * cols * e + c] = v.max(0.0);
                if e == 2 {
                    a[r * cols * 2 + cols + c] = (-v).max(0.0);
                }
            }
        }
        a
    }

    /// `dz` from `da` through the activation at `z` (the same map gives the backward pass;
    /// its transpose, [`Self::act_jvp`], the forward-mode product).
    fn act_bwd(&self, z: &[f64], da: &[f64], cols: usize) -> Vec<f64> {
        let e = self.spec.activation.expansion();
        let rows = z.len() / cols;
        let mut dz = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let v = z[r * cols + c];
                dz[r * cols + c] = if v > 0.0 {
                    da[r * cols * e + c]
                } else if v < 0.0 && e == 2 {
                    -da[r * cols * 2 + cols + c]
                } else {
                    0.0
                };
            }
        }
        dz
    }

    fn act_jvp(&self, z: &[f64], rz: &[f64], cols: usize) -> Vec<f64> {
        let e = self.spec.activation.expansion();
        let rows = z.len() / cols;
        let mut ra = vec![0.0; rows * cols * e];
        for r in 0..rows {
            for c in 0..cols {
                let (v, d) = (z[r * cols + c], rz[r * cols + c]);
                ra[r * cols * e + c] = if v > 0.0 { d } else { 0.0 };
                if e == 2 {
                    ra[r * cols * 2 + cols + c] = if v < 0.0 { -d } else { 0.0 };
                }
            }
        }
        ra
    }

    /// `out[r, j] = Σ_i a[r, i]·W[j, i] (+ b[j])` for layer `l`'s weights `w`.
    fn dense(&self, l: usize, a: &[f64], w: &[f64], bias: Option<&[f64]>) -> Vec<f64> {
        let (fi, fo, rows) = (self.spec.fan_in(l), self.spec.fan_out(l), self.rows());
        let mut out = vec![0.0; rows * fo];
        for r in 0..rows {
            for j in 0..fo {
                let mut s = bias.map_or(0.0, |b| b[j]);
                for i in 0..fi {
                    s += a[r * fi + i] * w[j * fi + i];
                }
                out[r * fo + j] = s;
            }
        }
        out
    }

    /// `out[r, i] = Σ_j d[r, j]·W[j, i]`.
    fn dense_t(&self, l: usize, d: &[f64], w: &[f64]) -> Vec<f64> {
        let (fi, fo, rows) = (self.spec.fan_in(l), self.spec.fan_out(l), self.rows());
        let mut out = vec![0.0; rows * fi];
        for r in 0..rows {
            for j in 0..fo {
                let dj = d[r * fo + j];
                for i in 0..fi {
                    out[r * fi + i] += dj * w[j * fi + i];
                }
            }
        }
        out
    }

    /// Layer `l`'s parameter-space gradient from the output gradient `d` and its input `a`.
    fn param_grad(&self, l: usize, d: &[f64], a: &[f64]) -> Vec<f64> {
        let (fi, fo, rows) = (self.spec.fan_in(l), self.spec.fan_out(l), self.rows());
        let mut g = vec![0.0; fi * fo + fo];
        for r in 0..rows {
            for j in 0..fo {
                let dj = d[r * fo + j];
                for i in 0..fi {
                    g[j * fi + i] += dj * a[r * fi + i];
                }
                g[fi * fo + j] += dj;
            }
        }
        g
    }

    fn forward(&self) -> Pass {
        let n = self.spec.layers();
        let x: Vec<f64> = self.x.iter().map(|&v| f64::from(v)).collect();
        let mut inputs = vec![x];
        let mut zs = Vec::new();
        for l in 0..n {
            let nw = self.spec.fan_in(l) * self.spec.fan_out(l);
            let (w, b) = self.params[l].split_at(nw);
            let z = self.dense(l, &inputs[l], w, Some(b));
            if l + 1 < n {
                inputs.push(self.act_fwd(&z, self.spec.fan_out(l)));
            }
            zs.push(z);
        }
        let (rows, k) = (self.rows(), self.spec.classes);
        let mut probs = vec![0.0; rows * k];
        let mut loss = 0.0;
        let logits = &zs[n - 1];
        for r in 0..rows {
            let row = &logits[r * k..(r + 1) * k];
            let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|v| (v - mx).exp()).sum();
            for c in 0..k {
                probs[r * k + c] = (row[c] - mx).exp() / s;
            }
            loss += s.ln() - (row[self.y[r] as usize] - mx);
        }
        Pass {
            inputs,
            z: zs,
            probs,
            loss: loss / rows as f64,
        }
    }

    /// Mean cross-entropy and the gradient of every layer.
    pub fn loss_and_grads(&self) -> (f64, Vec<Vec<f64>>) {
        let p = self.forward();
        let n = self.spec.layers();
        let (rows, k) = (self.rows(), self.spec.classes);
        let mut d: Vec<f64> = p.probs.clone();
        for r in 0..rows {
            d[r * k + self.y[r] as usize] -= 1.0;
        }
        d.iter_mut().for_each(|v| *v /= rows as f64);
        let mut grads = vec![Vec::new(); n];
        for l in (0..n).rev() {
            grads[l] = self.param_grad(l, &d, &p.inputs[l]);
            if l > 0 {
                let nw = self.spec.fan_in(l) * self.spec.fan_out(l);
                let da = self.dense_t(l, &d, &self.params[l][..nw]);
                d = self.act_bwd(&p.z[l - 1], &da, self.spec.fan_out(l - 1));
            }
        }
        (p.loss, grads)
    }

    /// `H_ll·v` for layer `layer`'s diagonal Hessian block (exact R-operator).
    pub fn hvp(&self, layer: usize, v: &[f64]) -> Vec<f64> {
        let p = self.forward();
        let n = self.spec.layers();
        let (rows, k) = (self.rows(), self.spec.classes);
        let nw = self.spec.fan_in(layer) * self.spec.fan_out(layer);
        let mut rz = self.dense(layer, &p.inputs[layer], &v[..nw], Some(&v[nw..]));
        for l in layer + 1..n {
            let ra = self.act_jvp(&p.z[l - 1], &rz, self.spec.fan_out(l - 1));
            let nwl = self.spec.fan_in(l) * self.spec.fan_out(l);
            rz = self.dense(l, &ra, &self.params[l][..nwl], None);
        }
        let mut rd = vec![0.0; rows * k];
        for r in 0..rows {
            let pr = &p.probs[r * k..(r + 1) * k];
            let zr = &rz[r * k..(r + 1) * k];
            let dot: f64 = pr.iter().zip(zr).map(|(a, b)| a * b).sum();
            for c in 0..k {
                rd[r * k + c] = pr[c] * (zr[c] - dot) / rows as f64;
            }
        }
        for l in (layer + 1..n).rev() {
            let nwl = self.spec.fan_in(l) * self.spec.fan_out(l);
            let da = self.dense_t(l, &rd, &self.params[l][..nwl]);
            rd = self.act_bwd(&p.z[l - 1], &da, self.spec.fan_out(l - 1));
        }
        self.param_grad(layer, &rd, &p.inputs[layer])
    }
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

    #[test]
    fn mlp_reference_hvp_matches_finite_differences_of_its_gradient() {
        use crate::spec::Act;
        for act in [Act::Relu, Act::Crelu] {
            let spec = MlpSpec {
                input: 6,
                hidden: vec![5, 4],
                classes: 3,
                activation: act,
            };
            let params: Vec<Vec<f64>> = (0..spec.layers())
                .map(|l| {
                    (0..spec.layer_params(l) as u64)
                        .map(|i| f64::from(uniform_at(l as u64 + 1, i, -0.6, 0.6)))
                        .collect()
                })
                .collect();
            let x: Vec<f32> = (0..8 * 6).map(|i| uniform_at(99, i, 0.0, 1.0)).collect();
            let y: Vec<u8> = (0..8).map(|i| (i % 3) as u8).collect();
            for layer in 0..spec.layers() {
                let v: Vec<f64> = (0..spec.layer_params(layer) as u64)
                    .map(|i| f64::from(uniform_at(7, i, -1.0, 1.0)))
                    .collect();
                let m = MlpReference {
                    spec: &spec,
                    params: &params,
                    x: &x,
                    y: &y,
                };
                let hv = m.hvp(layer, &v);
                let h = 1e-6;
                let shifted = |s: f64| {
                    let mut p = params.clone();
                    p[layer]
                        .iter_mut()
                        .zip(&v)
                        .for_each(|(a, b)| *a += s * h * b);
                    MlpReference {
                        spec: &spec,
                        params: &p,
                        x: &x,
                        y: &y,
                    }
                    .loss_and_grads()
                    .1[layer]
                        .clone()
                };
                let (gp, gm) = (shifted(1.0), shifted(-1.0));
                for (i, (&a, &b)) in gp.iter().zip(&gm).enumerate() {
                    let fd = (a - b) / (2.0 * h);
                    assert!(
                        (fd - hv[i]).abs() < 1e-6 + 1e-4 * hv[i].abs(),
                        "{act:?} layer {layer} [{i}]: {fd} vs {}",
                        hv[i]
                    );
                }
                // The gradient itself against a finite difference of the loss.
                let (_, g) = m.loss_and_grads();
                let loss = |s: f64| {
                    let mut p = params.clone();
                    p[layer]
                        .iter_mut()
                        .zip(&v)
                        .for_each(|(a, b)| *a += s * h * b);
                    MlpReference {
                        spec: &spec,
                        params: &p,
                        x: &x,
                        y: &y,
                    }
                    .loss_and_grads()
                    .0
                };
                let fd = (loss(1.0) - loss(-1.0)) / (2.0 * h);
                let dir: f64 = g[layer].iter().zip(&v).map(|(a, b)| a * b).sum();
                assert!(
                    (fd - dir).abs() < 1e-6,
                    "{act:?} layer {layer}: {fd} vs {dir}"
                );
            }
        }
    }
}
