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

use super::buffers::{Activations, Tangents};
use super::gemm::{matmul, MatRef};
use super::ops;
use super::pass::{
    band_count, deal_rows, delta_products, split_rows, whole_by_columns, whole_product,
    DeltaProduct,
};
use super::team::Team;
use super::{active_team, CpuBackend};
use crate::checks::{check_layer, check_len, check_vector, hvp_rows};
use crate::error::BackendError;
use crate::spec::{Activation, LayerShape, Loss, Norm};

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

/// One band of rows of the [`Tangents`]: each buffer's rows `[first, first + rows)`.
pub(super) struct TangentBand<'a> {
    first: usize,
    rows: usize,
    rz: Vec<&'a mut [f32]>,
    rd: Vec<&'a mut [f32]>,
    ru: Vec<&'a mut [f32]>,
    rh: &'a mut [f32],
    rdh: &'a mut [f32],
    rgu: &'a mut [f32],
}

impl Tangents {
    /// `parts` bands of the first `rows` rows (sized by [`Tangents::ensure`]).
    fn bands(
        &mut self,
        shapes: &[LayerShape],
        expand: usize,
        rows: usize,
        parts: usize,
    ) -> Vec<TangentBand<'_>> {
        let cuts: Vec<usize> = (0..=parts).map(|t| t * rows / parts).collect();
        let hidden = || shapes.iter().filter(|s| s.hidden);
        let max_h = hidden().map(|s| expand * s.fan_out).max().unwrap_or(0);
        let max_in = shapes.iter().map(|s| s.fan_in).max().unwrap_or(0);
        let widest = if self.rgu.is_empty() {
            0
        } else {
            hidden().map(|s| s.fan_out).max().unwrap_or(0)
        };
        let mut bands: Vec<TangentBand<'_>> = split_rows(&mut self.rh, max_h, &cuts)
            .into_iter()
            .zip(split_rows(&mut self.rdh, max_in, &cuts))
            .zip(split_rows(&mut self.rgu, widest, &cuts))
            .zip(cuts.windows(2))
            .map(|(((rh, rdh), rgu), w)| TangentBand {
                first: w[0],
                rows: w[1] - w[0],
                rz: Vec::new(),
                rd: Vec::new(),
                ru: Vec::new(),
                rh,
                rdh,
                rgu,
            })
            .collect();
        for ((rz, rd), s) in self.rz.iter_mut().zip(&mut self.rd).zip(shapes) {
            deal_rows(&mut bands, rz, s.fan_out, &cuts, |b| &mut b.rz);
            deal_rows(&mut bands, rd, s.fan_out, &cuts, |b| &mut b.rd);
        }
        for (ru, s) in self.ru.iter_mut().zip(shapes) {
            deal_rows(&mut bands, ru, s.fan_out, &cuts, |b| &mut b.ru);
        }
        bands
    }
}

/// What [`hvp_band`] reads: the model, the training minibatch's state and the direction.
struct HvpInputs<'a> {
    shapes: &'a [LayerShape],
    act: Activation,
    norm: Norm,
    loss: Loss,
    classes: usize,
    params: &'a [Vec<f32>],
    ws: &'a Activations,
    labels: &'a [u8],
    /// The layer's input rows (all of the minibatch).
    input: &'a [f32],
    layer: usize,
    vw: &'a [f32],
    vb: &'a [f32],
}

