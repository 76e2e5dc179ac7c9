#!/usr/bin/env bash
# Proof that the CUDA runner works, on a machine with an NVIDIA GPU.
#
# The GPU machine may have no Rust toolchain and no network, so this runs in two halves:
#
#   scripts/gpu-check.sh build [BUNDLE]       # where Rust is (no GPU needed): builds the
#       release binaries and the test executables with the `cuda` feature into BUNDLE
#       (default target/gpu-bundle, ~tens of MB), with a manifest.
#   scripts/gpu-check.sh run [BUNDLE] [OUT]   # on the GPU machine: runs everything from the
#       bundle and writes the results to OUT (default target/gpu-check-results):
#         env.txt          GPU, driver, PyTorch
#         tests.txt        kernel device tests, CPU/CUDA equivalence tests (both engines,
#                          same seed and data: first controller events' statistics within
#                          1e-3 relative, per-task accuracies within 1 point)
#         gpu-check.json   every kernel vs its CPU reference on random sizes; SGEMM TFLOP/s at
#                          the MLP's shapes; MLP training samples/s (safestep-gpu-check)
#         torch.json       the same SGEMM shapes with torch.matmul (fp32, TF32 off) and the
#                          same MLP in PyTorch eager (gpu/bench/torch_bench.py)
#         bench-cuda.json  `safestep bench --backend cuda` (the production training step)
#         bench-cuda-hvp-rows-64.json  the same with the opt-in `--hvp-rows 64`
#         run.txt          a paper-scale random-label MNIST run on the GPU, timed
#         summary.md       pass/fail and the ratios against PyTorch (targets: MLP >= 1x,
#                          SGEMM >= 50%)
#   scripts/gpu-check.sh all [OUT]            # both, on a GPU machine that also has Rust.
#
# Exit status of `run`: 0 when every test and check passes (the performance targets are
# reported, not enforced), 1 otherwise, 2 when no GPU is visible.
# GPU_CHECK_QUICK=1 shrinks every measurement to a few steps (to try the script on the CPU
# emulation in gpu/emu; its figures are then meaningless).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mode="${1:-}"

