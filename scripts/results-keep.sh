#!/usr/bin/env bash
# Turns the finished runs of sweep folders into what results/ keeps: each run's
# config.toml, summary.json, tasks.csv and indicators.csv as plain files (a run folder
# holds them as links into its current snapshot), and nothing else (no checkpoint,
# controller log or snapshots). Unfinished runs and runs still locked are left alone.
# Then stages those files and the sweep tables (compare.*, failed.csv, analysis/*.{md,csv}).
#
# Usage: scripts/results-keep.sh SWEEP_DIR...      (from the repository root)
set -euo pipefail
for sweep in "$@"; do
  for run in "$sweep"/*/; do
    run=${run%/}
    [ -e "$run/summary.json" ] || continue
    grep -q '"finished": true' "$run/summary.json" || { echo "skip (unfinished): $run"; continue; }
    if [ -s "$run/.lock" ] && kill -0 "$(tr -dc 0-9 < "$run/.lock")" 2>/dev/null; then
      echo "skip (in use): $run"; continue
    fi
    for f in config.toml summary.json tasks.csv indicators.csv; do
      if [ -L "$run/$f" ]; then
        cp --remove-destination "$(readlink -f "$run/$f")" "$run/$f"
      fi
    done
    rm -rf "$run/.snapshots" "$run/current" "$run/checkpoint.bin" "$run/controller.csv" "$run/.lock"
    for f in config.toml summary.json tasks.csv indicators.csv; do
      [ -f "$run/$f" ] && git add -f "$run/$f"
    done
  done
  for f in "$sweep"/compare.csv "$sweep"/compare.md "$sweep"/failed.csv "$sweep"/analysis/*.md "$sweep"/analysis/*.csv; do
    [ -f "$f" ] && git add -f "$f"
  done
done
echo "staged; results/ is $(du -sh results | cut -f1)"
