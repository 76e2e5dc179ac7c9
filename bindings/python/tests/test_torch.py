"""safestep.torch: statistics against brute force, and the scheduler loop."""

import copy

import numpy as np
import pytest

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except Exception as e:  # ImportError, or a wheel whose native libraries are missing
    pytest.skip(f"torch not importable: skipped ({type(e).__name__}: {e})", allow_module_level=True)

from torch.func import functional_call

import safestep
from safestep.torch import SafeStepScheduler

torch.set_default_dtype(torch.float64)


def small(seed=0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    layers = [model[0], model[2]]
    return model, layers


def data(b=8, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 5, generator=g), torch.randint(0, 3, (b,), generator=g)


def brute_force(model, layers, x, y):
    """Per-layer Σ_i ‖g_i‖², ‖ḡ‖² and the block Hessians, by loops and autograd.functional."""
    out = []
    for layer in layers:
        params = list(layer.parameters())
        sq = 0.0
        for i in range(x.shape[0]):
            gi = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
            sq += sum(float((g**2).sum()) for g in gi)
        gm = torch.autograd.grad(F.cross_entropy(model(x), y), params)
        mean_sq = sum(float((g**2).sum()) for g in gm)
        flat0 = torch.cat([p.detach().reshape(-1) for p in params])
        shapes = [p.shape for p in params]
        sizes = [p.numel() for p in params]

        prefix = _prefix(model, layer)
        names = [prefix + n for n, _ in layer.named_parameters()]

        def f(flat):
            parts = [c.view(s) for c, s in zip(torch.split(flat, sizes), shapes)]
            return F.cross_entropy(functional_call(model, dict(zip(names, parts)), (x,)), y)

        hess = torch.autograd.functional.hessian(f, flat0)
        out.append((sq, mean_sq, hess))
    return out


def _prefix(model, layer):
    for name, m in model.named_modules():
        if m is layer:
            return name + "."
    raise AssertionError


def test_event_statistics_match_brute_force():
    model, layers = small()
    x, y = data()
    opt = torch.optim.Adam([{"params": l.parameters()} for l in layers], lr=1e-3)
    sched = SafeStepScheduler(opt, layers, safestep.SchedulerConfig(interval=1), power_max_iters=500, power_tol=1e-12)
    sched.t = 1  # make this step an event
    want = brute_force(model, layers, x, y)
    opt.zero_grad()
    sched.forward_backward(lambda: F.cross_entropy(model(x), y))
    for m, (sq, mean_sq, hess) in zip(sched._pending, want):
        assert m["batch"] == 8
        assert m["sum_sq"] == pytest.approx(sq, rel=1e-10)
        assert m["mean_grad_sq"] == pytest.approx(mean_sq, rel=1e-10)
        ev = np.linalg.eigvalsh(hess.numpy())
        top = ev[np.argmax(np.abs(ev))]  # power iteration: largest magnitude
        assert m["sharpness"] == pytest.approx(top, rel=1e-4, abs=1e-6)
    # The gradients the optimizer steps on are the ordinary ones.
    g_event = [p.grad.clone() for p in model.parameters()]
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    for a, b in zip(g_event, model.parameters()):
        assert torch.allclose(a, b.grad, rtol=1e-12, atol=1e-15)


def test_loop_sets_group_lrs_from_the_core_and_checkpoints():
    model, layers = small()
    opt = torch.optim.Adam([{"params": l.parameters()} for l in layers], lr=1e-3)
    cfg = safestep.SchedulerConfig(interval=2)
    sched = SafeStepScheduler(opt, layers, cfg, population=64, steps_per_task=20)
    reports = []
    snapshot = None
    for step in range(12):
        x, y = data(seed=step)
        opt.zero_grad()
        sched.forward_backward(lambda: F.cross_entropy(model(x), y))
        opt.step()
        was_event = sched._pending is not None
        sched.step()
        if was_event:
            reports.append(list(sched.last_reports))
            assert sched.get_last_lr() == [r.lr_after for r in sched.last_reports]
        if step == 5:
            snapshot = (
                copy.deepcopy(sched.state_dict()),
                copy.deepcopy(opt.state_dict()),  # the optimizer's tensors change in place
                copy.deepcopy(model.state_dict()),
            )
    assert len(reports) == 5  # events at t = 2, 4, 6, 8, 10
    assert all(s.events == 5 for s in sched.schedulers)
    # Restore the snapshot into fresh objects: the continuation is identical.
    model2, layers2 = small(seed=99)
    model2.load_state_dict(snapshot[2])
    opt2 = torch.optim.Adam([{"params": l.parameters()} for l in layers2], lr=1e-3)
    opt2.load_state_dict(snapshot[1])
    sched2 = SafeStepScheduler(opt2, layers2, cfg)
    sched2.load_state_dict(snapshot[0])
    for step in range(6, 12):
        x, y = data(seed=step)
        opt2.zero_grad()
        sched2.forward_backward(lambda: F.cross_entropy(model2(x), y))
        opt2.step()
        sched2.step()
    assert sched2.get_last_lr() == sched.get_last_lr()
    assert [s.state_dict() for s in sched2.schedulers] == [s.state_dict() for s in sched.schedulers]


def test_alpha_agg_is_adams_multiplier():
    model, layers = small()
    opt = torch.optim.AdamW([{"params": l.parameters()} for l in layers], lr=2e-3)
    sched = SafeStepScheduler(opt, layers)
    x, y = data()
    opt.zero_grad()
    F.cross_entropy(model(x), y).backward()
    opt.step()
    alpha, mult = sched._adam_multipliers(opt.param_groups[0])
    v = torch.cat([opt.state[p]["exp_avg_sq"].reshape(-1) for p in layers[0].parameters()]) / (1 - 0.999)
    assert alpha == pytest.approx(2e-3 / (float(v.mean().sqrt()) + 1e-8), rel=1e-12)
    assert mult == pytest.approx(float((2e-3 / ((1 - 0.9) * (v.sqrt() + 1e-8))).mean()), rel=1e-12)


def test_bad_setups_are_rejected():
    model, layers = small()
    with pytest.raises(ValueError, match="param groups"):
        SafeStepScheduler(torch.optim.Adam(model.parameters()), layers)
    with pytest.raises(ValueError, match="Adam"):
        SafeStepScheduler(torch.optim.SGD([{"params": l.parameters()} for l in layers], lr=0.1), layers)
    with pytest.raises(ValueError, match="amsgrad"):
        SafeStepScheduler(
            torch.optim.Adam([{"params": l.parameters()} for l in layers], amsgrad=True), layers
        )


def test_noise_stats_take_a_memoryview_of_a_cpu_tensor():
    g = torch.tensor([[1.0, 0.0], [3.0, 2.0]], dtype=torch.float32)
    m = g.mean(dim=0)
    n = safestep.NoiseStats.from_sample_grads(memoryview(m.numpy()), memoryview(g.numpy()))
    assert (n.batch, n.variance) == (2, 4.0)
    with pytest.raises(TypeError, match="buffer protocol"):
        safestep.NoiseStats.from_sample_grads(m, g)  # a tensor itself has no buffer protocol
