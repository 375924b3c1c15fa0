"""The peer engines: ONNX Runtime, OpenVINO and llama.cpp, each loaded, run and timed the same way.

Settings (the same for every model):

* ONNX Runtime: CPU execution provider, graph optimizations ALL, `intra_op_num_threads = T`,
  `inter_op_num_threads = 1`, sequential execution.
* OpenVINO: `Core().read_model(model.onnx)`, `compile_model(.., "CPU", {INFERENCE_NUM_THREADS: T,
  PERFORMANCE_HINT: LATENCY, NUM_STREAMS: 1, INFERENCE_PRECISION_HINT: f32})`. The precision
  hint is set because OpenVINO's CPU plugin otherwise computes in bfloat16 on CPUs that have
  AVX512-BF16 (this one does), which is not the float32 model the others run (its outputs then
  differ by ~1e-2).
* llama.cpp (llama-cpp-python): the F32 GGUF, `n_threads = n_threads_batch = T`, context 256,
  the KV cache in float32 (`type_k = type_v = F32`; its default, float16, puts its logits 1e-3
  away from the float32 engines').

Forward models are timed per inference; the decoder per sequence: `prefill` of the 5-token
prompt, then one-token decode steps, each timed. The cache of ONNX Runtime and OpenVINO is the
graph's past/present tensors, fed back from one step to the next (as an application would).

Run as a script, it times one engine on one model in this (fresh) process and prints JSON:

    engines.py --engine ort --model resnet18 --work DIR --threads 1 --warmup 3 [--warmup-seconds S] --iterations 20
    -> {"latencies_ms": [...]}                      # forward models
    -> {"prefill_ms": [...], "decode_ms": [...]}    # the decoder (per sequence; per token)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402

ENGINES = ["ort", "openvino", "llama_cpp"]
LLAMA_CONTEXT = 256


class Forward:
    """A loaded forward model: `run(inputs) -> outputs` by name."""

    def __init__(self, run: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]):
        self.run = run


def load_ort(onnx_path: Path, threads: int) -> Forward:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return Forward(lambda inputs: dict(zip(names, session.run(names, inputs))))


def load_openvino(onnx_path: Path, threads: int) -> Forward:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", {
        "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": "f32",
    })
    request = compiled.create_infer_request()
    # An output may carry several tensor names (the Identity's and its input's); keep the
    # graph output's, which is the one the ONNX model declares.
    declared = {o.name for o in onnx_outputs(onnx_path)}
    ports = {name: port for port in compiled.outputs for name in port.get_names() if name in declared}

    def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = request.infer(inputs)
        return {name: results[port] for name, port in ports.items()}

    return Forward(run)


def onnx_outputs(onnx_path: Path):
    import onnx

    return onnx.load(str(onnx_path), load_external_data=False).graph.output


def load_forward(engine: str, work: Path, threads: int) -> Forward:
    onnx_path = work / "model.onnx"
    if engine == "ort":
        return load_ort(onnx_path, threads)
    if engine == "openvino":
        return load_openvino(onnx_path, threads)
    raise SystemExit(f"{engine} runs only the decoder")


def load_llama_cpp(work: Path, threads: int, logits_all: bool):
    from llama_cpp import GGML_TYPE_F32, Llama

    # The KV cache in float32 like the other engines' (llama.cpp's default is float16).
    return Llama(model_path=str(work / "model.gguf"), n_ctx=LLAMA_CONTEXT, n_batch=64,
                 n_threads=threads, n_threads_batch=threads, logits_all=logits_all,
                 type_k=GGML_TYPE_F32, type_v=GGML_TYPE_F32, verbose=False)


# --------------------------------------------------------------------------------------------
# Decoding through the ONNX graph's cache, and through llama.cpp.
# --------------------------------------------------------------------------------------------


class OnnxDecoder:
    """Token-by-token decoding with the KV-cache ONNX graph: presents become the next pasts."""

    def __init__(self, forward: Forward):
        self.forward = forward
        self.cache: dict[str, np.ndarray] = {}
        self.reset()

    def reset(self) -> None:
        self.cache = {}
        for layer in range(models.LLAMA["layers"]):
            past_k, past_v, _, _ = models.kv_names(layer)
            self.cache[past_k] = models.empty_cache()
            self.cache[past_v] = models.empty_cache()

    def step(self, tokens: list[int]) -> np.ndarray:
        """Appends `tokens`; returns their logits [len(tokens), vocab]."""
        inputs = dict(self.cache, input_ids=np.array([tokens], dtype=np.int64))
        outputs = self.forward.run(inputs)
        for layer in range(models.LLAMA["layers"]):
            past_k, past_v, present_k, present_v = models.kv_names(layer)
            self.cache[past_k] = outputs[present_k]
            self.cache[past_v] = outputs[present_v]
        return outputs["logits"][0]


class LlamaCppDecoder:
    """llama.cpp's context as a decoder: `eval` appends tokens to its KV cache."""

    def __init__(self, llm, logits_all: bool):
        self.llm = llm
        self.logits_all = logits_all

    def reset(self) -> None:
        # The next `eval` drops the cached positions past `n_tokens` (0 after a reset).
        self.llm.reset()

    def step(self, tokens: list[int]) -> np.ndarray:
        start = self.llm.n_tokens
        self.llm.eval(tokens)
        first = start if self.logits_all else self.llm.n_tokens - 1
        return np.array(self.llm.scores[first:self.llm.n_tokens])


