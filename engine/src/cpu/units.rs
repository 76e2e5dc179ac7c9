//! Unit-level surgery for the plasticity baselines: per-unit activity and outgoing weights
//! (continual backprop, ReDo), re-initialising units, and shrink and perturb.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::CpuBackend;
use crate::backend::UnitStats;
use crate::checks::check_layer;
use crate::error::BackendError;
use crate::spec::init_bound;

impl CpuBackend {
    pub(super) fn unit_stats_impl(&self) -> Result<Vec<UnitStats>, BackendError> {
        let rows = self
            .batch
            .ok_or(BackendError::NoBatch { what: "unit_stats" })?;
        let e = self.act.expansion();
        let mut out = Vec::new();
        for (l, s) in self.shapes.iter().enumerate().filter(|(_, s)| s.hidden) {
            let units = s.fan_out;
            let width = e * units;
            let mut activity = vec![0.0f32; units];
            for row in self.train.h[l][..rows * width].chunks_exact(width) {
                for (f, &h) in row.iter().enumerate() {
                    activity[f % units] += h.abs();
                }
            }
            activity.iter_mut().for_each(|a| *a /= rows as f32);
            let next = self.shapes[l + 1];
            let mut outgoing = vec![0.0f32; units];
            for row in self.params[l + 1][..next.weights()].chunks_exact(next.fan_in) {
                for (f, &w) in row.iter().enumerate() {
                    outgoing[f % units] += w.abs();
                }
            }
            out.push(UnitStats { activity, outgoing });
        }
        Ok(out)
    }

    pub(super) fn reinit_units_impl(
        &mut self,
        layer: usize,
        units: &[usize],
        seed: u64,
    ) -> Result<(), BackendError> {
        check_layer(layer, self.shapes.len())?;
        let s = self.shapes[layer];
        if !s.hidden {
            return Err(BackendError::InvalidSpec {
                field: "layer",
                value: layer.to_string(),
                allowed: "a hidden layer (its units feed the next layer)",
            });
        }
        if let Some(&bad) = units.iter().find(|&&u| u >= s.fan_out) {
            return Err(BackendError::IndexOutOfRange {
                index: bad,
                examples: s.fan_out,
            });
        }
        let e = self.act.expansion();
        let bound = init_bound(&s);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let next = self.shapes[layer + 1];
        for &j in units {
            let row = j * s.fan_in..(j + 1) * s.fan_in;
            let bias = s.weights() + j;
            for i in row.clone().chain(std::iter::once(bias)) {
                self.params[layer][i] = rng.random_range(-bound..bound);
                self.m[layer][i] = 0.0;
                self.v[layer][i] = 0.0;
            }
            for k in 0..next.fan_out {
                for f in 0..e {
                    let i = k * next.fan_in + f * s.fan_out + j;
                    self.params[layer + 1][i] = 0.0;
                    self.m[layer + 1][i] = 0.0;
                    self.v[layer + 1][i] = 0.0;
                }
            }
        }
        self.batch = None;
        self.grads_ready = false;
        Ok(())
    }

    pub(super) fn shrink_perturb_impl(
        &mut self,
        shrink: f32,
        scale: f32,
        seed: u64,
    ) -> Result<(), BackendError> {
        if !(shrink.is_finite() && (0.0..1.0).contains(&shrink)) {
            return Err(BackendError::InvalidSpec {
                field: "shrink",
                value: shrink.to_string(),
                allowed: "in [0, 1)",
            });
        }
        if !(scale.is_finite() && scale >= 0.0) {
            return Err(BackendError::InvalidSpec {
                field: "perturb",
                value: scale.to_string(),
                allowed: "finite and >= 0",
            });
        }
        for (l, s) in self.shapes.iter().enumerate() {
            let bound = init_bound(s);
            let mut rng =
                ChaCha8Rng::seed_from_u64(seed ^ (l as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for p in &mut self.params[l] {
                let xi: f32 = rng.random_range(-bound..bound);
                *p = (1.0 - shrink) * *p + scale * xi;
            }
        }
        self.batch = None;
        self.grads_ready = false;
        Ok(())
    }
}
