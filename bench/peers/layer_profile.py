"""Per-layer times of nnc against OpenVINO and ONNX Runtime on one forward model, at 1 and 2 threads.

    bench/peers/.venv/bin/python bench/peers/layer_profile.py --model mobilenet_v2 [--threads 1,2]
        [--iterations 30] [--work bench/peers/work/mobilenet_v2] [--json out.json]

Needs what `bash bench/peers/run.sh` prepared: `<work>/model.onnx`, `weights.safetensors` and
`input_*.npy`, and nnc built in release mode (`target/release/nnc`). Layers are matched by
order: the peers rename the nodes they fuse (OpenVINO calls a convolution with its batch norm
folded `Multiply_NNNN`, ONNX Runtime names it after the last node fused into it), but each
engine runs the weighted layers (convolutions, linear layers) in the graph's order, so the k-th
weighted node of a peer is nnc's k-th weighted layer. Each unweighted node (a reorder, a pool,
nnc's `to_channels_last`) is charged to the weighted layer before it, so every microsecond an
engine spends is on some row, and a row holds one weighted layer and what follows it.

nnc's per-layer times come from `nnc bench`'s instrumented harness (medians over the profiled
runs); OpenVINO's from `PERF_COUNT` and `get_profiling_info()` (real time, medians over runs);
ONNX Runtime's from `enable_profiling` (the `Node` events' durations, medians over runs).
Each engine's per-layer total is printed under its end-to-end median, for the instrumentation's
overhead. The machine is shared: say the load (`uptime`) with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NNC = ROOT / "target" / "release" / "nnc"


def inputs_of(work: Path) -> dict[str, np.ndarray]:
    return {p.name[len("input_"):-len(".npy")]: np.load(p) for p in sorted(work.glob("input_*.npy"))}


# What each engine calls the layers that multiply by weights (the ones matched by order).
WEIGHTED = {
    "nnc": {"conv2d", "linear", "matmul"},
    "openvino": {"Convolution", "GroupConvolution", "FullyConnected", "MatMul"},
    "ort": {"Conv", "FusedConv", "Gemm", "FusedGemm", "MatMul", "FusedMatMul"},
}


def profile_nnc(model: str, work: Path, threads: int, iterations: int):
    """nnc's layers in order, [(name, op, median µs)], and its end-to-end median (µs)."""
    cmd = [str(NNC), "bench", str(ROOT / "examples" / f"{model}.nn"), "--weights",
           str(work / "weights.safetensors"), "--threads", str(threads), "--format", "json",
           "--warmup", "5", "--iterations", str(iterations), "--profile-iterations",
           str(iterations), "--work-dir", str(ROOT / "target" / "nnc-bench")]
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    inside = weighted_layers_inside(model)
    layers = []
    for layer in report["layers"]:
        # median_ns is None for a layer that runs no code of its own (a view).
        if layer["median_ns"] is None:
            continue
        # A weighted layer that runs inside the next one (a 1x1 convolution inside the depthwise
        # one that reads it) is a layer with no time, matched with the peers' own node for it;
        # `table` shows it in one row with the layer it runs in.
        layers.extend((name, "conv2d", 0.0) for name in inside.get(layer["name"], []))
        layers.append((layer["name"], layer["op"], layer["median_ns"] / 1e3))
    return layers, report["latency"]["median_ns"] / 1e3


def weighted_layers_inside(model: str) -> dict[str, list[str]]:
    """For each nnc layer that runs other weighted layers inside it, their names: `nnc report`
    puts the layers that run as one node in one group, named after its last weighted layer."""
    cmd = [str(NNC), "report", str(ROOT / "examples" / f"{model}.nn"), "--format", "json"]
    report = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    groups: dict[int, list[str]] = defaultdict(list)
    for layer in report["layers"]:
        if layer["op"] in WEIGHTED["nnc"]:
            groups[layer["group"]].append(layer["name"])
    return {names[-1]: names[:-1] for names in groups.values() if len(names) > 1}


def profile_openvino(onnx_path: Path, inputs, threads: int, iterations: int):
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(onnx_path)), "CPU", {
        "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
        "INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    for _ in range(5):
        request.infer(inputs)
    order: list[tuple[str, str]] = []
    samples: dict[str, list[float]] = defaultdict(list)
    latencies = []
    for _ in range(iterations):
        started = time.perf_counter()
        request.infer(inputs)
        latencies.append((time.perf_counter() - started) * 1e6)
        for info in request.get_profiling_info():
            if info.status != info.Status.EXECUTED:
                continue
            if info.node_name not in samples:
                order.append((info.node_name, info.node_type))
            samples[info.node_name].append(info.real_time.total_seconds() * 1e6)
    nodes = [(name, kind, statistics.median(samples[name])) for name, kind in order]
    return nodes, statistics.median(latencies)


def profile_ort(onnx_path: Path, inputs, threads: int, iterations: int):
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(folder) / "ort")
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        for _ in range(5):
            session.run(None, inputs)
        latencies = []
        for _ in range(iterations):
            started = time.perf_counter()
            session.run(None, inputs)
            latencies.append((time.perf_counter() - started) * 1e6)
        events = json.loads(Path(session.end_profiling()).read_text())
    # Only the timed runs (the last `iterations` model_run spans), each node event once.
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in events if e.get("name") == "model_run")
    spans = spans[-iterations:]
    order: list[tuple[str, str]] = []
    samples: dict[str, list[float]] = defaultdict(list)
    seen = set()
    for event in sorted((e for e in events if e.get("cat") == "Node"), key=lambda e: e["ts"]):
        if not event["name"].endswith("_kernel_time") or (event["name"], event["ts"]) in seen:
            continue
        seen.add((event["name"], event["ts"]))
        if not any(begin <= event["ts"] <= end for begin, end in spans):
            continue
        name = event["name"][: -len("_kernel_time")]
        if name not in samples:
            order.append((name, event["args"]["op_name"]))
        samples[name].append(event["dur"])
    nodes = [(name, kind, statistics.median(samples[name])) for name, kind in order]
    return nodes, statistics.median(latencies)


