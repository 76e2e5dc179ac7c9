#!/usr/bin/env bash
# slurm-sweep-check.sh -- `safestep compare --slurm` against a real one-node Slurm
# (scripts/slurm-local.sh): plan a sweep of 6 small runs, submit it, cancel one array task
# while it runs, resubmit what did not finish, collect, and check the table equals a local
# `compare` of the same combinations. Run as root on Debian (CI does); takes 1-3 minutes.
#
#   scripts/slurm-sweep-check.sh [SAFESTEP_BINARY]   (default: target/release/safestep)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/release/safestep}")
[ -x "$bin" ] || { echo "slurm-sweep-check: no safestep binary at $bin" >&2; exit 1; }
timeout_s=${SLURM_SWEEP_TIMEOUT:-300}

scripts/slurm-local.sh install >&2
state=$(mktemp -d /tmp/ssw.XXXXXX)
work=$(mktemp -d)
out=$(scripts/slurm-local.sh start "$state") && eval "$out"
trap 'scripts/slurm-local.sh stop "$state" >&2 || true; rm -rf "$work"' EXIT

# 4 tasks of ~0.5-1 s each: task 0 is cancelled once its first task is recorded, so the
# cancel lands mid-run (with seconds to spare) and the resubmitted line resumes from a
# checkpoint, whatever the machine's speed.
sweep=(--methods adam,adam-l2,crelu --schedulers off,combined --lrs 1e-3 --seeds 0..1
       --tasks 4 --epochs 40 --examples 400 --batch-size 50)

echo "== local compare"
"$bin" compare --quiet --jobs 2 "${sweep[@]}" --out "$work/local" >/dev/null

echo "== plan and submit"
"$bin" compare --quiet "${sweep[@]}" --out "$work/out" --slurm "$work/slurm" --throttle 2 >/dev/null
submitted=$("$work/slurm/submit.sh")
echo "$submitted"
array=$(sed -n 's/^array job \([0-9]*\),.*/\1/p' <<<"$submitted")
[ -n "$array" ] || { echo "slurm-sweep-check: no array job id in: $submitted" >&2; exit 1; }

# Wait (bounded) until no job of `pattern` is pending or running.
wait_gone() {
  local what=$1 start=$SECONDS
  while squeue -h -j "$what" 2>/dev/null | grep -q .; do
    (( SECONDS - start < timeout_s )) || { echo "slurm-sweep-check: timeout waiting for $what" >&2; squeue >&2; exit 1; }
    sleep 1
  done
}

echo "== cancel array task 0 after its first task, while it runs"
line0=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["dir"])' "$work/slurm/manifest.jsonl")
start=$SECONDS
until [ -f "$line0/tasks.csv" ] && [ "$(wc -l < "$line0/tasks.csv")" -ge 2 ]; do
  (( SECONDS - start < timeout_s )) || { echo "slurm-sweep-check: line 0 never finished a task" >&2; squeue >&2; exit 1; }
  sleep 0.05
done
scancel "${array}_0"
wait_gone "$array"
sleep 2   # the dependent collect job
collected=$("$bin" compare --collect "$work/slurm")
if [ "$(wc -l < "$line0/tasks.csv")" -ge 5 ]; then
  echo "slurm-sweep-check: line 0 finished before scancel reached it (the runs are too short for this machine)" >&2; exit 1
fi
grep -q "missing line 0" <<<"$collected" || { echo "slurm-sweep-check: the cancelled line is not reported missing:"; echo "$collected"; exit 1; } >&2
echo "   collect reports the cancelled line missing"

echo "== resubmit what did not finish"
"$bin" compare --slurm "$work/slurm" --resubmit
grep -q -- "--array=0$" "$work/slurm/resubmit.sbatch" || { echo "slurm-sweep-check: resubmit.sbatch is not an array of line 0" >&2; exit 1; }
resubmitted=$("$work/slurm/submit-resubmit.sh")
echo "$resubmitted"
wait_gone "$(sed -n 's/^array job \([0-9]*\),.*/\1/p' <<<"$resubmitted")"
sleep 2

echo "== collect and compare with the local table"
"$bin" compare --collect "$work/slurm" >/dev/null
strip() { cut -d, -f1-10,12- "$1"; }   # drop wall_seconds
if ! diff <(strip "$work/local/compare.csv") <(strip "$work/out/compare.csv"); then
  echo "slurm-sweep-check: the Slurm sweep's table differs from the local compare" >&2
  exit 1
fi
for run in "$work/local"/*/; do
  name=$(basename "$run")
  diff <(cut -d, -f1-5,7- "$run/tasks.csv") <(cut -d, -f1-5,7- "$work/out/$name/tasks.csv") >/dev/null \
    || { echo "slurm-sweep-check: $name differs" >&2; exit 1; }
done
echo "slurm-sweep-check: ok (6 runs through a real Slurm: one cancelled and resubmitted; table and runs identical to a local compare)"
