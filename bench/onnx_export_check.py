"""Checks `nnc export`: every example and codegen test model, exported to ONNX, passes the ONNX
checker and computes in ONNX Runtime what `nnc run` computes.

For each model without a KV cache (examples/*.nn, tests/codegen/models/*.nn), at the test
dimensions its header declares (`// test-dims: seq=16`) and at each optimization level asked for:

1. `nnc export MODEL --random-weights SEED -O LEVEL -o model.onnx`;
2. `onnx.checker.check_model(model, full_check=True)` (full_check runs ONNX's shape inference);
3. random inputs (token ids below the smallest table their `Gather`s index, 0/1 masks, other
   f32 inputs uniform in [-2, 2)), run by `nnc run MODEL --random-weights SEED` (the reference
   interpreter, the same weights) and by ONNX Runtime;
4. agreement: max over elements of |ort - nnc| / max(|nnc|, 1) (bench/peers' measure), which
   must be below 1e-4; the table also shows max |ort - nnc| / max |nnc| (relative to the output's
   scale, for outputs much smaller than 1).

A model with a KV cache must be refused with an error naming the KV cache (not a crash); its
full-sequence forward pass, a copy of the file with the `kv_cache = N` arguments removed, is then
checked as above (row `MODEL (no kv_cache)`), which covers RoPE, grouped-query and causal and
sliding-window attention.

Usage: python bench/onnx_export_check.py [--nnc target/debug/nnc] [--opt 0 2] [--models mlp ...]
Needs onnx, onnxruntime and numpy (bench/peers/.venv has them, or
`python3 -m venv /tmp/venv-onnx && /tmp/venv-onnx/bin/pip install onnx onnxruntime numpy`).
Prints a table and exits with status 1 if a check fails.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
TOLERANCE = 1e-4


def default_nnc() -> Path:
    if "NNC" in os.environ:
        return Path(os.environ["NNC"])
    for profile in ("release", "debug"):
        candidate = ROOT / "target" / profile / "nnc"
        if candidate.exists():
            return candidate
    raise SystemExit("no nnc binary: build it (cargo build -p nnc-compiler) or pass --nnc")


def models() -> list[Path]:
    files = sorted((ROOT / "examples").glob("*.nn")) + sorted((ROOT / "tests/codegen/models").glob("*.nn"))
    return files


def test_dims(source: str) -> list[str]:
    match = re.search(r"^//\s*test-dims:\s*(.*)$", source, re.MULTILINE)
    if not match:
        return []
    return [binding.strip().replace(" ", "") for binding in match.group(1).split(",") if binding.strip()]


def has_kv_cache(source: str) -> bool:
    return re.search(r"\bkv_cache\s*=", source) is not None


def vocabulary_sizes(model: onnx.ModelProto) -> dict[str, int]:
    """For each graph input that a Gather indexes into an initializer: that table's row count."""
    tables = {init.name: init.dims[0] for init in model.graph.initializer if init.dims}
    sizes: dict[str, int] = {}
    for node in model.graph.node:
        if node.op_type == "Gather" and len(node.input) == 2 and node.input[0] in tables:
            ids = node.input[1]
            sizes[ids] = min(sizes.get(ids, tables[node.input[0]]), tables[node.input[0]])
    return sizes


def make_inputs(model: onnx.ModelProto, rng: np.random.Generator) -> dict[str, np.ndarray]:
    vocab = vocabulary_sizes(model)
    inputs = {}
    for value in model.graph.input:
        tensor_type = value.type.tensor_type
        shape = [dim.dim_value for dim in tensor_type.shape.dim]
        if tensor_type.elem_type == onnx.TensorProto.INT64:
            high = vocab.get(value.name, 2)
            inputs[value.name] = rng.integers(0, high, size=shape, dtype=np.int64)
        elif "mask" in value.name:
            inputs[value.name] = rng.integers(0, 2, size=shape).astype(np.float32)
        else:
            inputs[value.name] = rng.uniform(-2.0, 2.0, size=shape).astype(np.float32)
    return inputs


