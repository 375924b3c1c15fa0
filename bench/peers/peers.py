#!/usr/bin/env python3
"""nnc against ONNX Runtime, OpenVINO and llama.cpp on the same models, weights and inputs.

What is compared: ResNet-18 and MobileNetV2 at 1x3x224x224, the BERT encoder at the size of
all-MiniLM-L6-v2 at seq 128, and the Llama decoder at the size of SmolLM2-135M (examples/*.nn),
at 1 and 2 threads, all in float32 on the CPU. For the forward models the figure is the latency
of one inference; for the decoder, the time to prefill a 5-token prompt and the time per token
of one-token decode steps after it.

How (see bench/README.md, "Peers"):

1. Preparation, once per model (kept in bench/peers/work/<model>/ until --refresh): random
   weights with the names and shapes `nnc weights` lists, drawn from a fixed seed (models.py),
   written as safetensors; the same model as ONNX (`nnc export` of the .nn file; the decoder,
   whose graph needs a KV cache that `nnc export` refuses, as a hand-built graph); for the
   decoder a GGUF file. `--check-only` stops after the agreement step (no timings).
2. Agreement, before any timing: nnc's interpreter (`nnc run`, which runs the runtime kernels
   the generated code calls) on the benchmark input against ONNX Runtime and OpenVINO, and for
   the decoder the logits of every prompt position against llama.cpp's (logits_all). The
   measure is max |engine - nnc| / max(|nnc|, 1) over the elements of every output; it must
   be <= 1e-3.
3. Timing, interleaved: every round runs, for each model and thread count, every engine once in
   a fresh process, in a shuffled order; each process warms up (a few inferences, and at least
   `WARMUP_SECONDS` of them), times N inferences (or decode sequences) and reports its median.
   nnc runs the harness `nnc bench` built (re-run directly with its key=value arguments, so it
   is built once); `nnc bench --decode` for the decoder.
4. The table: per model, thread count and figure, each engine's median over processes with the
   10th and 90th percentiles over processes, and nnc's median divided by the best peer's.
   Written to bench/peers/results.md and results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import engines  # noqa: E402
import models  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NNC = Path(os.environ.get("NNC_BINARY", ROOT / "target" / "release" / "nnc"))
MACHINE_PROBE = ROOT / "target" / "release" / "examples" / "machine_probe"
BENCH_WORK_DIR = ROOT / "target" / "nnc-bench"
TOLERANCE = 1e-3
# The least time each timed process warms up for. nnc's two-thread latency on MobileNetV2 was 1.5 to
# 3 times its steady state for about the first 60 ms after the model was built, on this 2-vCPU
# VM (time, not passes: 60 ms of sleep or of one busy thread after building removed it; not
# seen with one thread, on ResNet-18, or in ONNX Runtime): five warm-up passes (12 ms) left
# most of the twenty timed ones in it.
WARMUP_SECONDS = 0.3

PREPARED_VERSION = "3"  # bump when models.py or export_onnx change what they write


@dataclass
class Settings:
    """How much to time: per process, and how many processes."""

    rounds: int
    warmup: int
    iterations: int          # inferences per process (forward models)
    sequences: int           # decode sequences per process (the decoder)
    new_tokens: int          # decode steps per sequence
    threads: list[int]
    warmup_seconds: float = 0.0  # the least time each process warms up for

    @property
    def decoder_warmup(self) -> int:
        """Warm-up sequences per decoder process: half the inferences, at least one."""
        return max(1, self.warmup // 2)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# 1. Preparation.
# --------------------------------------------------------------------------------------------


def work_dir(model: str) -> Path:
    return HERE / "work" / model


def prepare(spec: models.ModelSpec, refresh: bool) -> Path:
    """Weights, inputs, the ONNX graph and (decoder) the GGUF of `spec`, in its work folder."""
    from safetensors.numpy import save_file

    folder = work_dir(spec.name)
    stamp = folder / "prepared.json"
    if not refresh and stamp.exists() and json.loads(stamp.read_text()).get("version") == PREPARED_VERSION:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20251202 + sum(map(ord, spec.name)))
    started = time.time()
    weights = models.draw_weights(models.nnc_weight_list(NNC, spec), rng)
    inputs = spec.make_inputs(rng)
    passes = models.calibrate_batch_norms(spec, weights, inputs, rng)
    save_file(weights, str(folder / "weights.safetensors"))
    for old in folder.glob("input_*.npy"):
        old.unlink()
    for name, value in nnc_inputs(spec, inputs).items():
        np.save(folder / f"input_{name}.npy", value)
    if spec.decoder:
        # ONNX opset 17 has no state between runs: the decoder's graph with its KV cache (past
        # keys/values in, present out) stays hand-built, as `nnc export` refuses a KV cache.
        models.build_onnx(spec, weights, inputs, folder / "model.onnx")
    else:
        export_onnx(spec, folder)
    if spec.decoder:
        models.write_gguf(weights, folder / "model.gguf")
    stamp.write_text(json.dumps({"version": PREPARED_VERSION, "batch_norm_passes": passes}))
    log(f"{spec.name}: prepared {len(weights)} weights"
        f"{f', batch norms calibrated in {passes} passes' if passes else ''}"
        f" ({time.time() - started:.0f} s)")
    return folder


def export_onnx(spec: models.ModelSpec, folder: Path) -> None:
    """The ONNX graph of `spec` as `nnc export` writes it, with the prepared weights."""
    cmd = [str(NNC), "export", str(spec.nn_file), "--weights", str(folder / "weights.safetensors"),
           "-o", str(folder / "model.onnx")]
    cmd += [a for d in spec.dims for a in ("--dim", d)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)


def nnc_inputs(spec: models.ModelSpec, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The network's own inputs (the decoder's ONNX graph also takes its empty cache)."""
    return {name: value for name, value in inputs.items() if not name.startswith("past_")}