def load_decoder(engine: str, work: Path, threads: int, logits_all: bool = False):
    if engine == "llama_cpp":
        return LlamaCppDecoder(load_llama_cpp(work, threads, logits_all), logits_all)
    return OnnxDecoder(load_forward(engine, work, threads))


def new_token(step: int) -> int:
    """The token fed at decode step `step`: the same sequence as nnc's decoder harness."""
    return (step * 31 + 3) % models.LLAMA["vocab"]


# --------------------------------------------------------------------------------------------
# Timing.
# --------------------------------------------------------------------------------------------


def warm_up(run: Callable[[], object], passes: int, seconds: float) -> None:
    """Calls `run()` at least `passes` times and for at least `seconds`."""
    started = time.perf_counter()
    done = 0
    while done < passes or time.perf_counter() - started < seconds:
        run()
        done += 1


def time_forward(forward: Forward, inputs: dict[str, np.ndarray], warmup: int,
                 warmup_seconds: float, iterations: int) -> dict[str, list[float]]:
    warm_up(lambda: forward.run(inputs), warmup, warmup_seconds)
    latencies = []
    for _ in range(iterations):
        started = time.perf_counter()
        forward.run(inputs)
        latencies.append((time.perf_counter() - started) * 1e3)
    return {"latencies_ms": latencies}


def time_decoder(decoder, warmup: int, warmup_seconds: float, sequences: int,
                 new_tokens: int) -> dict[str, list[float]]:
    prefill_ms: list[float] = []
    decode_ms: list[float] = []
    warm_up(lambda: run_sequence(decoder, new_tokens), warmup, warmup_seconds)
    for _ in range(sequences):
        prefill, steps = run_sequence(decoder, new_tokens)
        prefill_ms.append(prefill)
        decode_ms.extend(steps)
    return {"prefill_ms": prefill_ms, "decode_ms": decode_ms}


def run_sequence(decoder, new_tokens: int) -> tuple[float, list[float]]:
    """One sequence from an empty cache: the prompt's prefill time and each decode step's (ms)."""
    decoder.reset()
    started = time.perf_counter()
    decoder.step(models.PROMPT)
    prefill = (time.perf_counter() - started) * 1e3
    steps = []
    for step in range(new_tokens):
        started = time.perf_counter()
        decoder.step([new_token(step)])
        steps.append((time.perf_counter() - started) * 1e3)
    return prefill, steps


def main() -> None:
    parser = argparse.ArgumentParser(description="Time one engine on one model in this process.")
    parser.add_argument("--engine", choices=ENGINES, required=True)
    parser.add_argument("--model", choices=sorted(models.MODELS), required=True)
    parser.add_argument("--work", type=Path, required=True, help="the model's prepared files")
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--warmup-seconds", type=float, default=0.0,
                        help="the least time to warm up for, beyond --warmup")
    parser.add_argument("--iterations", type=int, default=20,
                        help="inferences; for the decoder, sequences")
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    spec = models.MODELS[args.model]
    if spec.decoder:
        decoder = load_decoder(args.engine, args.work, args.threads)
        result = time_decoder(decoder, max(args.warmup, 1), args.warmup_seconds, args.iterations,
                              args.new_tokens)
    else:
        forward = load_forward(args.engine, args.work, args.threads)
        inputs = {p.name[len("input_"):-len(".npy")]: np.load(p)
                  for p in sorted(args.work.glob("input_*.npy"))}
        result = time_forward(forward, inputs, args.warmup, args.warmup_seconds, args.iterations)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
