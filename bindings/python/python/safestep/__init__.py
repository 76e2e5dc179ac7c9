"""safestep: noise-curvature safe per-layer learning rates for Adam.

The scheduler of *A Unified Noise-Curvature View of Loss of Trainability* (Baveja,
Lewandowski, Schmidt), computed by the Rust crate safestep-core in float64. It never sees
tensors: per layer, hand it a few scalars at every control event (every
``config.interval`` steps) and read back that layer's learning rate.

- :class:`SchedulerConfig` -- every constant, with the core's names and defaults.
- :class:`NoiseStats` -- ``S``, the unbiased ``G²`` and ``SNR_g`` of a minibatch.
- :class:`LayerScheduler` -- one layer's cool / warm / hold scheduler; ``observe`` returns
  a :class:`Report`.
- :func:`bounds` -- the three step-size bounds and their SNRs.
- :class:`PowerIteration`, :func:`top_eigenvalue` -- a layer's sharpness from a
  Hessian-vector product callable.
- ``safestep.torch`` and ``safestep.jax`` -- adapters that compute the statistics for
  ``torch.optim.Adam`` and optax (imported only when you import them).
- ``safestep.replay`` -- replays recorded event streams (e.g. ``safestep run``'s
  ``controller.csv``) through the core.

Errors raise ``ValueError`` with the core's message, which names the input and the value.
"""

from ._safestep import (
    OPTIONS,
    STATE_FORMAT,
    WINDOW_CAPACITY,
    Bounds,
    LayerScheduler,
    NoiseStats,
    PowerIteration,
    Report,
    SchedulerConfig,
    __version__,
    bounds,
    top_eigenvalue,
)

__all__ = [
    "OPTIONS",
    "STATE_FORMAT",
    "WINDOW_CAPACITY",
    "Bounds",
    "LayerScheduler",
    "NoiseStats",
    "PowerIteration",
    "Report",
    "SchedulerConfig",
    "__version__",
    "bounds",
    "top_eigenvalue",
]
