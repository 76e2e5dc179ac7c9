//! A whole MLP in `f64` with naive loops: the independent oracle the engines' tests compare
//! with (mean loss and gradient, materialised per-sample gradients, and the exact
//! layer-block Hessian-vector product), for the cross-entropy loss ([`ReferenceMlp`]) and
//! the squared-error loss ([`ReferenceRegressionMlp`]). Deliberately plain, so it is easy to trust; it is
//! itself checked against finite differences (its gradient in the CPU engine's tests, its
//! Hessian-vector product below).
//!
//! # Panics
//! Being a test oracle, it indexes its slices directly: it panics when `params`, `x` or `y`
//! do not match `shapes`.
//!
//! ```
//! use safestep_engine::reference::ReferenceMlp;
//! use safestep_engine::{Activation, ModelSpec, Norm};
//! let spec = ModelSpec { input: 2, hidden: vec![3], classes: 2, ..ModelSpec::default() };
//! let shapes = spec.layer_shapes()?;
//! let params: Vec<Vec<f64>> = shapes.iter().map(|s| vec![0.1; s.params()]).collect();
//! let mlp = ReferenceMlp { shapes: &shapes, activation: Activation::Relu, norm: Norm::None, params: &params, x: &[0.5, 1.0], y: &[1] };
//! let (loss, grads) = mlp.loss_and_grads();
//! assert!((loss - 2f64.ln()).abs() < 1e-12); // equal logits: log 2
//! assert_eq!(grads.len(), 2);
//! # Ok::<(), safestep_engine::BackendError>(())
//! ```
#![allow(clippy::needless_range_loop)] // plain index loops on purpose

use crate::spec::{Activation, LayerShape, Norm, LAYER_NORM_EPS};

/// A whole MLP in `f64` (naive loops): the mean cross-entropy, its gradient and the exact
/// layer-block Hessian-vector product, as the references every engine's tests compare with.
///
/// `params[l]` is layer `l`'s vector (weights row-major `fan_out × fan_in`, then bias);
/// `x` is `rows × input`, `y` holds `rows` labels.
pub struct ReferenceMlp<'a> {
    /// The layers' shapes, input layer first.
    pub shapes: &'a [LayerShape],
    /// The hidden nonlinearity.
    pub activation: Activation,
    /// The hidden layers' normalisation (LayerNorm before the nonlinearity, or none).
    pub norm: Norm,
    /// Parameters per layer.
    pub params: &'a [Vec<f64>],
    /// Inputs, row-major.
    pub x: &'a [f32],
    /// Labels.
    pub y: &'a [u8],
}

/// [`ReferenceMlp`] for the squared-error loss: the minibatch mean of `½‖ŷ_i − y_i‖²`, its
/// gradient and the exact layer-block Hessian-vector product (output Hessian: the identity).
///
/// `y` holds the targets, row-major `rows × outputs` (the last layer's `fan_out`).
pub struct ReferenceRegressionMlp<'a> {
    /// The layers' shapes, input layer first.
    pub shapes: &'a [LayerShape],
    /// The hidden nonlinearity.
    pub activation: Activation,
    /// The hidden layers' normalisation (LayerNorm before the nonlinearity, or none).
    pub norm: Norm,
    /// Parameters per layer.
    pub params: &'a [Vec<f64>],
    /// Inputs, row-major.
    pub x: &'a [f32],
    /// Targets, row-major.
    pub y: &'a [f32],
}

/// What the outputs are compared with.
#[derive(Clone, Copy)]
enum Targets<'a> {
    /// Class labels (softmax cross-entropy).
    Labels(&'a [u8]),
    /// Real targets, `rows × outputs` (squared error).
    Values(&'a [f32]),
}

/// The network both references share, with its targets.
#[derive(Clone, Copy)]
struct Net<'a> {
    shapes: &'a [LayerShape],
    activation: Activation,
    norm: Norm,
    params: &'a [Vec<f64>],
    x: &'a [f32],
    targets: Targets<'a>,
}