build() {
  set -e
  local bundle="${1:-$ROOT/target/gpu-bundle}"
  cd "$ROOT"
  eval "$(scripts/cuda-sdk.sh)"
  local log
  log="$(mktemp)"
  rm -rf "$bundle"
  mkdir -p "$bundle"
  cargo build --release -p safestep-host -p safestep-gpu \
    --features safestep-host/cuda,safestep-gpu/cuda --bins
  # Copy at once: another build in the same target/ could replace the binaries.
  cp target/release/safestep target/release/safestep-gpu-check "$bundle/"
  if "$bundle/safestep" run --backend cuda --tasks 1 --epochs 1 --quiet --out "$(mktemp -d)/r" 2>&1 \
    | grep -q 'built without the `cuda` feature'; then
    echo "gpu-check build: $bundle/safestep lacks the cuda feature (a concurrent build replaced it?)"
    return 1
  fi
  cargo test --release --no-run -p safestep-gpu --features cuda --message-format=json >"$log"
  python3 - "$log" "$bundle" <<'PY'
import json, shutil, sys, os
log, bundle = sys.argv[1:3]
want = {("safestep-gpu", "device"): "gpu-device-tests", ("safestep-gpu", "equivalence"): "gpu-equivalence-tests"}
found = {}
for line in open(log):
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    pkg = m["package_id"]
    name = m["target"]["name"]
    for (p, t), dest in want.items():
        if p in pkg and name == t and "test" in m["target"]["kind"] + (["test"] if m["profile"]["test"] else []):
            found[dest] = m["executable"]
missing = set(want.values()) - set(found)
if missing:
    sys.exit(f"gpu-check build: test executables not found: {sorted(missing)}")
with open(os.path.join(bundle, "manifest.txt"), "w") as f:
    for dest, exe in sorted(found.items()):
        shutil.copy(exe, os.path.join(bundle, dest))
        f.write(f"{dest}\t{exe}\n")
PY
  strip "$bundle"/* 2>/dev/null || true
  cp gpu/bench/torch_bench.py "$bundle/"
  git rev-parse HEAD >"$bundle/commit.txt" 2>/dev/null || true
  rm -f "$log"
  echo "gpu-check: bundle ready in $bundle ($(du -sh "$bundle" | cut -f1)):"
  ls -l "$bundle"
}

run() {
  local bundle="${1:-$ROOT/target/gpu-bundle}" out="${2:-$ROOT/target/gpu-check-results}"
  mkdir -p "$out"
  for f in safestep safestep-gpu-check gpu-device-tests gpu-equivalence-tests torch_bench.py; do
    [[ -e "$bundle/$f" ]] || { echo "gpu-check: $bundle/$f missing; run '$0 build' first"; return 1; }
  done
  local status=0 t0=$SECONDS quick=()
  local bench_args=(--steps 300 --repeats 3) run_args=(--tasks 4 --epochs 250)
  if [[ -n "${GPU_CHECK_QUICK:-}" ]]; then
    quick=(--quick); bench_args=(--steps 3 --repeats 1); run_args=(--tasks 1 --epochs 1)
    export SAFESTEP_CUDA_TEST_QUICK=1
  fi
  {
    date -u
    echo "bundle commit: $(cat "$bundle/commit.txt" 2>/dev/null)"
    nvidia-smi -L 2>&1 || true
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || true
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0))' 2>&1 || true
  } >"$out/env.txt"
  cat "$out/env.txt"

  echo "== kernel checks and benchmarks (safestep-gpu-check)"
  "$bundle/safestep-gpu-check" "${quick[@]}" --json "$out/gpu-check.json" | tee "$out/gpu-check.txt"
  local rc=${PIPESTATUS[0]}
  if [[ $rc -eq 2 ]]; then echo "gpu-check: no GPU visible"; return 2; fi
  [[ $rc -eq 0 ]] || status=1

  echo "== device tests and CPU/CUDA equivalence tests"
  {
    echo "### gpu-device-tests"
    "$bundle/gpu-device-tests" --test-threads 1 --nocapture 2>&1
    echo "exit $?"
    echo "### gpu-equivalence-tests (CPU vs CUDA engines)"
    "$bundle/gpu-equivalence-tests" --test-threads 1 --nocapture 2>&1
    echo "exit $?"
  } >"$out/tests.txt"
  grep -E '^test |test result|^exit|SKIP|accuracy' "$out/tests.txt"
  grep -q '^exit [^0]' "$out/tests.txt" && status=1
  grep -q 'SKIP' "$out/tests.txt" && { echo "gpu-check: a device test skipped on a GPU machine"; status=1; }

  echo "== PyTorch baselines"
  python3 "$bundle/torch_bench.py" ${GPU_CHECK_QUICK:+--steps 3} --json "$out/torch.json" || status=1

  echo "== safestep bench --backend cuda"
  "$bundle/safestep" bench --backend cuda "${bench_args[@]}" --json "$out/bench-cuda.json" || status=1
  echo "== the same with the opt-in sub-batch curvature estimate (--hvp-rows 64)"
  "$bundle/safestep" bench --backend cuda "${bench_args[@]}" --hvp-rows 64 \
    --json "$out/bench-cuda-hvp-rows-64.json" || status=1

  echo "== paper-scale run: random-label MNIST, 784-256-256-10, batch 256, 250 epochs/task"
  {
    local s=$SECONDS
    "$bundle/safestep" run --backend cuda --benchmark random-label-mnist "${run_args[@]}" \
      --examples 2000 --batch-size 256 --hidden 256,256 --scheduler combined --quiet \
      --out "$(mktemp -d)/run" 2>&1
    echo "exit $? after $((SECONDS - s)) s"
  } >"$out/run.txt"
  tail -n 3 "$out/run.txt"

  python3 - "$out" "$status" <<'PY' | tee "$out/summary.md"
import json, os, sys
out, status = sys.argv[1], int(sys.argv[2])
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception as e:
        return {"error": str(e)}
g, t, b = load("gpu-check.json"), load("torch.json"), load("bench-cuda.json")
rows64 = load("bench-cuda-hvp-rows-64.json")
print("# safestep GPU check\n")
print(f"device: {g.get('device')} (cc {g.get('compute_capability')}), PTX {g.get('ptx_arch')}; torch {t.get('torch')}\n")
checks = g.get("checks", [])
print(f"kernel checks: {sum(c['pass'] for c in checks)}/{len(checks)} pass")
for c in checks:
    if not c["pass"]:
        print(f"- FAIL {c['name']} [{c['sizes']}]: {c['max_err']} > {c['tol']}")
tests = open(os.path.join(out, "tests.txt")).read()
print(f"device + equivalence tests: {'all pass' if '### ' in tests and 'FAILED' not in tests and 'exit 1' not in tests and 'exit 101' not in tests else 'FAILURES (see tests.txt)'}\n")
print("## SGEMM vs torch.matmul (fp32, TF32 off); target >= 50%\n")
print("| GEMM | layout | m n k | safestep TFLOP/s | torch TFLOP/s | ratio |")
print("|---|---|---|---|---|---|")
tm = {(r["layout"], r["m"], r["n"], r["k"]): r for r in t.get("matmul", [])}
for r in g.get("sgemm", []):
    ref = tm.get((r["layout"], r["m"], r["n"], r["k"]))
    ratio = r["tflops"] / ref["tflops"] if ref else float("nan")
    print(f"| {r['label']} | {r['layout']} | {r['m']} {r['n']} {r['k']} | {r['tflops']:.2f} | "
          f"{ref['tflops'] if ref else float('nan'):.2f} | {ratio:.0%} |")
m, tmlp = g.get("mlp", {}), t.get("mlp", {})
print("\n## MLP 784-256-256-10 training, batch 256; target >= 1x PyTorch eager\n")
ours = m.get("adam_samples_per_sec", float("nan"))
for key, label in [("eager_samples_per_sec", "PyTorch eager"), ("eager_sync_samples_per_sec", "PyTorch eager, loss.item() each step")]:
    ref = tmlp.get(key, float("nan"))
    print(f"- safestep {ours:,.0f} samples/s vs {label} {ref:,.0f}: {ours / ref:.2f}x")
print(f"- safestep with controller statistics every {m.get('interval')} steps: {m.get('scheduled_samples_per_sec', float('nan')):,.0f} samples/s")
def bench_mode(bench, scheduler, key="samples_per_sec"):
    return next((m[key] for m in bench.get("modes", []) if m.get("scheduler") == scheduler), float("nan"))
if "modes" in b:
    print(f"- `safestep bench --backend cuda` (production trainer): {bench_mode(b, 'off'):,.0f} samples/s plain Adam, "
          f"{bench_mode(b, 'combined'):,.0f} with the combined scheduler (overhead {100 * bench_mode(b, 'combined', 'overhead'):.1f} %)")
if "modes" in rows64:
    print(f"- the same with `--hvp-rows 64`: {bench_mode(rows64, 'combined'):,.0f} samples/s with the combined scheduler "
          f"(overhead {100 * bench_mode(rows64, 'combined', 'overhead'):.1f} %)")
run = open(os.path.join(out, "run.txt")).read().strip().splitlines()
print(f"\npaper-scale run: {run[-1] if run else 'no output'}")
print(f"\noverall: {'PASS' if status == 0 else 'FAIL'}")
PY
  echo "gpu-check: results in $out ($((SECONDS - t0)) s)"
  return $status
}

case "$mode" in
  build) shift; build "$@" ;;
  run) shift; run "$@" ;;
  all) shift; build && run "$ROOT/target/gpu-bundle" "${1:-$ROOT/target/gpu-check-results}" ;;
  *) sed -n '2,30p' "$0"; exit 64 ;;
esac
