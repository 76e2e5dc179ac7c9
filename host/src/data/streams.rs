//! Continual-learning task streams over a fixed subset of MNIST, deterministic from a seed.
//!
//! A [`TaskStream`] picks `examples` digits from the data once (a seeded sample without
//! replacement); [`TaskStream::task`]`(k)` then builds task `k` from those digits:
//!
//! * [`Benchmark::RandomLabelMnist`]: every digit gets a fresh uniformly random label in 0–9;
//! * [`Benchmark::PermutedMnist`]: the true labels, pixels shuffled by a random permutation
//!   fixed for the task;
//! * [`Benchmark::LabelPermutedMnist`]: the images unchanged, labels mapped through a random
//!   permutation of the 10 classes.
//!
//! Randomness comes from ChaCha8 with explicit seeds: the subset from stream 0 of the seed's
//! generator and task `k` from stream `k + 1`, so `task(k)` depends only on
//! (benchmark, data, examples, seed, k) and can be built in any order.
//!
//! ```
//! use safestep_host::data::{Benchmark, Mnist, TaskStream};
//! let mnist = Mnist::embedded().unwrap();
//! let stream = TaskStream::new(Benchmark::RandomLabelMnist, &mnist, 100, 7).unwrap();
//! let a = stream.task(3);
//! assert_eq!(a.labels.len(), 100);
//! assert_eq!(a, stream.task(3)); // same task, same data
//! assert_ne!(a.labels, stream.task(4).labels);
//! ```

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::mnist::{DataError, Mnist};

/// The continual-learning benchmarks (named as on the command line and in `config.toml`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum Benchmark {
    /// Random-label MNIST (the paper's main loss-of-trainability benchmark); the default.
    #[default]
    RandomLabelMnist,
    /// Permuted MNIST: a fixed random pixel permutation per task.
    PermutedMnist,
    /// Label-permuted MNIST: a random class-to-label permutation per task.
    LabelPermutedMnist,
    /// Online permuted MNIST (Dohare et al. 2024): the permuted-MNIST tasks, each seen in
    /// one pass with a small batch (1 by default); its metric is the online accuracy.
    OnlinePermutedMnist,
    /// Slowly-changing regression (Dohare et al. 2024): generated bit inputs, targets from a
    /// fixed random LTU network, one slow bit flipped per task, a squared-error loss; no
    /// MNIST ([`crate::data::regression`]). Its metric is the squared error.
    SlowlyChangingRegression,
}

impl Benchmark {
    /// All benchmarks, default first.
    pub const ALL: [Benchmark; 5] = [
        Benchmark::RandomLabelMnist,
        Benchmark::PermutedMnist,
        Benchmark::LabelPermutedMnist,
        Benchmark::OnlinePermutedMnist,
        Benchmark::SlowlyChangingRegression,
    ];

    /// The MNIST benchmarks ([`TaskStream`] builds their tasks).
    pub const MNIST: [Benchmark; 4] = [
        Benchmark::RandomLabelMnist,
        Benchmark::PermutedMnist,
        Benchmark::LabelPermutedMnist,
        Benchmark::OnlinePermutedMnist,
    ];

    /// Whether this is the regression benchmark (squared error, no accuracy).
    pub fn is_regression(self) -> bool {
        self == Benchmark::SlowlyChangingRegression
    }

    /// Command-line name (`random-label-mnist`, `permuted-mnist`, `label-permuted-mnist`).
    pub fn as_str(self) -> &'static str {
        match self {
            Benchmark::RandomLabelMnist => "random-label-mnist",
            Benchmark::PermutedMnist => "permuted-mnist",
            Benchmark::LabelPermutedMnist => "label-permuted-mnist",
            Benchmark::OnlinePermutedMnist => "online-permuted-mnist",
            Benchmark::SlowlyChangingRegression => "slowly-changing-regression",
        }
    }
}

impl core::fmt::Display for Benchmark {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown benchmark name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown benchmark {0:?} (allowed: random-label-mnist, permuted-mnist, label-permuted-mnist, online-permuted-mnist, slowly-changing-regression)"
)]
pub struct UnknownBenchmark(pub String);

impl core::str::FromStr for Benchmark {
    type Err = UnknownBenchmark;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Benchmark::ALL
            .into_iter()
            .find(|b| b.as_str() == s)
            .ok_or_else(|| UnknownBenchmark(s.to_string()))
    }
}

