"""Type stubs of the extension module (safestep-core through pyo3).

Every ``SchedulerConfig`` and ``Report`` field is listed; ``tests/test_stubs.py`` fails
when the core gains a field these stubs do not list.
"""

from typing import Any, Callable, Dict, List, Literal, Mapping, Optional, Protocol, Tuple, Union


__version__: str
#: The volatility window capacity of every LayerScheduler (a config's window <= this).
WINDOW_CAPACITY: int
#: The format number a LayerScheduler's state starts with.
STATE_FORMAT: int
#: The accepted names of every option field (and of ``decision``).
OPTIONS: Dict[str, List[str]]

Mode = Literal["off", "gradient", "volatility", "combined"]
StepMeasure = Literal["normalized", "preconditioned", "mean"]
SnrEstimator = Literal["ema", "raw"]
VolatilityEstimator = Literal["window", "ema"]
TaskBoundary = Literal["carry", "reset-stats", "reset-lr"]
Threshold = Literal["sgd", "momentum"]
NoiseAveraging = Literal["minibatch", "momentum"]
Control = Literal["early-warm", "symmetric", "proportional"]
Decision = Literal["cool", "warm", "hold"]

class _Buffer(Protocol):
    def __buffer__(self, flags: int, /) -> memoryview: ...

#: Anything with the buffer protocol (NumPy array, bytes-like, memoryview), float32/float64.
Buffer = Union[_Buffer, memoryview, bytes, bytearray, Any]
#: ``hvp(x) -> H·x``: ``x`` a fresh 1-D array (NumPy when installed, else a memoryview).
Hvp = Callable[[Any], Any]

class SchedulerConfig:
    """Every constant of the scheduler, with safestep-core's names and defaults.

    Immutable; validated on construction (``ValueError`` naming the field). Unknown keyword
    arguments raise ``ValueError``."""

    #: The field names, in the core's declaration order.
    FIELDS: Tuple[str, ...]
    mode: Mode
    measure: StepMeasure
    interval: int
    safety: float
    beta: float
    window: int
    snr_ema_decay: float
    snr_estimator: SnrEstimator
    volatility_estimator: VolatilityEstimator
    cool: float
    warm: float
    warm_fraction: float
    timid: float
    lr_min: float
    lr_max: float
    boundary: TaskBoundary
    threshold: Threshold
    noise_averaging: NoiseAveraging
    control: Control
    kappa: float
    beta1: float
    def __init__(
        self,
        *,
        mode: Mode = "combined",
        measure: StepMeasure = "normalized",
        interval: int = 10,
        safety: float = 0.8,
        beta: float = 1.0,
        window: int = 20,
        snr_ema_decay: float = 0.9,
        snr_estimator: SnrEstimator = "ema",
        volatility_estimator: VolatilityEstimator = "window",
        cool: float = 0.99,
        warm: float = 1.01,
        warm_fraction: float = 0.3,
        timid: float = 0.1,
        lr_min: float = 1e-6,
        lr_max: float = 1e-2,
        boundary: TaskBoundary = "carry",
        threshold: Threshold = "sgd",
        noise_averaging: NoiseAveraging = "minibatch",
        control: Control = "early-warm",
        kappa: float = 1.0,
        beta1: float = 0.9,
    ) -> None: ...
    def validate(self) -> None:
        """Re-checks every field against the core's ranges (construction already did)."""
    def is_event(self, step: int) -> bool:
        """Whether optimizer step ``step`` (from 0) is a controller event."""
    def replace(self, **changes: Any) -> "SchedulerConfig":
        """A validated copy with some fields changed."""
    def to_dict(self) -> Dict[str, Any]:
        """Every field (enums as their names)."""
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class NoiseStats:
    """Gradient-noise statistics of one layer on one minibatch (float64)."""

    @staticmethod
    def from_sample_sq_norms(
        mean_grad_sq: float, sum_sample_sq_norms: float, batch: int, population: Optional[int] = None
    ) -> "NoiseStats":
        """From ``‖ḡ‖²`` and ``Σ_i ‖g_i‖²``: ``S = max(0, (Σ‖g_i‖² − B‖ḡ‖²)/(B−1))``."""
    @staticmethod
    def from_sample_grads(
        mean_grad: Buffer, sample_grads: Buffer, population: Optional[int] = None
    ) -> "NoiseStats":
        """From the mean gradient (P floats) and the per-sample gradients (B × P, 2-D or a
        1-D buffer of length B·P), float32 or float64."""
    @staticmethod
    def from_variance(
        mean_grad_sq: float, variance: float, batch: int, population: Optional[int] = None
    ) -> "NoiseStats":
        """From ``‖ḡ‖²`` and an already computed unbiased variance ``S``."""
    @staticmethod
    def from_dict(fields: Mapping[str, Any]) -> "NoiseStats":
        """Rebuilds statistics from ``to_dict()`` exactly."""
    @property
    def batch(self) -> int: ...
    @property
    def mean_grad_sq(self) -> float: ...
    @property
    def variance(self) -> float:
        """``S``, the unbiased per-sample variance summed over the layer."""
    @property
    def noise(self) -> float:
        """``S/B·fpc``, the variance of the minibatch mean."""
    @property
    def unbiased_grad_sq(self) -> float:
        """``G² = max(0, ‖ḡ‖² − noise)``."""
    @property
    def grad_sq(self) -> float:
        """Alias of ``unbiased_grad_sq`` (it is not ``‖ḡ‖²``)."""
    @property
    def unbiased_grad_sq_unclamped(self) -> float: ...
    @property
    def snr_g(self) -> float:
        """``SNR_g = G²/noise`` (``inf`` without noise, 0 when ``G² = 0``)."""
    def to_dict(self) -> Dict[str, Any]: ...

