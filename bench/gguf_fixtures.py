#!/usr/bin/env python3
"""GGUF fixtures for nnc's GGUF reader, written with the `gguf` package llama.cpp publishes.

Run by hand, not by CI (cargo test reads the committed files and needs no Python):

    python3 -m venv .venv
    .venv/bin/pip install -r bench/requirements.txt
    .venv/bin/python bench/gguf_fixtures.py

It writes tests/fixtures/gguf/:

- types.gguf: one small tensor of each type nnc reads (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K,
  Q6_K), with 64-byte alignment, and metadata of every value type (arrays of strings, of numbers,
  nested arrays). The Q8_0/Q4_0/Q4_1 tensors are quantized by `gguf.quants.quantize`; Q4_K and Q6_K,
  which that package cannot quantize, are random blocks with sane f16 scales. For each tensor
  `types.<name>.npy` holds `gguf.quants.dequantize` of its data: the reference values.
- tiny_llama.gguf: a one-layer llama (`general.architecture` = llama) with llama.cpp's tensor
  names and its q/k row permutation (as `convert_hf_to_gguf.py` does it), some tensors quantized;
  tiny_llama.safetensors holds the same weights under Hugging Face's names, unpermuted and
  dequantized, i.e. exactly what loading the GGUF file must give; tiny_llama.nn is the model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize, quantize
from safetensors.numpy import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "gguf"


def random_k_blocks(rng: np.random.Generator, rows: int, blocks: int, qtype: Q) -> np.ndarray:
    """Random Q4_K / Q6_K blocks whose f16 scales are small finite numbers."""
    block_bytes = {Q.Q4_K: 144, Q.Q6_K: 210}[qtype]
    raw = rng.integers(0, 256, size=(rows, blocks, block_bytes), dtype=np.uint8)
    scales = rng.uniform(0.001, 0.05, size=(rows, blocks, 2)).astype(np.float16)
    if qtype == Q.Q4_K:
        raw[:, :, 0:4] = scales.view(np.uint8).reshape(rows, blocks, 4)
    else:
        raw[:, :, 208:210] = scales[:, :, :1].view(np.uint8).reshape(rows, blocks, 2)
    return raw.reshape(rows, blocks * block_bytes)


def write_types(rng: np.random.Generator) -> None:
    writer = gguf.GGUFWriter(OUT / "types.gguf", "nnc-test")
    writer.add_custom_alignment(64)
    writer.add_uint8("test.u8", 200)
    writer.add_int8("test.i8", -100)
    writer.add_uint16("test.u16", 60000)
    writer.add_int16("test.i16", -30000)
    writer.add_uint32("test.u32", 4_000_000_000)
    writer.add_int32("test.i32", -2_000_000_000)
    writer.add_float32("test.f32", 1.5)
    writer.add_bool("test.bool", True)
    writer.add_string("test.string", "héllo")
    writer.add_uint64("test.u64", 2**40 + 1)
    writer.add_int64("test.i64", -(2**40))
    writer.add_float64("test.f64", -0.25)
    writer.add_array("test.strings", ["a", "bc", ""])
    writer.add_array("test.floats", [0.5, -1.0])
    writer.add_array("test.nested", [[1, 2], [3]])

    tensors = {
        "plain_f32": (rng.standard_normal((3, 5)).astype(np.float32), Q.F32),
        "plain_f16": (rng.standard_normal((2, 7)).astype(np.float32), Q.F16),
        "plain_bf16": (rng.standard_normal((4, 3)).astype(np.float32), Q.BF16),
        "quant_q8_0": (rng.standard_normal((3, 64)).astype(np.float32), Q.Q8_0),
        "quant_q4_0": (rng.standard_normal((2, 2, 32)).astype(np.float32), Q.Q4_0),
        "quant_q4_1": (rng.standard_normal((3, 32)).astype(np.float32), Q.Q4_1),
    }
    for name, (values, qtype) in tensors.items():
        data = quantize(values, qtype)
        writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
        np.save(OUT / f"types.{name}.npy", dequantize(data, qtype).astype(np.float32))
    for name, rows, blocks, qtype in [("quant_q4_k", 2, 2, Q.Q4_K), ("quant_q6_k", 1, 2, Q.Q6_K)]:
        data = random_k_blocks(rng, rows, blocks, qtype)
        writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=qtype)
        np.save(OUT / f"types.{name}.npy", dequantize(data, qtype).astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


# The tiny llama: vocab 16, hidden 32, 2 query heads and 1 key/value head of 16, MLP 32, 1 layer.
VOCAB, HIDDEN, HEADS, KV_HEADS, INTERMEDIATE, LAYERS = 16, 32, 2, 1, 32, 1
HEAD_DIM = HIDDEN // HEADS

TINY_LLAMA_NN = f"""// A one-layer llama for the GGUF loading tests (bench/gguf_fixtures.py writes it with its weights).
const vocab = {VOCAB}
const hidden = {HIDDEN}
const heads = {HEADS}
const kv_heads = {KV_HEADS}
const head_dim = hidden / heads
const intermediate = {INTERMEDIATE}

