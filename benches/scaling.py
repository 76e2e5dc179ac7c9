#!/usr/bin/env python3
"""Scaling table of `safestep bench`: time per step against hidden width, batch size and
the control interval K, plain Adam (`off`) beside the combined scheduler, as markdown.

Each row is one `safestep bench --schedulers off,combined --json` (the two modes alternate
inside it, medians of the repeats). Around the default (hidden 256,256, batch 256, K 10,
1 thread) one setting moves at a time.

Where cost should be linear, a column says so: the plain step's rate in GFLOP/s (the
products' multiply-adds of forward and backward, 2·(3·Σ fan_in·fan_out − 784·h) per
sample; a constant rate is cost linear in work) and, for K, the overhead times K (constant
when one event costs the same whatever its spacing).

Usage (from the repository root, after `cargo build --release -p safestep-host`):
    python3 benches/scaling.py [--bin target/release/safestep] [--threads 1] [--quick]
                               [--repeats 3] [--tables hidden,batch,k]
"""

import argparse
import json
import os
import subprocess
import tempfile

p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
p.add_argument("--bin", default="target/release/safestep")
p.add_argument("--threads", type=int, default=1)
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--quick", action="store_true", help="a quarter of the steps")
p.add_argument("--tables", default="hidden,batch,k",
               help="which tables, comma-separated: hidden, batch, k")
a = p.parse_args()


def bench(hidden=256, batch=256, k=10, work=60_000):
    # Timed steps so that a repetition does about `work` sample-widths of work.
    steps = max(10, min(400, work * 256 // (batch * hidden)))
    if a.quick:
        steps = max(5, steps // 4)
    # Whole intervals, at least two: every repetition holds the same number of controller
    # events, and the warm-up repetition holds the first (cold-start) one.
    steps = k * max(2, -(-steps // k))
    # The controller needs 2 samples for its noise statistics: batch 1 runs plain Adam only.
    modes = "off,combined" if batch >= 2 else "off"
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    cmd = [a.bin, "bench", "--schedulers", modes, "--threads", str(a.threads),
           "--hidden", f"{hidden},{hidden}", "--batch-size", str(batch), "--interval", str(k),
           "--steps", str(steps), "--repeats", str(a.repeats), "--json", path]
    subprocess.run(cmd, check=True, capture_output=True)
    r = json.load(open(path))
    os.unlink(path)
    off = r["modes"][0]
    if len(r["modes"]) == 1:
        return off["step_ms"], None, None, off["samples_per_sec"], steps
    comb = r["modes"][1]
    return off["step_ms"], comb["step_ms"], comb["overhead"], off["samples_per_sec"], steps


def flop_per_sample(hidden):
    """Multiply-adds ×2 of the products of one sample's forward and backward (784 inputs,
    two hidden layers of `hidden`, 10 classes): forward and weight gradients over every
    layer, deltas below every layer but the first."""
    dims = [784, hidden, hidden, 10]
    macs = sum(i * o for i, o in zip(dims, dims[1:]))
    return 2 * (3 * macs - dims[0] * dims[1])


def row(label, hidden=256, batch=256, k=10, times_k=False):
    off, comb, ov, sps, steps = bench(hidden, batch, k)
    c = "n/a" if comb is None else f"{comb:.3f}"
    o = "n/a (batch 1)" if ov is None else f"{100 * ov:+.1f} %"
    rate = sps * flop_per_sample(hidden) / 1e9
    ok = f" | {100 * ov * k:.0f} %" if times_k else ""
    print(f"| {label} | {off:.3f} | {sps:,.0f} | {rate:.1f} | {c} | {o}{ok} | {steps} |",
          flush=True)


print(f"load average at start: {os.getloadavg()[0]:.2f}; {a.threads} thread(s)")
head = ("| ms/step off | samples/s off | GFLOP/s off | ms/step combined | controller overhead"
        " | timed steps |")
rule = "| --- | --- | --- | --- | --- | --- | --- |"
tables = a.tables.split(",")
if "hidden" in tables:
    print("\n| hidden (batch 256, K 10) " + head + "\n" + rule)
    for h in [128, 256, 512, 1024, 2048]:
        row(f"{h},{h}", hidden=h)
if "batch" in tables:
    print("\n| batch (hidden 256, K 10) " + head + "\n" + rule)
    for b in [1, 16, 64, 256, 1024]:
        row(str(b), batch=b)
if "k" in tables:
    print("\n| K (hidden 256, batch 256) " + head.replace(" | timed", " | overhead × K | timed")
          + "\n" + rule + " --- |")
    for k in [1, 5, 10, 20, 50]:
        row(str(k), k=k, times_k=True)
print(f"\nload average at end: {os.getloadavg()[0]:.2f}")
