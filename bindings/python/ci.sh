#!/usr/bin/env bash
# CI for the Python package: a fresh venv, the wheel built by maturin, pytest, and the JAX
# example in a short mode. Needs only the Rust toolchain and Python >= 3.9 with pip.
#
#   bindings/python/ci.sh                    # numpy, jax, optax (torch tests skip)
#   SAFESTEP_CI_TORCH=1 bindings/python/ci.sh   # also PyTorch (~6 GB with its CUDA wheels)
#
# SAFESTEP_CI_VENV=DIR reuses/creates the venv there (default: a temporary one, removed).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"
venv="${SAFESTEP_CI_VENV:-}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [[ -z "$venv" ]]; then
    venv="$work/venv"
fi

step() { printf '\n==> %s\n' "$*"; }

step "venv ($venv)"
"$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
"${pip[@]}" install maturin pytest numpy jax optax
if [[ "${SAFESTEP_CI_TORCH:-0}" == 1 ]]; then
    step "torch"
    "${pip[@]}" install torch
fi

step "maturin build --release"
"$venv/bin/maturin" build --release --quiet -m "$here/Cargo.toml" -o "$work/wheels"
"${pip[@]}" install --force-reinstall "$work"/wheels/safestep-*.whl

step "pytest"
# Run from a copy-free location so `import safestep` is the installed wheel, not the source.
(cd "$work" && "$venv/bin/python" -m pytest -q -rs "$here/tests")

step "JAX example (short)"
(cd "$work" && "$venv/bin/python" "$here/examples/jax_random_label_mnist.py" --tasks 2 --epochs 2)

step "torch example (short)"
if "$venv/bin/python" -c "import torch" 2>/dev/null; then
    (cd "$work" && "$venv/bin/python" "$here/examples/torch_random_label_mnist.py" --tasks 2 --epochs 2)
else
    echo "torch not importable: skipped"
fi

echo
echo "python bindings CI passed"