# --------------------------------------------------------------------------------------------
# 2. Agreement.
# --------------------------------------------------------------------------------------------


def nnc_outputs(spec: models.ModelSpec, folder: Path) -> dict[str, np.ndarray]:
    """The outputs of nnc's interpreter on the prepared inputs (the decoder: on the prompt)."""
    dims = list(spec.dims) + ([f"seq={len(models.PROMPT)}"] if spec.decoder else [])
    cmd = [str(NNC), "run", str(spec.nn_file), "--weights", str(folder / "weights.safetensors")]
    cmd += [a for d in dims for a in ("--dim", d)]
    for path in sorted(folder.glob("input_*.npy")):
        cmd += ["--input", f"{path.name[len('input_'):-4]}={path}"]
    names = ["logits"] if spec.decoder or spec.name != "bert_encoder" else \
        ["last_hidden_state", "pooler_output"]
    for name in names:
        cmd += ["--output", f"{name}={folder / f'nnc_{name}.npy'}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return {name: np.load(folder / f"nnc_{name}.npy") for name in names}


def agreement(engine_output: np.ndarray, reference: np.ndarray) -> float:
    """max over elements of |engine - reference| / max(|reference|, 1)."""
    ref = reference.astype(np.float64)
    diff = np.abs(engine_output.astype(np.float64) - ref)
    return float(np.max(diff / np.maximum(np.abs(ref), 1.0)))


def peer_outputs(spec: models.ModelSpec, engine: str, folder: Path) -> dict[str, np.ndarray]:
    """What `engine` computes on the same inputs, shaped like nnc's outputs."""
    if spec.decoder:
        decoder = engines.load_decoder(engine, folder, threads=2, logits_all=True)
        decoder.reset()
        return {"logits": decoder.step(models.PROMPT)[None]}
    forward = engines.load_forward(engine, folder, threads=2)
    inputs = {p.name[len("input_"):-4]: np.load(p) for p in sorted(folder.glob("input_*.npy"))}
    return forward.run(inputs)


def check(spec: models.ModelSpec, folder: Path, peers: list[str]) -> dict[str, float]:
    """Every peer against nnc; exits if one disagrees by more than TOLERANCE."""
    reference = nnc_outputs(spec, folder)
    figures = {}
    for engine in peers:
        outputs = peer_outputs(spec, engine, folder)
        worst = 0.0
        for name, ref in reference.items():
            got = outputs[name]
            if got.shape != ref.shape:
                raise SystemExit(f"{spec.name}/{engine}/{name}: shape {got.shape} vs nnc {ref.shape}")
            worst = max(worst, agreement(got, ref))
        figures[engine] = worst
        scale = max(float(np.abs(r).max()) for r in reference.values())
        log(f"{spec.name}: {engine:<9} vs nnc: max|diff|/max(|nnc|,1) = {worst:.2e}"
            f"  (max |nnc output| {scale:.3g})")
        if not worst <= TOLERANCE:
            raise SystemExit(f"{spec.name}: {engine} disagrees with nnc ({worst:.3e} > {TOLERANCE})")
    return figures


# --------------------------------------------------------------------------------------------
# 3. Timing.
# --------------------------------------------------------------------------------------------


def build_nnc_harness(spec: models.ModelSpec, folder: Path) -> dict:
    """`nnc bench` once (it builds the harness); its JSON report."""
    cmd = [str(NNC), "bench", str(spec.nn_file), "--weights", str(folder / "weights.safetensors"),
           "--threads", "1", "--profile-iterations", "0", "--format", "json", "--warmup", "1",
           "--iterations", "1", "--work-dir", str(BENCH_WORK_DIR)]
    cmd += [a for d in spec.dims for a in ("--dim", d)]
    if spec.decoder:
        cmd += ["--decode", "--prompt-tokens", str(len(models.PROMPT)), "--new-tokens", "2"]
    log(f"{spec.name}: nnc bench{' --decode' if spec.decoder else ''} (builds the harness)")
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"nnc bench failed:\n{result.stderr}")
    return json.loads(result.stdout)


