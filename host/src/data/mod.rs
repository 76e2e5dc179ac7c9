//! Data layer: the IDX reader, MNIST loading (embedded subset or a directory of the standard
//! files), the deterministic continual-learning task streams over MNIST, and the generated
//! slowly-changing regression problem.

pub mod embedded;
pub mod idx;
pub mod mnist;
pub mod regression;
pub mod streams;

pub use mnist::{DataError, Mnist};
pub use streams::{Benchmark, Task, TaskStream};
