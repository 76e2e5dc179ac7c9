//! Forward and backward passes of the MLP, every dense product through
//! [`super::gemm::matmul`].
//!
//! # Splitting a minibatch between threads
//!
//! Rows are independent until the weight gradients: each sample's activations and deltas
//! depend on its own row only. So with a [`Team`] the minibatch is cut into one band of
//! rows per member ([`band_count`]), and each member runs its band through every layer and
//! back down to the first layer's deltas ([`forward_band`], [`deltas_band`]) in a single
//! section, elementwise passes and small products included. Only the first layer's
//! product, where it is wide, runs before that section for the whole minibatch in bands of
//! output columns ([`whole_by_columns`]), so that no member copies all of its `W`. The
//! weight gradients, `(1/B)·Δᵀ A` summed over all rows, then run in a second section split
//! by output units ([`delta_products`]). No split changes how any number is summed (see
//! [`super::gemm::row_bands`]), so results are bit-identical for every thread count.

use super::buffers::Activations;
use super::gemm::{matmul, row_bands, splits_by_columns, MatRef};
use super::ops;
use super::team::Team;
use crate::spec::{Activation, LayerShape, Norm};

/// One band of rows of an [`Activations`]: each buffer's rows `[first, first + rows)`.
pub(super) struct Band<'a> {
    pub(super) first: usize,
    pub(super) rows: usize,
    pub(super) z: Vec<&'a mut [f32]>,
    pub(super) h: Vec<&'a mut [f32]>,
    pub(super) d: Vec<&'a mut [f32]>,
    pub(super) dh: &'a mut [f32],
    pub(super) u: Vec<&'a mut [f32]>,
    pub(super) inv_std: Vec<&'a mut [f32]>,
    pub(super) gu: Vec<&'a mut [f32]>,
    pub(super) row_sq: Vec<&'a mut [f64]>,
    pub(super) row_loss: &'a mut [f64],
}

/// Into how many row bands a pass over `rows` rows may be cut for `threads` threads: all
/// of them when every product of the forward and backward passes may be cut so
/// ([`row_bands`]), else 1 (the products are then split one by one).
pub(super) fn band_count(shapes: &[LayerShape], rows: usize, threads: usize) -> usize {
    let every_product_splits = shapes.iter().enumerate().all(|(l, s)| {
        row_bands(rows, s.fan_out, s.fan_in, threads) == threads
            && (l == 0 || row_bands(rows, s.fan_in, s.fan_out, threads) == threads)
    });
    if threads > 1 && every_product_splits {
        threads
    } else {
        1
    }
}

/// Whether a pass over `rows` rows in `parts` row bands computes the product that feeds
/// layer `s`, `input·Wᵀ`, for the whole minibatch first, in bands of output columns on the
/// team ([`splits_by_columns`]): each row band's product would copy all of `W` for itself.
pub(super) fn whole_by_columns(s: LayerShape, rows: usize, parts: usize, threads: usize) -> bool {
    parts > 1 && splits_by_columns(rows, s.fan_out, s.fan_in, threads)
}

/// `z += input·wᵀ` over `rows` rows for layer `s` (`w` its `fan_out × fan_in` weights) on
/// the team, by column bands where [`whole_by_columns`] says so.
pub(super) fn whole_product(
    s: LayerShape,
    w: &[f32],
    input: &[f32],
    z: &mut [f32],
    rows: usize,
    team: &Team,
) {
    matmul(
        z,
        MatRef::row_major(input, rows, s.fan_in),
        MatRef::row_major(&w[..s.weights()], s.fan_out, s.fan_in).t(),
        1.0,
        true,
        Some(team),
    );
}

/// The rows `[cuts[t], cuts[t+1])` of a row-major buffer of `width` columns, per band.
pub(super) fn split_rows<'a, T>(
    buf: &'a mut [T],
    width: usize,
    cuts: &[usize],
) -> Vec<&'a mut [T]> {
    let mut rest = &mut buf[..cuts[cuts.len() - 1] * width];
    let mut parts = Vec::with_capacity(cuts.len() - 1);
    for w in cuts.windows(2) {
        let (part, tail) = rest.split_at_mut((w[1] - w[0]) * width);
        parts.push(part);
        rest = tail;
    }
    parts
}

