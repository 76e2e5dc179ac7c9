#!/usr/bin/env python3
"""PyTorch baselines for scripts/gpu-check.sh, measured on the same GPU as safestep-gpu-check.

* MLP 784-256-256-10 (ReLU), batch 256, Adam (PyTorch's default CUDA implementation),
  softmax cross-entropy, minibatches gathered on the device from 10 000 random examples:
  steady-state training samples/s in eager mode, without and with a host sync per step
  (`loss.item()`; safestep's step reads its loss and statistics back every step).
* torch.matmul in fp32 (TF32 off) at the GEMM shapes of one training step, in the same
  layouts as safestep's kernels (NN: A@B, NT: A@B.T, TN: A.T@B).

Writes one JSON object (to --json, and prints a summary).
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

SHAPES = [  # label, layout, m, n, k — the same list as safestep-gpu-check
    ("fwd L0 X·W0ᵀ", "nt", 256, 256, 784),
    ("fwd L1 H·W1ᵀ", "nt", 256, 256, 256),
    ("fwd L2 H·W2ᵀ", "nt", 256, 10, 256),
    ("bwd dW0 = δᵀ·X", "tn", 256, 784, 256),
    ("bwd dW1 = δᵀ·H", "tn", 256, 256, 256),
    ("bwd dH1 = δ·W1", "nn", 256, 256, 256),
    ("bwd dH2 = δ·W2", "nn", 256, 256, 10),
    ("square 2048", "nn", 2048, 2048, 2048),
]


def bench_matmul(dev):
    out = []
    for label, layout, m, n, k in SHAPES:
        if layout == "nn":
            a, b = torch.rand(m, k, device=dev), torch.rand(k, n, device=dev)
            f = lambda: torch.matmul(a, b)
        elif layout == "nt":
            a, b = torch.rand(m, k, device=dev), torch.rand(n, k, device=dev)
            f = lambda: torch.matmul(a, b.t())
        else:
            a, b = torch.rand(k, m, device=dev), torch.rand(k, n, device=dev)
            f = lambda: torch.matmul(a.t(), b)
        iters = 20 if m >= 2048 else 300
        for _ in range(10):
            f()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(iters):
            f()
        torch.cuda.synchronize()
        sec = (time.perf_counter() - start) / iters
        out.append({"label": label, "layout": layout, "m": m, "n": n, "k": k,
                    "seconds": sec, "tflops": 2.0 * m * n * k / sec / 1e12})
    return out


def bench_mlp(dev, steps, batch=256, examples=10_000):
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(784, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 256), torch.nn.ReLU(),
        torch.nn.Linear(256, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x_all = torch.rand(examples, 784, device=dev)
    y_all = torch.randint(0, 10, (examples,), device=dev)
    batches = [torch.randint(0, examples, (batch,), device=dev) for _ in range(64)]

    def run(n, sync):
        start = time.perf_counter()
        for s in range(n):
            idx = batches[s % len(batches)]
            logits = model(x_all[idx])
            loss = F.cross_entropy(logits, y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if sync:
                loss.item()
        torch.cuda.synchronize()
        return time.perf_counter() - start

    run(50, True)
    nosync = run(steps, False)
    sync = run(steps, True)
    return {"batch": batch, "steps": steps,
            "eager_samples_per_sec": steps * batch / nosync,
            "eager_sync_samples_per_sec": steps * batch / sync}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--steps", type=int, default=500)
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dev = torch.device("cuda")
    report = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0),
              "matmul": bench_matmul(dev), "mlp": bench_mlp(dev, args.steps)}
    for r in report["matmul"]:
        print(f"torch.matmul {r['label']:<18} {r['layout']} m={r['m']} n={r['n']} k={r['k']}: "
              f"{r['seconds'] * 1e6:8.2f} us {r['tflops']:6.2f} TFLOP/s")
    m = report["mlp"]
    print(f"torch eager MLP batch {m['batch']}: {m['eager_samples_per_sec']:.0f} samples/s, "
          f"{m['eager_sync_samples_per_sec']:.0f} with a sync per step")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
