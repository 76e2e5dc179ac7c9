#!/usr/bin/env bash
# Side-by-side plain-Adam training throughput: safestep's CPU engine vs the JAX and PyTorch
# peers. Same workload everywhere: MLP 784-256-256-10, batch 256, Adam, 1000 random-label
# digits of the embedded MNIST subset. Rounds alternate between the configurations so that
# background load hits them alike; safestep prints the median of 3 repeats, the peers the
# best of 3.
#
# Usage: benches/peer/compare.sh [rounds] [steps]     (from the repository root)
# Peers (each optional; a missing one is reported and skipped):
#   JAX:     python3 -m venv .venv && .venv/bin/pip install jax
#   PyTorch: a venv at .venv-torch whose `import torch` works on CPU (recipe and caveats in
#            benches/peer/README.md); eager and torch.compile are both run.
set -euo pipefail
rounds=${1:-3}
steps=${2:-300}
cd "$(dirname "$0")/../.."
cargo build --release -q -p safestep-host
ours() {  # threads steps: plain Adam through the production training step
  target/release/safestep bench --schedulers off --threads "$1" --steps "$2" --repeats 3 \
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
peer() {  # label cpus threads: one line per available peer
  local cpus=$2 threads=$3
  if [ "$have_jax" = 1 ]; then
    echo "  jax           $1: $(taskset -c "$cpus" "$jax" benches/peer/jax_mlp.py --steps "$steps" 2>&1 | grep best || echo failed)"
  fi
  if [ "$have_torch" = 1 ]; then
    for mode in eager compile; do
      echo "  torch $(printf '%-7s' $mode) $1: $(taskset -c "$cpus" "$torch" benches/peer/torch_mlp.py --mode $mode --threads "$threads" --steps "$steps" 2>&1 | grep -E 'best|failed|unavailable' || echo failed)"
    done
  fi
}
for r in $(seq "$rounds"); do
  echo "round $r ($(uptime | sed 's/.*load average/load average/'))"
  echo "  safestep      1 core : $(taskset -c 0 bash -c "$(declare -f ours); ours 1 $steps")"
  peer "1 core " 0 1
  echo "  safestep      2 cores: $(taskset -c 0,1 bash -c "$(declare -f ours); ours 2 $steps")"
  peer "2 cores" 0,1 2
done
