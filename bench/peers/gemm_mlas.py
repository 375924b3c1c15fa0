#!/usr/bin/env python3
"""nnc's GEMM against ONNX Runtime's (MLAS) on the encoder's shapes, interleaved, 1 and 2 threads.

    bench/peers/.venv/bin/python bench/peers/gemm_mlas.py [--rounds 5] [--threads 1,2]
        [--calls 200] [--kernels avx512,avx2] [--quick]

For each case (a MatMul with a constant weight, plus the encoder's fused epilogue: bias, bias then
Gelu, bias then a residual) it builds a one-node-chain ONNX graph, and, round after round, times
ONNX Runtime (median of `--calls` runs of `session.run`) and then nnc's `gemm` through
`runtime/examples/gemm_timing.rs` (median of `--calls` calls, after a warm-up), so that the load of
the machine falls on both alike. Each figure printed is the median over the rounds. ONNX Runtime's
figure includes the Python call (a few microseconds; 1-2% of the smallest case), nnc's does not.
On one thread it also prints the rates on the calling thread's CPU time (both engines compute on
the calling thread then), which the load of other processes does not inflate.

`--kernels` times nnc once per micro-kernel (`--max-isa` of the example), in the same rounds.
"""

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLE = os.path.join(ROOT, "target", "release", "examples", "gemm_timing")

# (name, m, k, n, epilogue): the MiniLM encoder (sequence 128, hidden 384, feed-forward 1536),
# `x[m, k] @ W[k, n]`, and two of ResNet-18's 3x3 convolutions as their im2col GEMMs. ONNX
# Runtime gets those as `im2col[h * w, 9 * in] @ W[9 * in, out]`; nnc runs them as its NCHW
# convolution does, `W[out, 9 * in] @ im2col[9 * in, h * w]` with the weight packed at load and
# the im2col matrix packed during the call (`--weights-left`): the same FLOPs, each engine's own
# layout. The im2col matrix is given, not gathered from an image, on both sides.
CASES = [
    ("encoder qkv/out", 128, 384, 384, "bias"),
    ("encoder ffn up", 128, 384, 1536, "bias"),
    ("encoder ffn up+gelu", 128, 384, 1536, "bias-gelu"),
    ("encoder ffn down", 128, 1536, 384, "bias"),
    ("encoder ffn down+res", 128, 1536, 384, "bias-residual"),
    ("resnet 56^2 3x3 64", 3136, 576, 64, "none"),
    ("resnet 14^2 3x3 256", 196, 2304, 256, "none"),
]