def agreement(got: np.ndarray, reference: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    diff = np.abs(got.astype(np.float64) - ref)
    return float(np.max(diff / np.maximum(np.abs(ref), 1.0))) if ref.size else 0.0


def scaled_error(got: np.ndarray, reference: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    return float(np.max(np.abs(got.astype(np.float64) - ref))) / scale if scale > 0 else 0.0


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def check_model(nnc: Path, path: Path, level: int, seed: int,
                work: Path) -> tuple[str, float | None, float | None, str]:
    """(outputs, max relative error, max error relative to scale, status) of one model at one level."""
    source = path.read_text()
    dims = [arg for binding in test_dims(source) for arg in ("--dim", binding)]
    onnx_path = work / f"{path.stem}.O{level}.onnx"
    exported = run([str(nnc), "export", str(path), "--random-weights", str(seed), f"-O{level}",
                    "-o", str(onnx_path)] + dims)
    if has_kv_cache(source):
        refused = exported.returncode != 0 and "KV cache" in exported.stderr and "panicked" not in exported.stderr
        return "-", None, None, "refused (KV cache)" if refused else f"FAIL: not refused cleanly: {exported.stderr.strip()}"
    if exported.returncode != 0:
        return "-", None, None, f"FAIL: export: {exported.stderr.strip()}"
    model = onnx.load(str(onnx_path))
    try:
        onnx.checker.check_model(model, full_check=True)
    except Exception as error:  # noqa: BLE001 (any checker failure is a failed check)
        return "-", None, None, f"FAIL: checker: {error}"
    inputs = make_inputs(model, np.random.default_rng(seed))
    cmd = [str(nnc), "run", str(path), "--random-weights", str(seed)] + dims
    for name, array in inputs.items():
        file = work / f"{path.stem}.in.{name}.npy"
        np.save(file, array)
        cmd += ["--input", f"{name}={file}"]
    output_names = [value.name for value in model.graph.output]
    for name in output_names:
        cmd += ["--output", f"{name}={work / f'{path.stem}.out.{name}.npy'}"]
    reference_run = run(cmd)
    if reference_run.returncode != 0:
        return "-", None, None, f"FAIL: nnc run: {reference_run.stderr.strip()}"
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    got = session.run(output_names, inputs)
    worst = scaled = 0.0
    for name, array in zip(output_names, got):
        reference = np.load(work / f"{path.stem}.out.{name}.npy")
        if array.shape != reference.shape:
            return ",".join(output_names), None, None, f"FAIL: {name} shape {array.shape} != {reference.shape}"
        worst = max(worst, agreement(array, reference))
        scaled = max(scaled, scaled_error(array, reference))
    status = "ok" if worst <= TOLERANCE else f"FAIL: above {TOLERANCE:g}"
    return ",".join(output_names), worst, scaled, status


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nnc", type=Path, default=None)
    parser.add_argument("--opt", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--models", nargs="+", default=None, help="model stems (default: all)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    nnc = args.nnc or default_nnc()
    paths = [p for p in models() if args.models is None or p.stem in args.models]
    failures = 0
    print("| model | -O | outputs | max rel err | max err / max abs | status |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="nnc-onnx-export-") as folder:
        for path in paths:
            for level in args.opt:
                outputs, worst, scaled, status = check_model(nnc, path, level, args.seed, Path(folder))
                rows = [(path.stem, outputs, worst, scaled, status)]
                if has_kv_cache(path.read_text()):
                    stripped = Path(folder) / path.name
                    stripped.write_text(re.sub(r",\s*kv_cache\s*=\s*\w+", "", path.read_text()))
                    rows.append((f"{path.stem} (no kv_cache)",
                                 *check_model(nnc, stripped, level, args.seed, Path(folder))))
                for name, outputs, worst, scaled, status in rows:
                    failures += status.startswith("FAIL")
                    shown = "-" if worst is None else f"{worst:.2e}"
                    shown_scaled = "-" if scaled is None else f"{scaled:.2e}"
                    print(f"| {name} | {level} | {outputs} | {shown} | {shown_scaled} | {status} |", flush=True)
    print(f"{failures} failure(s)" if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