def match(engine: str, nnc_layers, nodes) -> dict[int, float]:
    """Peer time per nnc layer index: the k-th weighted node is nnc's k-th weighted layer, and
    each other node is charged to the weighted layer before it (its reorder, pooling, ...)."""
    weighted = [i for i, (_, op, _) in enumerate(nnc_layers) if op in WEIGHTED["nnc"]]
    peer_weighted = [n for n in nodes if n[1] in WEIGHTED[engine]]
    if len(weighted) != len(peer_weighted):
        print(f"warning: nnc has {len(weighted)} weighted layers, {engine} {len(peer_weighted)}; "
              "matched in order up to the shorter", file=sys.stderr)
    charged: dict[int, float] = defaultdict(float)
    k = -1
    for name, kind, micros in nodes:
        if kind in WEIGHTED[engine]:
            k += 1
        index = weighted[min(max(k, 0), len(weighted) - 1)]
        charged[index] += micros
    return charged


def table(model: str, threads: int, nnc, ov, ort_) -> list[dict]:
    """Rows per nnc weighted layer; nnc's other layers are charged like the peers' other nodes."""
    nnc_layers, nnc_total = nnc
    own = match_self(nnc_layers)
    peers = {"openvino": match("openvino", nnc_layers, ov[0]), "ort": match("ort", nnc_layers, ort_[0])}
    rows = []
    for index, (name, op, _) in enumerate(nnc_layers):
        if op not in WEIGHTED["nnc"]:
            continue
        row = {"layer": name, "nnc": own[index]}
        row.update({engine: charged.get(index) for engine, charged in peers.items()})
        # A layer that nnc runs inside the next one (no time of its own) shares its row.
        if rows and rows[-1]["nnc"] == 0.0:
            inner = rows.pop()
            row["layer"] = f"{inner['layer']} + {name}"
            for engine in peers:
                if inner[engine] is not None or row[engine] is not None:
                    row[engine] = (inner[engine] or 0.0) + (row[engine] or 0.0)
        rows.append(row)
    print(f"\n## {model}, {threads} thread{'s' if threads > 1 else ''} (µs; each row holds the weighted "
          "layer and the unweighted layers after it)\n")
    print("| layer | nnc | openvino | ort | nnc / best |")
    print("|---|---|---|---|---|")
    fmt = lambda v: "—" if v is None else f"{v:.1f}"  # noqa: E731
    for row in rows:
        best = min([row[e] for e in ("openvino", "ort") if row[e]], default=None)
        ratio = f"{row['nnc'] / best:.2f}" if best else ""
        print(f"| {row['layer']} | {fmt(row['nnc'])} | {fmt(row['openvino'])} | {fmt(row['ort'])} | {ratio} |")
    sums = {e: sum(r[e] or 0.0 for r in rows) for e in ("nnc", "openvino", "ort")}
    print(f"| **sum of layers** | {sums['nnc']:.0f} | {sums['openvino']:.0f} | {sums['ort']:.0f} | "
          f"{sums['nnc'] / min(sums['openvino'], sums['ort']):.2f} |")
    ends = {"nnc": nnc_total, "openvino": ov[1], "ort": ort_[1]}
    print(f"| **end to end (median)** | {ends['nnc']:.0f} | {ends['openvino']:.0f} | {ends['ort']:.0f} | "
          f"{ends['nnc'] / min(ends['openvino'], ends['ort']):.2f} |")
    return rows


def match_self(nnc_layers) -> dict[int, float]:
    nodes = [(name, op, micros) for name, op, micros in nnc_layers]
    return match("nnc", nnc_layers, nodes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mobilenet_v2",
                        choices=[name for name, spec in models.MODELS.items() if not spec.decoder])
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--iterations", type=int, default=30)
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or HERE / "work" / args.model
    if not (work / "model.onnx").is_file():
        parser.error(f"{work / 'model.onnx'} is missing: `bash bench/peers/run.sh` prepares it")
    if not NNC.is_file():
        parser.error(f"{NNC} is missing: `cargo build --release -p nnc-compiler` builds it")
    inputs = inputs_of(work)
    print(f"load: {os.getloadavg()}", file=sys.stderr)
    results = {}
    for threads in [int(t) for t in args.threads.split(",")]:
        nnc = profile_nnc(args.model, work, threads, args.iterations)
        ov = profile_openvino(work / "model.onnx", inputs, threads, args.iterations)
        ort_ = profile_ort(work / "model.onnx", inputs, threads, args.iterations)
        results[threads] = table(args.model, threads, nnc, ov, ort_)
    print(f"\nload: {os.getloadavg()}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
