"""The four benchmarked models, built for every peer from one set of weights.

For each model this module

* lists the weights nnc expects (`nnc weights examples/<model>.nn`: names and shapes) and draws
  them with numpy from a fixed seed, scaled like PyTorch's default initialization (nn.Linear:
  U(+-1/sqrt(fan_in)); convolutions: He normal; embeddings: N(0, 0.02); norms near 1). Batch-norm
  running statistics are then calibrated on the benchmark input (see `calibrate_batch_norms`),
  so that every batch norm sees inputs it normalizes to O(1): random statistics would let the
  activations of a 50-layer network shrink into float32 denormals, which are slow and would make
  the timing unfair;
* builds the same model as an ONNX graph by hand (opset 20), with the exact semantics of the
  .nn file, reusing the layer helpers of bench/ort_fixtures.py;
* for the Llama decoder, writes a GGUF file (F32, llama architecture) for llama.cpp, and the ONNX
  graph takes a KV cache (past keys/values in, present keys/values out) so that ONNX Runtime and
  OpenVINO can decode token by token like nnc and llama.cpp.
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
from onnx import TensorProto, helper

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ort_fixtures import (  # noqa: E402  (bench/ is not a package)
    OPSET,
    Graph,
    o_attention,
    o_batch_norm,
    o_conv,
    o_layer_norm,
    o_linear,
    o_rms_norm,
)

ROOT = Path(__file__).resolve().parent.parent.parent


@dataclass
class ModelSpec:
    """One benchmarked model: its .nn file, its inputs, and how to build its ONNX graph."""

    name: str
    nn_file: Path
    dims: list[str]                          # `--dim` bindings for nnc at benchmark size
    make_inputs: Callable[[np.random.Generator], dict[str, np.ndarray]]
    onnx_body: Callable[[Graph, dict[str, str]], dict[str, str]]
    decoder: bool = False
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Weights.
# --------------------------------------------------------------------------------------------


def nnc_weight_list(nnc: Path, spec: ModelSpec) -> list[tuple[str, tuple[int, ...]]]:
    """`nnc weights <model>`: (name, shape) of every weight, in the model's order."""
    cmd = [str(nnc), "weights", str(spec.nn_file)] + [a for d in spec.dims for a in ("--dim", d)]
    text = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    weights = []
    for line in text.splitlines()[1:]:
        if "[" not in line:  # the closing count of parameters
            continue
        name, rest = line.split(None, 1)
        shape_text = rest[rest.index("[") + 1:rest.index("]")]
        shape = tuple(int(v) for v in shape_text.split(",") if v.strip())
        weights.append((name, shape))
    return weights