/// Deals the row parts of `buf` (`width` values a row, cut at `cuts`) to `bands`, one part
/// each, appending it to the list that `list` picks in each band.
pub(super) fn deal_rows<'a, B, T>(
    bands: &mut [B],
    buf: &'a mut [T],
    width: usize,
    cuts: &[usize],
    list: impl Fn(&mut B) -> &mut Vec<&'a mut [T]>,
) {
    for (b, part) in bands.iter_mut().zip(split_rows(buf, width, cuts)) {
        list(b).push(part);
    }
}

impl Activations {
    /// `parts` bands of the first `rows` rows (sized by [`Activations::ensure`]).
    pub(super) fn bands(
        &mut self,
        shapes: &[LayerShape],
        expand: usize,
        rows: usize,
        parts: usize,
    ) -> Vec<Band<'_>> {
        let cuts: Vec<usize> = (0..=parts).map(|t| t * rows / parts).collect();
        let mut bands: Vec<Band<'_>> = Vec::with_capacity(parts);
        let max_in = shapes.iter().map(|s| s.fan_in).max().unwrap_or(0);
        let dh = split_rows(&mut self.dh, max_in, &cuts);
        let row_loss = split_rows(&mut self.row_loss, 1, &cuts);
        for ((w, dh), row_loss) in cuts.windows(2).zip(dh).zip(row_loss) {
            bands.push(Band {
                first: w[0],
                rows: w[1] - w[0],
                z: Vec::new(),
                h: Vec::new(),
                d: Vec::new(),
                dh,
                u: Vec::new(),
                inv_std: Vec::new(),
                gu: Vec::new(),
                row_sq: Vec::new(),
                row_loss,
            });
        }
        for (((z, d), sq), s) in self
            .z
            .iter_mut()
            .zip(&mut self.d)
            .zip(&mut self.row_sq)
            .zip(shapes)
        {
            deal_rows(&mut bands, z, s.fan_out, &cuts, |b| &mut b.z);
            deal_rows(&mut bands, d, s.fan_out, &cuts, |b| &mut b.d);
            deal_rows(&mut bands, sq, 1, &cuts, |b| &mut b.row_sq);
        }
        // `h` (and with LayerNorm `u`, `inv_std`, `gu`) exist for the hidden layers only.
        for (h, s) in self.h.iter_mut().zip(shapes) {
            deal_rows(&mut bands, h, expand * s.fan_out, &cuts, |b| &mut b.h);
        }
        for (u, s) in self.u.iter_mut().zip(shapes) {
            deal_rows(&mut bands, u, s.fan_out, &cuts, |b| &mut b.u);
        }
        for inv_std in self.inv_std.iter_mut() {
            deal_rows(&mut bands, inv_std, 1, &cuts, |b| &mut b.inv_std);
        }
        for (gu, s) in self.gu.iter_mut().zip(shapes) {
            deal_rows(&mut bands, gu, s.fan_out, &cuts, |b| &mut b.gu);
        }
        bands
    }
}

/// Forward pass of `rows` input rows `x` through all layers into `ws`, in row bands on the
/// team when it has one (see the module docs).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward(
    shapes: &[LayerShape],
    act: Activation,
    norm: Norm,
    params: &[Vec<f32>],
    x: &[f32],
    ws: &mut Activations,
    rows: usize,
    team: Option<&Team>,
) {
    let input = shapes[0].fan_in;
    let parts = team.map_or(1, |t| band_count(shapes, rows, t.threads()));
    let first_done = match team {
        Some(team) if whole_by_columns(shapes[0], rows, parts, team.threads()) => {
            let (w, b) = params[0].split_at(shapes[0].weights());
            ops::fill_rows(&mut ws.z[0], b, rows);
            whole_product(shapes[0], w, x, &mut ws.z[0], rows, team);
            true
        }
        _ => false,
    };
    let mut bands = ws.bands(shapes, act.expansion(), rows, parts);
    match team {
        Some(team) if parts > 1 => team.for_each_mut(&mut bands, |_, band| {
            let x = &x[band.first * input..(band.first + band.rows) * input];
            forward_band(shapes, act, norm, params, x, band, first_done, None);
        }),
        _ => {
            for band in &mut bands {
                forward_band(shapes, act, norm, params, x, band, first_done, team);
            }
        }
    }
}

