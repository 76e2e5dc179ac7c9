"""Random-label MNIST with PyTorch: plain Adam against Adam + safestep's scheduler.

MLP 784-256-256-10 (ReLU), 1,000 examples per task, batch 256, lr 1e-3, Adam; every task
relabels the same images at random; prints each task's end-of-task training accuracy
(whole task set), as ``safestep run`` does. Digits: the 2,000 shipped with the package, or
``--data DIR`` (a folder with images-idx3-ubyte.gz and labels-idx1-ubyte.gz).

    python examples/torch_random_label_mnist.py --tasks 10 --epochs 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import safestep
from safestep import mnist
from safestep.torch import SafeStepScheduler


def mlp(seed: int) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))


def run(args: argparse.Namespace, scheduled: bool) -> list[float]:
    images, _ = mnist.load(args.data)
    model = mlp(args.seed)
    layers = [m for m in model if isinstance(m, nn.Linear)]
    opt = torch.optim.Adam([{"params": l.parameters()} for l in layers], lr=args.lr)
    batches_per_epoch = sum(1 for _ in mnist.epoch_batches(args.examples, args.batch_size, np.random.default_rng(0)))
    steps_per_task = batches_per_epoch * args.epochs
    sched = None
    if scheduled:
        sched = SafeStepScheduler(
            opt,
            layers,
            safestep.SchedulerConfig(),
            population=args.examples,
            steps_per_task=steps_per_task,
            seed=args.seed,
        )
    rng = np.random.default_rng(args.seed + 1)
    accs = []
    tasks = mnist.random_label_tasks(images, args.examples, args.tasks, seed=args.seed)
    for task, (x_np, y_np) in enumerate(tasks):
        x, y = torch.from_numpy(x_np), torch.from_numpy(y_np)
        if sched is not None and task > 0:
            sched.begin_task()
        t0 = time.perf_counter()
        for _ in range(args.epochs):
            for idx in mnist.epoch_batches(args.examples, args.batch_size, rng):
                xb, yb = x[idx], y[idx]
                opt.zero_grad()
                if sched is None:
                    loss = F.cross_entropy(model(xb), yb)
                    loss.backward()
                    opt.step()
                else:
                    sched.forward_backward(lambda: F.cross_entropy(model(xb), yb))
                    opt.step()
                    sched.step()
        with torch.no_grad():
            acc = float((model(x).argmax(dim=1) == y).float().mean())
        accs.append(acc)
        lrs = "" if sched is None else "  lr " + " ".join(f"{lr:.2e}" for lr in sched.get_last_lr())
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
    torch.set_num_threads(1)
    results = {}
    for name, scheduled in (("adam", False), ("safestep", True)):
        if args.only in (None, name):
            print(f"{name}:", flush=True)
            results[name] = run(args, scheduled)
    for name, accs in results.items():
        print(f"{name}: mean {np.mean(accs):.4f}, last 5 tasks {np.mean(accs[-5:]):.4f}, final {accs[-1]:.4f}")


if __name__ == "__main__":
    main()
