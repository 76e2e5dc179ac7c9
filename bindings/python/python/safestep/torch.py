"""safestep for ``torch.optim.Adam`` / ``AdamW``: per-layer learning rates from the core.

One param group per layer (an ``nn.Linear``: its weight and bias), in the same order as
``layers``. The loop::

    from safestep.torch import SafeStepScheduler

    opt = torch.optim.Adam([{"params": l.parameters()} for l in layers], lr=1e-3)
    sched = SafeStepScheduler(opt, layers, safestep.SchedulerConfig(), population=len(data))
    for x, y in batches:
        opt.zero_grad()
        loss = sched.forward_backward(lambda: F.cross_entropy(model(x), y))
        opt.step()
        sched.step()            # at events: observe, then set each group's lr

``forward_backward(closure)`` replaces ``loss = closure(); loss.backward()``: on ordinary
steps it is exactly that. Every ``K = config.interval`` optimizer steps (from step ``K``
on, as ``safestep run`` does) it is an *event*: it also measures, on that minibatch and at
the parameters the step will use,

- per-sample gradient squared norms of each layer by the one-pass trick: forward hooks keep
  the inputs ``a_i`` and tensor hooks the output gradients; for a mean-reduced loss the
  per-sample delta is ``B·δ_i``, so ``‖g_i‖² = B²(‖a_i‖²‖δ_i‖² + ‖δ_i‖²)`` (weight + bias);
  the sums are taken in float64;
- ``‖ḡ‖²`` from the minibatch gradient itself;
- the layer's sharpness by the core's warm-started power iteration on exact block
  Hessian-vector products ``H_ll v = ∂(g_l·v)/∂θ_l`` (double backward);

and ``step()`` (after ``optimizer.step()``) reads Adam's ``exp_avg_sq`` for
``α_agg = lr/(sqrt(mean v̂)+ε)``, hands everything to each layer's ``LayerScheduler`` and
writes the new ``lr`` into the param group.

Cost per event: the backward keeps its graph (``create_graph=True``: about one more
backward of memory), plus one Hessian-vector product per layer (a double backward; up to
``power_max_iters`` at a layer's first event), plus O(B·(in+out)) per layer for the norms,
plus two host copies of each layer's parameter vector per product (the power iteration
runs in the core on the CPU). Ordinary steps cost nothing extra (the hooks return at once).

With ``mode="off"`` there are no events: the loop is plain Adam at constant rates.

Limits: ``nn.Linear`` layers with 2-D inputs (B × in), each applied once per forward;
``amsgrad=False``; the loss must be the mean over the minibatch.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from ._safestep import LayerScheduler, NoiseStats, PowerIteration, Report, SchedulerConfig

__all__ = ["SafeStepScheduler"]


class _Capture:
    """Forward/tensor hooks of one ``nn.Linear``: its input and output gradient at events."""

    def __init__(self, layer: nn.Linear) -> None:
        self.active = False
        self.inputs: Optional[torch.Tensor] = None
        self.grad_out: Optional[torch.Tensor] = None
        self.handle = layer.register_forward_hook(self._forward)

    def _forward(self, module: nn.Module, args: Any, output: torch.Tensor) -> None:
        if not self.active:
            return
        a = args[0]
        if a.dim() != 2:
            raise ValueError(
                f"safestep.torch: layer input has shape {tuple(a.shape)}; the per-sample norm "
                "trick needs 2-D (batch × features) inputs"
            )
        if self.inputs is not None:
            raise ValueError("safestep.torch: a layer was applied twice in one forward")
        self.inputs = a.detach()
        output.register_hook(self._backward)

    def _backward(self, grad: torch.Tensor) -> None:
        if self.active and self.grad_out is None:
            self.grad_out = grad.detach()

    def clear(self) -> None:
        self.inputs = None
        self.grad_out = None


class SafeStepScheduler:
    """Per-layer learning rates for ``torch.optim.Adam``/``AdamW`` from safestep-core.

    ``optimizer`` must have one param group per entry of ``layers`` (``nn.Linear``
    modules), holding exactly that layer's parameters; each group's current ``lr`` is the
    layer's ``lr0``. ``population`` is the number of examples minibatches are drawn from
    without replacement (finite-population factor), or ``None``. ``steps_per_task`` (or
    ``total_steps``) tells the scheduler what "early" means for warming; call
    ``begin_task()`` at each task boundary.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        layers: Sequence[nn.Linear],
        config: Optional[SchedulerConfig] = None,
        *,
        population: Optional[int] = None,
        steps_per_task: Optional[int] = None,
        total_steps: Optional[int] = None,
        power_tol: float = 1e-3,
        power_max_iters: int = 20,
        seed: int = 0,
    ) -> None:
        if not isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
            raise ValueError(
                f"optimizer: expected torch.optim.Adam or AdamW, got {type(optimizer).__name__}"
            )
        groups = optimizer.param_groups
        if len(groups) != len(layers):
            raise ValueError(
                f"optimizer: {len(groups)} param groups for {len(layers)} layers "
                "(one group per layer is required)"
            )
        for i, (g, layer) in enumerate(zip(groups, layers)):
            if not isinstance(layer, nn.Linear):
                raise ValueError(f"layers[{i}]: expected nn.Linear, got {type(layer).__name__}")
            if {id(p) for p in g["params"]} != {id(p) for p in layer.parameters()}:
                raise ValueError(f"param group {i}: must hold exactly layers[{i}]'s parameters")
            if g.get("amsgrad", False):
                raise ValueError(f"param group {i}: amsgrad is not supported")
        self.optimizer = optimizer
        self.layers = list(layers)
        self.config = config if config is not None else SchedulerConfig()
        self.population = population
        self.steps_per_task = steps_per_task
        self.total_steps = total_steps
        self.schedulers = [LayerScheduler(self.config, float(g["lr"])) for g in groups]
        self.power = [PowerIteration(power_tol, power_max_iters) for _ in layers]
        rng = np.random.default_rng(seed)
        self.directions = [
            (rng.random(sum(p.numel() for p in layer.parameters())) - 0.5).astype(np.float32)
            for layer in self.layers
        ]
        self._captures = [_Capture(layer) for layer in self.layers]
        self.t = 0  # optimizer steps taken
        self.step_in_task = 0
        self.last_reports: List[Report] = []
        self._pending: Optional[List[Dict[str, Any]]] = None

    # -- the loop --------------------------------------------------------------------

    def is_event(self) -> bool:
        """Whether the coming step (number ``t``) is a controller event."""
        return self.config.mode != "off" and self.t > 0 and self.config.is_event(self.t)

    def forward_backward(self, closure: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``loss = closure(); loss.backward()``, measuring the layers at events.

        ``closure()`` runs the forward pass and returns the minibatch's *mean* loss.
        Returns the loss (detached)."""
        if not self.is_event():
            loss = closure()
            loss.backward()
            return loss.detach()
        for c in self._captures:
            c.clear()
            c.active = True
        try:
            loss = closure()
            params = [p for layer in self.layers for p in layer.parameters()]
            grads = torch.autograd.grad(loss, params, create_graph=True)
        finally:
            for c in self._captures:
                c.active = False
        for p, g in zip(params, grads):
            p.grad = g.detach().clone() if p.grad is None else p.grad + g.detach()
        self._pending = self._measure(grads)
        for c in self._captures:
            c.clear()
        return loss.detach()

    def _measure(self, grads: Sequence[torch.Tensor]) -> List[Dict[str, Any]]:
        out = []
        k = 0
        for l, (layer, cap) in enumerate(zip(self.layers, self._captures)):
            params = list(layer.parameters())
            g = grads[k : k + len(params)]
            k += len(params)
            if cap.inputs is None or cap.grad_out is None:
                raise ValueError(f"layers[{l}]: not used by the closure's loss")
            a = cap.inputs.double()
            d = cap.grad_out.double()
            batch = a.shape[0]
            a_sq = (a * a).sum(dim=1)
            d_sq = (d * d).sum(dim=1)
            per_sample = a_sq * d_sq + (d_sq if layer.bias is not None else 0.0)
            sum_sq = float(per_sample.sum()) * batch * batch
            mean_sq = float(sum(float((gi.detach().double() ** 2).sum()) for gi in g))
            sharp = self._sharpness(l, params, g)
            out.append(dict(batch=batch, mean_grad_sq=mean_sq, sum_sq=sum_sq, sharpness=sharp))
        return out

    def _sharpness(self, l: int, params: List[torch.Tensor], g: Sequence[torch.Tensor]) -> float:
        shapes = [p.shape for p in params]
        sizes = [p.numel() for p in params]

        def hvp(x: np.ndarray) -> np.ndarray:
            xs = torch.from_numpy(np.asarray(x)).to(device=params[0].device, dtype=params[0].dtype)
            parts = [c.view(s) for c, s in zip(torch.split(xs, sizes), shapes)]
            dot = sum((gi * vi).sum() for gi, vi in zip(g, parts))
            hv = torch.autograd.grad(dot, params, retain_graph=True)
            return torch.cat([h.reshape(-1) for h in hv]).detach().cpu().numpy()

        precond = None
        if self.config.measure == "preconditioned":
            precond = self._precond_sqrt(l, params)
        return self.power[l].estimate(self.directions[l], hvp, precond)

    def _precond_sqrt(self, l: int, params: List[torch.Tensor]) -> np.ndarray:
        """``D^½ = (1/(sqrt(v̂)+ε))^½`` of the group's Adam state before this step."""
        group = self.optimizer.param_groups[l]
        _, beta2 = group["betas"]
        parts = []
        for p in params:
            st = self.optimizer.state[p]
            t = float(st["step"])
            v_hat = st["exp_avg_sq"].double() / (1.0 - beta2**t)
            parts.append((1.0 / (v_hat.sqrt() + group["eps"])).sqrt().reshape(-1))
        return torch.cat(parts).cpu().numpy().astype(np.float32)

    def step(self) -> None:
        """After ``optimizer.step()``: at an event, observe every layer and set its lr."""
        pending, self._pending = self._pending, None
        if pending is not None:
            self.last_reports = []
            for l, (m, sched) in enumerate(zip(pending, self.schedulers)):
                group = self.optimizer.param_groups[l]
                alpha, mean_mult = self._adam_multipliers(group)
                noise = NoiseStats.from_sample_sq_norms(
                    m["mean_grad_sq"], m["sum_sq"], m["batch"], self.population
                )
                report = sched.observe(
                    alpha,
                    m["sharpness"],
                    noise,
                    mean_multiplier=mean_mult,
                    lr_used=float(group["lr"]),
                    step_in_task=self.step_in_task,
                    steps_per_task=self.steps_per_task,
                    step=self.t,
                    total_steps=self.total_steps,
                )
                group["lr"] = sched.lr
                self.last_reports.append(report)
        self.t += 1
        self.step_in_task += 1

    def _adam_multipliers(self, group: Dict[str, Any]) -> "tuple[float, float]":
        """``α_agg = lr/(sqrt(mean v̂)+ε)`` and the literal mean multiplier
        ``mean(lr/((1−β1^t)(sqrt(v̂)+ε)))`` over the group, after the step."""
        lr, eps = float(group["lr"]), float(group["eps"])
        beta1, beta2 = group["betas"]
        total, count, mult = 0.0, 0, 0.0
        for p in group["params"]:
            st = self.optimizer.state[p]
            t = float(st["step"])
            v_hat = st["exp_avg_sq"].double() / (1.0 - beta2**t)
            total += float(v_hat.sum())
            count += v_hat.numel()
            mult += float((lr / ((1.0 - beta1**t) * (v_hat.sqrt() + eps))).sum())
        return lr / (math.sqrt(total / count) + eps), mult / count

    def begin_task(self, steps_per_task: Optional[int] = None) -> None:
        """A task boundary: each layer does what ``config.boundary`` says; the step count
        within the task restarts (and ``steps_per_task`` changes, if given)."""
        for s in self.schedulers:
            s.begin_task()
        self.step_in_task = 0
        if steps_per_task is not None:
            self.steps_per_task = steps_per_task

    def get_last_lr(self) -> List[float]:
        """Each param group's current learning rate."""
        return [float(g["lr"]) for g in self.optimizer.param_groups]

    # -- checkpoints -----------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        """Everything needed to continue identically (with the optimizer's own state)."""
        return {
            "t": self.t,
            "step_in_task": self.step_in_task,
            "steps_per_task": self.steps_per_task,
            "total_steps": self.total_steps,
            "population": self.population,
            "schedulers": [s.state_dict() for s in self.schedulers],
            "power": [p.state_dict() for p in self.power],
            "directions": [d.copy() for d in self.directions],
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        """Restores ``state_dict()`` (for the same layers)."""
        if len(state["schedulers"]) != len(self.schedulers):
            raise ValueError(
                f"state_dict: {len(state['schedulers'])} layers, this scheduler has "
                f"{len(self.schedulers)}"
            )
        for s, sd in zip(self.schedulers, state["schedulers"]):
            s.load_state_dict(sd)
        for p, sd in zip(self.power, state["power"]):
            p.load_state_dict(sd)
        for i, d in enumerate(state["directions"]):
            d = np.asarray(d, dtype=np.float32)
            if d.shape != self.directions[i].shape:
                raise ValueError(f"state_dict: direction {i} has shape {d.shape}")
            self.directions[i] = d.copy()
        self.t = int(state["t"])
        self.step_in_task = int(state["step_in_task"])
        self.steps_per_task = state["steps_per_task"]
        self.total_steps = state["total_steps"]
        self.population = state["population"]
        self.config = self.schedulers[0].config
        for g, s in zip(self.optimizer.param_groups, self.schedulers):
            g["lr"] = s.lr

    def remove_hooks(self) -> None:
        """Detaches the forward hooks from the layers."""
        for c in self._captures:
            c.handle.remove()