def harness_binary(spec: models.ModelSpec) -> Path:
    """The harness `nnc bench` built (see nnc_compiler::bench::harness_binary)."""
    project = f"{spec.name}_decode" if spec.decoder else spec.name
    return BENCH_WORK_DIR / "target" / "release" / f"nnc-bench-{project.replace('_', '-').lower()}"


def time_nnc(spec: models.ModelSpec, folder: Path, threads: int, s: Settings) -> dict[str, list[float]]:
    cmd = [str(harness_binary(spec)), f"threads={threads}", "profile_iterations=0",
           f"weights={folder / 'weights.safetensors'}"]
    if spec.decoder:
        cmd += [f"warmup={s.decoder_warmup}", f"warmup_seconds={s.warmup_seconds}",
                f"iterations={s.sequences}",
                f"prompt_tokens={len(models.PROMPT)}", f"new_tokens={s.new_tokens}"]
    else:
        cmd += [f"warmup={s.warmup}", f"warmup_seconds={s.warmup_seconds}",
                f"iterations={s.iterations}"]
    result = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    to_ms = lambda values: [v * 1e-6 for v in values]  # noqa: E731
    if spec.decoder:
        return {"prefill_ms": to_ms(result["prefill_ns"]), "decode_ms": to_ms(result["latencies_ns"])}
    return {"latencies_ms": to_ms(result["latencies_ns"])}


def time_peer(spec: models.ModelSpec, engine: str, folder: Path, threads: int,
              s: Settings) -> dict[str, list[float]]:
    cmd = [sys.executable, str(HERE / "engines.py"), "--engine", engine, "--model", spec.name,
           "--work", str(folder), "--threads", str(threads)]
    if spec.decoder:
        cmd += ["--warmup", str(s.decoder_warmup), "--warmup-seconds", str(s.warmup_seconds),
                "--iterations", str(s.sequences),
                "--new-tokens", str(s.new_tokens)]
    else:
        cmd += ["--warmup", str(s.warmup), "--warmup-seconds", str(s.warmup_seconds),
                "--iterations", str(s.iterations)]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    result = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(result.stdout.strip().splitlines()[-1])