block llama_attention(x) {{
    q = linear(x, heads * head_dim, bias = false) as q_proj
    k = linear(x, kv_heads * head_dim, bias = false) as k_proj
    v = linear(x, kv_heads * head_dim, bias = false) as v_proj
    q = rope(q, heads, theta = 10000.0)
    k = rope(k, kv_heads, theta = 10000.0)
    a = attention(q, k, v, heads = heads, kv_heads = kv_heads, causal = true)
    return linear(a, hidden, bias = false) as o_proj
}}

block llama_mlp(x) {{
    gate = linear(x, intermediate, bias = false) as gate_proj
    up = linear(x, intermediate, bias = false) as up_proj
    return linear(silu(gate) * up, hidden, bias = false) as down_proj
}}

block llama_layer(x) {{
    h = rms_norm(x, eps = 1e-5) as input_layernorm
    x = x + llama_attention(h) as self_attn
    h = rms_norm(x, eps = 1e-5) as post_attention_layernorm
    return x + llama_mlp(h) as mlp
}}

network tiny_llama(input_ids: i64[batch, seq]) -> (logits: f32[batch, seq, vocab]) where batch = 1, seq = 4 {{
    h = embedding(input_ids, vocab, hidden) as model.embed_tokens
    for i in 0..{LAYERS} {{
        h = llama_layer(h) as model.layers[i]
    }}
    h = rms_norm(h, eps = 1e-5) as model.norm
    logits = linear(h, vocab, bias = false, tied = "model.embed_tokens") as lm_head
}}
"""


def llama_cpp_permute(weights: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: rotate adjacent pairs instead of halves."""
    return (
        weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
        .swapaxes(1, 2)
        .reshape(weights.shape)
    )


def write_tiny_llama(rng: np.random.Generator) -> None:
    writer = gguf.GGUFWriter(OUT / "tiny_llama.gguf", "llama")
    writer.add_block_count(LAYERS)
    writer.add_embedding_length(HIDDEN)
    writer.add_feed_forward_length(INTERMEDIATE)
    writer.add_head_count(HEADS)
    writer.add_head_count_kv(KV_HEADS)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(VOCAB)

    expected: dict[str, np.ndarray] = {}

    def add(gguf_name: str, hf_name: str, values: np.ndarray, qtype: Q, heads: int | None = None) -> None:
        stored = llama_cpp_permute(values, heads) if heads else values
        data = quantize(stored.astype(np.float32), qtype)
        writer.add_tensor(gguf_name, data, raw_shape=data.shape, raw_dtype=qtype)
        loaded = dequantize(data, qtype).astype(np.float32).reshape(values.shape)
        if heads:
            # The inverse of the permutation: what nnc must give back.
            loaded = (
                loaded.reshape(heads, loaded.shape[0] // heads // 2, 2, *loaded.shape[1:])
                .swapaxes(1, 2)
                .reshape(loaded.shape)
            )
            if qtype == Q.F32:
                assert np.array_equal(loaded, values)
        expected[hf_name] = np.ascontiguousarray(loaded)

    def normal(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    add("token_embd.weight", "model.embed_tokens.weight", normal(VOCAB, HIDDEN), Q.Q8_0)
    for layer in range(LAYERS):
        prefix, hf = f"blk.{layer}", f"model.layers.{layer}"
        add(f"{prefix}.attn_norm.weight", f"{hf}.input_layernorm.weight", 1 + 0.1 * normal(HIDDEN), Q.F32)
        # q stays f32 (the permutation round-trips exactly); k is quantized, then unpermuted.
        add(f"{prefix}.attn_q.weight", f"{hf}.self_attn.q_proj.weight", normal(HEADS * HEAD_DIM, HIDDEN), Q.F32, HEADS)
        add(f"{prefix}.attn_k.weight", f"{hf}.self_attn.k_proj.weight", normal(KV_HEADS * HEAD_DIM, HIDDEN), Q.Q4_1, KV_HEADS)
        add(f"{prefix}.attn_v.weight", f"{hf}.self_attn.v_proj.weight", normal(KV_HEADS * HEAD_DIM, HIDDEN), Q.Q4_0)
        add(f"{prefix}.attn_output.weight", f"{hf}.self_attn.o_proj.weight", normal(HIDDEN, HEADS * HEAD_DIM), Q.F16)
        add(f"{prefix}.ffn_norm.weight", f"{hf}.post_attention_layernorm.weight", 1 + 0.1 * normal(HIDDEN), Q.F32)
        add(f"{prefix}.ffn_gate.weight", f"{hf}.mlp.gate_proj.weight", normal(INTERMEDIATE, HIDDEN), Q.Q4_1)
        add(f"{prefix}.ffn_up.weight", f"{hf}.mlp.up_proj.weight", normal(INTERMEDIATE, HIDDEN), Q.BF16)
        add(f"{prefix}.ffn_down.weight", f"{hf}.mlp.down_proj.weight", normal(HIDDEN, INTERMEDIATE), Q.Q8_0)
    add("output_norm.weight", "model.norm.weight", 1 + 0.1 * normal(HIDDEN), Q.F32)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    save_file(expected, str(OUT / "tiny_llama.safetensors"))
    (OUT / "tiny_llama.nn").write_text(TINY_LLAMA_NN)


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(13)
    write_types(rng)
    write_tiny_llama(rng)
    for path in sorted(OUT.iterdir()):
        print(f"{path.relative_to(OUT.parent.parent.parent)}: {path.stat().st_size} bytes")


if __name__ == "__main__":
    main()
