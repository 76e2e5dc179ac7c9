#!/usr/bin/env python3
"""The baselines table of docs/results.md from the committed runs under this folder.

For each stream (rl: random-label MNIST, op: online permuted MNIST), method and scheduler
(off = constant lr, combined = the proportional reading), picks the lr with the best mean
of the stream's metric over seeds (op: seed 0's value, the lrs having been tried on seed 0), and prints mean ± standard error over seeds at that lr.
Metric: last-5 end-of-task train accuracy for rl; the mean online accuracy for op.

    python3 results/baselines/table.py
"""
import json
import math
import pathlib
from collections import defaultdict

HERE = pathlib.Path(__file__).resolve().parent
METHODS = ["adam", "adam-l2", "adamw", "crelu", "wasserstein", "reset", "step-decay",
           "l2-init", "shrink-perturb", "cbp", "redo", "adam+layernorm"]


def mean_se(xs):
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def load(stream):
    runs = defaultdict(list)  # (method, scheduler, lr) -> finished summaries
    stopped = defaultdict(int)  # (method, scheduler) -> runs that stopped (diverged)
    # <stream>-ln holds the runs with `--norm layer` (their summaries say "norm": "layer").
    for summary in sorted((HERE / stream).glob("*/summary.json")) + sorted(
            (HERE / f"{stream}-ln").glob("*/summary.json")):
        s = json.loads(summary.read_text())
        if s.get("norm") == "layer":
            s["method"] += "+layernorm"
        if s.get("finished"):
            runs[(s["method"], s["scheduler"], s["lr"])].append(s)
        else:
            stopped[(s["method"], s["scheduler"])] += 1
    return runs, stopped


def fmt(ms):
    return f"{ms[0]:.3f} ± {ms[1]:.3f}"


def choose(rs, key, select_on_seed0):
    """The value an lr is chosen by: the mean over seeds, or seed 0's alone."""
    if select_on_seed0:
        return next((r[key] for r in rs if r["seed"] == 0), -1.0)
    return mean_se([r[key] for r in rs])[0]


def table(stream, key, label, select_on_seed0=False):
    runs, stopped = load(stream)
    print(f"\n{stream}: best lr per method and scheduler by {label}\n")
    print(f"| method | off: lr | off: {label} | off: all tasks | scheduled: lr0 | scheduled: {label} | scheduled: all tasks | lrs tried |")
    print("|---|---|---|---|---|---|---|---|")
    for m in METHODS:
        cells = [m]
        tried = set()
        for sched in ["off", "combined"]:
            cand = {lr: rs for (mm, ss, lr), rs in runs.items() if mm == m and ss == sched}
            tried |= set(cand)
            if not cand:
                what = "diverged at every lr" if stopped[(m, sched)] else "–"
                cells += [what, "–", "–"]
                continue
            lr, rs = max(cand.items(), key=lambda kv: choose(kv[1], key, select_on_seed0))
            seeds = f"{len(rs)} seed" + ("s" if len(rs) > 1 else "")
            cells += [f"{lr:g} ({seeds})", fmt(mean_se([r[key] for r in rs])),
                      fmt(mean_se([r["mean_train_accuracy"] for r in rs]))]
        cells.append(", ".join(f"{lr:g}" for lr in sorted(tried)))
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    table("rl", "mean_train_accuracy_last5", "last 5")
    # op: lrs were tried on seed 0, then seeds 1-2 run at each best lr.
    table("op", "mean_online_accuracy", "online acc", select_on_seed0=True)