class Report:
    """A decision and every number behind it."""

    decision: Decision
    lr_before: float
    lr_after: float
    rho: float
    vol: float
    snr_g: float
    snr_v: float
    snr: float
    rho_g: float
    rho_vol: float
    rho_combined: float
    bound: float
    g2_ema: float
    noise_ema: float
    def to_dict(self) -> Dict[str, Any]: ...

class LayerScheduler:
    """One layer's scheduler (safestep-core's ``LayerScheduler<f64, 256>``)."""

    def __init__(
        self, config: Union[SchedulerConfig, Mapping[str, Any], None], lr0: float
    ) -> None: ...
    @staticmethod
    def from_state_dict(state: Mapping[str, Any]) -> "LayerScheduler": ...
    @property
    def config(self) -> SchedulerConfig: ...
    @property
    def lr(self) -> float:
        """The learning rate for the next steps."""
    @property
    def lr0(self) -> float: ...
    @property
    def events(self) -> int: ...
    def observe(
        self,
        alpha_agg: float,
        sharpness: float,
        noise: NoiseStats,
        *,
        mean_multiplier: float = 0.0,
        lr_used: Optional[float] = None,
        step_in_task: int = 0,
        steps_per_task: Optional[int] = None,
        step: int = 0,
        total_steps: Optional[int] = None,
    ) -> Report:
        """One controller event; updates ``lr``. ``ValueError`` (and no change) on bad input."""
    def reset_task(self) -> None:
        """Forget the volatility history and the SNR EMAs; keep the lr."""
    def begin_task(self) -> None:
        """A new task: what ``config.boundary`` says."""
    def state_dict(self) -> Dict[str, Any]:
        """``{"config": dict, "state": [float, ...]}``, exact."""
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

class Bounds:
    """All three bounds and their SNRs."""

    @property
    def rho_g(self) -> float: ...
    @property
    def rho_vol(self) -> float: ...
    @property
    def rho_combined(self) -> float: ...
    @property
    def snr_g(self) -> float: ...
    @property
    def snr_v(self) -> float: ...
    @property
    def snr(self) -> float: ...
    def to_dict(self) -> Dict[str, float]: ...

def bounds(
    snr_g: float, vol: float, batch: int, safety: float = 0.8, beta: float = 1.0
) -> Bounds:
    """``ρ*_g``, ``ρ*_vol``, ``ρ̃*`` and the SNRs (safestep-core's ``Bounds::compute``)."""

class PowerIteration:
    """Warm-started power iteration for a layer's sharpness."""

    def __init__(self, tol: float = 1e-3, max_iters: int = 20) -> None: ...
    def estimate(self, v: Buffer, hvp: Hvp, precond: Optional[Buffer] = None) -> float:
        """Rayleigh quotient of ``H`` (or ``D^½ H D^½``); ``v`` is updated in place."""
    def restart(self) -> None: ...
    @property
    def eigenvalue(self) -> float: ...
    @property
    def is_warm(self) -> bool: ...
    @property
    def converged(self) -> bool: ...
    @property
    def iterations(self) -> int: ...
    @property
    def tol(self) -> float: ...
    @property
    def max_iters(self) -> int: ...
    def state_dict(self) -> Dict[str, Any]: ...
    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...

def top_eigenvalue(
    magnitude: PowerIteration,
    top: PowerIteration,
    v: Buffer,
    v_top: Buffer,
    hvp: Hvp,
    precond: Optional[Buffer] = None,
) -> float:
    """The largest algebraic eigenvalue (a shifted second iteration when the
    largest-magnitude one is negative)."""
