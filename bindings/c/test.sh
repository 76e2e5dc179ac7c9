#!/usr/bin/env bash
# Builds the C ABI (release), compiles the C test and example with the system compiler
# against both the static and the shared library, and runs them; checks that the header
# also compiles as C++ (when g++ is there). That the header is current is check-header.sh's
# job (it builds cbindgen, which takes minutes on a cold cache).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
target="${CARGO_TARGET_DIR:-$root/target}"
cc="${CC:-gcc}"
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

cargo build --release -q -p safestep-c --manifest-path "$root/Cargo.toml"
lib="$target/release"
flags=(-std=c99 -Wall -Wextra -Werror -pedantic -O2 -I "$here/include")

for src in "$here"/tests/*.c "$here"/examples/*.c; do
    name="$(basename "$src" .c)"
    "$cc" "${flags[@]}" "$src" "$lib/libsafestep.a" -lpthread -ldl -lm -o "$out/$name-static"
    "$cc" "${flags[@]}" "$src" -L "$lib" -lsafestep -lm -o "$out/$name-shared"
done

if command -v g++ >/dev/null; then
    echo '#include "safestep.h"' | g++ -x c++ -std=c++11 -Wall -Werror -fsyntax-only -I "$here/include" -
fi

status=0
for t in "$out"/test_*-static "$out"/test_*-shared; do
    echo "== $(basename "$t")"
    LD_LIBRARY_PATH="$lib" "$t" || status=1
done
for e in "$out"/embed-static; do
    echo "== $(basename "$e")"
    "$e" || status=1
done
exit $status