FIGURES = {"latencies_ms": "latency", "prefill_ms": "prefill 5 tokens", "decode_ms": "decode per token"}


def time_all(specs: list[models.ModelSpec], engine_lists: dict[str, list[str]],
             s: Settings) -> dict:
    """results[model][threads][figure][engine] = the median of each process, in round order."""
    results: dict = {spec.name: {str(t): {} for t in s.threads} for spec in specs}
    shuffle = random.Random(12)
    for round_index in range(s.rounds):
        for spec in specs:
            for threads in s.threads:
                order = ["nnc"] + engine_lists[spec.name]
                shuffle.shuffle(order)
                for engine in order:
                    folder = work_dir(spec.name)
                    if engine == "nnc":
                        measured = time_nnc(spec, folder, threads, s)
                    else:
                        measured = time_peer(spec, engine, folder, threads, s)
                    cell = results[spec.name][str(threads)]
                    for key, values in measured.items():
                        cell.setdefault(FIGURES[key], {}).setdefault(engine, []).append(
                            float(np.median(values)))
                    summary = ", ".join(f"{FIGURES[k]} {np.median(v):.3f} ms" for k, v in measured.items())
                    log(f"round {round_index + 1}/{s.rounds} {spec.name} T={threads} {engine}: {summary}")
    return results


# --------------------------------------------------------------------------------------------
# 4. The table.
# --------------------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    """Nearest rank, as nnc bench's (for the 10th and 90th percentiles over processes)."""
    ordered = sorted(values)
    rank = int(np.ceil(p / 100.0 * len(ordered)))
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def paired_ratio(by_engine: dict[str, list[float]]) -> float:
    """The median over rounds of nnc's process median divided by the best peer's of the same
    round: the engines of a round run one after the other, within seconds, so a round's ratio
    is measured at one clock speed, which on a shared machine moves by a quarter from minute
    to minute (see `machine_probe`)."""
    peers = [v for e, v in by_engine.items() if e != "nnc"]
    if "nnc" not in by_engine or not peers:
        return float("nan")
    rounds = min(len(by_engine["nnc"]), *(len(v) for v in peers))
    return float(np.median([by_engine["nnc"][r] / min(v[r] for v in peers) for r in range(rounds)]))