/// One task: `n × 784` pixels in `[0, 1]` and `n` labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Task {
    /// Row-major pixels.
    pub images: Vec<f32>,
    /// Labels 0–9.
    pub labels: Vec<u8>,
}

impl Task {
    /// Number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the task has no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// Domain separators so the subset and the tasks never share a key.
const SUBSET_DOMAIN: u64 = 0x5afe_57e9_0000_0001;
const TASK_DOMAIN: u64 = 0x5afe_57e9_0000_0002;

/// The digits a stream of `examples` draws from a data set of `n` (seeded, without
/// replacement), in the stream's order.
///
/// # Errors
/// [`DataError::BadExampleCount`] when `examples` is 0 or exceeds `n`.
pub fn subset_order(n: usize, examples: usize, seed: u64) -> Result<Vec<usize>, DataError> {
    if examples == 0 || examples > n {
        return Err(DataError::BadExampleCount {
            requested: examples,
            available: n,
        });
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ SUBSET_DOMAIN);
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng);
    order.truncate(examples);
    Ok(order)
}

/// A deterministic sequence of tasks over a fixed subset of digits.
#[derive(Debug, Clone)]
pub struct TaskStream {
    benchmark: Benchmark,
    seed: u64,
    images: Vec<f32>,
    labels: Vec<u8>,
}

impl TaskStream {
    /// Draws `examples` digits of `data` (seeded, without replacement) for the stream of an
    /// MNIST benchmark ([`Benchmark::MNIST`]). Errors when `examples` is 0 or exceeds
    /// `data.n`, or for [`Benchmark::SlowlyChangingRegression`] (it uses no digits).
    pub fn new(
        benchmark: Benchmark,
        data: &Mnist,
        examples: usize,
        seed: u64,
    ) -> Result<Self, DataError> {
        if benchmark.is_regression() {
            return Err(DataError::NotMnist {
                benchmark: benchmark.as_str(),
            });
        }
        let order = subset_order(data.n, examples, seed)?;
        let mut images = Vec::with_capacity(examples * Mnist::PIXELS);
        let mut labels = Vec::with_capacity(examples);
        for &i in &order {
            images.extend_from_slice(data.image(i));
            labels.push(data.labels[i]);
        }
        Ok(Self::from_subset(benchmark, images, labels, seed))
    }

    /// The stream over digits already drawn by [`subset_order`] (in its order), e.g. by
    /// [`Mnist::load_subset`], which reads only them from the files. For an MNIST benchmark
    /// ([`Benchmark::MNIST`]); [`TaskStream::new`] refuses the others.
    pub fn from_subset(benchmark: Benchmark, images: Vec<f32>, labels: Vec<u8>, seed: u64) -> Self {
        TaskStream {
            benchmark,
            seed,
            images,
            labels,
        }
    }

    /// The benchmark.
    pub fn benchmark(&self) -> Benchmark {
        self.benchmark
    }

    /// Examples per task.
    pub fn examples(&self) -> usize {
        self.labels.len()
    }

    /// The subset's digits with their true labels (what every task is built from).
    pub fn base(&self) -> (&[f32], &[u8]) {
        (&self.images, &self.labels)
    }

