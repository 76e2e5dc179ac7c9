//! Hessian-vector products by Pearlmutter's R-operator (see the module docs of [`super`]).
//! For a layer block the tangent starts at the layer, runs forward through the fixed
//! activation masks and the loss's output Hessian (the softmax Jacobian, or the identity
//! for squared error), and back down to that layer only; for the
//! whole network every layer's tangent enters on the way forward, and on the way back each
//! layer's product gains the term of its input's tangent (`δᵀ R{a}`).
//!
//! With LayerNorm ([`Norm::Layer`]) on a hidden layer, `u = LN(z)` feeds the nonlinearity:
//! the tangent goes through its Jacobian `J = s·(I − 11ᵀ/n − uuᵀ/n)` (symmetric, so the
//! backward uses the same map), `R{u} = J·R{z}`, and on the way back
//! `R{δ_z} = J·R{∂ℓ/∂u} + R{J}·∂ℓ/∂u`, the second term LayerNorm's own curvature
//! ([`ops::layer_norm_second_order`]). The (C)ReLU still has no second-order term.

use super::gemm::{matmul, MatRef};
use super::ops;
use super::CpuBackend;
use crate::checks::{check_layer, check_len, check_vector};
use crate::error::BackendError;
use crate::spec::{Loss, Norm};

/// `R{δ} = ∇²_z ℓ · R{z}` per sample: the loss's Hessian with respect to the outputs applied
/// to the outputs' tangent `rz` (both `rows × classes`). Cross-entropy: the softmax Jacobian
/// `p ⊙ (R{z} − pᵀR{z})` with `p = δ + onehot(y)` from the deltas `d` and labels `labels`;
/// squared error: the identity.
fn output_hessian(
    loss: Loss,
    rd: &mut [f32],
    rz: &[f32],
    d: &[f32],
    labels: &[u8],
    classes: usize,
) {
    match loss {
        Loss::CrossEntropy => {
            for (i, ((rd, rz), d)) in rd
                .chunks_exact_mut(classes)
                .zip(rz.chunks_exact(classes))
                .zip(d.chunks_exact(classes))
                .enumerate()
            {
                let y = labels[i] as usize;
                let p = |j: usize| d[j] + if j == y { 1.0 } else { 0.0 };
                let dot: f32 = (0..classes).map(|j| p(j) * rz[j]).sum();
                for j in 0..classes {
                    rd[j] = p(j) * (rz[j] - dot);
                }
            }
        }
        Loss::SquaredError => rd.copy_from_slice(rz),
    }
}

