#!/usr/bin/env bash
# Builds the CPU-emulation CUDA driver: gpu/emu/build.sh OUT_DIR  ->  OUT_DIR/libcuda.so.1
# Then run any cuda-built safestep binary or test with LD_LIBRARY_PATH=OUT_DIR (and a
# binary linked with scripts/cuda-sdk.sh's lazy-loading shim) to execute the kernels on the
# CPU. See gpu/emu/README.md.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: gpu/emu/build.sh OUT_DIR}"
mkdir -p "$out"
"${CXX:-g++}" -std=c++20 -O2 -fPIC -shared -I"$here/include" -Wl,-soname,libcuda.so.1 \
  -o "$out/libcuda.so.1" "$here/fake_cuda.cpp"
echo "$out/libcuda.so.1"
