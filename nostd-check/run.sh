#!/usr/bin/env bash
# Builds the freestanding no_std binary (no std, no C runtime, panic = abort), checks it
# links no Rust std, runs it and checks its exit status. Called by .ci/run.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/../target/nostd-check}"
cargo build --release --manifest-path "$here/Cargo.toml"
bin="$CARGO_TARGET_DIR/release/safestep-nostd-check"

# No std in the binary: none of std's own symbols may be linked in.
if nm -C "$bin" 2>/dev/null | grep -q ' std::'; then
    echo "nostd-check: FAIL: the binary links Rust std symbols" >&2
    exit 1
fi

set +e
"$bin"
status=$?
set -e
if [ "$status" -ne 0 ]; then
    echo "nostd-check: FAIL: check $status failed (exit status $status)" >&2
    exit 1
fi
echo "nostd-check: ok (freestanding no_std binary ran the scheduler, exit status 0)"
