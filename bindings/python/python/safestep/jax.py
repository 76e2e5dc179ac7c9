"""safestep for JAX + optax: per-layer learning rates from the core.

Parameters are a dict of layers (``{"dense0": {"w": ..., "b": ...}, ...}``): each
top-level entry is one layer. :class:`SafeStepOptax` builds the optimizer — ``optax.adam``
per layer wrapped in ``optax.inject_hyperparams`` and combined with ``optax.partition`` —
so each layer's learning rate is a hyperparameter in the optimizer state that the
scheduler rewrites between steps (scalars only; the jitted step is unchanged). The loop::

    from safestep.jax import SafeStepOptax

    ss = SafeStepOptax(loss_fn, params, lr0=1e-3, config=safestep.SchedulerConfig(),
                       population=len(data), steps_per_task=80)
    tx = ss.optimizer                      # use it in your jitted train step
    opt_state = tx.init(params)
    for x, y in batches:
        stats = ss.statistics(params, x, y)          # None except at events
        params, opt_state, loss = train_step(params, opt_state, x, y)
        opt_state = ss.step(opt_state, stats)        # observe; set the layers' lrs

``loss_fn(params, x, y)`` returns the minibatch's mean loss. At an event (every
``config.interval`` steps from step ``interval`` on) :meth:`SafeStepOptax.statistics` runs
two jitted functions at the parameters the step will use: per-sample gradient squared
norms by ``jax.vmap(jax.grad)`` (reduced to one number per layer and sample inside the
jit, so only scalars leave the device) with ``‖ḡ‖²``, and, per layer, Hessian-vector
products ``H_ll v`` by ``jax.jvp`` of
``jax.grad`` restricted to the layer, driven by the core's warm-started power iteration
(one product per event after the first). :meth:`SafeStepOptax.step` reads Adam's ``nu``
from the optimizer state for ``α_agg = lr/(sqrt(mean v̂)+ε)`` and writes each layer's new
rate into its ``inject_hyperparams`` state.

Cost per event: one per-sample-gradient pass (vmap: about ``B`` gradients' arithmetic;
XLA may materialise the ``B`` per-sample gradients before reducing them, so memory up to
``B × P`` floats) plus one Hessian-vector product per layer (a forward-over-reverse pass;
up to ``power_max_iters`` at a layer's first event) plus a host copy of the layer's
parameter vector per product. Ordinary steps cost nothing extra. With ``mode="off"``
there are no events (plain Adam at constant rates). Statistics are computed in the
parameters' dtype (float32 by default) and summed per layer inside the jit.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from ._safestep import LayerScheduler, NoiseStats, PowerIteration, Report, SchedulerConfig

__all__ = ["SafeStepOptax"]

LossFn = Callable[[Any, Any, Any], jax.Array]


def _sq_norm(tree: Any) -> jax.Array:
    return sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree_util.tree_leaves(tree))


class SafeStepOptax:
    """Per-layer learning rates for optax Adam from safestep-core.

    ``params`` fixes the layer names (its top-level keys) and shapes; every layer starts
    at ``lr0``. ``b1``, ``b2``, ``eps`` are Adam's (``config.beta1`` should equal ``b1``).
    ``population``: examples minibatches are drawn from without replacement, or ``None``.
    """

    def __init__(
        self,
        loss_fn: LossFn,
        params: Dict[str, Any],
        lr0: float = 1e-3,
        config: Optional[SchedulerConfig] = None,
        *,
        b1: float = 0.9,
        b2: float = 0.999,
        eps: float = 1e-8,
        population: Optional[int] = None,
        steps_per_task: Optional[int] = None,
        total_steps: Optional[int] = None,
        power_tol: float = 1e-3,
        power_max_iters: int = 20,
        seed: int = 0,
    ) -> None:
        if not isinstance(params, dict) or not params:
            raise ValueError("params: expected a non-empty dict of layers")
        self.names: List[str] = list(params)
        self.config = config if config is not None else SchedulerConfig()
        self.b1, self.b2, self.eps = b1, b2, eps
        self.population = population
        self.steps_per_task = steps_per_task
        self.total_steps = total_steps
        labels = {k: jax.tree_util.tree_map(lambda _, k=k: k, v) for k, v in params.items()}
        self.optimizer = optax.partition(
            {
                k: optax.inject_hyperparams(optax.adam)(learning_rate=lr0, b1=b1, b2=b2, eps=eps)
                for k in self.names
            },
            labels,
        )
        self.schedulers = {k: LayerScheduler(self.config, lr0) for k in self.names}
        self.power = {k: PowerIteration(power_tol, power_max_iters) for k in self.names}
        rng = np.random.default_rng(seed)
        self._unravel = {}
        self.directions: Dict[str, np.ndarray] = {}
        for k in self.names:
            flat, unravel = ravel_pytree(params[k])
            self._unravel[k] = unravel
            self.directions[k] = (rng.random(flat.size) - 0.5).astype(np.float32)
        self.t = 0
        self.step_in_task = 0
        self.last_reports: Dict[str, Report] = {}
        self._norms = jax.jit(self._norms_impl(loss_fn))
        self._hvp = jax.jit(self._hvp_impl(loss_fn), static_argnums=0)

    # -- jitted parts ----------------------------------------------------------------

    def _norms_impl(self, loss_fn: LossFn) -> Callable[..., Any]:
        names = self.names

        def norms(params: Any, x: Any, y: Any) -> Any:
            def one(xi: Any, yi: Any) -> Any:
                g = jax.grad(loss_fn)(params, xi[None], yi[None])
                return jnp.stack([_sq_norm(g[k]) for k in names])

            per_sample = jax.vmap(one)(x, y)  # B × layers
            g = jax.grad(loss_fn)(params, x, y)
            mean_sq = jnp.stack([_sq_norm(g[k]) for k in names])
            return per_sample.sum(axis=0), mean_sq

        return norms

    def _hvp_impl(self, loss_fn: LossFn) -> Callable[..., Any]:
        def hvp(name: str, params: Any, x: Any, y: Any, v: Any) -> Any:
            def grad_layer(p_layer: Any) -> Any:
                return jax.grad(lambda q: loss_fn({**params, name: q}, x, y))(p_layer)

            return jax.jvp(grad_layer, (params[name],), (v,))[1]

        return hvp

    # -- the loop --------------------------------------------------------------------

    def is_event(self) -> bool:
        """Whether the coming step (number ``t``) is a controller event."""
        return self.config.mode != "off" and self.t > 0 and self.config.is_event(self.t)

    def statistics(self, params: Any, x: Any, y: Any, opt_state: Any = None) -> Optional[Dict[str, Any]]:
        """At an event: each layer's noise statistics and sharpness on the minibatch
        ``(x, y)`` at ``params`` (call it before the step); ``None`` otherwise.
        ``opt_state`` is needed only for ``measure="preconditioned"``."""
        if not self.is_event():
            return None
        sums, means = jax.device_get(self._norms(params, x, y))
        batch = int(np.shape(x)[0])
        out = {}
        for i, k in enumerate(self.names):
            unravel = self._unravel[k]

            def hvp(v: np.ndarray, k: str = k, unravel: Any = unravel) -> np.ndarray:
                hv = self._hvp(k, params, x, y, unravel(jnp.asarray(v)))
                flat, _ = ravel_pytree(hv)
                return np.asarray(flat)

            precond = None
            if self.config.measure == "preconditioned":
                if opt_state is None:
                    raise ValueError('statistics: measure="preconditioned" needs opt_state')
                precond = self._precond_sqrt(opt_state, k)
            sharp = self.power[k].estimate(self.directions[k], hvp, precond)
            out[k] = dict(
                batch=batch,
                sum_sq=float(sums[i]),
                mean_grad_sq=float(means[i]),
                sharpness=sharp,
            )
        return out

    def _adam_state(self, opt_state: Any, name: str) -> Any:
        inner = opt_state.inner_states[name].inner_state
        (adam,) = [
            s
            for s in jax.tree_util.tree_leaves(inner, is_leaf=lambda s: isinstance(s, optax.ScaleByAdamState))
            if isinstance(s, optax.ScaleByAdamState)
        ]
        return inner, adam

    def _v_hat(self, opt_state: Any, name: str) -> "tuple[np.ndarray, int]":
        _, adam = self._adam_state(opt_state, name)
        t = int(adam.count)
        nu, _ = ravel_pytree(adam.nu[name])
        return np.asarray(nu, dtype=np.float64) / (1.0 - self.b2**t), t

    def _precond_sqrt(self, opt_state: Any, name: str) -> np.ndarray:
        v_hat, _ = self._v_hat(opt_state, name)
        return np.sqrt(1.0 / (np.sqrt(v_hat) + self.eps)).astype(np.float32)

    def step(self, opt_state: Any, stats: Optional[Dict[str, Any]]) -> Any:
        """After the optimizer step: at an event (``stats`` from :meth:`statistics`),
        observe every layer and write its new learning rate into ``opt_state``
        (returned). Counts the step either way."""
        if stats is not None:
            self.last_reports = {}
            for k in self.names:
                m = stats[k]
                inner, _ = self._adam_state(opt_state, k)
                lr_used = float(inner.hyperparams["learning_rate"])
                v_hat, t = self._v_hat(opt_state, k)
                alpha = lr_used / (math.sqrt(float(v_hat.mean())) + self.eps)
                mean_mult = float(np.mean(lr_used / ((1.0 - self.b1**t) * (np.sqrt(v_hat) + self.eps))))
                noise = NoiseStats.from_sample_sq_norms(m["mean_grad_sq"], m["sum_sq"], m["batch"], self.population)
                report = self.schedulers[k].observe(
                    alpha,
                    m["sharpness"],
                    noise,
                    mean_multiplier=mean_mult,
                    lr_used=lr_used,
                    step_in_task=self.step_in_task,
                    steps_per_task=self.steps_per_task,
                    step=self.t,
                    total_steps=self.total_steps,
                )
                self.last_reports[k] = report
            opt_state = self.set_lrs(opt_state)
        self.t += 1
        self.step_in_task += 1
        return opt_state

    def set_lrs(self, opt_state: Any) -> Any:
        """``opt_state`` with every layer's learning rate set to its scheduler's."""
        for k in self.names:
            inner, _ = self._adam_state(opt_state, k)
            old = inner.hyperparams["learning_rate"]
            inner.hyperparams["learning_rate"] = jnp.asarray(self.schedulers[k].lr, dtype=jnp.asarray(old).dtype)
        return opt_state

    def begin_task(self, steps_per_task: Optional[int] = None) -> None:
        """A task boundary: each layer does what ``config.boundary`` says."""
        for s in self.schedulers.values():
            s.begin_task()
        self.step_in_task = 0
        if steps_per_task is not None:
            self.steps_per_task = steps_per_task

    def lrs(self) -> Dict[str, float]:
        """Each layer's current learning rate."""
        return {k: s.lr for k, s in self.schedulers.items()}

    def state_dict(self) -> Dict[str, Any]:
        """The scheduler's whole state (the optax state is the caller's)."""
        return {
            "t": self.t,
            "step_in_task": self.step_in_task,
            "steps_per_task": self.steps_per_task,
            "total_steps": self.total_steps,
            "population": self.population,
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "power": {k: p.state_dict() for k, p in self.power.items()},
            "directions": {k: d.copy() for k, d in self.directions.items()},
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores :meth:`state_dict` (for the same layers)."""
        if set(state["schedulers"]) != set(self.names):
            raise ValueError(f"state_dict: layers {sorted(state['schedulers'])}, expected {sorted(self.names)}")
        for k in self.names:
            self.schedulers[k].load_state_dict(state["schedulers"][k])
            self.power[k].load_state_dict(state["power"][k])
            d = np.asarray(state["directions"][k], dtype=np.float32)
            if d.shape != self.directions[k].shape:
                raise ValueError(f"state_dict: direction {k!r} has shape {d.shape}")
            self.directions[k] = d.copy()
        self.t = int(state["t"])
        self.step_in_task = int(state["step_in_task"])
        self.steps_per_task = state["steps_per_task"]
        # Absent from state dicts written before these were saved: keep the constructor's.
        self.total_steps = state.get("total_steps", self.total_steps)
        self.population = state.get("population", self.population)