def table(results: dict, engine_names: list[str]) -> str:
    header = ["model", "threads", "figure"] + engine_names + ["nnc / best peer", "paired"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for model, by_threads in results.items():
        for threads, figures in by_threads.items():
            for figure, by_engine in figures.items():
                cells = [model, threads, figure + " (ms)"]
                # The median over processes, the mean of the middle two for an even count.
                medians = {e: float(np.median(v)) for e, v in by_engine.items()}
                for engine in engine_names:
                    if engine not in by_engine:
                        cells.append("—")
                        continue
                    v = by_engine[engine]
                    cells.append(f"{medians[engine]:.2f} ({percentile(v, 10):.2f}–{percentile(v, 90):.2f})")
                peers = [m for e, m in medians.items() if e != "nnc"]
                ratio = medians["nnc"] / min(peers) if peers and "nnc" in medians else float("nan")
                cells.append(f"{ratio:.2f}")
                cells.append(f"{paired_ratio(by_engine):.2f}")
                lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def environment() -> dict:
    import onnxruntime
    import openvino
    versions = {"onnxruntime": onnxruntime.__version__, "openvino": openvino.__version__,
                "numpy": np.__version__}
    try:
        import llama_cpp
        versions["llama_cpp_python"] = llama_cpp.__version__
    except ImportError:
        pass
    return {"cpu": cpu_description(), "cores": os.cpu_count(), "versions": versions,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def cpu_description() -> str:
    """The processor's name with its family, model and caches: a VM may name only the vendor's line
    ("AMD EPYC"), and runs on two generations of it are not comparable (an EPYC of family 23, Zen,
    issues a 256-bit FMA a cycle and ran nnc's GEMM at 38-46 GFLOP/s; one of family 25, Zen 3,
    two, at 85-100)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        return platform.processor() or "unknown processor"
    name = fields.get("model name", platform.processor() or "unknown processor")
    details = [f"family {fields[k]}" if k == "cpu family" else f"{k} {fields[k]}"
               for k in ("cpu family", "model", "stepping") if k in fields]
    core = amd_core(fields)
    if core:
        details.insert(0, core)
    if "avx512f" not in fields.get("flags", "").split():
        details.append("no AVX-512")
    try:
        caches = subprocess.run(["lscpu", "-C=NAME,ONE-SIZE"], capture_output=True,
                                text=True).stdout
    except OSError:  # no lscpu
        caches = ""
    sizes = dict(line.split()[:2] for line in caches.splitlines()[1:] if len(line.split()) >= 2)
    details += [f"{level} {sizes[level]}" for level in ("L2", "L3") if level in sizes]
    return f"{name} ({', '.join(details)})" if details else name


def amd_core(fields: dict[str, str]) -> str | None:
    """The core of an AMD processor from its family and model, where the pair is well known."""
    if fields.get("vendor_id") != "AuthenticAMD":
        return None
    try:
        family, model = int(fields["cpu family"]), int(fields["model"])
    except (KeyError, ValueError):
        return None
    if family == 23:
        return "Zen 2" if model >= 0x30 else "Zen or Zen+"
    if family == 25:
        if model <= 0x0F or 0x20 <= model <= 0x5F:
            return "Zen 3"
        if 0x10 <= model <= 0x1F or 0x60 <= model <= 0x7F or 0xA0 <= model <= 0xAF:
            return "Zen 4"
        return None
    if family == 26:
        return "Zen 5"
    return None


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def machine_probe() -> dict | None:
    """`machine_probe`'s figures (the GEMM's rate in cache at one thread, and the read
    bandwidth at one and two threads), or None where it was not built or failed."""
    if not MACHINE_PROBE.exists():
        return None
    run = subprocess.run([str(MACHINE_PROBE)], capture_output=True, text=True)
    if run.returncode != 0:
        log(f"machine_probe failed: {run.stderr.strip()}")
        return None
    return json.loads(run.stdout)


def probe_summary(probes: list[dict | None]) -> str:
    """One sentence on the probes taken at the start and the end of the run."""
    probes = [p for p in probes if p]
    if not probes:
        return "No machine probe (`target/release/examples/machine_probe` not built)."
    gemm = " / ".join(f"{p['gemm_gflops']:.1f}" for p in probes)
    reads = "; ".join(
        f"{threads} thread{'s' if threads != '1' else ''} "
        + " / ".join(f"{p['read_gb_per_s'].get(threads, float('nan')):.1f}" for p in probes) + " GB/s"
        for threads in probes[0]["read_gb_per_s"])
    shape = "x".join(str(d) for d in probes[0]["gemm_shape"])
    return (f"Machine at the start / end (`machine_probe`): nnc's GEMM {shape} in cache at one "
            f"thread {gemm} GFLOP/s (the multiply-add bound, which follows the clock); reading "
            f"{probes[0]['read_mib']} MiB in a plain loop (what a decoding step, which streams "
            f"every weight once, runs into; a lower bound of the bandwidth): {reads}.")


def write_results(results: dict, checks: dict, settings: Settings, engine_names: list[str],
                  loads: list[str], quick: bool, env: dict | None = None,
                  probes: list[dict | None] | None = None) -> None:
    env = env or environment()
    text = table(results, engine_names)
    md = [
        "# nnc against its peers",
        "",
        f"Generated by `bash bench/peers/run.sh{' --quick' if quick else ''}` on {env['date']}: "
        f"{env['cpu']}, {env['cores']} cores; {', '.join(f'{k} {v}' for k, v in env['versions'].items())}.",
        "",
        f"Median over {settings.rounds} processes per engine (in brackets: 10th–90th percentile "
        f"over processes) of each process's median: {settings.iterations} inferences per process, "
        f"or for the decoder {settings.sequences} sequences of a {len(models.PROMPT)}-token prompt "
        f"and {settings.new_tokens} decode steps, after {settings.warmup} inferences (sequences: "
        f"{settings.decoder_warmup}) and at least {settings.warmup_seconds:g} s of warm-up. "
        "Lower is better; \"nnc / best peer\" is nnc's median "
        "divided by the best peer's (below 1: nnc is faster), \"paired\" the median over rounds "
        "of the same ratio within each round (the engines of a round run within seconds of "
        "each other, at one clock speed).",
        "",
        text,
        "Agreement with nnc's interpreter before timing (max |engine - nnc| / max(|nnc|, 1)): "
        + "; ".join(f"{m}: " + ", ".join(f"{e} {v:.1e}" for e, v in c.items()) for m, c in checks.items())
        + ".",
        "",
        "Load (`uptime`) at the start and the end: " + " / ".join(f"`{line}`" for line in loads),
        "",
        probe_summary(probes or []),
        "",
    ]
    (HERE / "results.md").write_text("\n".join(md))
    (HERE / "results.json").write_text(json.dumps({
        "environment": env, "settings": settings.__dict__, "quick": quick, "load": loads,
        "machine_probe": probes or [], "agreement": checks, "results": results}, indent=1) + "\n")
    print(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of few runs")
    parser.add_argument("--models", default=",".join(models.MODELS),
                        help=f"comma-separated, of {', '.join(models.MODELS)}")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, help="processes per engine (default 5, quick 2)")
    parser.add_argument("--refresh", action="store_true", help="redraw weights, rebuild graphs")
    parser.add_argument("--check-only", action="store_true",
                        help="prepare the models and check the peers agree with nnc; no timings")
    parser.add_argument("--retable", action="store_true",
                        help="only rewrite results.md from results.json (no runs)")
    args = parser.parse_args()
    if args.retable:
        saved = json.loads((HERE / "results.json").read_text())
        engine_names = sorted({e for by_t in saved["results"].values() for figs in by_t.values()
                               for by_e in figs.values() for e in by_e},
                              key=["nnc", *engines.ENGINES].index)
        write_results(saved["results"], saved["agreement"], Settings(**saved["settings"]),
                      engine_names, saved["load"], saved["quick"], saved["environment"],
                      saved.get("machine_probe"))
        return
    names = [m for m in args.models.split(",") if m]
    unknown = set(names) - set(models.MODELS)
    if unknown:
        raise SystemExit(f"unknown models {sorted(unknown)}; known: {list(models.MODELS)}")
    settings = Settings(rounds=args.rounds or (2 if args.quick else 5),
                        warmup=2 if args.quick else 5, iterations=5 if args.quick else 20,
                        sequences=1 if args.quick else 3, new_tokens=16 if args.quick else 32,
                        threads=[int(t) for t in args.threads.split(",")],
                        warmup_seconds=0.1 if args.quick else WARMUP_SECONDS)
    loads = [uptime()]
    log(f"load: {loads[0]}")
    probes = [machine_probe()]
    log(f"machine: {probes[0]}")
    specs = [models.MODELS[n] for n in names]
    engine_lists = {s.name: ["ort", "openvino"] + (["llama_cpp"] if s.decoder else []) for s in specs}
    checks = {}
    for spec in specs:
        folder = prepare(spec, args.refresh)
        checks[spec.name] = check(spec, folder, engine_lists[spec.name])
        if args.check_only:
            log(f"{spec.name}: agreement {checks[spec.name]}")
            continue
        build_nnc_harness(spec, folder)
    if args.check_only:
        return
    results = time_all(specs, engine_lists, settings)
    loads.append(uptime())
    probes.append(machine_probe())
    log(f"machine: {probes[-1]}")
    engine_names = ["nnc", "ort", "openvino"] + (["llama_cpp"] if any(s.decoder for s in specs) else [])
    write_results(results, checks, settings, engine_names, loads, args.quick, probes=probes)


if __name__ == "__main__":
    main()
