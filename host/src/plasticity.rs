//! The unit-replacement and perturbation baselines around the optimizer step: continual
//! backprop (Dohare et al. 2024), ReDo (Sokar et al. 2023) and shrink and perturb (Ash &
//! Adams 2020, as Dohare et al. use it). The engines do the surgery
//! ([`Backend::reinit_units`], [`Backend::shrink_perturb`]); which units, and when, is
//! decided here.

use safestep_engine::{Backend, BackendError, UnitStats};
use serde::{Deserialize, Serialize};

use crate::methods::{Method, MethodSettings};
use crate::seeds::derive_seed;

/// Seeds of the replacements, by purpose (see [`crate::seeds`]).
const SEED_REINIT: u64 = 4;
const SEED_PERTURB: u64 = 5;

/// Continual backprop's state of one hidden layer.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct UnitTracker {
    /// Running contribution utility per unit.
    pub utility: Vec<f64>,
    /// Steps since each unit was (re)initialised.
    pub age: Vec<u64>,
    /// The fractional number of replacements owed (ρ × mature units, accumulated).
    pub owed: f64,
}

/// The per-step part of a method that replaces units or perturbs parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct Plasticity {
    method: Method,
    settings: MethodSettings,
    /// One per hidden layer (continual backprop only).
    trackers: Vec<UnitTracker>,
}

impl Plasticity {
    /// The state of `method` for hidden layers of `hidden_units` units each (`None` for a
    /// method that does neither).
    pub fn new(method: Method, settings: &MethodSettings, hidden_units: &[usize]) -> Option<Self> {
        matches!(method, Method::Cbp | Method::Redo | Method::ShrinkPerturb).then(|| Plasticity {
            method,
            settings: settings.clone(),
            trackers: hidden_units
                .iter()
                .map(|&n| UnitTracker {
                    utility: vec![0.0; n],
                    age: vec![0; n],
                    owed: 0.0,
                })
                .collect(),
        })
    }

    /// Whether the step needs [`Backend::unit_stats`] of its batch (read between the
    /// forward-backward pass and the Adam step).
    pub fn needs_unit_stats(&self, step: u64) -> bool {
        match self.method {
            Method::Cbp => true,
            Method::Redo => (step + 1).is_multiple_of(self.settings.redo_interval),
            _ => false,
        }
    }

    /// After the Adam step of optimizer step `step` (0-based): replace units or shrink
    /// and perturb, as the method says. `stats` are the step's [`UnitStats`] when
    /// [`Plasticity::needs_unit_stats`] asked for them. Returns the units replaced.
    ///
    /// # Errors
    /// The backend's.
    pub fn after_step(
        &mut self,
        backend: &mut dyn Backend,
        stats: Option<&[UnitStats]>,
        step: u64,
        seed: u64,
    ) -> Result<usize, BackendError> {
        let s = &self.settings;
        let chosen: Vec<Vec<usize>> = match (self.method, stats) {
            (Method::Cbp, Some(stats)) => cbp_select(&mut self.trackers, stats, s),
            (Method::Redo, Some(stats)) => {
                stats.iter().map(|u| dormant(u, s.redo_threshold)).collect()
            }
            (Method::ShrinkPerturb, _) => {
                if (step + 1).is_multiple_of(s.perturb_interval as u64) {
                    backend.shrink_perturb(
                        s.shrink as f32,
                        s.perturb as f32,
                        derive_seed(seed, SEED_PERTURB, step),
                    )?;
                }
                return Ok(0);
            }
            _ => return Ok(0),
        };
        let mut replaced = 0;
        for (l, units) in chosen.iter().enumerate() {
            if !units.is_empty() {
                let layer_seed = derive_seed(seed, SEED_REINIT, step.wrapping_mul(64) + l as u64);
                backend.reinit_units(l, units, layer_seed)?;
                replaced += units.len();
            }
        }
        Ok(replaced)
    }

    /// Continual backprop's trackers, for checkpoints.
    pub fn trackers(&self) -> &[UnitTracker] {
        &self.trackers
    }

    /// Restores trackers saved by [`Plasticity::trackers`] (same layer sizes).
    ///
    /// # Errors
    /// [`BackendError::LengthMismatch`] when the layers or units differ.
    pub fn set_trackers(&mut self, trackers: &[UnitTracker]) -> Result<(), BackendError> {
        let mismatch = |expected, found| BackendError::LengthMismatch {
            what: "checkpoint unit trackers",
            expected,
            found,
        };
        if trackers.len() != self.trackers.len() {
            return Err(mismatch(self.trackers.len(), trackers.len()));
        }
        for (mine, theirs) in self.trackers.iter().zip(trackers) {
            let n = mine.utility.len();
            if theirs.utility.len() != n || theirs.age.len() != n {
                return Err(mismatch(n, theirs.utility.len()));
            }
        }
        self.trackers = trackers.to_vec();
        Ok(())
    }
}

