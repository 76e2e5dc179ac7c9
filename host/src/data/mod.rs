//! Data layer: the IDX reader, MNIST loading (embedded subset or a directory of the standard
//! files) and the deterministic continual-learning task streams.

pub mod embedded;
pub mod idx;
pub mod mnist;
pub mod streams;

pub use mnist::{DataError, Mnist};
pub use streams::{Benchmark, Task, TaskStream};
