#!/usr/bin/env python3
"""The paper's Figure-1 comparisons as a table, from the committed diagnosis runs.

For each method of a compare folder: end-of-task train accuracy and a few indicators per
layer at chosen tasks, mean over the seeds found (± standard error when there are several).
The indicators are read from each run's indicators.csv; `hessian_rank_fraction` is the
stochastic-Lanczos-quadrature share of the layer block's eigenvalues above the rank
threshold (needs a run recorded with `[indicators] hessian_rank = true`).

    python3 results/diagnosis/figure1.py results/diagnosis/cpu-default-rank64 [--tasks 1,5,10,20]
"""
import argparse
import csv
import math
import pathlib
from collections import defaultdict

COLUMNS = ["hessian_rank_fraction", "sharpness", "network_sharpness", "weight_norm",
           "effective_rank", "dead_fraction"]


def mean_se(xs):
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, 0.0
    var = sum((x - m) ** 2 for x in xs) / (len(xs) - 1)
    return m, math.sqrt(var / len(xs))


def fmt(xs, percent=False):
    if not xs:
        return "–"
    m, se = mean_se(xs)
    if percent:
        return f"{100 * m:.2f} %" + (f" ± {100 * se:.2f}" if len(xs) > 1 else "")
    digits = 3 if abs(m) < 100 else 1
    return f"{m:.{digits}f}" + (f" ± {se:.{digits}f}" if len(xs) > 1 else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=pathlib.Path)
    parser.add_argument("--tasks", default="1,5,10,20", help="1-based task numbers")
    parser.add_argument("--layers", default="0,1,2")
    args = parser.parse_args()
    tasks = [int(t) - 1 for t in args.tasks.split(",")]
    layers = [int(x) for x in args.layers.split(",")]
    acc = defaultdict(list)  # (method, task) -> accuracies over seeds
    ind = defaultdict(list)  # (method, task, layer, column) -> values over seeds
    for run in sorted(p for p in args.folder.iterdir() if (p / "indicators.csv").is_file()):
        method = run.name.split("_")[0]
        with open(run / "tasks.csv") as f:
            for row in csv.DictReader(f):
                acc[(method, int(row["task"]))].append(float(row["train_accuracy"]))
        with open(run / "indicators.csv") as f:
            for row in csv.DictReader(f):
                for c in COLUMNS:
                    if row.get(c):
                        ind[(method, int(row["task"]), int(row["layer"]), c)].append(float(row[c]))
    methods = sorted({m for m, _ in acc})
    present = [c for c in COLUMNS if any(k[3] == c for k in ind)]
    for c in ["accuracy"] + present:
        print(f"\n**{c}**" + ("" if c in ("accuracy", "network_sharpness") else " (layer 0 / 1 / 2)"))
        print()
        print("| method | " + " | ".join(f"task {t + 1}" for t in tasks) + " |")
        print("|---" * (len(tasks) + 1) + "|")
        for m in methods:
            cells = []
            for t in tasks:
                if c == "accuracy":
                    cells.append(fmt(acc[(m, t)]))
                elif c == "network_sharpness":
                    cells.append(fmt(ind[(m, t, 0, c)]))
                else:
                    pct = c == "hessian_rank_fraction"
                    cells.append(" / ".join(fmt(ind[(m, t, layer, c)], pct) for layer in layers))
            print(f"| {m} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
