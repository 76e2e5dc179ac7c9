#!/usr/bin/env bash
# One thread against two, side by side: `safestep bench` at batch 256 (plain Adam and the
# combined scheduler) and at batches 64, 16 and 1 (plain Adam), each configuration once per
# round, rounds alternating so that drifts in the machine's speed hit all alike; prints the
# median ms/step of each and the two-thread speed-up. With a second binary, both binaries
# alternate too (e.g. the branch against main) and their ratios are printed.
#
# Usage: benches/threads.sh [rounds] [binary] [baseline binary]   (from the repository root)
set -euo pipefail
rounds=${1:-5}
bin=${2:-target/release/safestep}
base=${3:-}
out=$(mktemp)
trap 'rm -f "$out"' EXIT
echo "round,binary,threads,batch,off_ms,combined_ms" >"$out"
for r in $(seq "$rounds"); do
  for batch in 256 64 16 1; do
    for which in new base; do
      exe=$bin
      if [ "$which" = base ]; then
        [ -n "$base" ] || continue
        exe=$base
      fi
      modes=off
      [ "$batch" = 256 ] && modes=off,combined
      for threads in 1 2; do
        res=$("$exe" bench --schedulers "$modes" --batch-size "$batch" --steps 300 --repeats 3 \
          --threads "$threads")
        off=$(awk '/scheduler off/ {print $5}' <<<"$res")
        comb=$(awk '/scheduler combined/ {print $5}' <<<"$res")
        echo "$r,$which,$threads,$batch,$off,$comb" >>"$out"
      done
    done
  done
  echo "round $r done ($(uptime | sed 's/.*load average/load average/'))" >&2
done
python3 - "$out" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1])))
def med(which, threads, batch, col):
    v = [float(r[col]) for r in rows
         if (r["binary"], r["threads"], r["batch"]) == (which, str(threads), str(batch)) and r[col]]
    return statistics.median(v) if v else None
print("| batch | mode | binary | 1 thread ms/step | 2 threads ms/step | 2 threads speed-up |")
print("|---|---|---|---|---|---|")
for batch in (256, 64, 16, 1):
    for col, mode in (("off_ms", "plain Adam"), ("combined_ms", "combined")):
        for which in ("new", "base"):
            one, two = med(which, 1, batch, col), med(which, 2, batch, col)
            if one and two:
                print(f"| {batch} | {mode} | {which} | {one:.3f} | {two:.3f} | {one / two:.2f}x |")
if any(r["binary"] == "base" for r in rows):
    print("\nnew/base ms/step (medians):")
    for batch in (256, 64, 16, 1):
        for col in ("off_ms", "combined_ms"):
            for t in (1, 2):
                n, b = med("new", t, batch, col), med("base", t, batch, col)
                if n and b:
                    print(f"  batch {batch} {col[:-3]} {t} thread(s): {n / b:.3f}")
EOF
