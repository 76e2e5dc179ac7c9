//! Layer-block Hessian-vector products by Pearlmutter's R-operator (see the module docs of
//! [`super`]): the tangent starts at the layer, runs forward through the fixed activation
//! masks and the softmax Jacobian, and back down to that layer only.

use super::gemm::{matmul, MatRef};
use super::ops;
use super::CpuBackend;
use crate::checks::{check_layer, check_len, check_vector};
use crate::error::BackendError;

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
        let threads = self.threads;
        let classes = self.spec.classes;
        let ws = &self.train;
        let t = &mut self.tangents;
        t.ensure(shapes, act.expansion(), rows);
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
            threads,
        );
        for k in layer + 1..shapes.len() {
            let (below, sk) = (shapes[k - 1], shapes[k]);
            ops::activate_tangent(
                act,
                &ws.z[k - 1],
                &t.rz[k - 1],
                &mut t.rh,
                rows,
                below.fan_out,
            );
            matmul(
                &mut t.rz[k],
                MatRef::row_major(&t.rh, rows, sk.fan_in),
                MatRef::row_major(&self.params[k][..sk.weights()], sk.fan_out, sk.fan_in).t(),
                1.0,
                false,
                threads,
            );
        }
        // Softmax Jacobian: R{δ} = p ⊙ (R{z} − pᵀR{z}), with p = δ + onehot(y).
        let last = shapes.len() - 1;
        for (i, ((rd, rz), d)) in t.rd[last][..rows * classes]
            .chunks_exact_mut(classes)
            .zip(t.rz[last].chunks_exact(classes))
            .zip(ws.d[last].chunks_exact(classes))
            .enumerate()
        {
            let y = self.batch_y[i] as usize;
            let p = |j: usize| d[j] + if j == y { 1.0 } else { 0.0 };
            let dot: f32 = (0..classes).map(|j| p(j) * rz[j]).sum();
            for j in 0..classes {
                rd[j] = p(j) * (rz[j] - dot);
            }
        }
        // R-backward down to this layer only.
        for k in (layer + 1..shapes.len()).rev() {
            let (below, sk) = (shapes[k - 1], shapes[k]);
            matmul(
                &mut t.rdh,
                MatRef::row_major(&t.rd[k], rows, sk.fan_out),
                MatRef::row_major(&self.params[k][..sk.weights()], sk.fan_out, sk.fan_in),
                1.0,
                false,
                threads,
            );
            let (lower, _) = t.rd.split_at_mut(k);
            ops::activate_backward(
                act,
                &ws.z[k - 1],
                &t.rdh,
                &mut lower[k - 1],
                rows,
                below.fan_out,
            );
        }
        let inv = 1.0 / rows as f32;
        let (ow, ob) = out.split_at_mut(s.weights());
        matmul(
            ow,
            MatRef::row_major(&t.rd[layer], rows, s.fan_out).t(),
            MatRef::row_major(input, rows, s.fan_in),
            inv,
            false,
            threads,
        );
        ops::column_sums(&t.rd[layer], rows, s.fan_out, inv, ob);
        Ok(())
    }
}
