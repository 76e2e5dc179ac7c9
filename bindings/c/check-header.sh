#!/usr/bin/env bash
# Regenerates the C header with cbindgen into a temporary file and fails when the
# committed include/safestep.h differs (regenerate: cargo run -p safestep-c-header).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo run -q -p safestep-c-header --manifest-path "$root/Cargo.toml" -- "$tmp/safestep.h" >/dev/null
if ! diff -u "$here/include/safestep.h" "$tmp/safestep.h"; then
    echo "include/safestep.h is stale: run cargo run -p safestep-c-header" >&2
    exit 1
fi
echo "include/safestep.h is current"
