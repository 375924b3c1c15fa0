#!/usr/bin/env bash
# Lines and `cargo build --release` time of every example's generated code.
#
# Usage: bench/codegen_size.sh [CHECKOUT] [EXAMPLE...]
#
# CHECKOUT is an nnc checkout (default: this one), so that two commits can be compared from one
# script: `git worktree add /tmp/old <rev> && bench/codegen_size.sh /tmp/old`. For each example
# the script compiles the `.nn` file with that checkout's `nnc compile`, puts the code in a
# throwaway crate that depends on that checkout's nnc-runtime, builds the crate once (to build
# the dependencies), then touches the source and times one more release build: the time a user
# waits after editing a model.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
root="$(cd "${1:-$here}" && pwd)"
shift || true
examples=("$@")
if [ ${#examples[@]} -eq 0 ]; then
    for file in "$root"/examples/*.nn; do examples+=("$(basename "$file" .nn)"); done
fi
work="${CODEGEN_SIZE_DIR:-${TMPDIR:-/tmp}/nnc-codegen-size}/$(echo "$root" | tr '/' '_')"
mkdir -p "$work/src" "$work/generated"
(cd "$root" && cargo build --quiet --release -p nnc-compiler --features cli)
cat >"$work/Cargo.toml" <<TOML
[package]
name = "codegen-size"
version = "0.0.0"
edition = "2024"
publish = false

[dependencies]
nnc-runtime = { path = "$root/runtime" }

[workspace]
TOML
printf '%-14s %8s %10s\n' example lines "build (s)"
for example in "${examples[@]}"; do
    generated="$work/generated/$example.rs"
    "$root/target/release/nnc" compile "$root/examples/$example.nn" \
        --runtime-path ::nnc_runtime -o "$generated"
    printf '#![allow(dead_code)]\ninclude!("%s");\n' "$generated" >"$work/src/lib.rs"
    (cd "$work" && cargo build --quiet --release)
    touch "$work/src/lib.rs"
    start=$(date +%s.%N)
    (cd "$work" && cargo build --quiet --release)
    end=$(date +%s.%N)
    printf '%-14s %8d %10.1f\n' "$example" "$(wc -l <"$generated")" "$(echo "$end - $start" | bc)"
done
