"""PyTorch-on-CPU peer of `safestep bench`: plain-Adam training throughput of the same MLP.

Same workload as `jax_mlp.py` and `safestep bench --schedulers off`: 784-256-256-10 ReLU
MLP, PyTorch-style uniform init (nn.Linear's default), softmax cross-entropy (mean), batch
256, Adam (beta1 0.9, beta2 0.999, eps 1e-8, lr 1e-3, bias-corrected; torch.optim.Adam
with foreach=True, its fastest CPU path), 1000 examples of the embedded MNIST subset with
random labels, minibatches cycling through a fixed shuffled order, gathered by index
inside the step. f32 everywhere.

Two modes: `--mode eager` (plain PyTorch) and `--mode compile` (forward and loss under
`torch.compile`; the optimizer step stays eager). `torch.compile` needs a C++ compiler on
the machine; if compiling fails the script says so and exits 3.

Usage: .venv-torch/bin/python benches/peer/torch_mlp.py [--mode eager] [--steps 300]
Restrict the cores with `taskset -c 0` (one core) or `--threads N` (torch's intra-op pool).
"""

import argparse
import gzip
import statistics
import struct
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--mode", choices=["eager", "compile"], default="eager")
parser.add_argument("--steps", type=int, default=300, help="timed steps per repeat")
parser.add_argument("--warmup", type=int, default=20, help="untimed steps (after compilation)")
parser.add_argument("--repeats", type=int, default=3)
parser.add_argument("--batch", type=int, default=256)
parser.add_argument("--examples", type=int, default=1000)
parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: torch's default)")
args = parser.parse_args()

import numpy as np  # noqa: E402
import torch  # noqa: E402

if args.threads > 0:
    torch.set_num_threads(args.threads)
torch.manual_seed(0)

DATA = Path(__file__).resolve().parents[2] / "host" / "data"


def read_idx(path, ndims):
    raw = gzip.open(path).read()
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != 0x0800 | ndims:
        sys.exit(f"{path}: bad magic 0x{magic:08x}")
    dims = struct.unpack(">" + "I" * ndims, raw[4 : 4 + 4 * ndims])
    return np.frombuffer(raw[4 + 4 * ndims :], dtype=np.uint8).reshape(dims)


images = read_idx(DATA / "mnist2000-images-idx3-ubyte.gz", 3)[: args.examples]
x_all = torch.from_numpy(images.reshape(len(images), 784).astype(np.float32) / 255.0)
rng = np.random.default_rng(0)
y_all = torch.from_numpy(rng.integers(0, 10, size=len(images)).astype(np.int64))
order = rng.permutation(len(images))
batches = [
    torch.from_numpy(np.take(order, np.arange(i * args.batch, (i + 1) * args.batch), mode="wrap"))
    for i in range(max(1, len(images) // np.gcd(len(images), args.batch)))
]

model = torch.nn.Sequential(
    torch.nn.Linear(784, 256),
    torch.nn.ReLU(),
    torch.nn.Linear(256, 256),
    torch.nn.ReLU(),
    torch.nn.Linear(256, 10),
)
opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-8, foreach=True)


def loss_of(x, y):
    return torch.nn.functional.cross_entropy(model(x), y)


if args.mode == "compile":
    try:
        loss_of = torch.compile(loss_of)
    except Exception as e:  # noqa: BLE001
        print(f"torch.compile unavailable: {e}")
        sys.exit(3)


def step(idx):
    x = x_all.index_select(0, idx)
    y = y_all.index_select(0, idx)
    opt.zero_grad(set_to_none=True)
    loss = loss_of(x, y)
    loss.backward()
    opt.step()
    return loss


print(f"torch {torch.__version__}, mode {args.mode}, intra-op threads {torch.get_num_threads()}")
k = 0
try:
    for _ in range(args.warmup):
        step(batches[k % len(batches)])
        k += 1
except Exception as e:  # noqa: BLE001 (a failing torch.compile shows up at the first call)
    print(f"{args.mode} failed: {type(e).__name__}: {e}")
    sys.exit(3)
rates = []
best_cpu = 0.0
for rep in range(args.repeats):
    cpu_start = time.process_time()  # all threads of the process
    start = time.perf_counter()
    for _ in range(args.steps):
        loss = step(batches[k % len(batches)])
        k += 1
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