/// Forward pass of one band: `x` holds the band's input rows. With [`Norm::Layer`], each
/// hidden layer's `z` is normalised into `u` before the nonlinearity. With `first_done`
/// the first layer's `z` is already computed ([`whole_product`]). `team` splits each
/// product (only when the band is the whole minibatch).
#[allow(clippy::too_many_arguments)]
pub(super) fn forward_band(
    shapes: &[LayerShape],
    act: Activation,
    norm: Norm,
    params: &[Vec<f32>],
    x: &[f32],
    band: &mut Band<'_>,
    first_done: bool,
    team: Option<&Team>,
) {
    let rows = band.rows;
    for (l, s) in shapes.iter().enumerate() {
        let (w, b) = params[l].split_at(s.weights());
        let hidden_layers = band.h.len();
        let (below, here) = band.h.split_at_mut(l.min(hidden_layers));
        let input: &[f32] = if l == 0 { x } else { below[l - 1] };
        if l > 0 || !first_done {
            let z = &mut *band.z[l];
            ops::fill_rows(z, b, rows);
            matmul(
                z,
                MatRef::row_major(input, rows, s.fan_in),
                MatRef::row_major(w, s.fan_out, s.fan_in).t(),
                1.0,
                true,
                team,
            );
        }
        if s.hidden {
            let pre: &[f32] = match norm {
                Norm::None => &*band.z[l],
                Norm::Layer => {
                    let (u, inv_std) = (&mut *band.u[l], &mut *band.inv_std[l]);
                    ops::layer_norm(&*band.z[l], u, inv_std, rows, s.fan_out);
                    &*band.u[l]
                }
            };
            ops::activate(act, pre, here[0], rows, s.fan_out);
        }
    }
}

/// Backward pass of one band from the deltas already in the band's last layer: each lower
/// layer's deltas `∂ℓ_i/∂z` (with [`Norm::Layer`], `∂ℓ_i/∂u` kept in `gu` and `d` holding
/// `J·∂ℓ_i/∂u`) and, with `sample_norms`, each row's per-sample squared gradient norm
/// `‖δ_i‖²·(‖a_i‖² + 1)` per layer. `x` holds the band's input rows.
#[allow(clippy::too_many_arguments)]
pub(super) fn deltas_band(
    shapes: &[LayerShape],
    act: Activation,
    norm: Norm,
    params: &[Vec<f32>],
    x: &[f32],
    band: &mut Band<'_>,
    sample_norms: bool,
    team: Option<&Team>,
) {
    let rows = band.rows;
    for l in (0..shapes.len()).rev() {
        let s = shapes[l];
        if sample_norms {
            let input: &[f32] = if l == 0 { x } else { band.h[l - 1] };
            let d = &*band.d[l];
            for (i, sq) in band.row_sq[l][..rows].iter_mut().enumerate() {
                let a = ops::sq_norm(&input[i * s.fan_in..(i + 1) * s.fan_in]);
                let dd = ops::sq_norm(&d[i * s.fan_out..(i + 1) * s.fan_out]);
                *sq = dd * (a + 1.0);
            }
        }
        if l > 0 {
            let w = &params[l][..s.weights()];
            matmul(
                band.dh,
                MatRef::row_major(&*band.d[l], rows, s.fan_out),
                MatRef::row_major(w, s.fan_out, s.fan_in),
                1.0,
                false,
                team,
            );
            let below = shapes[l - 1].fan_out;
            let (lower, _) = band.d.split_at_mut(l);
            match norm {
                Norm::None => {
                    ops::activate_backward(
                        act,
                        &*band.z[l - 1],
                        band.dh,
                        lower[l - 1],
                        rows,
                        below,
                    );
                }
                Norm::Layer => {
                    let (u, s) = (&*band.u[l - 1], &*band.inv_std[l - 1]);
                    let gu = &mut *band.gu[l - 1];
                    ops::activate_backward(act, u, band.dh, gu, rows, below);
                    ops::layer_norm_jacobian(u, s, gu, lower[l - 1], rows, below);
                }
            }
        }
    }
}

