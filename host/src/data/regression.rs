//! The slowly-changing regression problem (Dohare et al. 2024, *Loss of plasticity in deep
//! continual learning*, Nature 632; Extended Data Fig. 2), deterministic from a seed.
//!
//! An input is `m` bits: the first `f` are the *slowly changing* bits, fixed within a task,
//! and at every task boundary exactly one of them (drawn uniformly) flips; the other `m − f`
//! are drawn uniformly at random for every example. The target is the output of a fixed
//! random *target network* with one hidden layer of linear threshold units (LTUs), every
//! weight `−1` or `+1`: over the `m + 1` inputs (the `m` bits and a constant bias bit 1),
//! unit `i` fires (`h_i = 1`, else 0) when `Σ_j w_ij x_j > τ_i`, with threshold
//! `τ_i = β·(m + 1) − S_i` and `S_i` the number of its `m + 1` weights that are `−1`; each
//! output is `y = Σ_i v_i h_i + c` with `v_i, c ∈ {−1, +1}`.
//!
//! The constants are the paper's (its code's `cfg/prob.json`): `m = 20` bits, `f = 15` slow
//! bits, 100 target units, `β = 0.7`, one output; the learner sees the `m` bits (its own
//! biases stand for the bias bit). Every task holds `examples` examples seen once, one per
//! step, as the paper's online protocol (it flips a bit every `T = 10,000` examples).
//!
//! Randomness comes from ChaCha8 with explicit seeds and domain separators: the target
//! network and the first task's slow bits from one generator, the bit flipped at boundary
//! `k` from stream `k` of another, the random bits of task `k` from stream `k + 1` of a
//! third; so [`RegressionStream::task`]`(k)` depends only on (settings, seed, examples, k)
//! and can be built in any order.
//!
//! ```
//! use safestep_host::data::regression::{RegressionSettings, RegressionStream};
//! let stream = RegressionStream::new(&RegressionSettings::default(), 7);
//! let (a, b) = (stream.task(3, 50), stream.task(4, 50));
//! assert_eq!(a.inputs.len(), 50 * 20);
//! assert_eq!(a.targets.len(), 50);
//! assert_eq!(a, stream.task(3, 50)); // same task, same data
//! let flipped = (0..15).filter(|&j| a.inputs[j] != b.inputs[j]).count();
//! assert_eq!(flipped, 1); // one slow bit flips at the boundary
//! ```

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// Largest input width accepted (`regression.bits`).
pub const MAX_BITS: usize = 4096;
/// Largest target hidden layer accepted (`regression.target_hidden`).
pub const MAX_TARGET_HIDDEN: usize = 100_000;
/// Largest output width accepted (`regression.outputs`).
pub const MAX_OUTPUTS: usize = 1024;

/// The problem's constants (`[regression]` in `config.toml`); the defaults are Dohare et
/// al.'s.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegressionSettings {
    /// Input bits `m` (the model's input width).
    pub bits: usize,
    /// Slowly changing bits `f` (the first `f` of the `m`), one of which flips per task.
    pub slow_bits: usize,
    /// LTUs in the target network's hidden layer.
    pub target_hidden: usize,
    /// The LTUs' threshold fraction `β`: `τ_i = β·(m + 1) − S_i`.
    pub beta: f64,
    /// Outputs of the target network (the model's output width).
    pub outputs: usize,
}

impl Default for RegressionSettings {
    fn default() -> Self {
        RegressionSettings {
            bits: 20,
            slow_bits: 15,
            target_hidden: 100,
            beta: 0.7,
            outputs: 1,
        }
    }
}

impl RegressionSettings {
    /// Checks every field, naming it (`regression.<field>`) and its allowed range.
    ///
    /// # Errors
    /// [`ConfigError`] for the first bad field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let range = |field: &str, value: usize, lo: usize, hi: usize| {
            if (lo..=hi).contains(&value) {
                Ok(())
            } else {
                Err(ConfigError::new(
                    field,
                    value,
                    &format!("an integer in {lo}..={hi}"),
                ))
            }
        };
        range("regression.bits", self.bits, 1, MAX_BITS)?;
        range("regression.slow_bits", self.slow_bits, 1, self.bits).map_err(|e| {
            ConfigError::new(
                &e.field,
                e.value,
                &format!("{} (at most regression.bits)", e.allowed),
            )
        })?;
        range(
            "regression.target_hidden",
            self.target_hidden,
            1,
            MAX_TARGET_HIDDEN,
        )?;
        range("regression.outputs", self.outputs, 1, MAX_OUTPUTS)?;
        if !(self.beta.is_finite() && (0.0..=1.0).contains(&self.beta)) {
            return Err(ConfigError::new(
                "regression.beta",
                self.beta,
                "a number in [0, 1]",
            ));
        }
        Ok(())
    }
}