impl ReferenceMlp<'_> {
    fn net(&self) -> Net<'_> {
        Net {
            shapes: self.shapes,
            activation: self.activation,
            norm: self.norm,
            params: self.params,
            x: self.x,
            targets: Targets::Labels(self.y),
        }
    }

    /// Mean cross-entropy and the gradient of every layer.
    pub fn loss_and_grads(&self) -> (f64, Vec<Vec<f64>>) {
        self.net().loss_and_grads()
    }

    /// `H_ll·v` for layer `layer`'s diagonal Hessian block (exact R-operator).
    pub fn hvp(&self, layer: usize, v: &[f64]) -> Vec<f64> {
        self.net().hvp(layer, v)
    }

    /// Each sample's loss and per-layer gradient (the materialised per-sample gradients the
    /// engines' exact per-sample norms are checked against).
    pub fn sample_grads(&self) -> Vec<(f64, Vec<Vec<f64>>)> {
        self.net().sample_grads()
    }
}

impl ReferenceRegressionMlp<'_> {
    fn net(&self) -> Net<'_> {
        Net {
            shapes: self.shapes,
            activation: self.activation,
            norm: self.norm,
            params: self.params,
            x: self.x,
            targets: Targets::Values(self.y),
        }
    }

    /// Mean squared error `(1/B)·Σ_i ½‖ŷ_i − y_i‖²` and the gradient of every layer.
    pub fn loss_and_grads(&self) -> (f64, Vec<Vec<f64>>) {
        self.net().loss_and_grads()
    }

    /// `H_ll·v` for layer `layer`'s diagonal Hessian block (exact R-operator).
    pub fn hvp(&self, layer: usize, v: &[f64]) -> Vec<f64> {
        self.net().hvp(layer, v)
    }

    /// Each sample's loss and per-layer gradient.
    pub fn sample_grads(&self) -> Vec<(f64, Vec<Vec<f64>>)> {
        self.net().sample_grads()
    }
}

struct Pass {
    /// Inputs to each layer (a_{l-1}), rows × fan_in(l).
    inputs: Vec<Vec<f64>>,
    /// Per hidden layer, the nonlinearity's input (rows × fan_out(l)): `z`, or with
    /// LayerNorm `u = (z − mean z)·s`.
    pre: Vec<Vec<f64>>,
    /// Per hidden layer with LayerNorm, each row's `s = 1/sqrt(var z + ε)` (else empty).
    inv_std: Vec<Vec<f64>>,
    /// Cross-entropy: the softmax probabilities; squared error: the outputs ŷ.
    probs: Vec<f64>,
    loss: f64,
}