/// Continual backprop's choice for one step: update every unit's running contribution
/// utility `u ← η u + (1−η)·activity·Σ|outgoing|` and age, then, per layer, owe
/// `ρ × (mature units)` more replacements and replace that many (rounded down) of the
/// mature units with the lowest utility (ties by index). Replaced units restart at utility
/// 0 and age 0.
pub fn cbp_select(
    trackers: &mut [UnitTracker],
    stats: &[UnitStats],
    s: &MethodSettings,
) -> Vec<Vec<usize>> {
    trackers
        .iter_mut()
        .zip(stats)
        .map(|(t, u)| {
            let eta = s.utility_decay;
            for ((util, age), (&a, &o)) in t
                .utility
                .iter_mut()
                .zip(&mut t.age)
                .zip(u.activity.iter().zip(&u.outgoing))
            {
                *util = eta * *util + (1.0 - eta) * f64::from(a) * f64::from(o);
                *age += 1;
            }
            let mut mature: Vec<usize> = (0..t.age.len())
                .filter(|&j| t.age[j] > s.maturity)
                .collect();
            t.owed += s.replacement_rate * mature.len() as f64;
            let n = (t.owed.floor() as usize).min(mature.len());
            t.owed -= n as f64;
            mature.sort_by(|&a, &b| t.utility[a].total_cmp(&t.utility[b]).then(a.cmp(&b)));
            mature.truncate(n);
            for &j in &mature {
                t.utility[j] = 0.0;
                t.age[j] = 0;
            }
            mature.sort_unstable();
            mature
        })
        .collect()
}

/// ReDo's dormant units of one layer: activity over the layer's mean activity at most
/// `tau` (all of them when the whole layer is silent).
pub fn dormant(u: &UnitStats, tau: f64) -> Vec<usize> {
    let n = u.activity.len().max(1) as f64;
    let mean = u.activity.iter().map(|&a| f64::from(a)).sum::<f64>() / n;
    (0..u.activity.len())
        .filter(|&j| mean <= 0.0 || f64::from(u.activity[j]) / mean <= tau)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MethodSettings {
        MethodSettings {
            replacement_rate: 0.5,
            utility_decay: 0.0,
            maturity: 1,
            ..MethodSettings::default()
        }
    }

    #[test]
    fn cbp_replaces_the_lowest_utility_mature_units_and_no_others() {
        let mut trackers = vec![UnitTracker {
            utility: vec![0.0; 4],
            age: vec![0, 5, 5, 5],
            owed: 0.0,
        }];
        // Utilities (η = 0): 4·1, 1·1, 3·1, 2·1; unit 0 is young (age 1 after this step).
        let stats = [UnitStats {
            activity: vec![4.0, 1.0, 3.0, 2.0],
            outgoing: vec![1.0; 4],
        }];
        let chosen = cbp_select(&mut trackers, &stats, &settings());
        // 3 mature units × ρ 0.5 = 1.5 owed: one replaced now (unit 1, the lowest), 0.5 left.
        assert_eq!(chosen, vec![vec![1]]);
        assert_eq!(trackers[0].owed, 0.5);
        assert_eq!((trackers[0].age[1], trackers[0].utility[1]), (0, 0.0));
        assert_eq!(trackers[0].age[0], 1);
        // Next step: ages 2, 1, 7, 7, so units 0, 2 and 3 are mature.
        let chosen = cbp_select(&mut trackers, &stats, &settings());
        // owed 0.5 + 0.5·3 = 2: the two lowest mature units, 3 (2.0) and 2 (3.0).
        assert_eq!(chosen, vec![vec![2, 3]]);
    }

    #[test]
    fn redo_recycles_units_far_below_the_mean_activity() {
        let u = UnitStats {
            activity: vec![1.0, 0.05, 1.0, 0.0, 0.9],
            outgoing: vec![1.0; 5],
        };
        // Mean 0.59: 0.05/0.59 = 0.085 <= 0.1, 0 <= 0.1.
        assert_eq!(dormant(&u, 0.1), vec![1, 3]);
        assert_eq!(
            dormant(
                &UnitStats {
                    activity: vec![0.0; 3],
                    outgoing: vec![0.0; 3]
                },
                0.1
            ),
            vec![0, 1, 2]
        );
    }
}
