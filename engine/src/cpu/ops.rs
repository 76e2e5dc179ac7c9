//! Element-wise and row-wise kernels of the CPU engine (everything that is not a GEMM).
//!
//! All loops run over fixed-size row chunks in a fixed order on the calling thread, so
//! their floating-point results do not depend on anything but their inputs.

use crate::spec::Activation;

/// Writes each row of `z` (`rows × out`) as `bias` (the GEMM then accumulates onto it).
pub fn fill_rows(z: &mut [f32], bias: &[f32], rows: usize) {
    let out = bias.len();
    for row in z[..rows * out].chunks_exact_mut(out) {
        row.copy_from_slice(bias);
    }
}

/// Hidden activation: `h = act(z)` with `z` `rows × out` and `h` `rows × (e·out)`.
pub fn activate(act: Activation, z: &[f32], h: &mut [f32], rows: usize, out: usize) {
    match act {
        Activation::Relu => {
            for (hi, &zi) in h[..rows * out].iter_mut().zip(&z[..rows * out]) {
                *hi = zi.max(0.0);
            }
        }
        Activation::Crelu => {
            for (hr, zr) in h[..rows * 2 * out]
                .chunks_exact_mut(2 * out)
                .zip(z[..rows * out].chunks_exact(out))
            {
                let (pos, neg) = hr.split_at_mut(out);
                for ((p, n), &zi) in pos.iter_mut().zip(neg.iter_mut()).zip(zr) {
                    *p = zi.max(0.0);
                    *n = (-zi).max(0.0);
                }
            }
        }
    }
}

/// Tangent (R-operator) of the activation: `rh = act'(z) ⊙ rz` (for CReLU the two halves
/// `[1(z>0)·rz, −1(z<0)·rz]`). Also the form of the backward mask's transpose.
pub fn activate_tangent(
    act: Activation,
    z: &[f32],
    rz: &[f32],
    rh: &mut [f32],
    rows: usize,
    out: usize,
) {
    match act {
        Activation::Relu => {
            for ((r, &zi), &ri) in rh[..rows * out]
                .iter_mut()
                .zip(&z[..rows * out])
                .zip(&rz[..rows * out])
            {
                *r = if zi > 0.0 { ri } else { 0.0 };
            }
        }
        Activation::Crelu => {
            for ((hr, zr), rr) in rh[..rows * 2 * out]
                .chunks_exact_mut(2 * out)
                .zip(z[..rows * out].chunks_exact(out))
                .zip(rz[..rows * out].chunks_exact(out))
            {
                let (pos, neg) = hr.split_at_mut(out);
                for (((p, n), &zi), &ri) in pos.iter_mut().zip(neg.iter_mut()).zip(zr).zip(rr) {
                    *p = if zi > 0.0 { ri } else { 0.0 };
                    *n = if zi < 0.0 { -ri } else { 0.0 };
                }
            }
        }
    }
}

/// Backward through the activation: `d = act'(z)ᵀ · dh`, with `dh` `rows × (e·out)` the
/// gradient with respect to the activation output and `d` `rows × out`.
pub fn activate_backward(
    act: Activation,
    z: &[f32],
    dh: &[f32],
    d: &mut [f32],
    rows: usize,
    out: usize,
) {
    match act {
        Activation::Relu => {
            for ((di, &zi), &gi) in d[..rows * out]
                .iter_mut()
                .zip(&z[..rows * out])
                .zip(&dh[..rows * out])
            {
                *di = if zi > 0.0 { gi } else { 0.0 };
            }
        }
        Activation::Crelu => {
            for ((dr, zr), gr) in d[..rows * out]
                .chunks_exact_mut(out)
                .zip(z[..rows * out].chunks_exact(out))
                .zip(dh[..rows * 2 * out].chunks_exact(2 * out))
            {
                let (gp, gn) = gr.split_at(out);
                for (((di, &zi), &p), &n) in dr.iter_mut().zip(zr).zip(gp).zip(gn) {
                    *di = if zi > 0.0 {
                        p
                    } else if zi < 0.0 {
                        -n
                    } else {
                        0.0
                    };
                }
            }
        }
    }
}

/// Softmax cross-entropy on `logits` (`rows × classes`): writes the per-sample deltas
/// `d_i = softmax(z_i) − onehot(y_i)` (the gradient of sample i's loss w.r.t. its logits) and
/// returns (sum of per-sample losses, samples whose first arg-max equals the label).
pub fn softmax_xent(logits: &[f32], labels: &[u8], d: &mut [f32], classes: usize) -> (f64, usize) {
    let mut loss = 0.0f64;
    let mut correct = 0usize;
    for ((zr, dr), &y) in logits
        .chunks_exact(classes)
        .zip(d.chunks_exact_mut(classes))
        .zip(labels)
    {
        let (l, c) = xent_row(zr, Some(dr), y as usize);
        loss += l;
        correct += usize::from(c);
    }
    (loss, correct)
}

/// Loss and correctness of one row; optionally writes `softmax − onehot` into `d`.
pub fn xent_row(z: &[f32], d: Option<&mut [f32]>, y: usize) -> (f64, bool) {
    let mut arg = 0usize;
    let mut max = f32::NEG_INFINITY;
    for (j, &v) in z.iter().enumerate() {
        if v > max {
            max = v;
            arg = j;
        }
    }
    let mut sum = 0.0f32;
    match d {
        Some(d) => {
            for (dj, &v) in d.iter_mut().zip(z) {
                let e = (v - max).exp();
                *dj = e;
                sum += e;
            }
            let inv = 1.0 / sum;
            for dj in d.iter_mut() {
                *dj *= inv;
            }
            d[y] -= 1.0;
        }
        None => {
            for &v in z {
                sum += (v - max).exp();
            }
        }
    }
    let loss = f64::from(sum).ln() + f64::from(max) - f64::from(z[y]);
    (loss, arg == y)
}

