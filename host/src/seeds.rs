//! Seeds of a run's random streams, all derived from the run's one seed.

/// A seed for stream `purpose` at index `k`, derived from the run's seed (SplitMix64).
///
/// ```
/// use safestep_host::seeds::{derive_seed, SHUFFLE};
/// assert_eq!(derive_seed(0, SHUFFLE, 3), derive_seed(0, SHUFFLE, 3));
/// assert_ne!(derive_seed(0, SHUFFLE, 3), derive_seed(0, SHUFFLE, 4));
/// ```
pub fn derive_seed(seed: u64, purpose: u64, k: u64) -> u64 {
    let mut z = seed
        .wrapping_add(purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(k.wrapping_mul(0xbf58_476d_1ce4_e5b9));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The minibatch order of task `k`.
pub const SHUFFLE: u64 = 1;
/// The re-initialisation at task `k` (method `reset`).
pub const RESET: u64 = 2;
/// The fresh diagnostic minibatch of the controller event at step `k`.
pub const FRESH_BATCH: u64 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_seeds_differ_by_purpose_and_index() {
        let a = derive_seed(0, SHUFFLE, 0);
        assert_ne!(a, derive_seed(0, SHUFFLE, 1));
        assert_ne!(a, derive_seed(0, RESET, 0));
        assert_ne!(a, derive_seed(1, SHUFFLE, 0));
        assert_eq!(a, derive_seed(0, SHUFFLE, 0));
    }
}
