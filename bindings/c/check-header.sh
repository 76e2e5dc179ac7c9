#!/usr/bin/env bash
# Regenerates the C header with cbindgen into a temporary file and fails when the
# committed include/safestep.h differs. The generator (header/) is its own workspace with its
# own target/; regenerate with: cargo run --manifest-path bindings/c/header/Cargo.toml
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
cargo run -q --manifest-path "$here/header/Cargo.toml" -- "$tmp/safestep.h" >/dev/null
if ! diff -u "$here/include/safestep.h" "$tmp/safestep.h"; then
    echo "include/safestep.h is stale: run cargo run --manifest-path bindings/c/header/Cargo.toml" >&2
    exit 1
fi
echo "include/safestep.h is current"