def draw_weights(names_shapes: list[tuple[str, tuple[int, ...]]],
                 rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Random weights scaled like PyTorch's initialization, chosen by each weight's role."""
    names = {name for name, _ in names_shapes}
    shapes = dict(names_shapes)
    out: dict[str, np.ndarray] = {}
    for name, shape in names_shapes:
        prefix, _, leaf = name.rpartition(".")
        is_batch_norm = f"{prefix}.running_mean" in names
        if is_batch_norm:
            value = batch_norm_placeholder(leaf, shape, rng)
        elif len(shape) == 4:  # convolution: He normal on fan-in, as torchvision's models
            fan_in = shape[1] * shape[2] * shape[3]
            value = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
        elif len(shape) == 2 and ("embed" in name or "embeddings" in name):
            value = rng.normal(0.0, 0.02, shape)
        elif len(shape) == 2:  # nn.Linear weight [out, in]
            bound = 1.0 / math.sqrt(shape[1])
            value = rng.uniform(-bound, bound, shape)
        elif leaf == "bias" and f"{prefix}.weight" in shapes and len(shapes[f"{prefix}.weight"]) == 2:
            bound = 1.0 / math.sqrt(shapes[f"{prefix}.weight"][1])
            value = rng.uniform(-bound, bound, shape)
        elif leaf == "weight":  # layer norm / RMS norm scale
            value = 1.0 + rng.normal(0.0, 0.1, shape)
        else:  # layer norm shift
            value = rng.normal(0.0, 0.1, shape)
        out[name] = np.ascontiguousarray(value, dtype=np.float32)
    return out


def batch_norm_placeholder(leaf: str, shape, rng: np.random.Generator) -> np.ndarray:
    """Affine parameters like a trained network's; statistics to be calibrated."""
    if leaf == "weight":
        return rng.uniform(0.5, 1.5, shape)
    if leaf == "bias":
        return rng.normal(0.0, 0.1, shape)
    if leaf == "running_mean":
        return np.zeros(shape)
    return np.ones(shape)  # running_var


def calibrate_batch_norms(spec: ModelSpec, weights: dict[str, np.ndarray],
                          inputs: dict[str, np.ndarray], rng: np.random.Generator) -> int:
    """Sets every batch norm's running statistics to the per-channel mean and variance of its
    input on `inputs` (each jittered by a fixed random factor, so no term is trivially exact),
    with ONNX Runtime. Later layers depend on earlier statistics, so this repeats, upstream
    first, until the variances settle (at most one pass per batch norm). Returns the passes."""
    import onnxruntime as ort

    bn_prefixes = [name[:-len(".running_mean")] for name in weights if name.endswith(".running_mean")]
    if not bn_prefixes:
        return 0
    jitter_mean = {p: rng.normal(0.0, 0.1, weights[f"{p}.running_mean"].shape) for p in bn_prefixes}
    jitter_var = {p: rng.uniform(0.8, 1.25, weights[f"{p}.running_var"].shape) for p in bn_prefixes}
    for passes in range(1, len(bn_prefixes) + 1):
        g = ProbeGraph(weights)
        names = {name: g.input(name, value) for name, value in inputs.items()}
        for name, value in spec.onnx_body(g, names).items():
            add_output(g, name, value, output_rank(spec, name))
        for prefix, probe in g.probes.items():
            add_output(g, f"probe:{prefix}", probe, 4)
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(g.model(spec.name).SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
        wanted = [f"probe:{p}" for p in bn_prefixes]
        values = dict(zip(wanted, session.run(wanted, inputs)))
        change = 0.0
        for prefix in bn_prefixes:
            x = values[f"probe:{prefix}"].astype(np.float64)
            mean, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3)) + 1e-3
            new_mean = mean + jitter_mean[prefix] * np.sqrt(var)
            new_var = var * jitter_var[prefix]
            old_var = weights[f"{prefix}.running_var"]
            change = max(change, float(np.max(np.abs(new_var / old_var - 1.0))))
            weights[f"{prefix}.running_mean"] = new_mean.astype(np.float32)
            weights[f"{prefix}.running_var"] = new_var.astype(np.float32)
        if change < 0.01:
            break
    return passes


class ProbeGraph(Graph):
    """A Graph that records the input of every batch norm, to calibrate their statistics."""

    def __init__(self, weights: dict[str, np.ndarray]):
        super().__init__(weights)
        self.probes: dict[str, str] = {}

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs):
        if op_type == "BatchNormalization":
            self.probes[inputs[1][:-len(".weight")]] = inputs[0]
        return super().op(op_type, *inputs, outputs=outputs, **attrs)

    def model(self, name: str) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 9
        return model


# --------------------------------------------------------------------------------------------
# ResNet-18 (examples/resnet18.nn).
# --------------------------------------------------------------------------------------------


def resnet_basic_block(g: Graph, x: str, p: str, in_planes: int, planes: int, stride: int) -> str:
    out = o_conv(g, x, f"{p}.conv1", (3, 3), stride=stride, padding=1, bias=False)
    out = g.op("Relu", o_batch_norm(g, out, f"{p}.bn1"))
    out = o_conv(g, out, f"{p}.conv2", (3, 3), padding=1, bias=False)
    out = o_batch_norm(g, out, f"{p}.bn2")
    if stride != 1 or in_planes != planes:
        x = o_conv(g, x, f"{p}.downsample.0", (1, 1), stride=stride, bias=False)
        x = o_batch_norm(g, x, f"{p}.downsample.1")
    return g.op("Relu", g.op("Add", out, x))


