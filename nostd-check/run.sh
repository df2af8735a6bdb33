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

# No panic path: the same reader and writer in a bare-metal program for x86_64-unknown-none,
# release with overflow checks on (as kernel builds have them) and LTO, whose panic handler
# calls a symbol defined nowhere (cr_format_panicked): it links only if every panic path was
# optimised away.
if ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-none; then
    rustup target add x86_64-unknown-none
fi
if ! cargo build --manifest-path "$here/Cargo.toml" --quiet --profile panic-free \
    --target x86_64-unknown-none --features panic-free --bin panic_free; then
    echo "panic-free check: a panic path of cr-format survives optimisation with overflow checks on" \
         "(the link error above names the function that references cr_format_panicked)" >&2
    exit 1
fi
echo "panic-free check: reader and writer for x86_64-unknown-none with overflow checks on link without a panic handler"
