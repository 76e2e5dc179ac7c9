//! safestep-gpu: the CUDA runner. Everything CUDA is behind the `cuda` feature.