def build_graph(m, k, n, epilogue):
    """A MatMul of the input by a constant weight, then the epilogue, as ONNX Runtime sees the
    encoder's layers (it fuses MatMul + Add into one MLAS call and the Gelu after it)."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32) / k**0.5, "W")
    bias = numpy_helper.from_array(rng.standard_normal(n).astype(np.float32), "bias")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])]
    nodes = [helper.make_node("MatMul", ["x", "W"], ["product"])]
    last = "product"
    if epilogue != "none":
        nodes.append(helper.make_node("Add", [last, "bias"], ["biased"]))
        last = "biased"
    if epilogue == "bias-gelu":
        nodes.append(helper.make_node("Gelu", [last], ["activated"]))
        last = "activated"
    if epilogue == "bias-residual":
        inputs.append(helper.make_tensor_value_info("residual", TensorProto.FLOAT, [m, n]))
        nodes.append(helper.make_node("Add", [last, "residual"], ["summed"]))
        last = "summed"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    graph = helper.make_graph(
        nodes,
        "gemm",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


def ort_session(model, threads):
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def time_ort(session, feeds, calls):
    """The median wall and calling-thread CPU seconds of one run."""
    warm_up = time.perf_counter()
    while time.perf_counter() - warm_up < 0.05:
        session.run(None, feeds)
    seconds, cpu_seconds = [], []
    for _ in range(calls):
        cpu_start = time.thread_time()
        start = time.perf_counter()
        session.run(None, feeds)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.thread_time() - cpu_start)
    return statistics.median(seconds), statistics.median(cpu_seconds)


def time_nnc(m, k, n, epilogue, threads, calls, kernels, weights_left):
    """{kernel cap: ((median wall seconds, median CPU seconds), kernel name)}: the caps take turns
    call after call in one process (`--max-isa a,b`)."""
    command = [EXAMPLE, "--m", str(m), "--k", str(k), "--n", str(n), "--epilogue", epilogue,
               "--threads", str(threads), "--calls", str(calls)]
    if kernels != [None]:
        command += ["--max-isa", ",".join(kernels)]
    if weights_left:
        command.append("--weights-left")
    lines = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split("\n")
    results = {}
    for kernel, line in zip(kernels, [line for line in lines if line.strip()]):
        fields = dict(field.split("=", 1) for field in line.split())
        results[kernel] = (
            (float(fields["median_seconds"]), float(fields["median_cpu_seconds"])),
            fields["kernel"],
        )
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--kernels", default="", help="comma-separated --max-isa values for nnc")
    parser.add_argument("--quick", action="store_true", help="2 rounds of 50 calls")
    parser.add_argument("--no-build", action="store_true")
    arguments = parser.parse_args()
    if arguments.quick:
        arguments.rounds, arguments.calls = 2, 50
    threads_list = [int(value) for value in arguments.threads.split(",")]
    kernels = [value for value in arguments.kernels.split(",") if value] or [None]
    if not arguments.no_build:
        subprocess.run(
            ["cargo", "build", "--release", "-q", "-p", "nnc-runtime", "--example", "gemm_timing"],
            cwd=ROOT, check=True,
        )
    load = os.getloadavg()
    print(f"onnxruntime {ort.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    rng = np.random.default_rng(1)
    sessions = {}
    feeds = {}
    for name, m, k, n, epilogue in CASES:
        model = build_graph(m, k, n, epilogue)
        feeds[name] = {"x": rng.standard_normal((m, k)).astype(np.float32)}
        if epilogue == "bias-residual":
            feeds[name]["residual"] = rng.standard_normal((m, n)).astype(np.float32)
        for threads in threads_list:
            sessions[name, threads] = ort_session(model, threads)

    ort_times = {}
    nnc_times = {}
    kernel_names = {}
    for round_index in range(arguments.rounds):
        for name, m, k, n, epilogue in CASES:
            for threads in threads_list:
                ort_times.setdefault((name, threads), []).append(
                    time_ort(sessions[name, threads], feeds[name], arguments.calls))
                convolution = name.startswith("resnet")
                # A convolution's GEMM in nnc's layout: out x (9 in) times (9 in) x (h w).
                nnc_m, nnc_n = (n, m) if convolution else (m, n)
                results = time_nnc(nnc_m, k, nnc_n, epilogue, threads, arguments.calls, kernels,
                                   convolution)
                for kernel, (seconds, kernel_name) in results.items():
                    nnc_times.setdefault((name, threads, kernel), []).append(seconds)
                    kernel_names[kernel] = kernel_name
        print(f"round {round_index + 1}/{arguments.rounds} done", file=sys.stderr)

    def rate(flops, samples, index):
        return flops / statistics.median(sample[index] for sample in samples) / 1e9

    # Wall-clock rates for every thread count; for one thread, also the rates on the calling
    # thread's CPU time, which the other processes' load does not inflate.
    for clock, index, clock_threads in [("wall", 0, threads_list), ("on-CPU", 1, [1])]:
        if not clock_threads or clock_threads[0] not in threads_list:
            continue
        header = f"| case ({clock}) | m x k x n | epilogue | threads | ORT (MLAS) GFLOP/s |"
        for kernel in kernels:
            header += f" nnc {kernel_names[kernel]} GFLOP/s | nnc/ORT |"
        print()
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
        for name, m, k, n, epilogue in CASES:
            flops = 2.0 * m * k * n
            for threads in clock_threads:
                ort_rate = rate(flops, ort_times[name, threads], index)
                line = f"| {name} | {m}x{k}x{n} | {epilogue} | {threads} | {ort_rate:.1f} |"
                for kernel in kernels:
                    nnc_rate = rate(flops, nnc_times[name, threads, kernel], index)
                    line += f" {nnc_rate:.1f} | {nnc_rate / ort_rate:.2f} |"
                print(line)
    load = os.getloadavg()
    print(f"\nload average at the end {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
          f"{arguments.rounds} rounds of {arguments.calls} calls, medians")


if __name__ == "__main__":
    main()
