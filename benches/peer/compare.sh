#!/usr/bin/env bash
# Side-by-side plain-Adam training throughput: safestep's CPU engine vs the JAX peer.
# Same workload on both sides: MLP 784-256-256-10, batch 256, Adam, 1000 random-label
# digits of the embedded MNIST subset. Rounds alternate between the four configurations
# so that background load hits them alike; each line is the best of 3 repeats.
#
# Usage: benches/peer/compare.sh [rounds] [steps]     (from the repository root)
# Needs: a JAX venv at .venv (python3 -m venv .venv && .venv/bin/pip install jax).
set -euo pipefail
rounds=${1:-3}
steps=${2:-300}
cd "$(dirname "$0")/../.."
cargo build --release -q -p safestep-host
ours() {  # threads steps: plain Adam through the production training step
  target/release/safestep bench --schedulers off --threads "$1" --steps "$2" --repeats 3 \
    | awk '/scheduler off/ {print "best:", $3, "samples/s (median of 3)"}'
}
py=.venv/bin/python
if [ ! -x "$py" ]; then
  echo "no JAX venv at .venv: python3 -m venv .venv && .venv/bin/pip install jax" >&2
  exit 1
fi
for r in $(seq "$rounds"); do
  echo "round $r ($(uptime | sed 's/.*load average/load average/'))"
  echo "  safestep 1 core : $(taskset -c 0 bash -c "$(declare -f ours); ours 1 $steps")"
  echo "  jax      1 core : $(taskset -c 0 "$py" benches/peer/jax_mlp.py --steps "$steps" 2>&1 | grep best)"
  echo "  safestep 2 cores: $(taskset -c 0,1 bash -c "$(declare -f ours); ours 2 $steps")"
  echo "  jax      2 cores: $(taskset -c 0,1 "$py" benches/peer/jax_mlp.py --steps "$steps" 2>&1 | grep best)"
done