/// The fixed target network: one hidden layer of LTUs, every weight `±1`.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetNetwork {
    /// Input bits `m`.
    pub bits: usize,
    /// Hidden weights, row-major `hidden × bits`, each `±1`.
    pub w: Vec<i8>,
    /// Hidden bias weights (on the constant bias bit), each `±1`.
    pub b: Vec<i8>,
    /// Thresholds `τ_i = β·(m + 1) − S_i`.
    pub tau: Vec<f64>,
    /// Output weights, row-major `outputs × hidden`, each `±1`.
    pub v: Vec<i8>,
    /// Output biases, each `±1`.
    pub c: Vec<i8>,
}

fn sign(rng: &mut ChaCha8Rng) -> i8 {
    if rng.random::<bool>() {
        1
    } else {
        -1
    }
}

impl TargetNetwork {
    /// Draws the network of `settings` from `rng`: hidden weights row by row, then the
    /// hidden biases, the output weights and the output biases.
    fn draw(settings: &RegressionSettings, rng: &mut ChaCha8Rng) -> Self {
        let (m, h, o) = (settings.bits, settings.target_hidden, settings.outputs);
        let w: Vec<i8> = (0..h * m).map(|_| sign(rng)).collect();
        let b: Vec<i8> = (0..h).map(|_| sign(rng)).collect();
        let v: Vec<i8> = (0..o * h).map(|_| sign(rng)).collect();
        let c: Vec<i8> = (0..o).map(|_| sign(rng)).collect();
        Self::from_weights(m, settings.beta, w, b, v, c)
    }

    /// The network with the given `±1` weights (`w`: `hidden × bits`, `b`: `hidden`, `v`:
    /// `outputs × hidden`, `c`: `outputs`), its thresholds computed from `beta`.
    pub fn from_weights(
        bits: usize,
        beta: f64,
        w: Vec<i8>,
        b: Vec<i8>,
        v: Vec<i8>,
        c: Vec<i8>,
    ) -> Self {
        let tau = b
            .iter()
            .enumerate()
            .map(|(i, &bi)| {
                let row = &w[i * bits..(i + 1) * bits];
                let negatives = row.iter().filter(|&&x| x < 0).count() + usize::from(bi < 0);
                beta * (bits + 1) as f64 - negatives as f64
            })
            .collect();
        TargetNetwork {
            bits,
            w,
            b,
            tau,
            v,
            c,
        }
    }

    /// Hidden units.
    pub fn hidden(&self) -> usize {
        self.b.len()
    }

    /// Outputs.
    pub fn outputs(&self) -> usize {
        self.c.len()
    }

    /// The hidden LTUs' outputs (0 or 1) on the input bits `x` (each 0 or 1).
    pub fn features(&self, x: &[f32]) -> Vec<u8> {
        (0..self.hidden())
            .map(|i| {
                let row = &self.w[i * self.bits..(i + 1) * self.bits];
                let s: i64 = row
                    .iter()
                    .zip(x)
                    .map(|(&w, &xj)| if xj > 0.5 { i64::from(w) } else { 0 })
                    .sum::<i64>()
                    + i64::from(self.b[i]);
                u8::from(s as f64 > self.tau[i])
            })
            .collect()
    }

    /// The target of the input bits `x`: `y_o = Σ_i v_oi h_i + c_o` per output.
    pub fn predict(&self, x: &[f32]) -> Vec<f32> {
        let h = self.features(x);
        let hidden = self.hidden();
        (0..self.outputs())
            .map(|o| {
                let row = &self.v[o * hidden..(o + 1) * hidden];
                let y: i64 = row
                    .iter()
                    .zip(&h)
                    .map(|(&v, &hi)| i64::from(v) * i64::from(hi))
                    .sum::<i64>()
                    + i64::from(self.c[o]);
                y as f32
            })
            .collect()
    }
}

