//! The CPU engine's scratch buffers, sized on the first minibatch and grown only when a
//! larger one comes, so the training loop does not allocate.

use crate::spec::{LayerShape, Norm};

/// Per-layer activations and deltas of one minibatch (or evaluation chunk).
#[derive(Debug, Default)]
pub(super) struct Activations {
    pub(super) cap: usize,
    /// Pre-activations `z` per layer (`rows × fan_out`); the last layer's are the logits.
    pub(super) z: Vec<Vec<f32>>,
    /// Hidden activations per hidden layer (`rows × e·fan_out`).
    pub(super) h: Vec<Vec<f32>>,
    /// Per-sample deltas `∂ℓ_i/∂z` per layer (`rows × fan_out`).
    pub(super) d: Vec<Vec<f32>>,
    /// Scratch: deltas w.r.t. a layer's input (`rows × fan_in`).
    pub(super) dh: Vec<f32>,
    /// Per layer, each row's per-sample squared gradient norm `‖δ_i‖²·(‖a_i‖² + 1)`.
    pub(super) row_sq: Vec<Vec<f64>>,
    /// Each row's loss (summed in row order after a banded pass).
    pub(super) row_loss: Vec<f64>,
    /// With [`Norm::Layer`]: the normalised pre-activations `u = LN(z)` per hidden layer
    /// (`rows × fan_out`, the nonlinearity's input); empty otherwise.
    pub(super) u: Vec<Vec<f32>>,
    /// With [`Norm::Layer`]: each row's `1/sqrt(var(z) + ε)` per hidden layer.
    pub(super) inv_std: Vec<Vec<f32>>,
    /// With [`Norm::Layer`]: the per-sample gradients `∂ℓ_i/∂u` per hidden layer (kept for
    /// LayerNorm's second-order term in the Hessian-vector products).
    pub(super) gu: Vec<Vec<f32>>,
}

impl Activations {
    /// The nonlinearity's input of hidden layer `l`: `u = LN(z)` with LayerNorm, else `z`.
    pub(super) fn act_in(&self, l: usize) -> &[f32] {
        match self.u.get(l) {
            Some(u) if !u.is_empty() => u,
            _ => &self.z[l],
        }
    }

    pub(super) fn ensure(&mut self, shapes: &[LayerShape], expand: usize, norm: Norm, rows: usize) {
        if rows <= self.cap && self.z.len() == shapes.len() {
            return;
        }
        let layers = shapes.len();
        self.z.resize_with(layers, Vec::new);
        self.d.resize_with(layers, Vec::new);
        self.h.resize_with(layers.saturating_sub(1), Vec::new);
        let ln = norm == Norm::Layer;
        for v in [&mut self.u, &mut self.inv_std, &mut self.gu] {
            v.resize_with(if ln { layers.saturating_sub(1) } else { 0 }, Vec::new);
        }
        for (l, s) in shapes.iter().enumerate() {
            self.z[l].resize(rows * s.fan_out, 0.0);
            self.d[l].resize(rows * s.fan_out, 0.0);
            if s.hidden {
                self.h[l].resize(rows * expand * s.fan_out, 0.0);
                if ln {
                    self.u[l].resize(rows * s.fan_out, 0.0);
                    self.inv_std[l].resize(rows, 0.0);
                    self.gu[l].resize(rows * s.fan_out, 0.0);
                }
            }
        }
        let max_in = shapes.iter().map(|s| s.fan_in).max().unwrap_or(0);
        self.dh.resize(rows * max_in, 0.0);
        self.row_sq.resize_with(layers, Vec::new);
        for sq in &mut self.row_sq {
            sq.resize(rows, 0.0);
        }
        self.row_loss.resize(rows, 0.0);
        self.cap = rows;
    }
}

/// Tangent (R-operator) buffers for [`Backend::hvp`].
#[derive(Debug, Default)]
pub(super) struct Tangents {
    pub(super) cap: usize,
    pub(super) rz: Vec<Vec<f32>>,
    pub(super) rd: Vec<Vec<f32>>,
    pub(super) rh: Vec<f32>,
    pub(super) rdh: Vec<f32>,
    /// With [`Norm::Layer`]: the tangents `R{u}` per hidden layer; empty otherwise.
    pub(super) ru: Vec<Vec<f32>>,
    /// With [`Norm::Layer`]: scratch for `R{∂ℓ/∂u}` (`rows × widest hidden layer`).
    pub(super) rgu: Vec<f32>,
}

impl Tangents {
    pub(super) fn ensure(&mut self, shapes: &[LayerShape], expand: usize, norm: Norm, rows: usize) {
        if rows <= self.cap && self.rz.len() == shapes.len() {
            return;
        }
        self.rz.resize_with(shapes.len(), Vec::new);
        self.rd.resize_with(shapes.len(), Vec::new);
        for (l, s) in shapes.iter().enumerate() {
            self.rz[l].resize(rows * s.fan_out, 0.0);
            self.rd[l].resize(rows * s.fan_out, 0.0);
        }
        let max_h = shapes
            .iter()
            .filter(|s| s.hidden)
            .map(|s| expand * s.fan_out)
            .max()
            .unwrap_or(0);
        let max_in = shapes.iter().map(|s| s.fan_in).max().unwrap_or(0);
        self.rh.resize(rows * max_h, 0.0);
        self.rdh.resize(rows * max_in, 0.0);
        if norm == Norm::Layer {
            self.ru
                .resize_with(shapes.len().saturating_sub(1), Vec::new);
            for (l, s) in shapes.iter().enumerate().filter(|(_, s)| s.hidden) {
                self.ru[l].resize(rows * s.fan_out, 0.0);
            }
            let widest = shapes
                .iter()
                .filter(|s| s.hidden)
                .map(|s| s.fan_out)
                .max()
                .unwrap_or(0);
            self.rgu.resize(rows * widest, 0.0);
        }
        self.cap = rows;
    }
}