impl CpuBackend {
    pub(super) fn hvp_impl(
        &mut self,
        layer: usize,
        v: &[f32],
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        check_layer(layer, self.shapes.len())?;
        let rows = self.batch.ok_or(BackendError::NoBatch { what: "hvp" })?;
        let s = self.shapes[layer];
        check_vector("v", s.params(), v)?;
        check_len("out", s.params(), out.len())?;
        let shapes = &self.shapes;
        let act = self.act;
        let norm = self.norm;
        let team = self.team.as_ref();
        let classes = self.spec.classes;
        let ws = &self.train;
        let t = &mut self.tangents;
        t.ensure(shapes, act.expansion(), norm, rows);
        let input = if layer == 0 {
            &self.batch_x[..]
        } else {
            &ws.h[layer - 1][..]
        };
        // R-forward: the tangent starts at this layer's pre-activations.
        let (vw, vb) = v.split_at(s.weights());
        ops::fill_rows(&mut t.rz[layer], vb, rows);
        matmul(
            &mut t.rz[layer],
            MatRef::row_major(input, rows, s.fan_in),
            MatRef::row_major(vw, s.fan_out, s.fan_in).t(),
            1.0,
            true,
            team,
        );
        for k in layer + 1..shapes.len() {
            let (below, sk) = (shapes[k - 1], shapes[k]);
            let rpre = match norm {
                Norm::None => &t.rz[k - 1],
                Norm::Layer => {
                    let (u, is) = (&ws.u[k - 1], &ws.inv_std[k - 1]);
                    let (rz, ru) = (&t.rz[k - 1], &mut t.ru[k - 1]);
                    ops::layer_norm_jacobian(u, is, rz, ru, rows, below.fan_out);
                    &t.ru[k - 1]
                }
            };
            ops::activate_tangent(act, ws.act_in(k - 1), rpre, &mut t.rh, rows, below.fan_out);
            matmul(
                &mut t.rz[k],
                MatRef::row_major(&t.rh, rows, sk.fan_in),
                MatRef::row_major(&self.params[k][..sk.weights()], sk.fan_out, sk.fan_in).t(),
                1.0,
                false,
                team,
            );
        }
        let last = shapes.len() - 1;
        output_hessian(
            self.spec.loss,
            &mut t.rd[last][..rows * classes],
            &t.rz[last][..rows * classes],
            &ws.d[last][..rows * classes],
            &self.batch_y,
            classes,
        );
        // R-backward down to this layer only.
        for k in (layer + 1..shapes.len()).rev() {
            let (below, sk) = (shapes[k - 1], shapes[k]);
            matmul(
                &mut t.rdh,
                MatRef::row_major(&t.rd[k], rows, sk.fan_out),
                MatRef::row_major(&self.params[k][..sk.weights()], sk.fan_out, sk.fan_in),
                1.0,
                false,
                team,
            );
            let (lower, _) = t.rd.split_at_mut(k);
            let w = below.fan_out;
            match norm {
                Norm::None => {
                    ops::activate_backward(act, &ws.z[k - 1], &t.rdh, &mut lower[k - 1], rows, w);
                }
                Norm::Layer => {
                    let (u, is) = (&ws.u[k - 1], &ws.inv_std[k - 1]);
                    let rgu = &mut t.rgu[..rows * w];
                    ops::activate_backward(act, u, &t.rdh, rgu, rows, w);
                    ops::layer_norm_jacobian(u, is, rgu, &mut lower[k - 1], rows, w);
                    ops::layer_norm_second_order(
                        u,
                        is,
                        &t.rz[k - 1],
                        &t.ru[k - 1],
                        &ws.gu[k - 1],
                        &ws.d[k - 1],
                        &mut lower[k - 1],
                        rows,
                        w,
                    );
                }
            }
        }
        let inv = 1.0 / rows as f32;
        let (ow, ob) = out.split_at_mut(s.weights());
        matmul(
            ow,
            MatRef::row_major(&t.rd[layer], rows, s.fan_out).t(),
            MatRef::row_major(input, rows, s.fan_in),
            inv,
            false,
            team,
        );
        ops::column_sums(&t.rd[layer], rows, s.fan_out, inv, ob);
        Ok(())
    }