/// One task: `n × m` input bits (0.0 or 1.0) and `n × outputs` targets.
#[derive(Debug, Clone, PartialEq)]
pub struct RegressionTask {
    /// Row-major input bits.
    pub inputs: Vec<f32>,
    /// Row-major targets.
    pub targets: Vec<f32>,
}

/// Domain separators so the generators never share a key.
const NETWORK_DOMAIN: u64 = 0x5afe_5c12_0000_0001;
const FLIP_DOMAIN: u64 = 0x5afe_5c12_0000_0002;
const TASK_DOMAIN: u64 = 0x5afe_5c12_0000_0003;

/// The deterministic stream of slowly-changing regression tasks.
#[derive(Debug, Clone)]
pub struct RegressionStream {
    settings: RegressionSettings,
    seed: u64,
    target: TargetNetwork,
    /// The first task's slow bits.
    initial: Vec<u8>,
}

impl RegressionStream {
    /// The stream of `settings` (already validated) from `seed`: draws the target network,
    /// then the first task's slow bits.
    pub fn new(settings: &RegressionSettings, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ NETWORK_DOMAIN);
        let target = TargetNetwork::draw(settings, &mut rng);
        let initial = (0..settings.slow_bits)
            .map(|_| u8::from(rng.random::<bool>()))
            .collect();
        RegressionStream {
            settings: settings.clone(),
            seed,
            target,
            initial,
        }
    }

    /// The target network.
    pub fn target(&self) -> &TargetNetwork {
        &self.target
    }

    /// The slow bit flipped at the boundary into task `k` (`None` for the first task).
    pub fn flipped_bit(&self, k: u64) -> Option<usize> {
        if k == 0 {
            return None;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ FLIP_DOMAIN);
        rng.set_stream(k);
        Some(rng.random_range(0..self.settings.slow_bits))
    }

    /// Task `k`'s slow bits: the first task's with every boundary's flip up to `k` applied.
    pub fn slow_bits(&self, k: u64) -> Vec<u8> {
        let mut bits = self.initial.clone();
        for j in 1..=k {
            if let Some(i) = self.flipped_bit(j) {
                bits[i] ^= 1;
            }
        }
        bits
    }

    /// Task `k` (0-based) with `examples` examples: a pure function of the stream's
    /// parameters, `examples` and `k`.
    pub fn task(&self, k: u64, examples: usize) -> RegressionTask {
        let (m, f) = (self.settings.bits, self.settings.slow_bits);
        let slow = self.slow_bits(k);
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ TASK_DOMAIN);
        rng.set_stream(k.wrapping_add(1));
        let mut inputs = Vec::with_capacity(examples * m);
        let mut targets = Vec::with_capacity(examples * self.settings.outputs);
        let mut x = vec![0.0f32; m];
        for _ in 0..examples {
            for (xj, &s) in x[..f].iter_mut().zip(&slow) {
                *xj = f32::from(s);
            }
            for xj in &mut x[f..] {
                *xj = f32::from(u8::from(rng.random::<bool>()));
            }
            inputs.extend_from_slice(&x);
            targets.extend(self.target.predict(&x));
        }
        RegressionTask { inputs, targets }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_slow_bit_flips_per_boundary_and_none_within_a_task() {
        let s = RegressionSettings::default();
        let stream = RegressionStream::new(&s, 3);
        let n = 40;
        let mut prev = stream.task(0, n);
        for k in 1..30u64 {
            let task = stream.task(k, n);
            for row in task.inputs.chunks(s.bits) {
                // Slow bits fixed within the task, as slow_bits() says.
                let slow: Vec<u8> = row[..s.slow_bits].iter().map(|&b| b as u8).collect();
                assert_eq!(slow, stream.slow_bits(k));
                assert!(row.iter().all(|&b| b == 0.0 || b == 1.0));
            }
            let changed: Vec<usize> = (0..s.slow_bits)
                .filter(|&j| task.inputs[j] != prev.inputs[j])
                .collect();
            assert_eq!(changed, vec![stream.flipped_bit(k).unwrap()], "task {k}");
            prev = task;
        }
        // The random bits vary within a task.
        let t = stream.task(5, n);
        let fast: Vec<&[f32]> = t.inputs.chunks(s.bits).map(|r| &r[s.slow_bits..]).collect();
        assert!(fast.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn targets_reproduce_the_target_network() {
        let s = RegressionSettings::default();
        let stream = RegressionStream::new(&s, 11);
        let net = stream.target();
        assert_eq!((net.hidden(), net.outputs(), net.bits), (100, 1, 20));
        assert!(net
            .w
            .iter()
            .chain(&net.b)
            .chain(&net.v)
            .chain(&net.c)
            .all(|&x| x == 1 || x == -1));
        let task = stream.task(2, 64);
        for (x, y) in task.inputs.chunks(s.bits).zip(task.targets.chunks(1)) {
            // The LTU network by its definition, written out again.
            let mut want = f64::from(net.c[0]);
            for i in 0..net.hidden() {
                let w = &net.w[i * s.bits..(i + 1) * s.bits];
                let neg = w.iter().filter(|&&v| v == -1).count() + usize::from(net.b[i] == -1);
                let tau = 0.7 * 21.0 - neg as f64;
                let sum: f64 = w
                    .iter()
                    .zip(x)
                    .map(|(&w, &xj)| f64::from(w) * f64::from(xj))
                    .sum::<f64>()
                    + f64::from(net.b[i]);
                if sum > tau {
                    want += f64::from(net.v[i]);
                }
            }
            assert_eq!(f64::from(y[0]), want);
        }
        // Some units fire and the targets vary: the problem is not constant.
        assert!(task.targets.windows(2).any(|w| w[0] != w[1]));
    }

    #[test]
    fn a_hand_worked_target_network() {
        // Two bits, two units. Unit 0: w = (+1, +1), b = −1: S = 1, τ = 0.5·3 − 1 = 0.5;
        // unit 1: w = (−1, +1), b = +1: S = 1, τ = 0.5. Output y = h0 − h1 + 1.
        let net = TargetNetwork::from_weights(
            2,
            0.5,
            vec![1, 1, -1, 1],
            vec![-1, 1],
            vec![1, -1],
            vec![1],
        );
        assert_eq!(net.tau, vec![0.5, 0.5]);
        // x = (1, 1): unit 0 sums 1 > 0.5 (fires), unit 1 sums 1 > 0.5 (fires): y = 1.
        assert_eq!(net.predict(&[1.0, 1.0]), vec![1.0]);
        // x = (1, 0): unit 0 sums 0 (no), unit 1 sums 0 (no): y = 1.
        assert_eq!(net.predict(&[1.0, 0.0]), vec![1.0]);
        // x = (0, 1): unit 0 sums 0 (no), unit 1 sums 2 (fires): y = 0.
        assert_eq!(net.predict(&[0.0, 1.0]), vec![0.0]);
        // x = (0, 0): unit 1 sums 1 (fires): y = 0.
        assert_eq!(net.features(&[0.0, 0.0]), vec![0, 1]);
    }

    #[test]
    fn streams_are_seeded_and_order_free() {
        let s = RegressionSettings {
            outputs: 3,
            ..RegressionSettings::default()
        };
        let a = RegressionStream::new(&s, 1);
        let later = a.task(7, 20);
        let b = RegressionStream::new(&s, 1);
        assert_eq!(b.task(7, 20), later);
        assert_eq!(later.targets.len(), 60);
        assert_ne!(RegressionStream::new(&s, 2).task(7, 20), later);
    }

    #[test]
    fn bad_settings_name_the_field_and_the_range() {
        let bad = |s: RegressionSettings| s.validate().unwrap_err();
        let d = RegressionSettings::default;
        let e = bad(RegressionSettings {
            slow_bits: 21,
            ..d()
        });
        assert_eq!(e.field, "regression.slow_bits");
        assert!(e.allowed.contains("1..=20"), "{e}");
        assert_eq!(
            bad(RegressionSettings { bits: 0, ..d() }).field,
            "regression.bits"
        );
        assert_eq!(
            bad(RegressionSettings { beta: 1.5, ..d() }).field,
            "regression.beta"
        );
        assert_eq!(
            bad(RegressionSettings { outputs: 0, ..d() }).field,
            "regression.outputs"
        );
        assert_eq!(
            bad(RegressionSettings {
                target_hidden: 0,
                ..d()
            })
            .field,
            "regression.target_hidden"
        );
        assert!(d().validate().is_ok());
    }
}
