#!/usr/bin/env bash
# CUDA build check, no GPU needed (called by .ci/run):
#  1. install CUDA 13.0.x's compiler and headers from PyPI plus the libcuda link shim
#     (scripts/cuda-sdk.sh, cached under ~/.cache/safestep);
#  2. build the release binary and the gpu crate with the `cuda` feature;
#  3. validate every embedded PTX file with `ptxas -arch=sm_90` and check its ISA version
#     is one the R580 driver (CUDA 13.0) accepts;
#  4. clippy and the tests with the feature on (the device and CPU/CUDA equivalence tests,
#     gpu/tests/, print SKIP without a GPU);
#  5. the cuda-built binary starts here and `--backend cuda` fails with a clear message;
#  6. the whole CUDA path on the CPU: gpu/emu's fake driver runs the kernels, so the kernel
#     checks, the device tests, the CPU/CUDA equivalence tests and a short
#     `safestep run --backend cuda` execute for real (slowly) without a GPU
#     (about 5 minutes on 2 cores; SAFESTEP_CUDA_EMULATION=0 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
lap() { printf '    (%s: %ds)\n' "$1" $((SECONDS - t0)); }

eval "$(scripts/cuda-sdk.sh)"
lap "CUDA SDK ready"

cargo build --release -p safestep-host -p safestep-gpu --features safestep-host/cuda,safestep-gpu/cuda --bins \
  --message-format=json-render-diagnostics >"${TMPDIR:-/tmp}/safestep-cuda-build.json"
lap "release build with --features cuda"
# Private copies: a later non-cuda build in the same target/ would replace target/release/safestep.
bin="$(mktemp -d)"
cp target/release/safestep target/release/safestep-gpu-check "$bin/"

out_dir="$(python3 - "${TMPDIR:-/tmp}/safestep-cuda-build.json" <<'PY'
import json, sys
dirs = [m["out_dir"] for m in map(json.loads, open(sys.argv[1]))
        if m.get("reason") == "build-script-executed" and "safestep-gpu" in m.get("package_id", "")]
print(dirs[-1] if dirs else "")
PY
)"
[[ -n "$out_dir" && -d "$out_dir" ]] || { echo "cuda-check: no build-script output for safestep-gpu"; exit 1; }
shopt -s nullglob
ptx=("$out_dir"/*.ptx)
cu=(gpu/kernels/*.cu)
[[ ${#ptx[@]} -eq ${#cu[@]} ]] || { echo "cuda-check: ${#cu[@]} kernel files but ${#ptx[@]} PTX files in $out_dir"; exit 1; }
for f in "${ptx[@]}"; do
  "$PTXAS" -arch=sm_90 "$f" -o /dev/null
  ver="$(awk '/^\.version/{print $2; exit}' "$f")"
  python3 -c "import sys; v=tuple(map(int,'$ver'.split('.'))); sys.exit(0 if v <= (9,0) else 1)" \
    || { echo "cuda-check: $f has PTX ISA $ver; the R580 driver reads up to 9.0"; exit 1; }
  echo "ptxas -arch=sm_90 OK: $(basename "$f") (PTX ISA $ver)"
done
lap "PTX validated"

cargo clippy -p safestep-gpu --features cuda --all-targets -- -D warnings
cargo clippy -p safestep-host --features cuda --all-targets -- -D warnings
lap "clippy with --features cuda"

cargo test -p safestep-gpu --features cuda
lap "tests with --features cuda"

# The binary links the lazy-loading shim: no libcuda.so.1 needed to start.
if ldd "$bin/safestep" | grep -q 'libcuda'; then
  echo "cuda-check: the cuda-built safestep depends on libcuda at load time"; exit 1
fi
"$bin/safestep" --help >/dev/null
if ! command -v nvidia-smi >/dev/null 2>&1; then
  tmp="$(mktemp -d)"
  set +e
  msg="$("$bin/safestep" run --backend cuda --tasks 1 --epochs 1 --quiet --out "$tmp/run" 2>&1)"
  rc=$?
  set -e
  rm -rf "$tmp"
  [[ $rc -ne 0 ]] || { echo "cuda-check: --backend cuda succeeded without a GPU?"; exit 1; }
  grep -q 'no CUDA device/driver available' <<<"$msg" \
    || { echo "cuda-check: unclear error without a GPU: $msg"; exit 1; }
  echo "without a GPU, --backend cuda fails clearly: $(grep -m1 'no CUDA device' <<<"$msg")"
fi
lap "no-GPU behaviour checked"

if [[ "${SAFESTEP_CUDA_EMULATION:-1}" == 0 ]]; then
  echo "cuda-check: SAFESTEP_CUDA_EMULATION=0; skipping the CPU emulation of the CUDA path"
elif ! command -v "${CXX:-g++}" >/dev/null 2>&1; then
  echo "cuda-check: no C++ compiler (${CXX:-g++}); skipping the CPU emulation of the CUDA path"
else
  emu="$(mktemp -d)"
  gpu/emu/build.sh "$emu" >/dev/null
  export LD_LIBRARY_PATH="$emu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  "$bin/safestep-gpu-check" --no-bench | tail -n 1
  emulated() { # runs a test command on the emulator; its tests must run, not skip
    local out
    out="$("$@" 2>&1)" || { echo "$out"; echo "cuda-check: failed on the CPU emulation: $*"; exit 1; }
    grep -E '^test |test result|accuracy' <<<"$out"
    if grep -q 'SKIP' <<<"$out"; then echo "cuda-check: tests skipped on the CPU emulation"; exit 1; fi
  }
  emulated cargo test -p safestep-gpu --features cuda --test device -- --nocapture
  emulated env SAFESTEP_CUDA_TEST_QUICK=1 cargo test -p safestep-gpu --features cuda --test equivalence -- --nocapture
  tmp="$(mktemp -d)"
  "$bin/safestep" run --backend cuda --tasks 2 --epochs 2 --examples 300 --batch-size 64 \
    --scheduler combined --quiet --out "$tmp/run"
  test -s "$tmp/run/tasks.csv" || { echo "cuda-check: emulated cuda run wrote no tasks.csv"; exit 1; }
  # The documented sub-batch curvature option: the controller decides as on the CPU.
  for backend in cuda cpu; do
    "$bin/safestep" run --backend "$backend" --tasks 1 --epochs 3 --examples 300 --batch-size 64 \
      --scheduler combined --hvp-rows 16 --quiet --out "$tmp/rows-$backend"
  done
  decisions() { python3 -c 'import csv,sys; print([r["decision"] for r in csv.DictReader(open(sys.argv[1]))])' "$1"; }
  [[ "$(decisions "$tmp/rows-cuda/controller.csv")" == "$(decisions "$tmp/rows-cpu/controller.csv")" ]] \
    || { echo "cuda-check: --hvp-rows 16 decides differently on the emulated cuda engine"; exit 1; }
  echo "--hvp-rows 16: the emulated cuda run decides as the cpu run: $(decisions "$tmp/rows-cuda/controller.csv")"
  rm -rf "$tmp" "$emu"
  unset LD_LIBRARY_PATH
fi
rm -rf "$bin"
lap "CUDA path on the CPU emulation"