/// The R-forward from `layer` to the outputs and the R-backward down to `layer` of one band
/// of rows (row-local throughout), leaving `R{Δ_layer}` in the band's `rd[layer]`. With
/// `start_done` the tangent of the layer's pre-activations is already in `rz[layer]`
/// ([`whole_product`]).
fn hvp_band(h: &HvpInputs<'_>, t: &mut TangentBand<'_>, start_done: bool, team: Option<&Team>) {
    let (shapes, act, norm, ws, layer) = (h.shapes, h.act, h.norm, h.ws, h.layer);
    let (first, rows) = (t.first, t.rows);
    // This band's rows of a whole-minibatch buffer of `width` columns.
    let mine = |width: usize| first * width..(first + rows) * width;
    let s = shapes[layer];
    let input = &h.input[mine(s.fan_in)];
    // R-forward: the tangent starts at this layer's pre-activations.
    if !start_done {
        ops::fill_rows(t.rz[layer], h.vb, rows);
        matmul(
            t.rz[layer],
            MatRef::row_major(input, rows, s.fan_in),
            MatRef::row_major(h.vw, s.fan_out, s.fan_in).t(),
            1.0,
            true,
            team,
        );
    }
    for k in layer + 1..shapes.len() {
        let (below, sk) = (shapes[k - 1], shapes[k]);
        let w = below.fan_out;
        let rpre: &[f32] = match norm {
            Norm::None => &*t.rz[k - 1],
            Norm::Layer => {
                let (u, is) = (&ws.u[k - 1][mine(w)], &ws.inv_std[k - 1][mine(1)]);
                ops::layer_norm_jacobian(u, is, &*t.rz[k - 1], t.ru[k - 1], rows, w);
                &*t.ru[k - 1]
            }
        };
        let pre = ws.act_in(k - 1);
        ops::activate_tangent(act, &pre[mine(w)], rpre, t.rh, rows, w);
        matmul(
            t.rz[k],
            MatRef::row_major(t.rh, rows, sk.fan_in),
            MatRef::row_major(&h.params[k][..sk.weights()], sk.fan_out, sk.fan_in).t(),
            1.0,
            false,
            team,
        );
    }
    let last = shapes.len() - 1;
    let classes = h.classes;
    output_hessian(
        h.loss,
        &mut t.rd[last][..rows * classes],
        &t.rz[last][..rows * classes],
        &ws.d[last][mine(classes)],
        &h.labels[first..first + rows],
        classes,
    );
    // R-backward down to this layer only.
    for k in (layer + 1..shapes.len()).rev() {
        let (below, sk) = (shapes[k - 1], shapes[k]);
        matmul(
            t.rdh,
            MatRef::row_major(&*t.rd[k], rows, sk.fan_out),
            MatRef::row_major(&h.params[k][..sk.weights()], sk.fan_out, sk.fan_in),
            1.0,
            false,
            team,
        );
        let (lower, _) = t.rd.split_at_mut(k);
        let w = below.fan_out;
        match norm {
            Norm::None => {
                let z = &ws.z[k - 1][mine(w)];
                ops::activate_backward(act, z, t.rdh, lower[k - 1], rows, w);
            }
            Norm::Layer => {
                let u = &ws.u[k - 1][mine(w)];
                let is = &ws.inv_std[k - 1][mine(1)];
                let rgu = &mut t.rgu[..rows * w];
                ops::activate_backward(act, u, t.rdh, rgu, rows, w);
                ops::layer_norm_jacobian(u, is, rgu, lower[k - 1], rows, w);
                ops::layer_norm_second_order(
                    u,
                    is,
                    &*t.rz[k - 1],
                    &*t.ru[k - 1],
                    &ws.gu[k - 1][mine(w)],
                    &ws.d[k - 1][mine(w)],
                    lower[k - 1],
                    rows,
                    w,
                );
            }
        }
    }
}

impl CpuBackend {
    /// [`crate::Backend::hvp`] (or, with `first_rows`, [`crate::Backend::hvp_rows`] on
    /// that many rows): in row bands on the team like the training pass (see `pass`), then
    /// `(1/B)·R{Δ}ᵀ A` split by output units. Every pass is row-local, so the first rows'
    /// product reads the cached state of those rows only.
    pub(super) fn hvp_impl(
        &mut self,
        layer: usize,
        first_rows: Option<usize>,
        v: &[f32],
        out: &mut [f32],
    ) -> Result<(), BackendError> {
        check_layer(layer, self.shapes.len())?;
        let batch = self.batch.ok_or(BackendError::NoBatch { what: "hvp" })?;
        let rows = hvp_rows(first_rows, batch)?;
        let s = self.shapes[layer];
        check_vector("v", s.params(), v)?;
        check_len("out", s.params(), out.len())?;
        let team = active_team(&self.team, self.team_on);
        self.tangents
            .ensure(&self.shapes, self.act.expansion(), self.norm, rows);
        let (vw, vb) = v.split_at(s.weights());
        let inputs = HvpInputs {
            shapes: &self.shapes,
            act: self.act,
            norm: self.norm,
            loss: self.spec.loss,
            classes: self.spec.classes,
            params: &self.params,
            ws: &self.train,
            labels: &self.batch_y,
            input: if layer == 0 {
                &self.batch_x[..]
            } else {
                &self.train.h[layer - 1][..]
            },
            layer,
            vw,
            vb,
        };
        let parts = team.map_or(1, |t| band_count(&self.shapes, rows, t.threads()));
        let start_done = match team {
            Some(team) if whole_by_columns(s, rows, parts, team.threads()) => {
                let rz = &mut self.tangents.rz[layer];
                ops::fill_rows(rz, vb, rows);
                whole_product(s, vw, inputs.input, rz, rows, team);
                true
            }
            _ => false,
        };
        let mut bands = self
            .tangents
            .bands(&self.shapes, self.act.expansion(), rows, parts);
        match team {
            Some(team) if parts > 1 => team.for_each_mut(&mut bands, |_, band| {
                hvp_band(&inputs, band, start_done, None)
            }),
            _ => bands
                .iter_mut()
                .for_each(|band| hvp_band(&inputs, band, start_done, team)),
        }
        drop(bands);
        let (ow, ob) = out.split_at_mut(s.weights());
        let mut job = [DeltaProduct {
            shape: s,
            deltas: &self.tangents.rd[layer],
            input: inputs.input,
            weights: ow,
            bias: ob,
        }];
        delta_products(&mut job, rows, team);
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
            active_team(&self.team, self.team_on),
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
