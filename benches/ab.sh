#!/usr/bin/env bash
# Two binaries side by side: `safestep bench` of one scheduler mode, the binaries alternating
# round by round (which goes first alternates too) so that drifts in the machine's speed hit
# both alike; prints each one's median ms/step and the median of the per-round ratios.
#
# Usage: benches/ab.sh ROUNDS NEW BASE MODE [bench options...]
#   e.g. benches/ab.sh 21 target/release/safestep /tmp/safestep-main off --threads 2
#   MODE: off, gradient, volatility or combined (one of `bench --schedulers`).
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
rounds=$1 new=$2 base=$3 mode=$4
shift 4
for r in $(seq "$rounds"); do
  order="base new"
  [ $((r % 2)) = 0 ] && order="new base"
  for which in $order; do
    exe=$new
    [ "$which" = base ] && exe=$base
    ms=$("$exe" bench --schedulers "$mode" "$@" | awk -v m="$mode" '$1 == "scheduler" && $2 == m {print $5}')
    if [ "$which" = new ]; then t_new=$ms; else t_base=$ms; fi
  done
  echo "$t_new $t_base"
done | python3 -c '
import statistics as st, sys
rows = [tuple(map(float, line.split())) for line in sys.stdin]
ratios = [n / b for n, b in rows]
print(f"new {st.median(n for n, _ in rows):.3f} ms/step, base {st.median(b for _, b in rows):.3f} ms/step; "
      f"new/base per round: median {st.median(ratios):.3f} (range {min(ratios):.3f}-{max(ratios):.3f}, {len(rows)} rounds)")
'
