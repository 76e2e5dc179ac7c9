"""safestep.jax: statistics against brute force, and the optax loop."""

import numpy as np
import pytest

try:
    import jax
    import jax.numpy as jnp
    import optax
except Exception as e:
    pytest.skip(f"jax/optax not importable: skipped ({type(e).__name__}: {e})", allow_module_level=True)

from jax.flatten_util import ravel_pytree

import safestep
from safestep.jax import SafeStepOptax


def model():
    k = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {
        "a": {"w": jax.random.normal(k[0], (5, 4)) * 0.5, "b": jax.random.normal(k[1], (4,)) * 0.1},
        "b": {"w": jax.random.normal(k[2], (4, 3)) * 0.5, "b": jax.random.normal(k[3], (3,)) * 0.1},
    }

    def loss_fn(p, x, y):
        h = jnp.tanh(x @ p["a"]["w"] + p["a"]["b"])
        return optax.softmax_cross_entropy_with_integer_labels(h @ p["b"]["w"] + p["b"]["b"], y).mean()

    return params, loss_fn


def data(b=8, seed=1):
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    return jax.random.normal(k1, (b, 5)), jax.random.randint(k2, (b,), 0, 3)


def test_event_statistics_match_brute_force():
    params, loss_fn = model()
    x, y = data()
    ss = SafeStepOptax(loss_fn, params, config=safestep.SchedulerConfig(interval=1), power_tol=1e-12, power_max_iters=500)
    ss.t = 1
    stats = ss.statistics(params, x, y)
    for k in ("a", "b"):
        per = [ravel_pytree(jax.grad(loss_fn)(params, x[i : i + 1], y[i : i + 1])[k])[0] for i in range(8)]
        sq = sum(float(jnp.sum(g * g)) for g in per)
        mean = ravel_pytree(jax.grad(loss_fn)(params, x, y)[k])[0]
        flat, unravel = ravel_pytree(params[k])
        hess = jax.hessian(lambda f: loss_fn({**params, k: unravel(f)}, x, y))(flat)
        ev = np.linalg.eigvalsh(np.asarray(hess, dtype=np.float64))
        top = ev[np.argmax(np.abs(ev))]
        assert stats[k]["batch"] == 8
        assert stats[k]["sum_sq"] == pytest.approx(sq, rel=1e-5)
        assert stats[k]["mean_grad_sq"] == pytest.approx(float(jnp.sum(mean * mean)), rel=1e-5)
        assert stats[k]["sharpness"] == pytest.approx(top, rel=1e-3)


def test_loop_writes_lrs_into_the_optax_state():
    params, loss_fn = model()
    ss = SafeStepOptax(loss_fn, params, lr0=1e-3, config=safestep.SchedulerConfig(interval=2), population=64, steps_per_task=20)
    tx = ss.optimizer
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, x, y):
        g = jax.grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(g, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    events = 0
    for step in range(9):
        x, y = data(seed=step)
        stats = ss.statistics(params, x, y)
        params, opt_state = train_step(params, opt_state, x, y)
        opt_state = ss.step(opt_state, stats)
        if stats is not None:
            events += 1
            for k, r in ss.last_reports.items():
                lr = float(opt_state.inner_states[k].inner_state.hyperparams["learning_rate"])
                assert lr == pytest.approx(r.lr_after, rel=1e-6)
                assert r.decision in ("cool", "warm", "hold")
    assert events == 4  # t = 2, 4, 6, 8
    # alpha_agg as Adam's multiplier: lr/(sqrt(mean v̂)+ε) from nu.
    _, adam = ss._adam_state(opt_state, "a")
    nu = ravel_pytree(adam.nu["a"])[0]
    v_hat = np.asarray(nu, dtype=np.float64) / (1 - 0.999 ** int(adam.count))
    assert int(adam.count) == 9 and v_hat.size == 5 * 4 + 4
    # A checkpoint continues identically.
    sd = ss.state_dict()
    ss2 = SafeStepOptax(loss_fn, params, config=safestep.SchedulerConfig(interval=2))
    ss2.load_state_dict(sd)
    assert ss2.lrs() == ss.lrs() and ss2.t == ss.t


def test_bad_params_are_rejected():
    _, loss_fn = model()
    with pytest.raises(ValueError, match="dict"):
        SafeStepOptax(loss_fn, [1.0, 2.0])


def test_noise_stats_take_a_memoryview_of_a_jax_array():
    g = jnp.array([[1.0, 0.0], [3.0, 2.0]], dtype=jnp.float32)
    m = g.mean(axis=0)
    n = safestep.NoiseStats.from_sample_grads(memoryview(np.asarray(m)), memoryview(np.asarray(g)))
    assert (n.batch, n.variance) == (2, 4.0)