/// Squared error on `outputs` (`rows × width`) against `targets` (same shape): writes the
/// per-sample deltas `d_i = ŷ_i − y_i` (the gradient of `½‖ŷ_i − y_i‖²` w.r.t. the outputs)
/// and returns the sum of the per-sample losses `½‖ŷ_i − y_i‖²`.
pub fn squared_error(outputs: &[f32], targets: &[f32], d: &mut [f32]) -> f64 {
    let mut loss = 0.0f64;
    for ((di, &o), &t) in d.iter_mut().zip(outputs).zip(targets) {
        let e = o - t;
        *di = e;
        loss += f64::from(e) * f64::from(e);
    }
    0.5 * loss
}

/// `½‖ŷ − y‖²` of one row (or of several, summed), in `f64`, without deltas.
pub fn squared_error_row(outputs: &[f32], targets: &[f32]) -> f64 {
    let sum: f64 = outputs
        .iter()
        .zip(targets)
        .map(|(&o, &t)| {
            let e = f64::from(o - t);
            e * e
        })
        .sum();
    0.5 * sum
}

/// Column sums of a row-major `rows × cols` matrix, scaled: `out_j = scale·Σ_i a_ij`.
pub fn column_sums(a: &[f32], rows: usize, cols: usize, scale: f32, out: &mut [f32]) {
    out[..cols].fill(0.0);
    for row in a[..rows * cols].chunks_exact(cols) {
        for (o, &x) in out.iter_mut().zip(row) {
            *o += x;
        }
    }
    for o in out[..cols].iter_mut() {
        *o *= scale;
    }
}

/// Squared Euclidean norm of each row, in `f64` (summed in 8 `f32` lanes per row, which
/// keeps the loop vectorised; rows here are at most a few thousand entries).
pub fn row_sq_norms(a: &[f32], rows: usize, cols: usize, out: &mut [f64]) {
    for (o, row) in out[..rows]
        .iter_mut()
        .zip(a[..rows * cols].chunks_exact(cols))
    {
        *o = sq_norm(row);
    }
}

/// `Σ x²` of a slice: 8 `f32` lanes over chunks, each chunk's lanes added into `f64`.
pub fn sq_norm(x: &[f32]) -> f64 {
    const LANES: usize = 8;
    const CHUNK: usize = 1024;
    let mut total = 0.0f64;
    for block in x.chunks(CHUNK) {
        let mut acc = [0.0f32; LANES];
        let body = block.chunks_exact(LANES);
        let rest = body.remainder();
        for c in body {
            for j in 0..LANES {
                acc[j] += c[j] * c[j];
            }
        }
        for (j, &v) in rest.iter().enumerate() {
            acc[j] += v * v;
        }
        total += acc.iter().map(|&a| f64::from(a)).sum::<f64>();
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xent_row_matches_f64_reference() {
        let z = [1.0f32, -2.0, 0.5, 3.0];
        let mut d = [0.0f32; 4];
        let (l, ok) = xent_row(&z, Some(&mut d), 2);
        let zs: Vec<f64> = z.iter().map(|&v| v as f64).collect();
        let lse = zs.iter().map(|v| v.exp()).sum::<f64>().ln();
        assert!((l - (lse - zs[2])).abs() < 1e-6);
        assert!(!ok);
        for j in 0..4 {
            let p = (zs[j] - lse).exp() - if j == 2 { 1.0 } else { 0.0 };
            assert!((d[j] as f64 - p).abs() < 1e-6);
        }
        assert!(xent_row(&z, None, 3).1);
    }

    #[test]
    fn crelu_backward_is_transpose_of_tangent() {
        // <act'(z) r, g> == <r, act'(z)^T g> for random r, g.
        let z = [0.5f32, -1.0, 0.0, 2.0, -0.1, 0.3];
        let r = [1.0f32, 2.0, -3.0, 0.5, 0.25, -1.5];
        let g: Vec<f32> = (0..12).map(|i| (i as f32 * 0.7).sin()).collect();
        for act in [Activation::Relu, Activation::Crelu] {
            let e = act.expansion();
            let mut rh = vec![0.0f32; 6 * e];
            activate_tangent(act, &z, &r, &mut rh, 2, 3);
            let mut d = vec![0.0f32; 6];
            activate_backward(act, &z, &g[..6 * e], &mut d, 2, 3);
            let lhs: f32 = rh.iter().zip(&g).map(|(a, b)| a * b).sum();
            let rhs: f32 = r.iter().zip(&d).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-5, "{act}");
        }
    }

    #[test]
    fn squared_error_deltas_and_loss() {
        let (o, t) = ([1.0f32, -2.0, 0.5, 3.0], [0.5f32, -1.0, 0.5, 1.0]);
        let mut d = [0.0f32; 4];
        let loss = squared_error(&o, &t, &mut d);
        assert_eq!(d, [0.5, -1.0, 0.0, 2.0]);
        assert_eq!(loss, 0.5 * (0.25 + 1.0 + 0.0 + 4.0));
        assert_eq!(squared_error_row(&o, &t), loss);
    }

    #[test]
    fn sq_norm_matches_f64() {
        let x: Vec<f32> = (0..3001)
            .map(|i| ((i * 7919) % 1000) as f32 / 999.0 - 0.5)
            .collect();
        let want: f64 = x.iter().map(|&v| (v as f64) * (v as f64)).sum();
        assert!((sq_norm(&x) - want).abs() < 1e-6 * want);
    }
}