/// One layer's `(1/B)·Δᵀ A` (into `weights`, `fan_out × fan_in`) and `(1/B)·Σ_i δ_i` (into
/// `bias`) over the minibatch: its deltas `Δ` (`rows × fan_out`) and input rows `A`.
pub(super) struct DeltaProduct<'a> {
    pub(super) shape: LayerShape,
    pub(super) deltas: &'a [f32],
    pub(super) input: &'a [f32],
    pub(super) weights: &'a mut [f32],
    pub(super) bias: &'a mut [f32],
}

/// One piece of [`delta_products`]: a product's output units `[first, first + units)`,
/// with what it reads.
struct Piece<'a> {
    shape: LayerShape,
    deltas: &'a [f32],
    input: &'a [f32],
    first: usize,
    weights: &'a mut [f32],
    bias: &'a mut [f32],
}

/// Every job's products over `rows` rows, each job's output units cut into one piece per
/// member ([`row_bands`]), the pieces shared out on the team largest first. Each output
/// element is summed over the rows as the whole product sums it: any thread count gives
/// the same bits.
pub(super) fn delta_products(jobs: &mut [DeltaProduct<'_>], rows: usize, team: Option<&Team>) {
    let threads = team.map_or(1, Team::threads);
    let mut pieces = Vec::new();
    for job in jobs.iter_mut() {
        let s = job.shape;
        let parts = row_bands(s.fan_out, s.fan_in, rows, threads);
        let (mut gw, mut gb) = (&mut *job.weights, &mut *job.bias);
        for t in 0..parts {
            let (first, end) = (t * s.fan_out / parts, (t + 1) * s.fan_out / parts);
            let (w, w_rest) = gw.split_at_mut((end - first) * s.fan_in);
            let (b, b_rest) = gb.split_at_mut(end - first);
            (gw, gb) = (w_rest, b_rest);
            pieces.push(Piece {
                shape: s,
                deltas: job.deltas,
                input: job.input,
                first,
                weights: w,
                bias: b,
            });
        }
    }
    // Largest first, so that the dynamic share-out ends evenly.
    pieces.sort_by_key(|p| std::cmp::Reverse(p.weights.len()));
    let inv = 1.0 / rows as f32;
    let product = |_: usize, p: &mut Piece<'_>| {
        let (s, d, input) = (p.shape, p.deltas, p.input);
        let units = p.bias.len();
        let deltas_t = MatRef::row_major(d, rows, s.fan_out)
            .t()
            .rows(p.first, units);
        matmul(
            p.weights,
            deltas_t,
            MatRef::row_major(input, rows, s.fan_in),
            inv,
            false,
            None,
        );
        ops::column_range_sums(d, rows, s.fan_out, p.first, inv, p.bias);
    };
    match team {
        Some(team) => team.for_each_mut_dynamic(&mut pieces, product),
        None => pieces
            .iter_mut()
            .enumerate()
            .for_each(|(i, p)| product(i, p)),
    }
}

/// The mean gradients of every layer from the deltas and activations of `rows` rows in
/// `ws` (`x`: the input rows): [`delta_products`] of each layer.
pub(super) fn weight_grads(
    shapes: &[LayerShape],
    x: &[f32],
    ws: &Activations,
    rows: usize,
    grads: &mut [Vec<f32>],
    team: Option<&Team>,
) {
    let mut jobs: Vec<DeltaProduct<'_>> = shapes
        .iter()
        .zip(grads.iter_mut())
        .enumerate()
        .map(|(l, (s, g))| {
            let (weights, bias) = g.split_at_mut(s.weights());
            DeltaProduct {
                shape: *s,
                deltas: &ws.d[l],
                input: if l == 0 { x } else { &ws.h[l - 1] },
                weights,
                bias,
            }
        })
        .collect();
    delta_products(&mut jobs, rows, team);
}
