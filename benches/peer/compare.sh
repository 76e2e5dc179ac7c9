#!/usr/bin/env bash
# Side-by-side plain-Adam training throughput: safestep's CPU engine vs the JAX and PyTorch
# peers. Same workload everywhere: MLP 784-256-256-10, batch 256 (or the third argument),
# Adam, 1000 random-label digits of the embedded MNIST subset. Rounds alternate between the
# configurations so that background load hits them alike. Every side reports the median of 3 repeats; the end
# prints, per peer and core count, the ratio ours/peer of each round.
#
# Usage: benches/peer/compare.sh [rounds] [steps] [batch]     (from the repository root)
# Peers (each optional; a missing one is reported and skipped):
#   JAX:     python3 -m venv .venv && .venv/bin/pip install jax
#   PyTorch: a venv at .venv-torch whose `import torch` works on CPU (recipe and caveats in
#            benches/peer/README.md); eager and torch.compile are both run.
set -euo pipefail
rounds=${1:-3}
steps=${2:-300}
batch=${3:-256}
cd "$(dirname "$0")/../.."
cargo build --release -q -p safestep-host
ours() {  # threads steps: plain Adam through the production training step
  target/release/safestep bench --schedulers off --threads "$1" --steps "$2" --repeats 3 \
    --batch-size "$3" \
    | awk '/scheduler off/ {print $3, "samples/s (median of 3)"}'
}
jax=.venv/bin/python
torch=.venv-torch/bin/python
have_jax=0; have_torch=0
if [ -x "$jax" ] && "$jax" -c "import jax" 2>/dev/null; then have_jax=1; else
  echo "JAX peer skipped: no working .venv (python3 -m venv .venv && .venv/bin/pip install jax)" >&2
fi
if [ -x "$torch" ] && "$torch" -c "import torch" 2>/dev/null; then have_torch=1; else
  echo "PyTorch peer skipped: no .venv-torch that imports torch (see benches/peer/README.md)" >&2
fi
out=$(mktemp)
trap 'rm -f "$out"' EXIT
record() {  # round cores who line: print the line, keep its samples/s
  echo "  $(printf '%-13s' "$3") $2: $4"
  rate=$(grep -oE '^median: [0-9]+|^[0-9]+ samples/s \(median' <<<"$4" | grep -oE '[0-9]+' | head -1 || true)
  [ -n "$rate" ] && echo "$1,$2,$3,$rate" >>"$out"
  return 0
}
peer() {  # round cores cpus threads: one line per available peer
  local r=$1 label=$2 cpus=$3 threads=$4
  if [ "$have_jax" = 1 ]; then
    record "$r" "$label" jax "$(taskset -c "$cpus" "$jax" benches/peer/jax_mlp.py --steps "$steps" --batch "$batch" 2>&1 | grep median || echo failed)"
  fi
  if [ "$have_torch" = 1 ]; then
    for mode in eager compile; do
      record "$r" "$label" "torch $mode" "$(taskset -c "$cpus" "$torch" benches/peer/torch_mlp.py --mode $mode --threads "$threads" --steps "$steps" --batch "$batch" 2>&1 | grep -E 'median|failed|unavailable' || echo failed)"
    done
  fi
}
for r in $(seq "$rounds"); do
  echo "round $r ($(uptime | sed 's/.*load average/load average/'))"
  record "$r" "1 core " safestep "$(taskset -c 0 bash -c "$(declare -f ours); ours 1 $steps $batch")"
  peer "$r" "1 core " 0 1
  record "$r" "2 cores" safestep "$(taskset -c 0,1 bash -c "$(declare -f ours); ours 2 $steps $batch")"
  peer "$r" "2 cores" 0,1 2
done
python3 - "$out" <<'EOF'
import collections, csv, statistics, sys
rate = collections.defaultdict(dict)  # (cores, who) -> {round: samples/s}
for r, cores, who, sps in csv.reader(open(sys.argv[1])):
    rate[(cores.strip(), who)][r] = float(sps)
print("\nours/peer, samples/s per round (median of repeats each side):")
for (cores, who), peer in sorted(rate.items()):
    if who == "safestep":
        continue
    ours = rate.get((cores, "safestep"), {})
    ratios = [ours[r] / peer[r] for r in peer if r in ours]
    if ratios:
        print(f"  {cores:7} vs {who:13}: median {statistics.median(ratios):.2f}x, "
              f"rounds {min(ratios):.2f}-{max(ratios):.2f}x")
EOF
