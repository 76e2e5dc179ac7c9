#!/usr/bin/env bash
# slurm-local-selftest.sh -- end-to-end check of scripts/slurm-local.sh (for CI; root).
#   1. job array --array=0-5%3: all 6 tasks run, never more than 3 at once
#   2. --dependency=afterany:<array> runs only after every array task ended
#   3. scancel of one running array task, then resubmit just that index
#   5. stop leaves no slurm/munge process behind
# Usage: scripts/slurm-local-selftest.sh [STATE_DIR]   (exit 0 only if all pass)
# Expects to be the only Slurm on the machine (fixed ports 6817/6818).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
S=${1:-${TMPDIR:-/tmp}/safestep-slurm-selftest}
T=${SELFTEST_TIMEOUT:-120}
W=$(mktemp -d "${TMPDIR:-/tmp}/slurm-selftest.XXXXXX")
t_begin=$SECONDS

say() { echo "selftest: $*" >&2; }
fail() {
  say "FAIL: $* (job files in $W)"
  "$here/slurm-local.sh" status "$S" >&2 || true
  exit 1
}
trap '"$here/slurm-local.sh" stop "$S" >/dev/null 2>&1 || true' EXIT

# wait_until DESC CMD...: poll CMD every 0.5 s, fail after $T seconds.
wait_until() {
  local desc=$1 end=$((SECONDS + T))
  shift
  until "$@"; do
    ((SECONDS < end)) || fail "timeout (${T}s) waiting for $desc"
    sleep 0.5
  done
}
no_jobs() { [[ -z $(squeue -h -o %i) ]]; }
state_is() { [[ $(squeue -h -t all -j "$1" -o %T 2>/dev/null) == "$2" ]]; }
# last field of the line "WORD ..." in file
stamp() { awk -v w="$2" '$1 == w {print $NF}' "$1"; }

# live (non-zombie) slurm/munge daemons; pid 1 of some containers reaps zombies late
daemons() {
  local n p
  for n in slurmctld slurmd slurmstepd munged; do
    for p in $(pgrep -x "$n"); do
      [[ $(awk '{print $3}' "/proc/$p/stat" 2>/dev/null) == [ZX] ]] || ps -o pid=,args= -p "$p" || true
    done
  done
}

running=$(daemons)
[[ -z $running ]] || fail "slurm/munge already running here, stop it first: $running"
"$here/slurm-local.sh" install
t0=$SECONDS
# 4 CPUs (more than the machine may have; slurm.conf uses config_overrides) so that
# the %3 throttle, not the CPU count, is what limits the array.
env_line=$(SLURM_LOCAL_CPUS=4 "$here/slurm-local.sh" start "$S") || fail "slurm-local.sh start failed"
eval "$env_line"
t_start=$((SECONDS - t0))

cat >"$W/task.sh" <<'EOF'
#!/bin/bash
echo "start $SLURM_ARRAY_TASK_ID $(date +%s.%N)"
sleep "${SLEEP:-3}"
echo "end $SLURM_ARRAY_TASK_ID $(date +%s.%N)"
EOF
sub() { sbatch --parsable --chdir="$W" "$@"; }

# ---- 1. array with throttle ----
arr=$(SLEEP=3 sub --array=0-5%3 -o "$W/a_%a.out" "$W/task.sh")
# shellcheck disable=SC2016 # expanded by the job, not here
dep=$(sub --dependency=afterany:"$arr" -o "$W/dep.out" --wrap 'echo "done $(date +%s.%N)"')
say "array job $arr, dependent job $dep"
wait_until "array $arr and job $dep to finish" no_jobs
for i in 0 1 2 3 4 5; do
  f=$W/a_$i.out
  [[ -s $f && -n $(stamp "$f" end) ]] || fail "array task $i did not finish (${f}: $(cat "$f" 2>&1))"
  [[ $(awk '$1 == "start" {print $2}' "$f") == "$i" ]] || fail "task $i printed the wrong index"
done
maxpar=$(for i in 0 1 2 3 4 5; do
  echo "$(stamp "$W/a_$i.out" start) 1"
  echo "$(stamp "$W/a_$i.out" end) -1"
done | sort -k1,1n -k2,2n | awk '{n += $2; if (n > m) m = n} END {print m}')
((maxpar <= 3)) || fail "$maxpar array tasks ran at once (limit %3)"
((maxpar >= 2)) || fail "array tasks never ran in parallel (max $maxpar)"
say "1 ok: 6/6 tasks ran, at most $maxpar at once"

# ---- 2. dependency ----
last_end=$(for i in 0 1 2 3 4 5; do stamp "$W/a_$i.out" end; done | sort -n | tail -n1)
dep_t=$(stamp "$W/dep.out" "done")
[[ -n $dep_t ]] || fail "dependent job $dep did not run ($(cat "$W/dep.out" 2>&1))"
awk -v a="$dep_t" -v b="$last_end" 'BEGIN {exit !(a >= b)}' ||
  fail "dependent job ran at $dep_t, before the array ended ($last_end)"
say "2 ok: dependent job ran after the array"

# ---- 3. cancel one running task, resubmit that index ----
arr2=$(SLEEP=10 sub --array=0-3 -o "$W/c_%A_%a.out" "$W/task.sh")
wait_until "task ${arr2}_1 to run" state_is "${arr2}_1" RUNNING
scancel "${arr2}_1"
wait_until "task ${arr2}_1 to be cancelled" state_is "${arr2}_1" CANCELLED
re=$(SLEEP=1 sub --array=1 -o "$W/c_%A_%a.out" "$W/task.sh")
wait_until "jobs $arr2 and $re to finish" no_jobs
for i in 0 2 3; do
  [[ -n $(stamp "$W/c_${arr2}_$i.out" end) ]] || fail "task ${arr2}_$i did not finish"
done
[[ -z $(stamp "$W/c_${arr2}_1.out" end) ]] || fail "cancelled task ${arr2}_1 ran to the end"
state_is "${re}_1" COMPLETED || fail "resubmitted ${re}_1 is $(squeue -h -t all -j "${re}_1" -o %T)"
[[ -n $(stamp "$W/c_${re}_1.out" end) ]] || fail "resubmitted task ${re}_1 did not finish"
say "3 ok: ${arr2}_1 cancelled, resubmitted as ${re}_1 and finished"

# ---- 5. stop ----
"$here/slurm-local.sh" stop "$S"
trap - EXIT
left=$(daemons)
[[ -z $left ]] || fail "processes left after stop: $left"
say "5 ok: nothing left running"
rm -rf "$W"
say "PASS (start ${t_start}s, total $((SECONDS - t_begin))s)"
