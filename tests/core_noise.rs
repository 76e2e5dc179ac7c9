//! Gradient-noise statistics against simulation and two-pass references.

mod core_support;
use core_support::{mean_se, Rng};
use proptest::prelude::*;
use safestep_core::noise::NoiseStats;

/// B per-sample gradients g + σ_j ζ, row-major, and their mean.
fn minibatch(rng: &mut Rng, g: &[f64], sigma: &[f64], b: usize) -> (Vec<f64>, Vec<f64>) {
    let p = g.len();
    let samples: Vec<f64> = (0..b * p)
        .map(|k| g[k % p] + sigma[k % p] * rng.normal())
        .collect();
    let mean = (0..p)
        .map(|j| (0..b).map(|i| samples[i * p + j]).sum::<f64>() / b as f64)
        .collect();
    (samples, mean)
}

#[test]
fn g2_is_unbiased_for_true_grad_sq() {
    let mut rng = Rng::new(1);
    let p = 30;
    let g: Vec<f64> = (0..p).map(|j| 0.05 * ((j as f64) * 0.7).sin()).collect();
    let sigma: Vec<f64> = (0..p).map(|j| 0.5 + (j % 3) as f64 * 0.25).collect();
    let true_sq: f64 = g.iter().map(|x| x * x).sum();
    for b in [2usize, 8, 64] {
        let mut unclamped = Vec::new();
        let mut naive = Vec::new();
        for _ in 0..6000 {
            let (s, m) = minibatch(&mut rng, &g, &sigma, b);
            let n = NoiseStats::from_sample_grads(&m, s.chunks_exact(p), None).unwrap();
            unclamped.push(n.mean_grad_sq - n.noise);
            naive.push(n.mean_grad_sq);
        }
        let (mean, se) = mean_se(&unclamped);
        assert!(
            (mean - true_sq).abs() < 4.0 * se,
            "B={b}: {mean} ± {se} vs {true_sq}"
        );
        // The test has power: the naive ‖ḡ‖² is biased by S/B, many standard errors away.
        let (nmean, nse) = mean_se(&naive);
        assert!(
            (nmean - true_sq) > 10.0 * nse,
            "B={b}: naive {nmean} ± {nse}"
        );
    }
}

#[test]
fn g2_clamped_is_unbiased_at_high_snr() {
    let mut rng = Rng::new(2);
    let g = vec![1.0, -2.0, 0.5];
    let sigma = vec![0.3, 0.3, 0.3];
    let true_sq = 5.25;
    let vals: Vec<f64> = (0..5000)
        .map(|_| {
            let (s, m) = minibatch(&mut rng, &g, &sigma, 16);
            NoiseStats::from_sample_grads(&m, s.chunks_exact(3), None)
                .unwrap()
                .unbiased_grad_sq
        })
        .collect();
    let (mean, se) = mean_se(&vals);
    assert!((mean - true_sq).abs() < 4.0 * se, "{mean} ± {se}");
}

#[test]
fn finite_population_factor_makes_g2_unbiased() {
    // Population of N fixed gradients; minibatches of B drawn without replacement.
    let mut rng = Rng::new(3);
    let (n_pop, b, p) = (20usize, 8usize, 4usize);
    let pop: Vec<f64> = (0..n_pop * p)
        .map(|k| 0.1 * (k % p) as f64 + rng.normal())
        .collect();
    let g: Vec<f64> = (0..p)
        .map(|j| (0..n_pop).map(|i| pop[i * p + j]).sum::<f64>() / n_pop as f64)
        .collect();
    let true_sq: f64 = g.iter().map(|x| x * x).sum();
    let mut ours = Vec::new();
    let mut design = Vec::new(); // the (N−B)/(N−1) factor of DESIGN.md
    let mut idx: Vec<usize> = (0..n_pop).collect();
    for _ in 0..40_000 {
        for i in 0..b {
            let j = i + rng.below(n_pop - i);
            idx.swap(i, j);
        }
        let samples: Vec<f64> = idx[..b]
            .iter()
            .flat_map(|&i| pop[i * p..(i + 1) * p].iter().copied())
            .collect();
        let m: Vec<f64> = (0..p)
            .map(|j| (0..b).map(|i| samples[i * p + j]).sum::<f64>() / b as f64)
            .collect();
        let n = NoiseStats::from_sample_grads(&m, samples.chunks_exact(p), Some(n_pop)).unwrap();
        ours.push(n.mean_grad_sq - n.noise);
        let alt_noise = n.variance / b as f64 * (n_pop - b) as f64 / (n_pop - 1) as f64;
        design.push(n.mean_grad_sq - alt_noise);
    }
    let (mean, se) = mean_se(&ours);
    assert!(
        (mean - true_sq).abs() < 4.0 * se,
        "{mean} ± {se} vs {true_sq}"
    );
    let (dmean, dse) = mean_se(&design);
    assert!(
        (dmean - true_sq).abs() > 4.0 * dse,
        "the test can tell the factors apart: {dmean} ± {dse}"
    );
}

