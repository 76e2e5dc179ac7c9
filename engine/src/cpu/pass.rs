//! Forward and backward passes of the MLP over a block of rows, every dense product through
//! [`super::gemm::matmul`].

use super::buffers::Activations;
use super::gemm::{matmul, MatRef};
use super::ops;
use crate::spec::{Activation, LayerShape, Norm};

/// Forward pass of `rows` input rows `x` through all layers into `ws` (with
/// [`Norm::Layer`], each hidden layer's `z` is normalised into `ws.u` before the
/// nonlinearity).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    shapes: &[LayerShape],
    act: Activation,
    norm: Norm,
    params: &[Vec<f32>],
    x: &[f32],
    ws: &mut Activations,
    rows: usize,
    threads: usize,
) {
    for (l, s) in shapes.iter().enumerate() {
        let (w, b) = params[l].split_at(s.weights());
        let input = if l == 0 { x } else { &ws.h[l - 1][..] };
        let z = &mut ws.z[l];
        ops::fill_rows(z, b, rows);
        matmul(
            z,
            MatRef::row_major(input, rows, s.fan_in),
            MatRef::row_major(w, s.fan_out, s.fan_in).t(),
            1.0,
            true,
            threads,
        );
        if s.hidden {
            let pre = match norm {
                Norm::None => &ws.z[l],
                Norm::Layer => {
                    ops::layer_norm(&ws.z[l], &mut ws.u[l], &mut ws.inv_std[l], rows, s.fan_out);
                    &ws.u[l]
                }
            };
            ops::activate(act, pre, &mut ws.h[l], rows, s.fan_out);
        }
    }
}

/// Backward pass from the deltas already in `ws.d[last]`: writes the mean gradients into
/// `grads` and, with `sample_sq`, each layer's `Σ_i ‖g_i‖²`. With [`Norm::Layer`] the
/// deltas `∂ℓ_i/∂u` of each hidden layer are kept in `ws.gu` and `ws.d` holds
/// `∂ℓ_i/∂z = J·∂ℓ_i/∂u` (so the gradients and the per-sample norms keep their form).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward(
    shapes: &[LayerShape],
    act: Activation,
    norm: Norm,
    params: &[Vec<f32>],
    x: &[f32],
    ws: &mut Activations,
    rows: usize,
    grads: &mut [Vec<f32>],
    mut sample_sq: Option<&mut [f64]>,
    threads: usize,
) {
    let inv = 1.0 / rows as f32;
    for l in (0..shapes.len()).rev() {
        let s = shapes[l];
        let input = if l == 0 { x } else { &ws.h[l - 1][..] };
        let d = &ws.d[l];
        let (gw, gb) = grads[l].split_at_mut(s.weights());
        matmul(
            gw,
            MatRef::row_major(d, rows, s.fan_out).t(),
            MatRef::row_major(input, rows, s.fan_in),
            inv,
            false,
            threads,
        );
        ops::column_sums(d, rows, s.fan_out, inv, gb);
        if let Some(sq) = sample_sq.as_deref_mut() {
            ops::row_sq_norms(input, rows, s.fan_in, &mut ws.a_sq);
            ops::row_sq_norms(d, rows, s.fan_out, &mut ws.d_sq);
            sq[l] = ws.a_sq[..rows]
                .iter()
                .zip(&ws.d_sq[..rows])
                .map(|(&a, &dd)| dd * (a + 1.0))
                .sum();
        }
        if l > 0 {
            let w = &params[l][..s.weights()];
            matmul(
                &mut ws.dh,
                MatRef::row_major(&ws.d[l], rows, s.fan_out),
                MatRef::row_major(w, s.fan_out, s.fan_in),
                1.0,
                false,
                threads,
            );
            let below = shapes[l - 1].fan_out;
            let (lower, _) = ws.d.split_at_mut(l);
            match norm {
                Norm::None => {
                    ops::activate_backward(
                        act,
                        &ws.z[l - 1],
                        &ws.dh,
                        &mut lower[l - 1],
                        rows,
                        below,
                    );
                }
                Norm::Layer => {
                    let (u, s) = (&ws.u[l - 1], &ws.inv_std[l - 1]);
                    ops::activate_backward(act, u, &ws.dh, &mut ws.gu[l - 1], rows, below);
                    ops::layer_norm_jacobian(u, s, &ws.gu[l - 1], &mut lower[l - 1], rows, below);
                }
            }
        }
    }
}
