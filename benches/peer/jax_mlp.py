"""JAX-on-CPU peer of `safestep bench`: plain-Adam training throughput of the same MLP.

Same workload as safestep-host's `bench::adam_throughput` (and `examples/throughput.rs`):
784-256-256-10 ReLU MLP, PyTorch-style uniform init, softmax cross-entropy, batch 256,
Adam (beta1 0.9, beta2 0.999, eps 1e-8, lr 1e-3, bias-corrected), 1000 examples of the
embedded MNIST subset with random labels, minibatches cycling through a fixed shuffled
order. The whole step (forward, backward, Adam) is one `jax.jit`-compiled function with
donated buffers; the batch is gathered on the device inside the step, as ours gathers rows.

Usage: .venv/bin/python benches/peer/jax_mlp.py [--steps 300] [--repeats 3]
Restrict the cores with `taskset -c 0` (one core) or `taskset -c 0,1` (two): XLA sizes its
thread pool from the CPUs it may use.
"""

import argparse
import gzip
import os
import statistics
import struct
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--steps", type=int, default=300, help="timed steps per repeat")
parser.add_argument("--warmup", type=int, default=20, help="untimed steps (after compilation)")
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--batch", type=int, default=256)
parser.add_argument("--examples", type=int, default=1000)

args = parser.parse_args()

import numpy as np  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "host" / "data"


def read_idx(path, ndims):
    raw = gzip.open(path).read()
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != 0x0800 | ndims:
        sys.exit(f"{path}: bad magic 0x{magic:08x}")
    dims = struct.unpack(">" + "I" * ndims, raw[4 : 4 + 4 * ndims])
    return np.frombuffer(raw[4 + 4 * ndims :], dtype=np.uint8).reshape(dims)


images = read_idx(DATA / "mnist2000-images-idx3-ubyte.gz", 3)[: args.examples]
x_all = jnp.asarray(images.reshape(len(images), 784).astype(np.float32) / 255.0)
rng = np.random.default_rng(0)
y_all = jnp.asarray(rng.integers(0, 10, size=len(images)).astype(np.int32))
order = rng.permutation(len(images)).astype(np.int32)

sizes = [784, 256, 256, 10]


def init(key):
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        key, kw, kb = jax.random.split(key, 3)
        bound = 1.0 / np.sqrt(fan_in)
        params.append(
            (
                jax.random.uniform(kw, (fan_in, fan_out), jnp.float32, -bound, bound),
                jax.random.uniform(kb, (fan_out,), jnp.float32, -bound, bound),
            )
        )
    return params


def loss_fn(params, x, y):
    h = x
    for w, b in params[:-1]:
        h = jax.nn.relu(h @ w + b)
    w, b = params[-1]
    logits = h @ w + b
    return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(logits, y[:, None], 1)[:, 0])


B1, B2, EPS, LR = 0.9, 0.999, 1e-8, 1e-3


def step(params, m, v, t, idx):
    x = x_all[idx]
    y = y_all[idx]
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    t = t + 1
    bc1 = 1.0 - B1**t
    bc2 = 1.0 - B2**t
    m = jax.tree.map(lambda m, g: B1 * m + (1 - B1) * g, m, grads)
    v = jax.tree.map(lambda v, g: B2 * v + (1 - B2) * g * g, v, grads)
    params = jax.tree.map(
        lambda p, m, v: p - LR * (m / bc1) / (jnp.sqrt(v / bc2) + EPS), params, m, v
    )
    return params, m, v, t, loss


step = jax.jit(step, donate_argnums=(0, 1, 2))

batches = [
    jnp.asarray(np.take(order, np.arange(i * args.batch, (i + 1) * args.batch), mode="wrap"))
    for i in range(len(images))  # enough distinct batches; cycled
]
batches = batches[: max(1, len(images) // np.gcd(len(images), args.batch))]

params = init(jax.random.PRNGKey(0))
m = jax.tree.map(jnp.zeros_like, params)
v = jax.tree.map(jnp.zeros_like, params)
t = jnp.asarray(0.0, jnp.float32)

print(f"jax {jax.__version__}, devices {jax.devices()}, XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
k = 0
for _ in range(args.warmup):
    params, m, v, t, loss = step(params, m, v, t, batches[k % len(batches)])
    k += 1
jax.block_until_ready(params)
rates = []
best_cpu = 0.0
for rep in range(args.repeats):
    cpu_start = time.process_time()  # all threads of the process
    start = time.perf_counter()
    for _ in range(args.steps):
        params, m, v, t, loss = step(params, m, v, t, batches[k % len(batches)])
        k += 1
    jax.block_until_ready(params)
    secs = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    sps = args.steps * args.batch / secs
    rates.append(sps)
    best_cpu = max(best_cpu, args.steps * args.batch / cpu)
    print(
        f"rep {rep}: {sps:.0f} samples/s ({1e3 * secs / args.steps:.3f} ms/step, loss {float(loss):.3f}); "
        f"{args.steps * args.batch / cpu:.0f} samples per CPU-second"
    )
# The median of the repeats, as `safestep bench` reports, so that compare.sh puts the same
# statistic side by side; the best repeat for reference.
print(
    f"median: {statistics.median(rates):.0f} samples/s; best: {max(rates):.0f} samples/s; "
    f"{best_cpu:.0f} samples per CPU-second (best)"
)