impl Net<'_> {
    fn rows(&self) -> usize {
        match self.targets {
            Targets::Labels(y) => y.len(),
            Targets::Values(y) => y.len() / self.classes().max(1),
        }
    }

    fn classes(&self) -> usize {
        self.shapes.last().map_or(0, |s| s.fan_out)
    }

    fn act_fwd(&self, z: &[f64], cols: usize) -> Vec<f64> {
        let e = self.activation.expansion();
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
        let e = self.activation.expansion();
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
        let e = self.activation.expansion();
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
        let (fi, fo, rows) = (self.shapes[l].fan_in, self.shapes[l].fan_out, self.rows());
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
        let (fi, fo, rows) = (self.shapes[l].fan_in, self.shapes[l].fan_out, self.rows());
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
        let (fi, fo, rows) = (self.shapes[l].fan_in, self.shapes[l].fan_out, self.rows());
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
        let n = self.shapes.len();
        let x: Vec<f64> = self.x.iter().map(|&v| f64::from(v)).collect();
        let mut inputs = vec![x];
        let (mut pre, mut inv_std) = (Vec::new(), Vec::new());
        let mut logits = Vec::new();
        for l in 0..n {
            let nw = self.shapes[l].fan_in * self.shapes[l].fan_out;
            let (w, b) = self.params[l].split_at(nw);
            let z = self.dense(l, &inputs[l], w, Some(b));
            if l + 1 < n {
                let cols = self.shapes[l].fan_out;
                let (u, s) = match self.norm {
                    Norm::None => (z, Vec::new()),
                    Norm::Layer => layer_norm(&z, cols),
                };
                inputs.push(self.act_fwd(&u, cols));
                pre.push(u);
                inv_std.push(s);
            } else {
                logits = z;
            }
        }
        let (rows, k) = (self.rows(), self.classes());
        let mut probs = vec![0.0; rows * k];
        let mut loss = 0.0;
        match self.targets {
            Targets::Labels(y) => {
                for r in 0..rows {
                    let row = &logits[r * k..(r + 1) * k];
                    let mx = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let s: f64 = row.iter().map(|v| (v - mx).exp()).sum();
                    for c in 0..k {
                        probs[r * k + c] = (row[c] - mx).exp() / s;
                    }
                    loss += s.ln() - (row[y[r] as usize] - mx);
                }
            }
            Targets::Values(y) => {
                for i in 0..rows * k {
                    probs[i] = logits[i];
                    let e = logits[i] - f64::from(y[i]);
                    loss += 0.5 * e * e;
                }
            }
        }
        Pass {
            inputs,
            pre,
            inv_std,
            probs,
            loss: loss / rows as f64,
        }
    }

    /// Mean loss and the gradient of every layer.
    fn loss_and_grads(&self) -> (f64, Vec<Vec<f64>>) {
        let p = self.forward();
        let (deltas, _) = self.deltas(&p);
        let grads = (0..self.shapes.len())
            .map(|l| self.param_grad(l, &deltas[l], &p.inputs[l]))
            .collect();
        (p.loss, grads)
    }

    /// The deltas of the mean loss: `∂L/∂z_l` per layer, and per hidden layer `∂L/∂u_l`
    /// (the nonlinearity's input; the same as `∂L/∂z_l` without LayerNorm).
    fn deltas(&self, p: &Pass) -> (Vec<Vec<f64>>, Vec<Vec<f64>>) {
        let n = self.shapes.len();
        let (rows, k) = (self.rows(), self.classes());
        // The output deltas: softmax − onehot, or ŷ − y.
        let mut d: Vec<f64> = p.probs.clone();
        match self.targets {
            Targets::Labels(y) => {
                for r in 0..rows {
                    d[r * k + y[r] as usize] -= 1.0;
                }
            }
            Targets::Values(y) => {
                for (di, &yi) in d.iter_mut().zip(y) {
                    *di -= f64::from(yi);
                }
            }
        }
        d.iter_mut().for_each(|v| *v /= rows as f64);
        let mut deltas = vec![Vec::new(); n];
        let mut du = vec![Vec::new(); n - 1];
        for l in (0..n).rev() {
            if l > 0 {
                let nw = self.shapes[l].fan_in * self.shapes[l].fan_out;
                let cols = self.shapes[l - 1].fan_out;
                let da = self.dense_t(l, &d, &self.params[l][..nw]);
                let g = self.act_bwd(&p.pre[l - 1], &da, cols);
                let below = match self.norm {
                    Norm::None => g.clone(),
                    Norm::Layer => layer_norm_jvp(&p.pre[l - 1], &p.inv_std[l - 1], &g, cols),
                };
                du[l - 1] = g;
                deltas[l] = std::mem::replace(&mut d, below);
            } else {
                deltas[0] = std::mem::take(&mut d);
            }
        }
        (deltas, du)
    }

    /// `H_ll·v` for layer `layer`'s diagonal Hessian block (exact R-operator).
    fn hvp(&self, layer: usize, v: &[f64]) -> Vec<f64> {
        let p = self.forward();
        let (deltas, du) = self.deltas(&p);
        let n = self.shapes.len();
        let (rows, k) = (self.rows(), self.classes());
        let nw = self.shapes[layer].fan_in * self.shapes[layer].fan_out;
        // Tangents R{z_l} and (LayerNorm) R{u_l} of the hidden layers from `layer` up.
        let mut rzs = vec![Vec::new(); n];
        let mut rus = vec![Vec::new(); n];
        let mut rz = self.dense(layer, &p.inputs[layer], &v[..nw], Some(&v[nw..]));
        for l in layer + 1..n {
            let cols = self.shapes[l - 1].fan_out;
            let ru = match self.norm {
                Norm::None => rz.clone(),
                Norm::Layer => layer_norm_jvp(&p.pre[l - 1], &p.inv_std[l - 1], &rz, cols),
            };
            let ra = self.act_jvp(&p.pre[l - 1], &ru, cols);
            let nwl = self.shapes[l].fan_in * self.shapes[l].fan_out;
            rzs[l - 1] =
                std::mem::replace(&mut rz, self.dense(l, &ra, &self.params[l][..nwl], None));
            rus[l - 1] = ru;
        }
        let mut rd = vec![0.0; rows * k];
        match self.targets {
            // The softmax Jacobian.
            Targets::Labels(_) => {
                for r in 0..rows {
                    let pr = &p.probs[r * k..(r + 1) * k];
                    let zr = &rz[r * k..(r + 1) * k];
                    let dot: f64 = pr.iter().zip(zr).map(|(a, b)| a * b).sum();
                    for c in 0..k {
                        rd[r * k + c] = pr[c] * (zr[c] - dot) / rows as f64;
                    }
                }
            }
            // The identity.
            Targets::Values(_) => {
                for (a, &b) in rd.iter_mut().zip(&rz) {
                    *a = b / rows as f64;
                }
            }
        }
        for l in (layer + 1..n).rev() {
            let nwl = self.shapes[l].fan_in * self.shapes[l].fan_out;
            let cols = self.shapes[l - 1].fan_out;
            let da = self.dense_t(l, &rd, &self.params[l][..nwl]);
            let rg = self.act_bwd(&p.pre[l - 1], &da, cols);
            rd = match self.norm {
                Norm::None => rg,
                Norm::Layer => {
                    let (u, s) = (&p.pre[l - 1], &p.inv_std[l - 1]);
                    let mut out = layer_norm_jvp(u, s, &rg, cols);
                    let (rzl, rul, g, d) = (&rzs[l - 1], &rus[l - 1], &du[l - 1], &deltas[l - 1]);
                    // R{J}·g: J·g = s·(g − mean g − u·mean(u g)) with R{s} = −s²·mean(u R{z}).
                    for r in 0..rows {
                        let at = r * cols..(r + 1) * cols;
                        let mean = |a: &[f64], b: &[f64]| {
                            a.iter().zip(b).map(|(x, y)| x * y).sum::<f64>() / cols as f64
                        };
                        let rho = mean(&u[at.clone()], &rzl[at.clone()]);
                        let m = mean(&u[at.clone()], &g[at.clone()]);
                        let q = mean(&rul[at.clone()], &g[at.clone()]);
                        for c in at {
                            out[c] -= s[r] * (rho * d[c] + m * rul[c] + q * u[c]);
                        }
                    }
                    out
                }
            };
        }
        self.param_grad(layer, &rd, &p.inputs[layer])
    }

    /// Each sample's loss and per-layer gradient.
    fn sample_grads(&self) -> Vec<(f64, Vec<Vec<f64>>)> {
        let input = self.shapes.first().map_or(0, |s| s.fan_in);
        let k = self.classes();
        (0..self.rows())
            .map(|r| {
                Net {
                    x: &self.x[r * input..(r + 1) * input],
                    targets: match self.targets {
                        Targets::Labels(y) => Targets::Labels(&y[r..r + 1]),
                        Targets::Values(y) => Targets::Values(&y[r * k..(r + 1) * k]),
                    },
                    ..*self
                }
                .loss_and_grads()
            })
            .collect()
    }
}