    pub(super) fn hvp_network_impl(
        &mut self,
        v: &[Vec<f32>],
        out: &mut [Vec<f32>],
    ) -> Result<(), BackendError> {
        let rows = self.batch.ok_or(BackendError::NoBatch {
            what: "hvp_network",
        })?;
        let layers = self.shapes.len();
        check_len("v", layers, v.len())?;
        check_len("out", layers, out.len())?;
        for (l, s) in self.shapes.iter().enumerate() {
            check_vector("v", s.params(), &v[l])?;
            check_len("out", s.params(), out[l].len())?;
        }
        let (shapes, act, norm, team, classes) = (
            &self.shapes,
            self.act,
            self.norm,
            self.team.as_ref(),
            self.spec.classes,
        );
        let e = act.expansion();
        let ws = &self.train;
        let input = |l: usize| {
            if l == 0 {
                &self.batch_x[..]
            } else {
                &ws.h[l - 1][..]
            }
        };
        let weights = |l: usize| &self.params[l][..shapes[l].weights()];
        // R-forward: R{z_l} = R{a_{l-1}} W_lᵀ + a_{l-1} V_lᵀ + v_b; R{a_l} = act'(z_l) R{z_l}.
        let mut rz: Vec<Vec<f32>> = shapes.iter().map(|s| vec![0.0; rows * s.fan_out]).collect();
        let mut ra: Vec<Vec<f32>> = shapes
            .iter()
            .filter(|s| s.hidden)
            .map(|s| vec![0.0; rows * e * s.fan_out])
            .collect();
        // With LayerNorm, R{u_l} = J_l R{z_l} (empty without).
        let ln = norm == Norm::Layer;
        let mut ru: Vec<Vec<f32>> = shapes
            .iter()
            .filter(|s| s.hidden)
            .map(|s| vec![0.0; if ln { rows * s.fan_out } else { 0 }])
            .collect();
        for (l, s) in shapes.iter().enumerate() {
            let (vw, vb) = v[l].split_at(s.weights());
            ops::fill_rows(&mut rz[l], vb, rows);
            let x = MatRef::row_major(input(l), rows, s.fan_in);
            matmul(
                &mut rz[l],
                x,
                MatRef::row_major(vw, s.fan_out, s.fan_in).t(),
                1.0,
                true,
                team,
            );
            if l > 0 {
                let below = MatRef::row_major(&ra[l - 1], rows, s.fan_in);
                let w = MatRef::row_major(weights(l), s.fan_out, s.fan_in).t();
                matmul(&mut rz[l], below, w, 1.0, true, team);
            }
            if s.hidden {
                let rpre = if ln {
                    let (u, is) = (&ws.u[l], &ws.inv_std[l]);
                    ops::layer_norm_jacobian(u, is, &rz[l], &mut ru[l], rows, s.fan_out);
                    &ru[l]
                } else {
                    &rz[l]
                };
                ops::activate_tangent(act, ws.act_in(l), rpre, &mut ra[l], rows, s.fan_out);
            }
        }
        let last = layers - 1;
        let mut rd: Vec<Vec<f32>> = shapes.iter().map(|s| vec![0.0; rows * s.fan_out]).collect();
        output_hessian(
            self.spec.loss,
            &mut rd[last],
            &rz[last][..rows * classes],
            &ws.d[last][..rows * classes],
            &self.batch_y,
            classes,
        );
        // R-backward: (Hv)_l = (1/B)(R{δ_l}ᵀ a_{l-1} + δ_lᵀ R{a_{l-1}}), and
        // R{δ_{l-1}} = act'(z_{l-1}) (R{δ_l} W_l + δ_l V_l).
        let inv = 1.0 / rows as f32;
        let max_in = shapes.iter().map(|s| s.fan_in).max().unwrap_or(0);
        let mut scratch = vec![0.0f32; rows * max_in];
        let widest = shapes.iter().filter(|s| s.hidden).map(|s| s.fan_out).max();
        let mut rgu = vec![0.0f32; if ln { rows * widest.unwrap_or(0) } else { 0 }];
        for l in (0..layers).rev() {
            let s = shapes[l];
            let (ow, ob) = out[l].split_at_mut(s.weights());
            let rdl = MatRef::row_major(&rd[l], rows, s.fan_out).t();
            matmul(
                ow,
                rdl,
                MatRef::row_major(input(l), rows, s.fan_in),
                inv,
                false,
                team,
            );
            if l > 0 {
                let dl = MatRef::row_major(&ws.d[l][..rows * s.fan_out], rows, s.fan_out).t();
                matmul(
                    ow,
                    dl,
                    MatRef::row_major(&ra[l - 1], rows, s.fan_in),
                    inv,
                    true,
                    team,
                );
            }
            ops::column_sums(&rd[l], rows, s.fan_out, inv, ob);
            if l > 0 {
                let dh = &mut scratch[..rows * s.fan_in];
                let w = MatRef::row_major(weights(l), s.fan_out, s.fan_in);
                matmul(
                    dh,
                    MatRef::row_major(&rd[l], rows, s.fan_out),
                    w,
                    1.0,
                    false,
                    team,
                );
                let vw = MatRef::row_major(&v[l][..s.weights()], s.fan_out, s.fan_in);
                let dl = MatRef::row_major(&ws.d[l][..rows * s.fan_out], rows, s.fan_out);
                matmul(dh, dl, vw, 1.0, true, team);
                let (lower, _) = rd.split_at_mut(l);
                let w = shapes[l - 1].fan_out;
                if ln {
                    let (u, is) = (&ws.u[l - 1], &ws.inv_std[l - 1]);
                    let rgu = &mut rgu[..rows * w];
                    ops::activate_backward(act, u, dh, rgu, rows, w);
                    ops::layer_norm_jacobian(u, is, rgu, &mut lower[l - 1], rows, w);
                    ops::layer_norm_second_order(
                        u,
                        is,
                        &rz[l - 1],
                        &ru[l - 1],
                        &ws.gu[l - 1],
                        &ws.d[l - 1],
                        &mut lower[l - 1],
                        rows,
                        w,
                    );
                } else {
                    ops::activate_backward(act, &ws.z[l - 1], dh, &mut lower[l - 1], rows, w);
                }
            }
        }
        Ok(())
    }
}