    /// Task `k` (0-based), a pure function of the stream's parameters and `k`.
    pub fn task(&self, k: u64) -> Task {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ TASK_DOMAIN);
        rng.set_stream(k.wrapping_add(1));
        match self.benchmark {
            Benchmark::RandomLabelMnist => Task {
                images: self.images.clone(),
                labels: (0..self.labels.len())
                    .map(|_| rng.random_range(0..Mnist::CLASSES as u8))
                    .collect(),
            },
            Benchmark::PermutedMnist | Benchmark::OnlinePermutedMnist => {
                let mut perm: Vec<usize> = (0..Mnist::PIXELS).collect();
                perm.shuffle(&mut rng);
                let mut images = vec![0.0f32; self.images.len()];
                for (dst, src) in images
                    .chunks_exact_mut(Mnist::PIXELS)
                    .zip(self.images.chunks_exact(Mnist::PIXELS))
                {
                    for (d, &p) in dst.iter_mut().zip(&perm) {
                        *d = src[p];
                    }
                }
                Task {
                    images,
                    labels: self.labels.clone(),
                }
            }
            // Not an MNIST stream (new() refuses it): the digits as they are.
            Benchmark::SlowlyChangingRegression => Task {
                images: self.images.clone(),
                labels: self.labels.clone(),
            },
            Benchmark::LabelPermutedMnist => {
                let mut perm: Vec<u8> = (0..Mnist::CLASSES as u8).collect();
                perm.shuffle(&mut rng);
                Task {
                    images: self.images.clone(),
                    labels: self.labels.iter().map(|&l| perm[l as usize]).collect(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_mnist(n: usize) -> Mnist {
        let images = (0..n * Mnist::PIXELS)
            .map(|i| (i % 97) as f32 / 97.0)
            .collect();
        Mnist {
            images,
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            n,
        }
    }

    #[test]
    fn streams_are_deterministic_and_order_free() {
        let m = tiny_mnist(50);
        assert!(TaskStream::new(Benchmark::SlowlyChangingRegression, &m, 30, 11).is_err());
        for b in Benchmark::MNIST {
            let s1 = TaskStream::new(b, &m, 30, 11).unwrap();
            let s2 = TaskStream::new(b, &m, 30, 11).unwrap();
            let later = s2.task(5);
            assert_eq!(s1.task(5), later, "{b}");
            assert_eq!(s1.task(0), s2.task(0), "{b}");
            assert_ne!(s1.task(0), s1.task(1), "{b}");
            let other = TaskStream::new(b, &m, 30, 12).unwrap();
            assert_ne!(s1.task(0), other.task(0), "{b}");
        }
    }

    #[test]
    fn task_contents_follow_the_benchmark() {
        let m = tiny_mnist(40);
        let s = TaskStream::new(Benchmark::RandomLabelMnist, &m, 40, 3).unwrap();
        let (base_img, base_lab) = s.base();
        let t = s.task(2);
        assert_eq!(t.images, base_img);
        assert!(t.labels.iter().all(|&l| l < 10));
        assert_ne!(t.labels, base_lab);

        let s = TaskStream::new(Benchmark::PermutedMnist, &m, 40, 3).unwrap();
        let (base_img, base_lab) = s.base();
        let t = s.task(2);
        assert_eq!(t.labels, base_lab);
        // Each image is a permutation of its source: same multiset of pixel values.
        for (a, b) in t.images.chunks(784).zip(base_img.chunks(784)) {
            let (mut a, mut b) = (a.to_vec(), b.to_vec());
            a.sort_by(f32::total_cmp);
            b.sort_by(f32::total_cmp);
            assert_eq!(a, b);
        }
        assert_ne!(t.images, base_img);

        let s = TaskStream::new(Benchmark::LabelPermutedMnist, &m, 40, 3).unwrap();
        let (base_img, base_lab) = s.base();
        let t = s.task(2);
        assert_eq!(t.images, base_img);
        // A consistent class mapping: equal labels stay equal, different stay different.
        for i in 0..40 {
            for j in 0..40 {
                assert_eq!(base_lab[i] == base_lab[j], t.labels[i] == t.labels[j]);
            }
        }
    }

    #[test]
    fn subset_is_a_sample_without_replacement() {
        let m = tiny_mnist(60);
        let s = TaskStream::new(Benchmark::RandomLabelMnist, &m, 60, 1).unwrap();
        let (img, _) = s.base();
        let mut firsts: Vec<u32> = img
            .chunks(784)
            .map(|c| (c[0] * 97.0).round() as u32)
            .collect();
        firsts.sort();
        let mut expect: Vec<u32> = (0..60).map(|i| ((i * 784) % 97) as u32).collect();
        expect.sort();
        assert_eq!(firsts, expect);
    }

    #[test]
    fn bad_example_counts_and_names() {
        let m = tiny_mnist(5);
        assert!(matches!(
            TaskStream::new(Benchmark::PermutedMnist, &m, 0, 1),
            Err(DataError::BadExampleCount {
                requested: 0,
                available: 5
            })
        ));
        assert!(TaskStream::new(Benchmark::PermutedMnist, &m, 6, 1).is_err());
        for b in Benchmark::ALL {
            assert_eq!(b.as_str().parse::<Benchmark>().unwrap(), b);
        }
        assert!("mnist".parse::<Benchmark>().is_err());
    }
}