#[test]
fn snr_g_near_zero_on_pure_noise_while_naive_ratio_is_about_one() {
    let mut rng = Rng::new(4);
    let p = 50;
    let b = 32;
    let g = vec![0.0; p];
    let sigma = vec![1.0; p];
    let (mut g2, mut noise, mut naive) = (0.0, 0.0, 0.0);
    let events = 400;
    for _ in 0..events {
        let (s, m) = minibatch(&mut rng, &g, &sigma, b);
        let n = NoiseStats::from_sample_grads(&m, s.chunks_exact(p), None).unwrap();
        g2 += n.unbiased_grad_sq_unclamped();
        noise += n.noise;
        naive += n.mean_grad_sq / n.noise;
    }
    let snr = g2.max(0.0) / noise; // the scheduler's ratio of averages, clamped after averaging
    assert!(snr < 0.05, "SNR_g on pure noise = {snr}");
    let naive = naive / events as f64;
    assert!((0.8..1.3).contains(&naive), "naive B‖ḡ‖²/S = {naive}");
}

proptest! {
    #![proptest_config(core_support::proptest_cases(256))]

    /// S from sample gradients equals a two-pass f64 reference that computes its own mean.
    #[test]
    fn s_equals_two_pass_reference(seed in any::<u64>(), b in 2usize..24, p in 1usize..40, offset in -1e3..1e3f64) {
        let mut rng = Rng::new(seed);
        let samples: Vec<f64> = (0..b * p).map(|_| offset + rng.normal()).collect();
        let mean: Vec<f64> = (0..p).map(|j| (0..b).map(|i| samples[i * p + j]).sum::<f64>() / b as f64).collect();
        let mut reference = 0.0;
        for j in 0..p {
            let mu = mean[j];
            for i in 0..b {
                let d = samples[i * p + j] - mu;
                reference += d * d;
            }
        }
        reference /= (b - 1) as f64;
        let n = NoiseStats::from_sample_grads(&mean, samples.chunks_exact(p), None).unwrap();
        prop_assert!((n.variance - reference).abs() <= 1e-9 * reference.max(1e-300));
        // The sum-of-norms form agrees (in f64, well conditioned here up to the offset).
        let sum_sq: f64 = samples.iter().map(|x| x * x).sum();
        let mgs: f64 = mean.iter().map(|x| x * x).sum();
        let m = NoiseStats::from_sample_sq_norms(mgs, sum_sq, b, None).unwrap();
        prop_assert!((m.variance - reference).abs() <= 1e-10 * sum_sq / (b - 1) as f64 + 1e-12);
    }

    /// In f32, with S ≪ ‖ḡ‖², the two-pass form keeps S accurate (no cancellation).
    #[test]
    fn s_stable_in_f32_when_noise_is_tiny(seed in any::<u64>(), b in 2usize..16, p in 1usize..16) {
        let mut rng = Rng::new(seed);
        let samples64: Vec<f64> = (0..b * p).map(|_| 100.0 + 1e-3 * rng.normal()).collect();
        let samples: Vec<f32> = samples64.iter().map(|&x| x as f32).collect();
        let s64: Vec<f64> = samples.iter().map(|&x| x as f64).collect();
        let mean64: Vec<f64> = (0..p).map(|j| (0..b).map(|i| s64[i * p + j]).sum::<f64>() / b as f64).collect();
        let mean32: Vec<f32> = mean64.iter().map(|&x| x as f32).collect();
        let reference: f64 = (0..b * p).map(|k| (s64[k] - mean64[k % p]).powi(2)).sum::<f64>() / (b - 1) as f64;
        let n = NoiseStats::from_sample_grads(&mean32, samples.chunks_exact(p), None).unwrap();
        // Mean rounding to f32 (half an ulp of 100 ≈ 4e-6) is the only error source left.
        let ulp_err = (b * p) as f64 * (4e-6f64).powi(2) / (b - 1) as f64;
        prop_assert!((n.variance as f64 - reference).abs() <= 0.05 * reference + 4.0 * ulp_err.sqrt() * reference.sqrt() + ulp_err,
            "{} vs {}", n.variance, reference);
    }
}
