#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 10), on the nightly toolchain with cargo-fuzz, from
# a seed of its committed corpus (the 16 smallest entries: libFuzzer runs every seed before it
# starts counting, and `cargo test` already replays the whole corpus on stable). New inputs go to
# a scratch folder, not into the corpus; a crash fails the run and leaves its input under
# fuzz/artifacts/TARGET/. The build is cargo-fuzz's default, optimized with debug assertions.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds=${1:-10}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
targets=$(sed -n 's/^name = "\(.*\)"/\1/p' Cargo.toml | grep -v '^nnc[-_]fuzz$')
cargo +nightly fuzz build
for target in $targets; do
    mkdir -p "$scratch/$target"
    # shellcheck disable=SC2012 # corpus names are hex digests and file names without spaces
    ls -S -r "corpus/$target" | head -n 16 | while read -r name; do
        cp "corpus/$target/$name" "$scratch/$target/"
    done
    echo "fuzz smoke: $target for $seconds s" >&2
    cargo +nightly fuzz run "$target" "$scratch/$target" -- \
        -max_total_time="$seconds" -timeout=60 -rss_limit_mb=4096 2>&1 | tail -n 1
done
