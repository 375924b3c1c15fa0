#!/usr/bin/env bash
# The functions of a release binary that call the software `fmaf`.
#
# Usage: bench/fmaf_callers.sh BINARY
#
# `f32::mul_add` compiles to one FMA instruction only inside code built with the `fma` target
# feature; elsewhere it is a call to `fmaf` (compiler_builtins' runtime dispatch), tens of cycles
# each. The runtime's AVX2 / AVX-512 kernels run `nnc_ops::math` (every step a `mul_add`) inside
# `#[target_feature]` functions, but a closure or a generic helper that LLVM does not inline
# there is compiled for the baseline and calls `fmaf` lane by lane: the online softmax of flash
# attention did so on AVX2 processors until exp_avx2, and it was half of the MiniLM encoder's
# time. Point this at a harness that `nnc bench --work-dir DIR` built (for instance
# DIR/target/release/nnc-bench-bert-encoder): every function it lists should be a portable
# fallback (`map_in_place_with`, `interior_pixels` and the like inline their plain twins), never
# a `{{closure}}` or a function of an AVX2 / AVX-512 path. Needs binutils (objdump, readelf, nm).
set -euo pipefail
binary="${1:?usage: bench/fmaf_callers.sh BINARY}"
address="$(nm "$binary" | awk '$3 == "fmaf" { sub(/^0+/, "", $1); print $1 }')"
if [ -z "$address" ]; then
    echo "$binary does not contain fmaf"
    exit 0
fi
disassembly="$(mktemp)"
trap 'rm -f "$disassembly"' EXIT
objdump -d --no-show-raw-insn "$binary" > "$disassembly"
# Position-independent code calls through a GOT slot that a relocation fills with fmaf's
# address; direct calls name it.
slots="$(readelf -rW "$binary" | awk -v a="$address" '$NF == a { sub(/^0+/, "", $1); print $1 }')"
{
    for slot in $slots; do
        awk -v s="$slot" '/^[0-9a-f]+ <.*>:$/ { name = $2; gsub(/^<|>:$/, "", name) }
            index($0, "# " s " ") { print name }' "$disassembly"
    done
    awk -v a="$address" '/^[0-9a-f]+ <.*>:$/ { name = $2; gsub(/^<|>:$/, "", name) }
        $0 ~ ("call +" a " ") || $0 ~ ("jmp +" a " ") { print name }' "$disassembly"
} | sort | uniq -c | sort -rn | c++filt
