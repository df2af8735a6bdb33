#!/usr/bin/env bash
# Builds the no_std staticlib, checks it holds no std or alloc code, links it into a C program
# and runs that on every valid vector.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$here/../target}/nostd"
cargo build --release --manifest-path "$here/Cargo.toml" --quiet
lib="$CARGO_TARGET_DIR/release/libcr_nostd_check.a"
# std or alloc would be bundled into the archive if anything used them.
if nm -C "$lib" 2>/dev/null | grep -E ' [TtDdRr] (std|alloc)::' | head -5 | grep .; then
    echo "no_std check: the staticlib contains std/alloc code" >&2; exit 1
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
gcc -O2 -Wall -Werror -o "$out/check" "$here/main.c" "$lib"
n=0
for v in "$here"/../spec/vectors/valid/*.bin; do
    "$out/check" "$v" >/dev/null || { echo "no_std check failed on $v" >&2; "$out/check" "$v"; exit 1; }
    n=$((n + 1))
done
echo "no_std check: staticlib without std/alloc, linked into C, validated and re-emitted $n vectors"