/// LayerNorm (no affine) of each row of `z` (`cols` wide): `(u, s)` with
/// `u = (z − mean z)·s` and `s = 1/sqrt(var z + ε)` (variance with divisor `cols`).
fn layer_norm(z: &[f64], cols: usize) -> (Vec<f64>, Vec<f64>) {
    let mut u = vec![0.0; z.len()];
    let mut inv = Vec::with_capacity(z.len() / cols);
    for (zr, ur) in z.chunks_exact(cols).zip(u.chunks_exact_mut(cols)) {
        let mean = zr.iter().sum::<f64>() / cols as f64;
        let var = zr.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / cols as f64;
        let s = 1.0 / (var + f64::from(LAYER_NORM_EPS)).sqrt();
        for (o, v) in ur.iter_mut().zip(zr) {
            *o = (v - mean) * s;
        }
        inv.push(s);
    }
    (u, inv)
}

/// LayerNorm's Jacobian (symmetric) applied to each row of `g`: `s·(g − mean g − u·mean(u g))`.
fn layer_norm_jvp(u: &[f64], inv_std: &[f64], g: &[f64], cols: usize) -> Vec<f64> {
    let mut out = vec![0.0; g.len()];
    for (r, ((ur, gr), or)) in u
        .chunks_exact(cols)
        .zip(g.chunks_exact(cols))
        .zip(out.chunks_exact_mut(cols))
        .enumerate()
    {
        let mean_g = gr.iter().sum::<f64>() / cols as f64;
        let mean_ug = ur.iter().zip(gr).map(|(a, b)| a * b).sum::<f64>() / cols as f64;
        for c in 0..cols {
            or[c] = inv_std[r] * (gr[c] - mean_g - ur[c] * mean_ug);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::ModelSpec;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Every activation with and without LayerNorm.
    const CASES: [(Activation, Norm); 4] = [
        (Activation::Relu, Norm::None),
        (Activation::Crelu, Norm::None),
        (Activation::Relu, Norm::Layer),
        (Activation::Crelu, Norm::Layer),
    ];

    /// The reference's own Hessian-vector product (the oracle of the engines' products)
    /// against central differences of its gradient, and its gradient against central
    /// differences of its loss, for ReLU and CReLU.
    #[test]
    fn hvp_and_gradient_match_finite_differences() {
        for (activation, norm) in CASES {
            let spec = ModelSpec {
                input: 6,
                hidden: vec![5, 4],
                classes: 3,
                activation,
                crelu_match_params: false,
                loss: crate::spec::Loss::CrossEntropy,
                norm,
            };
            let shapes = spec.layer_shapes().unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(1);
            let params: Vec<Vec<f64>> = shapes
                .iter()
                .map(|s| {
                    (0..s.params())
                        .map(|_| rng.random_range(-0.6..0.6))
                        .collect()
                })
                .collect();
            let x: Vec<f32> = (0..8 * 6).map(|_| rng.random::<f32>()).collect();
            let y: Vec<u8> = (0..8).map(|i| (i % 3) as u8).collect();
            let at = |p: &[Vec<f64>]| {
                ReferenceMlp {
                    shapes: &shapes,
                    activation,
                    norm,
                    params: p,
                    x: &x,
                    y: &y,
                }
                .loss_and_grads()
            };
            let h = 1e-6;
            for (layer, s) in shapes.iter().enumerate() {
                let v: Vec<f64> = (0..s.params())
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                let shifted = |sign: f64| {
                    let mut p = params.clone();
                    p[layer]
                        .iter_mut()
                        .zip(&v)
                        .for_each(|(a, b)| *a += sign * h * b);
                    at(&p)
                };
                let ((lp, gp), (lm, gm)) = (shifted(1.0), shifted(-1.0));
                let m = ReferenceMlp {
                    shapes: &shapes,
                    activation,
                    norm,
                    params: &params,
                    x: &x,
                    y: &y,
                };
                let hv = m.hvp(layer, &v);
                for (i, (&a, &b)) in gp[layer].iter().zip(&gm[layer]).enumerate() {
                    let fd = (a - b) / (2.0 * h);
                    assert!(
                        (fd - hv[i]).abs() < 1e-6 + 1e-4 * hv[i].abs(),
                        "{activation}/{norm} layer {layer} [{i}]: {fd} vs {}",
                        hv[i]
                    );
                }
                let (_, g) = m.loss_and_grads();
                let fd = (lp - lm) / (2.0 * h);
                let dir: f64 = g[layer].iter().zip(&v).map(|(a, b)| a * b).sum();
                assert!(
                    (fd - dir).abs() < 1e-6,
                    "{activation}/{norm} layer {layer}: {fd} vs {dir}"
                );
            }
        }
    }

    /// The squared-error reference: its loss is `(1/B)·Σ ½‖ŷ − y‖²` by hand, its gradient
    /// matches central differences of that loss, and its Hessian-vector product central
    /// differences of its gradient, for ReLU and CReLU and two outputs.
    #[test]
    fn squared_error_hvp_and_gradient_match_finite_differences() {
        for (activation, norm) in CASES {
            let spec = ModelSpec {
                input: 5,
                hidden: vec![6, 4],
                classes: 2,
                activation,
                crelu_match_params: false,
                loss: crate::spec::Loss::SquaredError,
                norm,
            };
            let shapes = spec.layer_shapes().unwrap();
            let mut rng = ChaCha8Rng::seed_from_u64(2);
            let params: Vec<Vec<f64>> = shapes
                .iter()
                .map(|s| {
                    (0..s.params())
                        .map(|_| rng.random_range(-0.6..0.6))
                        .collect()
                })
                .collect();
            let rows = 7;
            let x: Vec<f32> = (0..rows * 5).map(|_| rng.random::<f32>()).collect();
            let y: Vec<f32> = (0..rows * 2).map(|_| rng.random_range(-2.0..2.0)).collect();
            let mlp = |p: &'_ [Vec<f64>]| -> (f64, Vec<Vec<f64>>) {
                ReferenceRegressionMlp {
                    shapes: &shapes,
                    activation,
                    norm,
                    params: p,
                    x: &x,
                    y: &y,
                }
                .loss_and_grads()
            };
            let m = ReferenceRegressionMlp {
                shapes: &shapes,
                activation,
                norm,
                params: &params,
                x: &x,
                y: &y,
            };
            // The loss by hand from the per-sample losses.
            let (loss, grads) = m.loss_and_grads();
            let per_sample = m.sample_grads();
            let mean: f64 = per_sample.iter().map(|(l, _)| l).sum::<f64>() / rows as f64;
            assert!((loss - mean).abs() < 1e-12);
            for (l, g) in grads.iter().enumerate() {
                for (i, &gi) in g.iter().enumerate() {
                    let want: f64 =
                        per_sample.iter().map(|(_, s)| s[l][i]).sum::<f64>() / rows as f64;
                    assert!((gi - want).abs() < 1e-12);
                }
            }
            let h = 1e-6;
            for (layer, s) in shapes.iter().enumerate() {
                let v: Vec<f64> = (0..s.params())
                    .map(|_| rng.random_range(-1.0..1.0))
                    .collect();
                let shifted = |sign: f64| {
                    let mut p = params.clone();
                    p[layer]
                        .iter_mut()
                        .zip(&v)
                        .for_each(|(a, b)| *a += sign * h * b);
                    mlp(&p)
                };
                let ((lp, gp), (lm, gm)) = (shifted(1.0), shifted(-1.0));
                let hv = m.hvp(layer, &v);
                for (i, (&a, &b)) in gp[layer].iter().zip(&gm[layer]).enumerate() {
                    let fd = (a - b) / (2.0 * h);
                    assert!(
                        (fd - hv[i]).abs() < 1e-6 + 1e-4 * hv[i].abs(),
                        "{activation}/{norm} layer {layer} [{i}]: {fd} vs {}",
                        hv[i]
                    );
                }
                let fd = (lp - lm) / (2.0 * h);
                let dir: f64 = grads[layer].iter().zip(&v).map(|(a, b)| a * b).sum();
                assert!(
                    (fd - dir).abs() < 1e-6,
                    "{activation}/{norm} layer {layer}: {fd} vs {dir}"
                );
            }
            // The last layer's block is exactly (1/B)·Σ_i [a_i; 1][a_i; 1]ᵀ ⊗ I: a Gauss–Newton
            // block with no second-order term, so H·v is linear and independent of the targets.
            let last = shapes.len() - 1;
            let v: Vec<f64> = (0..shapes[last].params()).map(|i| i as f64 * 0.1).collect();
            let other_y: Vec<f32> = y.iter().map(|t| t + 3.0).collect();
            let other = ReferenceRegressionMlp { y: &other_y, ..m };
            assert_eq!(m.hvp(last, &v), other.hvp(last, &v));
        }
    }
}
