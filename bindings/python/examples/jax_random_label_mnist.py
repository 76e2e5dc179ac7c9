"""Random-label MNIST with JAX + optax: plain Adam against Adam + safestep's scheduler.

MLP 784-256-256-10 (ReLU), 1,000 examples per task, batch 256, lr 1e-3; every task
relabels the same images at random; prints each task's end-of-task training accuracy
(whole task set), as ``safestep run`` does. Digits: the 2,000 shipped with the package, or
``--data DIR``. ``--tasks 2 --epochs 2`` is a quick smoke run.

    python examples/jax_random_label_mnist.py --tasks 10 --epochs 20
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import safestep
from safestep import mnist
from safestep.jax import SafeStepOptax

SIZES = (784, 256, 256, 10)


def init(seed: int) -> dict:
    """Uniform(±1/sqrt(fan_in)) weights and biases, like torch.nn.Linear and safestep run."""
    keys = jax.random.split(jax.random.PRNGKey(seed), 2 * (len(SIZES) - 1))
    params = {}
    for i, (n_in, n_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        bound = 1.0 / np.sqrt(n_in)
        params[f"dense{i}"] = {
            "w": jax.random.uniform(keys[2 * i], (n_in, n_out), minval=-bound, maxval=bound),
            "b": jax.random.uniform(keys[2 * i + 1], (n_out,), minval=-bound, maxval=bound),
        }
    return params


def forward(params: dict, x: jax.Array) -> jax.Array:
    h = x
    for i in range(len(SIZES) - 1):
        layer = params[f"dense{i}"]
        h = h @ layer["w"] + layer["b"]
        if i < len(SIZES) - 2:
            h = jax.nn.relu(h)
    return h


def loss_fn(params: dict, x: jax.Array, y: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(forward(params, x), y).mean()


def run(args: argparse.Namespace, scheduled: bool) -> list:
    images, _ = mnist.load(args.data)
    params = init(args.seed)
    batches_per_epoch = sum(1 for _ in mnist.epoch_batches(args.examples, args.batch_size, np.random.default_rng(0)))
    ss = None
    if scheduled:
        ss = SafeStepOptax(
            loss_fn,
            params,
            lr0=args.lr,
            config=safestep.SchedulerConfig(),
            population=args.examples,
            steps_per_task=batches_per_epoch * args.epochs,
            seed=args.seed,
        )
        tx = ss.optimizer
    else:
        tx = optax.adam(args.lr)
    opt_state = tx.init(params)

    @jax.jit
    def train_step(params, opt_state, x, y):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    accuracy = jax.jit(lambda p, x, y: jnp.mean(jnp.argmax(forward(p, x), axis=1) == y))
    rng = np.random.default_rng(args.seed + 1)
    accs = []
    for task, (x_np, y_np) in enumerate(mnist.random_label_tasks(images, args.examples, args.tasks, seed=args.seed)):
        x, y = jnp.asarray(x_np), jnp.asarray(y_np)
        if ss is not None and task > 0:
            ss.begin_task()
        t0 = time.perf_counter()
        for _ in range(args.epochs):
            for idx in mnist.epoch_batches(args.examples, args.batch_size, rng):
                xb, yb = x[idx], y[idx]
                stats = ss.statistics(params, xb, yb, opt_state) if ss is not None else None
                params, opt_state, _ = train_step(params, opt_state, xb, yb)
                if ss is not None:
                    opt_state = ss.step(opt_state, stats)
        acc = float(accuracy(params, x, y))
        accs.append(acc)
        lrs = "" if ss is None else "  lr " + " ".join(f"{lr:.2e}" for lr in ss.lrs().values())
        print(f"  task {task + 1:2d}: train accuracy {acc:.3f}  ({time.perf_counter() - t0:.1f} s){lrs}", flush=True)
    return accs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", type=int, default=10)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--examples", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="folder with images-idx3-ubyte.gz, labels-idx1-ubyte.gz")
    p.add_argument("--only", choices=["adam", "safestep"], default=None)
    args = p.parse_args()
    results = {}
    for name, scheduled in (("adam", False), ("safestep", True)):
        if args.only in (None, name):
            print(f"{name}:", flush=True)
            results[name] = run(args, scheduled)
    for name, accs in results.items():
        print(f"{name}: mean {np.mean(accs):.4f}, last 5 tasks {np.mean(accs[-5:]):.4f}, final {accs[-1]:.4f}")


if __name__ == "__main__":
    main()
