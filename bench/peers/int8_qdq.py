#!/usr/bin/env python3
"""ONNX Runtime's static int8 (QDQ) ResNet-18 and MobileNetV2: the peer for nnc's int8 CNNs.

Issue 13 asks nnc's int8 convolutions to agree with f32 on the top-1 class of >= 95% of 100
inputs and to run in <= 0.9x the time of ONNX Runtime's per-channel QDQ int8 model. This script
makes that model and measures it, on the same weights and ONNX graph as the peer benchmark
(bench/peers/work/<model>/model.onnx, built by peers.py's `prepare` when missing):

1. Inputs. 16 calibration inputs drawn like the benchmark's (N(0, 1), 1x3x224x224), saved as
   work/<model>/calib/calib_NN.npy; 100 test inputs, 50 N(0, 1) (`random_NN.npy`) and 50
   "structured" ones (`structured_NN.npy`: smooth images in [0, 1], sums of low-frequency
   sinusoids, gradients and Gaussian blobs per channel, normalized with ImageNet's mean and
   standard deviation), saved under work/<model>/int8_inputs/. The seeds are fixed, so the
   files are the same on every run: nnc can later be run on exactly these files.
2. The int8 model: `onnxruntime.quantization.quantize_static` with QuantFormat.QDQ,
   per_channel=True, activation_type=QUInt8, weight_type=QInt8, the MinMax calibration over the
   16 calibration inputs, written as work/<model>/model_int8_qdq.onnx, after ONNX Runtime's
   recommended `quant_pre_process` (which folds the batch norms into the convs). Timed too, for
   comparison: the same quantization of the graph as it is (batch norms left as float ops
   between QDQ pairs), model_int8_qdq_no_preprocess.onnx.
3. Agreement: top-1 of the int8 model against the f32 model (both ONNX Runtime, 1 thread) on
   the 100 test inputs, per kind, and the largest logit error relative to the f32 logits'
   largest magnitude.
4. Timing, interleaved as peers.py times: every round runs f32 and int8 ONNX Runtime at 1 and 2
   threads, each in a fresh process (this script with --time-one, which uses engines.py's
   `load_ort` and `time_forward`: the peer benchmark's settings) in a shuffled order; each
   process warms up, times N inferences and reports its median; the table gives the median
   over processes with the 10th and 90th percentiles. Each process also times N more
   inferences in the calling thread's CPU time: at 1 thread, ONNX Runtime computes on the
   calling thread, so that figure holds up when other processes load the machine.

The results table goes to stdout and to bench/peers/int8_results.md.

nnc (optional, `--nnc PATH_TO_NNC`): `nnc_int8_outputs` runs nnc's int8 path on the same files,
`nnc calibrate` on work/<model>/calib/*.npy and then `nnc run --quantize int8 --scales` on every
test input, and the agreement table gains nnc's rows. Those commands are being added (issue 13,
deliverable 4); without --nnc the script does not call nnc at all (except peers.py's `prepare`
when a model's ONNX graph is missing, which lists the weights with target/release/nnc).

    bench/peers/.venv/bin/python bench/peers/int8_qdq.py [--models resnet18,mobilenet_v2]
        [--rounds 5] [--iterations 20] [--warmup 5] [--nnc target/release/nnc]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engines  # noqa: E402
import models  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS_MD = HERE / "int8_results.md"
CALIBRATION_INPUTS = 16
RANDOM_INPUTS = 50
STRUCTURED_INPUTS = 50
IMAGE_SHAPE = (1, 3, 224, 224)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
INPUT_NAME = "image"
DEFAULT_MODELS = ["resnet18", "mobilenet_v2"]
# What is timed: name -> the model file in work/<model>/. The int8 model without ONNX Runtime's
# pre-processing keeps every batch norm as a float op between QDQ pairs; it is timed too because
# that is what quantize_static gives when called on the graph as it is.
TIMED = {
    "ort_f32": "model.onnx",
    "ort_int8_qdq": "model_int8_qdq.onnx",
    "ort_int8_qdq_no_preprocess": "model_int8_qdq_no_preprocess.onnx",
}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# 1. Inputs.
# --------------------------------------------------------------------------------------------


def model_folder(work_root: Path, name: str) -> Path:
    """The model's prepared folder, made by peers.py's `prepare` if its ONNX graph is missing."""
    folder = work_root / name
    if not (folder / "model.onnx").exists():
        if work_root.resolve() != (HERE / "work").resolve():
            raise SystemExit(f"{folder / 'model.onnx'} is missing; run peers.py (or this script "
                             "without --work-root) to build it")
        import peers

        log(f"{name}: building the weights and ONNX graph as peers.py does")
        peers.prepare(models.MODELS[name], refresh=False)
    return folder


def structured_image(rng: np.random.Generator) -> np.ndarray:
    """A smooth 224x224 RGB image in [0, 1], normalized as ImageNet inputs are."""
    size = IMAGE_SHAPE[2]
    y, x = np.meshgrid(np.linspace(0.0, 1.0, size), np.linspace(0.0, 1.0, size), indexing="ij")
    channels = []
    for _ in range(3):
        image = np.full((size, size), rng.uniform(0.2, 0.8))
        # Low-frequency sinusoids: 1-4 cycles across the image, random phase and direction.
        for _ in range(rng.integers(1, 4)):
            fx, fy = rng.uniform(-4.0, 4.0, size=2)
            image += rng.uniform(0.05, 0.3) * np.sin(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi))
        # A linear gradient.
        gx, gy = rng.uniform(-0.4, 0.4, size=2)
        image += gx * (x - 0.5) + gy * (y - 0.5)
        # Gaussian blobs, bright or dark.
        for _ in range(rng.integers(1, 5)):
            cx, cy = rng.uniform(0.0, 1.0, size=2)
            radius = rng.uniform(0.05, 0.3)
            image += rng.uniform(-0.5, 0.5) * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius ** 2))
        channels.append(np.clip(image, 0.0, 1.0))
    rgb = np.stack(channels).astype(np.float32)
    normalized = (rgb - IMAGENET_MEAN[:, None, None]) / IMAGENET_STD[:, None, None]
    return normalized[None].astype(np.float32)


def write_inputs(folder: Path, name: str) -> tuple[list[Path], list[Path], list[Path]]:
    """The calibration inputs (N(0, 1) only; mixed), the test inputs, as .npy files (the same on
    every run: fixed seeds, and the test inputs are drawn from their own generator)."""
    rng = np.random.default_rng(20251213 + sum(map(ord, name)))
    test_rng = np.random.default_rng(20251214 + sum(map(ord, name)))
    calib_dir = folder / "calib"
    test_dir = folder / "int8_inputs"
    calib_dir.mkdir(exist_ok=True)
    test_dir.mkdir(exist_ok=True)
    calib = []
    for index in range(CALIBRATION_INPUTS):
        path = calib_dir / f"calib_{index:02}.npy"
        np.save(path, rng.standard_normal(IMAGE_SHAPE).astype(np.float32))
        calib.append(path)
    # For the record, a second calibration set that also holds smooth images (8 + 8): the
    # activations of structured inputs reach further than N(0, 1)'s, and clip when calibrated
    # on noise only.
    mixed_dir = folder / "calib_mixed"
    mixed_dir.mkdir(exist_ok=True)
    mixed = []
    for index in range(CALIBRATION_INPUTS):
        path = mixed_dir / f"calib_{index:02}.npy"
        if index % 2 == 0:
            np.save(path, rng.standard_normal(IMAGE_SHAPE).astype(np.float32))
        else:
            np.save(path, structured_image(rng))
        mixed.append(path)
    tests = []
    for index in range(RANDOM_INPUTS):
        path = test_dir / f"random_{index:02}.npy"
        np.save(path, test_rng.standard_normal(IMAGE_SHAPE).astype(np.float32))
        tests.append(path)
    for index in range(STRUCTURED_INPUTS):
        path = test_dir / f"structured_{index:02}.npy"
        np.save(path, structured_image(test_rng))
        tests.append(path)
    return calib, mixed, tests


# --------------------------------------------------------------------------------------------
# 2. The int8 model.
# --------------------------------------------------------------------------------------------


def preprocess(folder: Path) -> Path:
    """ONNX Runtime's recommended step before quantize_static: shape inference and its graph
    optimizations (which fold each batch norm into its conv, so that no float op is left
    between a conv's QDQ pairs), written as work/<model>/model_preprocessed.onnx."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    output = folder / "model_preprocessed.onnx"
    # The shapes are static: ONNX shape inference suffices (the symbolic one needs sympy).
    quant_pre_process(str(folder / "model.onnx"), str(output), skip_symbolic_shape=True)
    return output


def quantize(source: Path, calib: list[Path], output: Path) -> Path:
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_static)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.pending = [{INPUT_NAME: np.load(path)} for path in calib]

        def get_next(self):
            return self.pending.pop(0) if self.pending else None

    started = time.time()
    quantize_static(str(source), str(output), Reader(),
                    quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    log(f"{source.parent.name}: quantized to {output.name} ({time.time() - started:.0f} s)")
    return output


# --------------------------------------------------------------------------------------------
# 3. Agreement.
# --------------------------------------------------------------------------------------------


def logits_of(onnx_path: Path, tests: list[Path]) -> np.ndarray:
    forward = engines.load_ort(onnx_path, 1)
    return np.stack([next(iter(forward.run({INPUT_NAME: np.load(p)}).values())).reshape(-1)
                     for p in tests])


def agreement(logits: np.ndarray, reference: np.ndarray, tests: list[Path]) -> dict[str, dict]:
    """Top-1 agreement and the largest logit error (relative to the reference's largest
    magnitude, per input), overall and per kind of input."""
    kinds = {"random": [i for i, p in enumerate(tests) if p.name.startswith("random_")],
             "structured": [i for i, p in enumerate(tests) if p.name.startswith("structured_")]}
    kinds["all"] = list(range(len(tests)))
    result = {}
    for kind, rows in kinds.items():
        same = int(sum(np.argmax(logits[i]) == np.argmax(reference[i]) for i in rows))
        errors = [float(np.max(np.abs(logits[i] - reference[i])) / max(np.max(np.abs(reference[i])), 1e-12))
                  for i in rows]
        result[kind] = {"top1_same": same, "inputs": len(rows), "max_rel_logit_error": max(errors),
                        "median_rel_logit_error": float(np.median(errors))}
    return result


def nnc_int8_outputs(nnc: Path, name: str, folder: Path, tests: list[Path],
                     calib: list[Path], tag: str) -> np.ndarray:
    """nnc's int8 logits on the test inputs: `nnc calibrate` on the same calibration inputs as
    ONNX Runtime's model (`calib`), then `nnc run --quantize int8 --calibration` on every test
    input. `tag` names the calibration set in the files written."""
    commands = subprocess.run([str(nnc), "--help"], capture_output=True, text=True).stdout
    if "calibrate" not in commands:
        raise SystemExit(f"{nnc} has no `calibrate` command yet (issue 13, deliverable 4): run "
                         "without --nnc, or with an nnc that has it")
    nn_file = models.MODELS[name].nn_file
    weights = folder / "weights.safetensors"
    scales = folder / f"nnc_int8_scales{tag}.json"
    subprocess.run([str(nnc), "calibrate", str(nn_file), "--weights", str(weights), "--input",
                    *map(str, calib), "-o", str(scales)], check=True)
    out_dir = folder / f"nnc_int8_outputs{tag}"
    out_dir.mkdir(exist_ok=True)
    rows = []
    for path in tests:
        output = out_dir / path.name
        subprocess.run([str(nnc), "run", str(nn_file), "--weights", str(weights), "--quantize",
                        "int8", "--calibration", str(scales), "--input", f"{INPUT_NAME}={path}",
                        "--output", f"logits={output}"], check=True, capture_output=True)
        rows.append(np.load(output).reshape(-1))
    return np.stack(rows)


# --------------------------------------------------------------------------------------------
# 4. Timing.
# --------------------------------------------------------------------------------------------


def time_one(onnx_path: Path, input_path: Path, threads: int, warmup: int, iterations: int) -> None:
    """One process's timing, printed as JSON: engines.py's ONNX Runtime settings and its loop
    (`time_forward`), then the same number of inferences timed in the calling thread's CPU time,
    which at 1 thread (ONNX Runtime then computes on the calling thread) other processes' load
    does not inflate."""
    forward = engines.load_ort(onnx_path, threads)
    inputs = {INPUT_NAME: np.load(input_path)}
    result = engines.time_forward(forward, inputs, warmup, iterations)
    cpu_ms = []
    for _ in range(iterations):
        started = time.thread_time()
        forward.run(inputs)
        cpu_ms.append((time.thread_time() - started) * 1e3)
    result["cpu_ms"] = cpu_ms
    print(json.dumps(result))


NNC_TIMED = ("nnc_f32", "nnc_int8")


def nnc_harness_dir(folder: Path, variant: str) -> Path:
    return folder / f"nnc_bench_{variant.removeprefix('nnc_')}"


def build_nnc_harnesses(nnc: Path, name: str, folder: Path) -> None:
    """`nnc bench` once per variant, each in its own work folder (the harness is named after the
    model): f32, and int8 calibrated on the mixed calibration set (`nnc_int8_outputs` wrote its
    scales)."""
    for variant in NNC_TIMED:
        cmd = [str(nnc), "bench", str(models.MODELS[name].nn_file), "--weights",
               str(folder / "weights.safetensors"), "--threads", "1", "--profile-iterations", "0",
               "--format", "json", "--warmup", "1", "--iterations", "1", "--work-dir",
               str(nnc_harness_dir(folder, variant))]
        if variant == "nnc_int8":
            cmd += ["--quantize", "int8", "--calibration", str(folder / "nnc_int8_scales_mixed.json")]
        log(f"{name}: building nnc's {variant} harness")
        subprocess.run(cmd, check=True, capture_output=True, text=True)


def time_nnc(name: str, folder: Path, variant: str, threads: int, warmup: int,
             iterations: int) -> list[float]:
    """One process of nnc's harness (as peers.py times nnc): its per-inference latencies (ms)."""
    binary = (nnc_harness_dir(folder, variant) / "target" / "release"
              / f"nnc-bench-{name.replace('_', '-')}")
    cmd = [str(binary), f"threads={threads}", "profile_iterations=0",
           f"weights={folder / 'weights.safetensors'}", f"warmup={warmup}", f"iterations={iterations}"]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return [value * 1e-6 for value in result["latencies_ns"]]


def time_all(folders: dict[str, Path], threads: list[int], rounds: int, warmup: int,
             iterations: int, with_nnc: bool = False) -> dict:
    """results[model][threads][variant] = each process's median latency (ms), in round order."""
    results: dict = {name: {str(t): {} for t in threads} for name in folders}
    shuffle = random.Random(13)
    for round_index in range(rounds):
        for name, folder in folders.items():
            for count in threads:
                order = list(TIMED) + (list(NNC_TIMED) if with_nnc else [])
                shuffle.shuffle(order)
                for variant in order:
                    if variant in NNC_TIMED:
                        median = float(np.median(time_nnc(name, folder, variant, count, warmup,
                                                          iterations)))
                        results[name][str(count)].setdefault(variant, []).append(median)
                        log(f"round {round_index + 1}/{rounds} {name} T={count} {variant}: {median:.3f} ms")
                        continue
                    onnx_path = folder / TIMED[variant]
                    cmd = [sys.executable, str(Path(__file__).resolve()), "--time-one", str(onnx_path),
                           "--input-file", str(folder / "input_image.npy"), "--threads", str(count),
                           "--warmup", str(warmup), "--iterations", str(iterations)]
                    env = dict(os.environ, OMP_NUM_THREADS=str(count))
                    run = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
                    measured = json.loads(run.stdout.strip().splitlines()[-1])
                    median = float(np.median(measured["latencies_ms"]))
                    cell = results[name][str(count)]
                    cell.setdefault(variant, []).append(median)
                    cell.setdefault(f"{variant} cpu", []).append(float(np.median(measured["cpu_ms"])))
                    log(f"round {round_index + 1}/{rounds} {name} T={count} {variant}: {median:.3f} ms, "
                        f"calling thread's CPU {cell[f'{variant} cpu'][-1]:.3f} ms")
    return results


def percentile(values: list[float], p: float) -> float:
    """Nearest rank, as peers.py's."""
    ordered = sorted(values)
    rank = int(np.ceil(p / 100.0 * len(ordered)))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


# --------------------------------------------------------------------------------------------
# The tables.
# --------------------------------------------------------------------------------------------


def timing_table(timings: dict) -> str:
    lines = ["| model | threads | ORT f32 (ms) | ORT int8 QDQ (ms) | int8 / f32 | 0.9 x int8 (nnc's target, ms) "
             "| int8 QDQ without pre-processing (ms) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name, per_threads in timings.items():
        for count, variants in per_threads.items():
            cells = {}
            for variant in TIMED:
                values = variants[variant]
                cells[variant] = (f"{np.median(values):.2f} [{percentile(values, 10):.2f}, "
                                  f"{percentile(values, 90):.2f}]")
            f32, int8 = np.median(variants["ort_f32"]), np.median(variants["ort_int8_qdq"])
            lines.append(f"| {name} | {count} | {cells['ort_f32']} | {cells['ort_int8_qdq']} | "
                         f"{int8 / f32:.2f} | {0.9 * int8:.2f} | {cells['ort_int8_qdq_no_preprocess']} |")
    if any("nnc_int8" in variants for per_threads in timings.values()
           for variants in per_threads.values()):
        lines += ["", "nnc, timed in the same rounds (its `nnc bench` harness, one process each, as "
                  "peers.py times it; int8 calibrated on the mixed set):", "",
                  "| model | threads | nnc f32 (ms) | nnc int8 (ms) | nnc int8 / ORT int8 QDQ | "
                  "nnc int8 / nnc f32 |", "|---|---:|---:|---:|---:|---:|"]
        for name, per_threads in timings.items():
            for count, variants in per_threads.items():
                cell = lambda v: (f"{np.median(variants[v]):.2f} [{percentile(variants[v], 10):.2f}, "  # noqa: E731
                                  f"{percentile(variants[v], 90):.2f}]")
                nnc_int8 = np.median(variants["nnc_int8"])
                lines.append(f"| {name} | {count} | {cell('nnc_f32')} | {cell('nnc_int8')} | "
                             f"{nnc_int8 / np.median(variants['ort_int8_qdq']):.2f} | "
                             f"{nnc_int8 / np.median(variants['nnc_f32']):.2f} |")
    lines += ["", "The calling thread's CPU time per inference at 1 thread (ONNX Runtime computes on the "
              "calling thread then; other processes' load does not inflate it), median over processes:",
              "", "| model | ORT f32 CPU (ms) | ORT int8 QDQ CPU (ms) | int8 / f32 | 0.9 x int8 (ms) "
              "| int8 QDQ without pre-processing CPU (ms) |", "|---|---:|---:|---:|---:|---:|"]
    for name, per_threads in timings.items():
        variants = per_threads.get("1")
        if variants:
            cpu = {variant: np.median(variants[f"{variant} cpu"]) for variant in TIMED}
            lines.append(f"| {name} | {cpu['ort_f32']:.2f} | {cpu['ort_int8_qdq']:.2f} | "
                         f"{cpu['ort_int8_qdq'] / cpu['ort_f32']:.2f} | {0.9 * cpu['ort_int8_qdq']:.2f} | "
                         f"{cpu['ort_int8_qdq_no_preprocess']:.2f} |")
    return "\n".join(lines)


def agreement_table(checks: dict) -> str:
    lines = ["| model | engine | top-1 same as ORT f32: random | structured | all | "
             "max rel. logit error (all) | median |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, per_engine in checks.items():
        for engine, kinds in per_engine.items():
            cell = lambda kind: f"{kinds[kind]['top1_same']}/{kinds[kind]['inputs']}"  # noqa: E731
            lines.append(f"| {name} | {engine} | {cell('random')} | {cell('structured')} | "
                         f"{cell('all')} | {kinds['all']['max_rel_logit_error']:.3g} | "
                         f"{kinds['all']['median_rel_logit_error']:.3g} |")
    return "\n".join(lines)


AGREEMENT_NOTE = (
    "The weights are random (peers.py's, batch norms calibrated on N(0, 1)), so the f32 model's top "
    "classes are close together and top-1 is a strict test. Calibrated on N(0, 1) inputs only, the "
    "int8 model clips the larger activations of smooth images (the second row of each model, "
    "calibrated on 8 noise + 8 smooth images, agrees far better); nnc's int8 path, calibrated on the same "
    "files (`calib/`), meets the same inputs."
)
TIMING_NOTE = (
    "Wall-clock figures are inflated when the load average is above the core count (2): other "
    "processes then take turns on the cores. The CPU-time table holds up under load (at 1 thread)."
)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS))
    parser.add_argument("--work-root", type=Path, default=HERE / "work",
                        help="where the models' prepared folders are (bench/peers/work)")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--nnc", type=Path, help="also run nnc's int8 path (nnc calibrate, "
                        "nnc run --quantize int8 --scales) on the same inputs")
    parser.add_argument("--no-timing", action="store_true", help="agreement only")
    # The per-process timing mode of time_all.
    parser.add_argument("--time-one", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--input-file", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    thread_counts = [int(t) for t in args.threads.split(",")]
    if args.time_one:
        time_one(args.time_one, args.input_file, thread_counts[0], args.warmup, args.iterations)
        return

    names = args.models.split(",")
    folders, checks = {}, {}
    load_before = uptime()
    for name in names:
        folder = model_folder(args.work_root, name)
        calib, mixed, tests = write_inputs(folder, name)
        preprocessed = preprocess(folder)
        int8_path = quantize(preprocessed, calib, folder / "model_int8_qdq.onnx")
        mixed_path = quantize(preprocessed, mixed, folder / "model_int8_qdq_mixed_calib.onnx")
        quantize(folder / "model.onnx", calib, folder / TIMED["ort_int8_qdq_no_preprocess"])
        reference = logits_of(folder / "model.onnx", tests)
        checks[name] = {
            "ort_int8_qdq": agreement(logits_of(int8_path, tests), reference, tests),
            "ort_int8_qdq (mixed calib.)": agreement(logits_of(mixed_path, tests), reference, tests),
        }
        if args.nnc:
            checks[name]["nnc_int8"] = agreement(
                nnc_int8_outputs(args.nnc, name, folder, tests, calib, ""), reference, tests)
            checks[name]["nnc_int8 (mixed calib.)"] = agreement(
                nnc_int8_outputs(args.nnc, name, folder, tests, mixed, "_mixed"), reference, tests)
        log(f"{name}: {json.dumps(checks[name])}")
        folders[name] = folder
    if args.nnc and not args.no_timing:
        for name, folder in folders.items():
            build_nnc_harnesses(args.nnc, name, folder)
    timings = {} if args.no_timing else time_all(folders, thread_counts, args.rounds,
                                                   args.warmup, args.iterations,
                                                   with_nnc=args.nnc is not None)
    load_after = uptime()

    import onnxruntime

    text = ["# ONNX Runtime static int8 (QDQ) against f32, ResNet-18 and MobileNetV2", "",
            "Made by `bench/peers/int8_qdq.py` (see its docstring): the peer benchmark's weights and "
            "ONNX graphs, `quant_pre_process` then `quantize_static` (QDQ, per-channel QInt8 weights, QUInt8 activations, "
            f"MinMax over {CALIBRATION_INPUTS} N(0, 1) inputs), ONNX Runtime {onnxruntime.__version__}.",
            "", "## Top-1 agreement with the f32 model (100 inputs: 50 N(0, 1), 50 smooth images)", "",
            agreement_table(checks), "", AGREEMENT_NOTE, ""]
    if timings:
        text += ["## Latency, 1x3x224x224", "",
                 f"Median over {args.rounds} processes of each process's median of {args.iterations} "
                 f"inferences ({args.warmup} warm-up), [10th, 90th percentile over processes]; "
                 "processes interleaved in a shuffled order.", "",
                 timing_table(timings), "", TIMING_NOTE, ""]
    text += [f"Load before: `{load_before}`", "", f"Load after: `{load_after}`", ""]
    output = "\n".join(text)
    print(output)
    if args.models == ",".join(DEFAULT_MODELS) and not args.no_timing:
        RESULTS_MD.write_text(output)
        (HERE / "int8_results.json").write_text(json.dumps({"agreement": checks, "timings": timings},
                                                           indent=1) + "\n")
        log(f"wrote {RESULTS_MD}")


if __name__ == "__main__":
    main()