def resnet18_body(g: Graph, i: dict[str, str]) -> dict[str, str]:
    x = o_conv(g, i["image"], "conv1", (7, 7), stride=2, padding=3, bias=False)
    x = g.op("Relu", o_batch_norm(g, x, "bn1"))
    x = g.op("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    in_planes = 64
    for stage, (planes, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
        x = resnet_basic_block(g, x, f"layer{stage}.0", in_planes, planes, stride)
        x = resnet_basic_block(g, x, f"layer{stage}.1", planes, planes, 1)
        in_planes = planes
    x = g.op("Flatten", g.op("GlobalAveragePool", x), axis=1)
    return {"logits": gemm(g, x, "fc")}


def gemm(g: Graph, x: str, p: str) -> str:
    """nn.Linear on a [batch, in] matrix as one Gemm (y = x W^T + b)."""
    return g.op("Gemm", x, g.w(f"{p}.weight"), g.w(f"{p}.bias"), transB=1)


def image_input(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {"image": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}


# --------------------------------------------------------------------------------------------
# MobileNetV2 (examples/mobilenet_v2.nn).
# --------------------------------------------------------------------------------------------


def conv_bn_relu6(g: Graph, x: str, p: str, kernel: int = 3, stride: int = 1,
                  groups: int = 1) -> str:
    x = o_conv(g, x, f"{p}.0", (kernel, kernel), stride=stride, padding=(kernel - 1) // 2,
               groups=groups, bias=False)
    x = o_batch_norm(g, x, f"{p}.1")
    return g.op("Clip", x, g.const(0.0), g.const(6.0))


def inverted_residual(g: Graph, x: str, p: str, in_c: int, out_c: int, stride: int,
                      expand: int) -> str:
    hidden = in_c * expand
    if expand == 1:
        h = conv_bn_relu6(g, x, f"{p}.conv.0", stride=stride, groups=hidden)
        h = o_conv(g, h, f"{p}.conv.1", (1, 1), bias=False)
        h = o_batch_norm(g, h, f"{p}.conv.2")
    else:
        h = conv_bn_relu6(g, x, f"{p}.conv.0", kernel=1)
        h = conv_bn_relu6(g, h, f"{p}.conv.1", stride=stride, groups=hidden)
        h = o_conv(g, h, f"{p}.conv.2", (1, 1), bias=False)
        h = o_batch_norm(g, h, f"{p}.conv.3")
    return g.op("Add", x, h) if stride == 1 and in_c == out_c else h


MOBILENET_V2_STAGES = [  # t, c, n, s (the paper's Table 2)
    (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1),
]


def mobilenet_v2_body(g: Graph, i: dict[str, str]) -> dict[str, str]:
    x = conv_bn_relu6(g, i["image"], "features.0", stride=2)
    channels, index = 32, 1
    for t, c, n, s in MOBILENET_V2_STAGES:
        for repeat in range(n):
            x = inverted_residual(g, x, f"features.{index}", channels, c, s if repeat == 0 else 1, t)
            channels, index = c, index + 1
    x = conv_bn_relu6(g, x, "features.18", kernel=1)
    x = g.op("Flatten", g.op("GlobalAveragePool", x), axis=1)
    return {"logits": gemm(g, x, "classifier.1")}  # classifier.0 is dropout: the identity


# --------------------------------------------------------------------------------------------
# BERT encoder, all-MiniLM-L6-v2 size (examples/bert_encoder.nn), at seq 128.
# --------------------------------------------------------------------------------------------

BERT = dict(vocab=30522, hidden=384, heads=12, layers=6, seq=128, eps=1e-12)


def bert_body(g: Graph, i: dict[str, str]) -> dict[str, str]:
    hidden, heads, seq, eps = BERT["hidden"], BERT["heads"], BERT["seq"], BERT["eps"]
    p = "embeddings"
    words = g.op("Gather", g.w(f"{p}.word_embeddings.weight"), i["input_ids"], axis=0)
    positions = g.op("Slice", g.w(f"{p}.position_embeddings.weight"), g.ints([0]), g.ints([seq]),
                     g.ints([0]))
    types = g.op("Gather", g.w(f"{p}.token_type_embeddings.weight"), i["token_type_ids"], axis=0)
    h = g.op("Add", g.op("Add", words, positions), types)
    h = o_layer_norm(g, h, f"{p}.LayerNorm", hidden, eps=eps)
    for layer in range(BERT["layers"]):
        p = f"encoder.layer.{layer}"
        a = f"{p}.attention"
        q = o_linear(g, h, f"{a}.self.query")
        k = o_linear(g, h, f"{a}.self.key")
        v = o_linear(g, h, f"{a}.self.value")
        att = o_attention(g, q, k, v, 1, seq, seq, heads, heads, hidden // heads, causal=False,
                          key_mask=i["attention_mask"])
        att = o_linear(g, att, f"{a}.output.dense")
        h = o_layer_norm(g, g.op("Add", att, h), f"{a}.output.LayerNorm", hidden, eps=eps)
        f = g.op("Gelu", o_linear(g, h, f"{p}.intermediate.dense"))
        f = o_linear(g, f, f"{p}.output.dense")
        h = o_layer_norm(g, g.op("Add", f, h), f"{p}.output.LayerNorm", hidden, eps=eps)
    cls = g.op("Gather", h, g.const(0, np.int64), axis=1)                 # [1, hidden]
    pooled = g.op("Tanh", gemm(g, cls, "pooler.dense"))
    return {"last_hidden_state": h, "pooler_output": pooled}


def bert_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    seq = BERT["seq"]
    ids = rng.integers(0, BERT["vocab"], (1, seq), dtype=np.int64)
    types = np.zeros((1, seq), dtype=np.int64)
    types[0, seq // 2:] = 1
    # Hugging Face's attention mask: every token real, so the timed work is the unpadded model's.
    mask = np.ones((1, seq), dtype=np.int64)
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask}


# --------------------------------------------------------------------------------------------
# Llama decoder, SmolLM2-135M size (examples/llama_decoder.nn), with a KV cache.
# --------------------------------------------------------------------------------------------

LLAMA = dict(vocab=49152, hidden=576, layers=30, heads=9, kv_heads=3, head_dim=64,
             intermediate=1536, theta=100000.0, eps=1e-5, max_context=2048)
# 5 fixed token ids spread over the vocabulary: the prompt of nnc's decoder harness,
# (i * 7919 + 1) % vocab.
PROMPT = [(i * 7919 + 1) % 49152 for i in range(5)]


def kv_names(layer: int) -> tuple[str, str, str, str]:
    return (f"past_key.{layer}", f"past_value.{layer}", f"present_key.{layer}",
            f"present_value.{layer}")


def llama_body(g: Graph, i: dict[str, str]) -> dict[str, str]:
    """The decoder over `input_ids` [1, S] after P cached positions: `past_key.L` and
    `past_value.L` are [1, kv_heads, P, head_dim] (P may be 0), `present_*` the same with
    P + S positions; positions of the new tokens are P..P+S-1 (RoPE and the causal mask)."""
    c = LLAMA
    d, heads, kv_heads = c["head_dim"], c["heads"], c["kv_heads"]
    group = heads // kv_heads
    past_len = g.op("Gather", g.op("Shape", i["past_key.0"]), g.const(2, np.int64), axis=0)
    seq_len = g.op("Gather", g.op("Shape", i["input_ids"]), g.const(1, np.int64), axis=0)
    positions = g.op("Range", past_len, g.op("Add", past_len, seq_len), g.const(1, np.int64))
    cos, sin = rope_tables(g, positions, d, c["theta"])
    # Causal mask over [group * S query rows, P + S keys]: row r is query r mod S, at position
    # P + r mod S, and sees key j when j <= P + r mod S.
    query_pos = g.op("Tile", positions, g.ints([group]))
    total = g.op("Add", past_len, seq_len)
    key_pos = g.op("Range", g.const(0, np.int64), total, g.const(1, np.int64))
    masked = g.op("Greater", g.op("Unsqueeze", key_pos, g.ints([0])),
                  g.op("Unsqueeze", query_pos, g.ints([1])))
    outputs = {}
    h = g.op("Gather", g.w("model.embed_tokens.weight"), i["input_ids"], axis=0)  # [1, S, hidden]
    for layer in range(c["layers"]):
        p = f"model.layers.{layer}"
        past_k, past_v, present_k, present_v = kv_names(layer)
        x = o_rms_norm(g, h, f"{p}.input_layernorm", eps=c["eps"])
        q = to_heads(g, o_linear(g, x, f"{p}.self_attn.q_proj", bias=False), heads, d)
        k = to_heads(g, o_linear(g, x, f"{p}.self_attn.k_proj", bias=False), kv_heads, d)
        v = to_heads(g, o_linear(g, x, f"{p}.self_attn.v_proj", bias=False), kv_heads, d)
        q, k = rope_heads(g, q, cos, sin, d), rope_heads(g, k, cos, sin, d)
        k = g.op("Concat", i[past_k], k, axis=2)                          # [1, kvh, P+S, d]
        v = g.op("Concat", i[past_v], v, axis=2)
        outputs[present_k], outputs[present_v] = k, v
        # Query head h reads kv head h // group: group the query heads by kv head.
        qg = g.op("Reshape", q, g.ints([1, kv_heads, -1, d]))              # [1, kvh, g*S, d]
        scores = g.op("MatMul", qg, g.op("Transpose", k, perm=[0, 1, 3, 2]))
        scores = g.op("Mul", scores, g.const(1.0 / math.sqrt(d)))
        scores = g.op("Where", masked, g.const(-np.inf), scores)
        att = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)          # [1, kvh, g*S, d]
        att = g.op("Reshape", att, g.ints([1, heads, -1, d]))              # [1, H, S, d]
        att = g.op("Reshape", g.op("Transpose", att, perm=[0, 2, 1, 3]), g.ints([1, -1, heads * d]))
        h = g.op("Add", h, o_linear(g, att, f"{p}.self_attn.o_proj", bias=False))
        x = o_rms_norm(g, h, f"{p}.post_attention_layernorm", eps=c["eps"])
        gate = o_linear(g, x, f"{p}.mlp.gate_proj", bias=False)
        up = o_linear(g, x, f"{p}.mlp.up_proj", bias=False)
        swiglu = g.op("Mul", g.op("Mul", gate, g.op("Sigmoid", gate)), up)
        h = g.op("Add", h, o_linear(g, swiglu, f"{p}.mlp.down_proj", bias=False))
    h = o_rms_norm(g, h, "model.norm", eps=c["eps"])
    outputs["logits"] = o_linear(g, h, "lm_head", bias=False, weight="model.embed_tokens.weight")
    return outputs


def to_heads(g: Graph, x: str, heads: int, d: int) -> str:
    """[1, S, heads * d] -> [1, heads, S, d]."""
    return g.op("Transpose", g.op("Reshape", x, g.ints([1, -1, heads, d])), perm=[0, 2, 1, 3])


def rope_tables(g: Graph, positions: str, d: int, theta: float) -> tuple[str, str]:
    """cos and sin of position * theta^(-2i/d), [1, 1, S, d/2]."""
    half = d // 2
    inv_freq = (theta ** (-2.0 * np.arange(half) / d)).astype(np.float32)
    pos = g.op("Cast", positions, to=TensorProto.FLOAT)
    angle = g.op("Mul", g.op("Unsqueeze", pos, g.ints([1])), g.const(inv_freq[None, :]))
    angle = g.op("Unsqueeze", angle, g.ints([0, 1]))
    return g.op("Cos", angle), g.op("Sin", angle)


def rope_heads(g: Graph, x: str, cos: str, sin: str, d: int) -> str:
    """Half-split rotary embedding (Hugging Face's rotate_half) of [1, heads, S, d]."""
    half = d // 2
    x1, x2 = g.op("Split", x, g.ints([half, half]), axis=-1, outputs=2)
    lo = g.op("Sub", g.op("Mul", x1, cos), g.op("Mul", x2, sin))
    hi = g.op("Add", g.op("Mul", x2, cos), g.op("Mul", x1, sin))
    return g.op("Concat", lo, hi, axis=-1)


def llama_inputs(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The prompt, and an empty cache."""
    c = LLAMA
    inputs = {"input_ids": np.array([PROMPT], dtype=np.int64)}
    for layer in range(c["layers"]):
        past_k, past_v, _, _ = kv_names(layer)
        inputs[past_k] = empty_cache()
        inputs[past_v] = empty_cache()
    return inputs


def empty_cache() -> np.ndarray:
    return np.zeros((1, LLAMA["kv_heads"], 0, LLAMA["head_dim"]), dtype=np.float32)


def write_gguf(weights: dict[str, np.ndarray], path: Path) -> None:
    """The decoder as llama.cpp loads it: llama architecture, F32 tensors named as
    convert_hf_to_gguf.py names them, q/k rows permuted from Hugging Face's half-split rotary
    layout to llama.cpp's interleaved pairs, tied embeddings (no output.weight), and a
    placeholder SentencePiece-style vocabulary (token ids are fed directly; nothing is
    tokenized)."""
    import gguf

    c = LLAMA
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("nnc-bench-llama-decoder")
    writer.add_context_length(c["max_context"])
    writer.add_embedding_length(c["hidden"])
    writer.add_block_count(c["layers"])
    writer.add_feed_forward_length(c["intermediate"])
    writer.add_rope_dimension_count(c["head_dim"])
    writer.add_head_count(c["heads"])
    writer.add_head_count_kv(c["kv_heads"])
    writer.add_layer_norm_rms_eps(c["eps"])
    writer.add_rope_freq_base(c["theta"])
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_vocab_size(c["vocab"])
    tokens, scores, types = placeholder_vocabulary(c["vocab"])
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_tensor("token_embd.weight", weights["model.embed_tokens.weight"])
    for layer in range(c["layers"]):
        p, b = f"model.layers.{layer}", f"blk.{layer}"
        q = permute_rope_rows(weights[f"{p}.self_attn.q_proj.weight"], c["heads"])
        k = permute_rope_rows(weights[f"{p}.self_attn.k_proj.weight"], c["kv_heads"])
        for name, value in [
            ("attn_norm", weights[f"{p}.input_layernorm.weight"]),
            ("attn_q", q), ("attn_k", k),
            ("attn_v", weights[f"{p}.self_attn.v_proj.weight"]),
            ("attn_output", weights[f"{p}.self_attn.o_proj.weight"]),
            ("ffn_norm", weights[f"{p}.post_attention_layernorm.weight"]),
            ("ffn_gate", weights[f"{p}.mlp.gate_proj.weight"]),
            ("ffn_up", weights[f"{p}.mlp.up_proj.weight"]),
            ("ffn_down", weights[f"{p}.mlp.down_proj.weight"]),
        ]:
            writer.add_tensor(f"{b}.{name}.weight", np.ascontiguousarray(value))
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def permute_rope_rows(weight: np.ndarray, heads: int) -> np.ndarray:
    """convert_hf_to_gguf.py's LlamaModel.permute: within each head, rows [0, d/2) and
    [d/2, d) (the two halves Hugging Face rotates together) become interleaved pairs."""
    out_features = weight.shape[0]
    return (weight.reshape(heads, 2, out_features // heads // 2, *weight.shape[1:])
            .swapaxes(1, 2)
            .reshape(weight.shape))


def placeholder_vocabulary(size: int) -> tuple[list[str], list[float], list[int]]:
    """<unk>, <s>, </s>, the 256 byte tokens, then normal tokens `t<i>`."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    tokens += [f"\u2581t{i}" for i in range(len(tokens), size)]
    types += [1] * (size - len(types))
    return tokens, [0.0] * size, types


# --------------------------------------------------------------------------------------------
# The table of models.
# --------------------------------------------------------------------------------------------

MODELS: dict[str, ModelSpec] = {
    "resnet18": ModelSpec("resnet18", ROOT / "examples" / "resnet18.nn", [], image_input,
                          resnet18_body),
    "mobilenet_v2": ModelSpec("mobilenet_v2", ROOT / "examples" / "mobilenet_v2.nn", [],
                              image_input, mobilenet_v2_body),
    "bert_encoder": ModelSpec("bert_encoder", ROOT / "examples" / "bert_encoder.nn",
                              ["seq=128"], bert_inputs, bert_body),
    "llama_decoder": ModelSpec("llama_decoder", ROOT / "examples" / "llama_decoder.nn", [],
                               llama_inputs, llama_body, decoder=True),
}


def build_onnx(spec: ModelSpec, weights: dict[str, np.ndarray],
               inputs: dict[str, np.ndarray], path: Path) -> None:
    """Writes the model's ONNX graph (weights as initializers) to `path`."""
    g = Graph(weights)
    names = {}
    for name, value in inputs.items():
        if spec.decoder and name != "input_ids":
            names[name] = dynamic_input(g, name, value, axis=2, dim="past")
        elif spec.decoder:
            names[name] = dynamic_input(g, name, value, axis=1, dim="seq")
        else:
            names[name] = g.input(name, value)
    for name, value in spec.onnx_body(g, names).items():
        add_output(g, name, value, output_rank(spec, name))
    model = g.model(spec.name) if not spec.decoder else unchecked_model(g, spec.name)
    onnx.save(model, str(path))


def add_output(g: Graph, name: str, value: str, rank: int) -> None:
    """A float32 graph output with symbolic dimensions (its shape is checked against nnc's)."""
    g.nodes.append(helper.make_node("Identity", [value], [name]))
    dims = [f"{name}_{i}" for i in range(rank)]
    g.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))


def output_rank(spec: ModelSpec, name: str) -> int:
    """Decoder logits are [1, S, vocab], classifier logits [1, classes], caches 4-d."""
    if name.startswith(("present_", "probe:")):
        return 4
    if name == "logits":
        return 3 if spec.decoder else 2
    return {"last_hidden_state": 3, "pooler_output": 2}[name]


def dynamic_input(g: Graph, name: str, value: np.ndarray, axis: int, dim: str) -> str:
    elem = TensorProto.INT64 if value.dtype == np.int64 else TensorProto.FLOAT
    shape: list = list(value.shape)
    shape[axis] = dim
    g.inputs.append(helper.make_tensor_value_info(name, elem, shape))
    return name


def unchecked_model(g: Graph, name: str) -> onnx.ModelProto:
    """The decoder's model: every weight must be used; the full checker's shape inference is
    skipped (it is slow on 540 MB of initializers and the graph is run and compared anyway)."""
    unused = set(g.weights) - g.used
    assert not unused, f"weights not used by the ONNX graph: {sorted(unused)}"
    graph = helper.make_graph(g.nodes, name, g.inputs, g.outputs, g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    return model


__all__ = ["MODELS", "ModelSpec", "PROMPT", "LLAMA", "build_onnx", "calibrate_batch_norms",
           "draw_weights", "nnc_weight_list", "write_gguf", "empty_cache", "kv_names"]
