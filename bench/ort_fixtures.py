#!/usr/bin/env python3
"""Agreement fixtures for nnc, computed by ONNX Runtime (an independent engine).

Run by hand, not by CI (see bench/README.md):

    python3 -m venv .venv
    .venv/bin/pip install -r bench/requirements.txt
    .venv/bin/python bench/ort_fixtures.py            # all fixtures
    .venv/bin/python bench/ort_fixtures.py mlp        # only some

For every fixture this script

1. draws deterministic random weights (numpy default_rng, one fixed seed per fixture, scaled like
   PyTorch's default init so activations stay O(1));
2. builds the model as an ONNX graph with onnx.helper (opset 20), composing from primitive ops
   what ONNX Runtime has no single op for (attention = MatMul/Softmax, RMSNorm, RoPE, SwiGLU);
3. runs it with ONNX Runtime (CPU, float32, graph optimizations disabled);
4. recomputes every output with a plain numpy reference (float64) that spells out nnc's semantics,
   and asserts that ORT agrees with it;
5. writes tests/fixtures/<name>/: model.nn (the same model in the .nn language), weights.safetensors
   (every weight, named as in the model's IR), input_<name>.npy and output_<name>.npy (the ORT
   outputs) per network input/output;
6. if cargo is available, runs `cargo run -q -p nnc-compiler -- check model.nn --emit ir` and checks
   that the IR's `param`/`buffer` names and shapes are exactly the safetensors tensors, and that its
   inputs/outputs are exactly the .npy files, with the same shapes and dtypes.

Agreement metric: for each output, max over elements of |ort - ref| / max(|ref|, 1), i.e. relative
error for values of magnitude >= 1 and absolute error below that (near-zero values of sums that
cancel have no meaningful relative error). It must be <= 1e-5. The script also prints the plain
max |ort - ref| / max |ref| over the whole output.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import re
import shutil
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

OPSET = 20  # Gelu (with approximate = "tanh") is an ONNX op from opset 20
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
TOLERANCE = 1e-5
MAX_FIXTURE_BYTES = 1_000_000


# --------------------------------------------------------------------------------------------
# Weights: PyTorch-like default initialization, named like a PyTorch state dict.
# --------------------------------------------------------------------------------------------


class Params:
    """An ordered state dict of float32 numpy arrays, filled with deterministic random values."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.tensors: dict[str, np.ndarray] = {}

    def add(self, name: str, value: np.ndarray) -> None:
        assert name not in self.tensors, f"duplicate weight {name}"
        self.tensors[name] = np.ascontiguousarray(value, dtype=np.float32)

    def uniform(self, shape, bound: float) -> np.ndarray:
        return self.rng.uniform(-bound, bound, size=shape)

    def linear(self, prefix: str, out_f: int, in_f: int, bias: bool = True) -> None:
        # nn.Linear: kaiming_uniform(a=sqrt(5)) gives U(-1/sqrt(in), 1/sqrt(in)); bias the same.
        bound = 1.0 / math.sqrt(in_f)
        self.add(f"{prefix}.weight", self.uniform((out_f, in_f), bound))
        if bias:
            self.add(f"{prefix}.bias", self.uniform((out_f,), bound))

    def conv(self, prefix: str, out_c: int, in_c: int, kernel, groups: int = 1, bias: bool = True):
        kernel = tuple(kernel)
        fan_in = (in_c // groups) * int(np.prod(kernel))
        bound = 1.0 / math.sqrt(fan_in)
        self.add(f"{prefix}.weight", self.uniform((out_c, in_c // groups) + kernel, bound))
        if bias:
            self.add(f"{prefix}.bias", self.uniform((out_c,), bound))

    def batch_norm(self, prefix: str, c: int) -> None:
        # Trained-looking statistics instead of PyTorch's (1, 0, 0, 1), so that every term matters;
        # running_var is positive.
        self.add(f"{prefix}.weight", self.rng.uniform(0.5, 1.5, c))
        self.add(f"{prefix}.bias", self.rng.normal(0.0, 0.1, c))
        self.add(f"{prefix}.running_mean", self.rng.normal(0.0, 0.1, c))
        self.add(f"{prefix}.running_var", self.rng.uniform(0.2, 1.0, c))

    def layer_norm(self, prefix: str, c: int) -> None:
        self.add(f"{prefix}.weight", 1.0 + self.rng.normal(0.0, 0.1, c))
        self.add(f"{prefix}.bias", self.rng.normal(0.0, 0.1, c))

    def rms_norm(self, prefix: str, c: int) -> None:
        self.add(f"{prefix}.weight", 1.0 + self.rng.normal(0.0, 0.1, c))

    def embedding(self, prefix: str, num: int, dim: int) -> None:
        self.add(f"{prefix}.weight", self.rng.normal(0.0, 1.0, (num, dim)))


# --------------------------------------------------------------------------------------------
# ONNX graph building.
# --------------------------------------------------------------------------------------------


class Graph:
    """A small onnx.helper wrapper: weights become initializers under their state-dict names."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights = weights
        self.used: set[str] = set()
        self.nodes = []
        self.initializers = []
        self.inputs = []
        self.outputs = []
        self.count = 0
        for name, value in weights.items():
            self.initializers.append(numpy_helper.from_array(value, name))

    def fresh(self, hint: str) -> str:
        self.count += 1
        return f"{hint}_{self.count}"

    def w(self, name: str) -> str:
        assert name in self.weights, f"ONNX graph uses unknown weight {name}"
        self.used.add(name)
        return name

    def op(self, op_type: str, *inputs: str, outputs: int = 1, **attrs):
        names = [self.fresh(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names, **attrs))
        return names[0] if outputs == 1 else names

    def const(self, value, dtype=np.float32) -> str:
        name = self.fresh("const")
        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def ints(self, values) -> str:
        return self.const(values, np.int64)

    def input(self, name: str, array: np.ndarray) -> str:
        elem = TensorProto.INT64 if array.dtype == np.int64 else TensorProto.FLOAT
        self.inputs.append(helper.make_tensor_value_info(name, elem, list(array.shape)))
        return name

    def output(self, name: str, value: str, shape) -> None:
        self.nodes.append(helper.make_node("Identity", [value], [name]))
        # Symbolic dims: ONNX's shape inference lacks PyTorch's ceil_mode rule for pooling (a window
        # that starts in the right padding is dropped), which ORT's pooling kernels do apply; the
        # shapes are checked against the numpy reference instead.
        dims = [f"{name}_{i}" for i in range(len(shape))]
        self.outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, dims))

    def model(self, name: str) -> onnx.ModelProto:
        unused = set(self.weights) - self.used
        assert not unused, f"weights not used by the ONNX graph: {sorted(unused)}"
        graph = helper.make_graph(self.nodes, name, self.inputs, self.outputs, self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
        model.ir_version = 9
        onnx.checker.check_model(model, full_check=True)
        return model


# ONNX versions of the nnc layers. `p` is the layer's name prefix in the state dict.


def o_linear(g: Graph, x: str, p: str, bias: bool = True, weight: str | None = None) -> str:
    # y = x @ W^T + b with W [out, in] (PyTorch layout).
    wt = g.op("Transpose", g.w(weight or f"{p}.weight"), perm=[1, 0])
    y = g.op("MatMul", x, wt)
    return g.op("Add", y, g.w(f"{p}.bias")) if bias else y


def o_conv(g: Graph, x: str, p: str, kernel, stride=1, padding=0, dilation=1, groups=1,
           bias=True) -> str:
    n = len(kernel)
    rep = lambda v: list(v) if isinstance(v, (list, tuple)) else [v] * n  # noqa: E731
    pads = rep(padding)
    ins = [x, g.w(f"{p}.weight")] + ([g.w(f"{p}.bias")] if bias else [])
    return g.op("Conv", *ins, kernel_shape=list(kernel), strides=rep(stride), pads=pads + pads,
                dilations=rep(dilation), group=groups)


def o_batch_norm(g: Graph, x: str, p: str, eps: float = 1e-5) -> str:
    return g.op("BatchNormalization", x, g.w(f"{p}.weight"), g.w(f"{p}.bias"),
                g.w(f"{p}.running_mean"), g.w(f"{p}.running_var"), epsilon=eps)


def o_layer_norm(g: Graph, x: str, p: str | None, c: int, eps: float = 1e-5) -> str:
    if p is None:  # affine = false: unit scale, zero shift
        scale, shift = g.const(np.ones(c)), g.const(np.zeros(c))
    else:
        scale, shift = g.w(f"{p}.weight"), g.w(f"{p}.bias")
    return g.op("LayerNormalization", x, scale, shift, axis=-1, epsilon=eps)


def o_rms_norm(g: Graph, x: str, p: str, eps: float = 1e-6) -> str:
    ms = g.op("ReduceMean", g.op("Mul", x, x), g.ints([-1]), keepdims=1)
    rms = g.op("Sqrt", g.op("Add", ms, g.const(eps)))
    return g.op("Mul", g.op("Div", x, rms), g.w(f"{p}.weight"))


def o_split_heads(g: Graph, x: str, b: int, s: int, heads: int, d: int) -> str:
    # [b, s, heads * d] -> [b, heads, s, d]
    return g.op("Transpose", g.op("Reshape", x, g.ints([b, s, heads, d])), perm=[0, 2, 1, 3])


def o_attention(g: Graph, q: str, k: str, v: str, b: int, sq: int, sk: int, heads: int,
                kv_heads: int, d: int, causal: bool, key_mask: str | None = None) -> str:
    """`key_mask`, if given, is a [b, sk] input (int64 or float, nonzero keeps), applied as
    Hugging Face's BERT does: the scores of padded keys get the lowest float added."""
    qh = o_split_heads(g, q, b, sq, heads, d)
    kh = o_split_heads(g, k, b, sk, kv_heads, d)
    vh = o_split_heads(g, v, b, sk, kv_heads, d)
    if kv_heads != heads:
        # Query head h reads kv head h // group: repeat each kv head `group` times, in place.
        group = heads // kv_heads

        def repeat(t: str) -> str:
            t = g.op("Unsqueeze", t, g.ints([2]))                      # [b, kvh, 1, sk, d]
            t = g.op("Expand", t, g.ints([b, kv_heads, group, sk, d]))  # [b, kvh, g, sk, d]
            return g.op("Reshape", t, g.ints([b, heads, sk, d]))

        kh, vh = repeat(kh), repeat(vh)
    scores = g.op("MatMul", qh, g.op("Transpose", kh, perm=[0, 1, 3, 2]))  # [b, h, sq, sk]
    scores = g.op("Mul", scores, g.const(1.0 / math.sqrt(d)))
    if causal:
        # Mask key j > query i, with positions computed in the graph.
        i = g.op("Unsqueeze", g.op("Range", g.const(0, np.int64), g.const(sq, np.int64),
                                   g.const(1, np.int64)), g.ints([1]))
        j = g.op("Unsqueeze", g.op("Range", g.const(0, np.int64), g.const(sk, np.int64),
                                   g.const(1, np.int64)), g.ints([0]))
        scores = g.op("Where", g.op("Greater", j, i), g.const(-np.inf), scores)
    if key_mask is not None:
        keep = g.op("Cast", g.op("Reshape", key_mask, g.ints([b, 1, 1, sk])), to=TensorProto.FLOAT)
        bias = g.op("Mul", g.op("Sub", g.const(1.0), keep), g.const(float(np.finfo(np.float32).min)))
        scores = g.op("Add", scores, bias)
    probs = g.op("Softmax", scores, axis=-1)
    out = g.op("MatMul", probs, vh)                                          # [b, h, sq, d]
    out = g.op("Transpose", out, perm=[0, 2, 1, 3])
    return g.op("Reshape", out, g.ints([b, sq, heads * d]))


def o_rope(g: Graph, x: str, b: int, s: int, heads: int, d: int, theta: float = 10000.0) -> str:
    # Half-split rotary embedding (Hugging Face rotate_half), tables computed in the graph.
    half = d // 2
    pos = g.op("Cast", g.op("Range", g.const(0, np.int64), g.const(s, np.int64),
                            g.const(1, np.int64)), to=TensorProto.FLOAT)           # [s]
    idx = g.op("Range", g.const(0.0), g.const(float(half)), g.const(1.0))         # [d/2]
    inv_freq = g.op("Pow", g.const(theta), g.op("Mul", idx, g.const(-2.0 / d)))    # theta^(-2i/d)
    angle = g.op("Mul", g.op("Unsqueeze", pos, g.ints([1])),
                 g.op("Unsqueeze", inv_freq, g.ints([0])))                         # [s, d/2]
    angle = g.op("Reshape", angle, g.ints([1, s, 1, half]))
    cos, sin = g.op("Cos", angle), g.op("Sin", angle)
    xh = g.op("Reshape", x, g.ints([b, s, heads, d]))
    x1, x2 = g.op("Split", xh, g.ints([half, half]), axis=-1, outputs=2)
    lo = g.op("Sub", g.op("Mul", x1, cos), g.op("Mul", x2, sin))
    hi = g.op("Add", g.op("Mul", x2, cos), g.op("Mul", x1, sin))
    return g.op("Reshape", g.op("Concat", lo, hi, axis=-1), g.ints([b, s, heads * d]))


# --------------------------------------------------------------------------------------------
# numpy reference (float64): nnc's semantics, spelled out.
# --------------------------------------------------------------------------------------------


def n_linear(W, x, p, bias=True, weight=None):
    y = x @ W[weight or f"{p}.weight"].T
    return y + W[f"{p}.bias"] if bias else y


def _tuple(v, n):
    return tuple(v) if isinstance(v, (list, tuple)) else (v,) * n


def n_conv(W, x, p, stride=1, padding=0, dilation=1, groups=1, bias=True):
    """PyTorch convNd: weight [out, in / groups, *kernel], zero padding, cross-correlation."""
    w = W[f"{p}.weight"]
    nsp = x.ndim - 2
    kernel = w.shape[2:]
    stride, padding, dilation = (_tuple(v, nsp) for v in (stride, padding, dilation))
    xp = np.pad(x, [(0, 0), (0, 0)] + [(q, q) for q in padding])
    out_size = [(x.shape[2 + i] + 2 * padding[i] - dilation[i] * (kernel[i] - 1) - 1) // stride[i] + 1
                for i in range(nsp)]
    n, c = x.shape[:2]
    o = w.shape[0]
    cg, og = c // groups, o // groups
    out = np.zeros((n, o, *out_size))
    for kidx in np.ndindex(*kernel):
        window = tuple(slice(kidx[i] * dilation[i],
                             kidx[i] * dilation[i] + stride[i] * (out_size[i] - 1) + 1, stride[i])
                       for i in range(nsp))
        patch = xp[(slice(None), slice(None)) + window]  # [n, c, *out]
        for grp in range(groups):
            wk = w[(slice(grp * og, (grp + 1) * og), slice(None)) + kidx]  # [og, cg]
            out[:, grp * og:(grp + 1) * og] += np.einsum(
                "nc...,oc->no...", patch[:, grp * cg:(grp + 1) * cg], wk)
    if bias:
        out += W[f"{p}.bias"].reshape((1, -1) + (1,) * nsp)
    return out


def n_batch_norm(W, x, p, eps=1e-5):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    g = lambda k: W[f"{p}.{k}"].reshape(shape)  # noqa: E731
    return (x - g("running_mean")) / np.sqrt(g("running_var") + eps) * g("weight") + g("bias")


def n_layer_norm(W, x, p, eps=1e-5):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)  # biased variance
    y = (x - mean) / np.sqrt(var + eps)
    return y if p is None else y * W[f"{p}.weight"] + W[f"{p}.bias"]


def n_rms_norm(W, x, p, eps=1e-6):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * W[f"{p}.weight"]


def _pool_out_size(size, k, s, pad, dil, ceil_mode):
    """PyTorch's pooling output size, including its ceil_mode rule that the last window must
    start inside the input or the left padding."""
    num = size + 2 * pad - dil * (k - 1) - 1
    out = (-(-num // s) if ceil_mode else num // s) + 1
    if ceil_mode and (out - 1) * s >= size + pad:
        out -= 1
    return out


def n_max_pool(x, kernel, stride=None, padding=0, dilation=1, ceil_mode=False):
    nsp = x.ndim - 2
    kernel = _tuple(kernel, nsp)
    stride = _tuple(stride if stride is not None else kernel, nsp)
    padding, dilation = _tuple(padding, nsp), _tuple(dilation, nsp)
    outs = [_pool_out_size(x.shape[2 + i], kernel[i], stride[i], padding[i], dilation[i], ceil_mode)
            for i in range(nsp)]
    y = np.empty(x.shape[:2] + tuple(outs))
    for o in itertools.product(*(range(v) for v in outs)):
        taps = []
        for i in range(nsp):
            start = o[i] * stride[i] - padding[i]
            taps.append([start + j * dilation[i] for j in range(kernel[i])
                         if 0 <= start + j * dilation[i] < x.shape[2 + i]])
        y[(slice(None), slice(None)) + o] = np.max(x[np.ix_(range(x.shape[0]), range(x.shape[1]), *taps)],
                                                   axis=tuple(range(2, 2 + nsp)))
    return y


def n_avg_pool(x, kernel, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """PyTorch avg_poolNd: with count_include_pad the divisor counts padding, but never the part of
    a ceil_mode window that hangs past the right padding."""
    nsp = x.ndim - 2
    kernel = _tuple(kernel, nsp)
    stride = _tuple(stride if stride is not None else kernel, nsp)
    padding = _tuple(padding, nsp)
    outs = [_pool_out_size(x.shape[2 + i], kernel[i], stride[i], padding[i], 1, ceil_mode)
            for i in range(nsp)]
    y = np.empty(x.shape[:2] + tuple(outs))
    for o in itertools.product(*(range(v) for v in outs)):
        window, padded_count, real_count = [], 1, 1
        for i in range(nsp):
            size = x.shape[2 + i]
            start = o[i] * stride[i] - padding[i]
            end = min(start + kernel[i], size + padding[i])
            padded_count *= end - start
            start, end = max(start, 0), min(end, size)
            real_count *= end - start
            window.append(slice(start, end))
        total = x[(slice(None), slice(None)) + tuple(window)].sum(axis=tuple(range(2, 2 + nsp)))
        y[(slice(None), slice(None)) + o] = total / (padded_count if count_include_pad else real_count)
    return y


def n_softmax(x, axis=-1):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def n_attention(q, k, v, heads, kv_heads=None, causal=False):
    """q [b, sq, heads*d], k/v [b, sk, kv_heads*d]; query head h uses kv head h // (heads/kv_heads);
    scores scaled by 1/sqrt(d); causal keeps key j <= query i; heads concatenated in order."""
    kv_heads = kv_heads or heads
    b, sq, hd = q.shape
    sk = k.shape[1]
    d = hd // heads
    group = heads // kv_heads
    out = np.empty((b, sq, heads * d))
    for h in range(heads):
        kv = h // group
        qh = q[:, :, h * d:(h + 1) * d]
        kh = k[:, :, kv * d:(kv + 1) * d]
        vh = v[:, :, kv * d:(kv + 1) * d]
        scores = qh @ kh.transpose(0, 2, 1) / math.sqrt(d)  # [b, sq, sk]
        if causal:
            keep = np.arange(sk)[None, :] <= np.arange(sq)[:, None]
            scores = np.where(keep, scores, -np.inf)
        out[:, :, h * d:(h + 1) * d] = n_softmax(scores) @ vh
    return out


def n_rope(x, heads, theta=10000.0):
    """Half-split RoPE per head of size d: inv_freq[i] = theta^(-2i/d), angle = pos * inv_freq,
    out[:d/2] = x1 cos - x2 sin, out[d/2:] = x2 cos + x1 sin, positions 0..seq-1."""
    b, s, hd = x.shape
    d = hd // heads
    inv_freq = theta ** (-2.0 * np.arange(d // 2) / d)
    angle = np.arange(s)[:, None] * inv_freq[None, :]  # [s, d/2]
    cos, sin = np.cos(angle)[None, :, None, :], np.sin(angle)[None, :, None, :]
    xh = x.reshape(b, s, heads, d)
    x1, x2 = xh[..., :d // 2], xh[..., d // 2:]
    return np.concatenate([x1 * cos - x2 * sin, x2 * cos + x1 * sin], axis=-1).reshape(b, s, hd)


_erf = np.vectorize(math.erf)


def n_sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free form of 1 / (1 + exp(-x))


def n_relu6(x):
    return np.clip(x, 0.0, 6.0)


def n_hard_sigmoid(x):
    return n_relu6(x + 3.0) / 6.0


def n_hard_swish(x):
    return x * n_relu6(x + 3.0) / 6.0


def n_silu(x):
    return x * n_sigmoid(x)


def n_gelu(x):
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def n_gelu_tanh(x):
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def n_leaky_relu(x, slope):
    return np.where(x >= 0, x, slope * x)


# --------------------------------------------------------------------------------------------
# Fixtures.
# --------------------------------------------------------------------------------------------


@dataclass
class Fixture:
    name: str
    nn: str                                  # the model in the .nn language
    params: Params
    inputs: dict[str, np.ndarray]            # .nn input name -> value
    onnx_body: Callable[[Graph, dict[str, str]], dict[str, str]]
    reference: Callable[[dict, dict], dict]  # (float64 weights, float64 inputs) -> outputs
    notes: list[str] = field(default_factory=list)


def rng_for(name: str) -> np.random.Generator:
    return np.random.default_rng(20240 + zlib.crc32(name.encode()))


def randn(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# 1. mlp ---------------------------------------------------------------------------------------

MLP_NN = """\
// A multilayer perceptron for MNIST: 784 -> 256 -> 10, as examples/mlp.nn, at batch 2.
network mlp(x: f32[batch, 784]) -> (logits: f32[batch, 10]) where batch = 2 {
    h = linear(x, 256) as fc1
    h = relu(h)
    logits = linear(h, 10) as fc2
}
"""


def fixture_mlp() -> Fixture:
    rng = rng_for("mlp")
    P = Params(rng)
    P.linear("fc1", 256, 784)
    P.linear("fc2", 10, 256)
    x = rng.uniform(0.0, 1.0, (2, 784)).astype(np.float32)  # pixel-like

    def onnx_body(g, i):
        h = g.op("Relu", o_linear(g, i["x"], "fc1"))
        return {"logits": o_linear(g, h, "fc2")}

    def reference(W, i):
        return {"logits": n_linear(W, np.maximum(n_linear(W, i["x"], "fc1"), 0.0), "fc2")}

    return Fixture("mlp", MLP_NN, P, {"x": x}, onnx_body, reference)


# 2. mobilenet_stack ---------------------------------------------------------------------------

MOBILENET_NN = """\
// A MobileNet-style stack on a 32x32 image: a strided 3x3 convolution + batch norm + ReLU6, a
// depthwise 3x3 convolution (groups = channels) + batch norm + Hard-Swish, a pointwise 1x1
// convolution (with a bias) + batch norm, a 3x3 max pool with stride 2 and padding 1, then global
// average pooling, flatten and a linear classifier.
network mobilenet_stack(image: f32[batch, 3, 32, 32]) -> (logits: f32[batch, 10]) where batch = 1 {
    x = conv2d(image, 16, kernel = 3, stride = 2, padding = 1, bias = false) as stem.conv
    x = batch_norm(x) as stem.bn
    x = relu6(x)                                                       // [1, 16, 16, 16]
    x = conv2d(x, 16, kernel = 3, padding = 1, groups = 16, bias = false) as dw.conv
    x = batch_norm(x) as dw.bn
    x = hard_swish(x)
    x = conv2d(x, 24, kernel = 1) as pw.conv
    x = batch_norm(x, eps = 1e-3) as pw.bn                             // [1, 24, 16, 16]
    x = max_pool2d(x, kernel = 3, stride = 2, padding = 1)             // [1, 24, 8, 8]
    x = global_avg_pool(x)                                             // [1, 24, 1, 1]
    x = flatten(x)
    logits = linear(x, 10) as classifier
}
"""


def fixture_mobilenet_stack() -> Fixture:
    rng = rng_for("mobilenet_stack")
    P = Params(rng)
    P.conv("stem.conv", 16, 3, (3, 3), bias=False)
    P.batch_norm("stem.bn", 16)
    P.conv("dw.conv", 16, 16, (3, 3), groups=16, bias=False)
    P.batch_norm("dw.bn", 16)
    P.conv("pw.conv", 24, 16, (1, 1))
    P.batch_norm("pw.bn", 24)
    P.linear("classifier", 10, 24)
    image = randn(rng, 1, 3, 32, 32)

    def onnx_body(g, i):
        x = o_conv(g, i["image"], "stem.conv", (3, 3), stride=2, padding=1, bias=False)
        x = g.op("Clip", o_batch_norm(g, x, "stem.bn"), g.const(0.0), g.const(6.0))
        x = o_conv(g, x, "dw.conv", (3, 3), padding=1, groups=16, bias=False)
        x = g.op("HardSwish", o_batch_norm(g, x, "dw.bn"))
        x = o_batch_norm(g, o_conv(g, x, "pw.conv", (1, 1)), "pw.bn", eps=1e-3)
        x = g.op("MaxPool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
        x = g.op("Flatten", g.op("GlobalAveragePool", x), axis=1)
        return {"logits": o_linear(g, x, "classifier")}

    def reference(W, i):
        x = n_conv(W, i["image"], "stem.conv", stride=2, padding=1, bias=False)
        x = n_relu6(n_batch_norm(W, x, "stem.bn"))
        x = n_conv(W, x, "dw.conv", padding=1, groups=16, bias=False)
        x = n_hard_swish(n_batch_norm(W, x, "dw.bn"))
        x = n_batch_norm(W, n_conv(W, x, "pw.conv"), "pw.bn", eps=1e-3)
        x = n_max_pool(x, 3, stride=2, padding=1)
        x = x.mean(axis=(2, 3))
        return {"logits": n_linear(W, x, "classifier")}

    return Fixture("mobilenet_stack", MOBILENET_NN, P, {"image": image}, onnx_body, reference)


# 3. resnet_block ------------------------------------------------------------------------------

RESNET_NN = """\
// A ResNet basic block (torchvision's BasicBlock) with a strided 1x1 conv + batch norm shortcut:
// [1, 16, 16, 16] -> [1, 32, 8, 8]. Weight names as in torchvision's resnet18 (layer2.0.*).
block basic_block(x, planes, stride = 1) {
    out = conv2d(x, planes, kernel = 3, stride = stride, padding = 1, bias = false) as conv1
    out = batch_norm(out) as bn1
    out = relu(out)
    out = conv2d(out, planes, kernel = 3, padding = 1, bias = false) as conv2
    out = batch_norm(out) as bn2
    if stride != 1 || dim(x, 1) != planes {
        x = conv2d(x, planes, kernel = 1, stride = stride, bias = false) as downsample[0]
        x = batch_norm(x) as downsample[1]
    }
    return relu(out + x)
}

network resnet_block(x: f32[batch, 16, 16, 16]) -> (y: f32[batch, 32, 8, 8]) where batch = 1 {
    y = basic_block(x, 32, stride = 2) as layer2[0]
}
"""


def fixture_resnet_block() -> Fixture:
    rng = rng_for("resnet_block")
    P = Params(rng)
    P.conv("layer2.0.conv1", 32, 16, (3, 3), bias=False)
    P.batch_norm("layer2.0.bn1", 32)
    P.conv("layer2.0.conv2", 32, 32, (3, 3), bias=False)
    P.batch_norm("layer2.0.bn2", 32)
    P.conv("layer2.0.downsample.0", 32, 16, (1, 1), bias=False)
    P.batch_norm("layer2.0.downsample.1", 32)
    # A post-ReLU feature map, as a block inside a network would see.
    x = np.maximum(randn(rng, 1, 16, 16, 16), 0.0)

    p = "layer2.0"

    def onnx_body(g, i):
        out = o_conv(g, i["x"], f"{p}.conv1", (3, 3), stride=2, padding=1, bias=False)
        out = g.op("Relu", o_batch_norm(g, out, f"{p}.bn1"))
        out = o_conv(g, out, f"{p}.conv2", (3, 3), padding=1, bias=False)
        out = o_batch_norm(g, out, f"{p}.bn2")
        sc = o_conv(g, i["x"], f"{p}.downsample.0", (1, 1), stride=2, bias=False)
        sc = o_batch_norm(g, sc, f"{p}.downsample.1")
        return {"y": g.op("Relu", g.op("Add", out, sc))}

    def reference(W, i):
        out = n_conv(W, i["x"], f"{p}.conv1", stride=2, padding=1, bias=False)
        out = np.maximum(n_batch_norm(W, out, f"{p}.bn1"), 0.0)
        out = n_batch_norm(W, n_conv(W, out, f"{p}.conv2", padding=1, bias=False), f"{p}.bn2")
        sc = n_batch_norm(W, n_conv(W, i["x"], f"{p}.downsample.0", stride=2, bias=False),
                          f"{p}.downsample.1")
        return {"y": np.maximum(out + sc, 0.0)}

    return Fixture("resnet_block", RESNET_NN, P, {"x": x}, onnx_body, reference)


# 4. encoder_layer -----------------------------------------------------------------------------

ENCODER_NN = """\
// One BERT encoder layer (post-layer-norm): q/k/v projections, 4-head attention, output
// projection, residual + LayerNorm, exact-GELU feed-forward 64 -> 256 -> 64, residual + LayerNorm.
// Weight names as in Hugging Face's BertLayer.
const hidden = 64
const heads = 4
const ffn = 256
const eps = 1e-12

block bert_self_attention(x) {
    q = linear(x, hidden) as query
    k = linear(x, hidden) as key
    v = linear(x, hidden) as value
    return attention(q, k, v, heads = heads)
}

block bert_attention(x) {
    a = bert_self_attention(x) as self
    a = linear(a, hidden) as output.dense
    return layer_norm(a + x, eps = eps) as output.LayerNorm
}

network encoder_layer(x: f32[batch, seq, hidden]) -> (y: f32[batch, seq, hidden])
    where batch = 1, seq = 10
{
    h = bert_attention(x) as attention
    f = linear(h, ffn) as intermediate.dense
    f = gelu(f)
    f = linear(f, hidden) as output.dense
    y = layer_norm(f + h, eps = eps) as output.LayerNorm
}
"""


def fixture_encoder_layer() -> Fixture:
    rng = rng_for("encoder_layer")
    P = Params(rng)
    hidden, heads, ffn, seq, eps = 64, 4, 256, 10, 1e-12
    for n in ("query", "key", "value"):
        P.linear(f"attention.self.{n}", hidden, hidden)
    P.linear("attention.output.dense", hidden, hidden)
    P.layer_norm("attention.output.LayerNorm", hidden)
    P.linear("intermediate.dense", ffn, hidden)
    P.linear("output.dense", hidden, ffn)
    P.layer_norm("output.LayerNorm", hidden)
    x = randn(rng, 1, seq, hidden)
    d = hidden // heads

    def onnx_body(g, i):
        x = i["x"]
        q, k, v = (o_linear(g, x, f"attention.self.{n}") for n in ("query", "key", "value"))
        a = o_attention(g, q, k, v, 1, seq, seq, heads, heads, d, causal=False)
        a = o_linear(g, a, "attention.output.dense")
        h = o_layer_norm(g, g.op("Add", a, x), "attention.output.LayerNorm", hidden, eps)
        f = g.op("Gelu", o_linear(g, h, "intermediate.dense"), approximate="none")
        f = o_linear(g, f, "output.dense")
        return {"y": o_layer_norm(g, g.op("Add", f, h), "output.LayerNorm", hidden, eps)}

    def reference(W, i):
        x = i["x"]
        q, k, v = (n_linear(W, x, f"attention.self.{n}") for n in ("query", "key", "value"))
        a = n_linear(W, n_attention(q, k, v, heads), "attention.output.dense")
        h = n_layer_norm(W, a + x, "attention.output.LayerNorm", eps)
        f = n_linear(W, n_gelu(n_linear(W, h, "intermediate.dense")), "output.dense")
        return {"y": n_layer_norm(W, f + h, "output.LayerNorm", eps)}

    return Fixture("encoder_layer", ENCODER_NN, P, {"x": x}, onnx_body, reference)


# 5. decoder_layer -----------------------------------------------------------------------------

DECODER_NN = """\
// One pre-norm (pre-LN) decoder layer, Llama-style plus cross-attention:
//   RMSNorm -> causal grouped-query self-attention (4 query heads, 2 kv heads, head_dim 16, RoPE
//   half-split theta 10000 on q and k, no biases) -> residual;
//   RMSNorm -> cross-attention (4 heads, with biases) whose k/v come from `memory` -> residual;
//   RMSNorm -> SwiGLU feed-forward 64 -> 128 -> 64 (no biases) -> residual.
// No final norm. RMSNorm eps is the default 1e-6.
const d_model = 64
const heads = 4
const kv_heads = 2
const head_dim = d_model / heads       // 16
const intermediate = 128

block self_attention(x) {
    q = linear(x, heads * head_dim, bias = false) as q_proj
    k = linear(x, kv_heads * head_dim, bias = false) as k_proj
    v = linear(x, kv_heads * head_dim, bias = false) as v_proj
    q = rope(q, heads, theta = 10000.0)
    k = rope(k, kv_heads)
    a = attention(q, k, v, heads = heads, kv_heads = kv_heads, causal = true)
    return linear(a, d_model, bias = false) as o_proj
}

block cross_attention(x, memory) {
    q = linear(x, d_model) as q_proj
    k = linear(memory, d_model) as k_proj
    v = linear(memory, d_model) as v_proj
    a = attention(q, k, v, heads = heads)
    return linear(a, d_model) as o_proj
}

block swiglu(x) {
    gate = linear(x, intermediate, bias = false) as gate_proj
    up = linear(x, intermediate, bias = false) as up_proj
    return linear(silu(gate) * up, d_model, bias = false) as down_proj
}

network decoder_layer(x: f32[batch, seq, d_model], memory: f32[batch, mem_len, d_model])
    -> (y: f32[batch, seq, d_model])
    where batch = 1, seq = 9, mem_len = 7
{
    h = rms_norm(x) as input_layernorm
    x = x + self_attention(h) as self_attn
    h = rms_norm(x) as cross_attn_layernorm
    x = x + cross_attention(h, memory) as cross_attn
    h = rms_norm(x) as post_attention_layernorm
    y = x + swiglu(h) as mlp
}
"""


def fixture_decoder_layer() -> Fixture:
    rng = rng_for("decoder_layer")
    P = Params(rng)
    d_model, heads, kv_heads, inter, seq, mem_len = 64, 4, 2, 128, 9, 7
    d = d_model // heads
    P.rms_norm("input_layernorm", d_model)
    P.linear("self_attn.q_proj", heads * d, d_model, bias=False)
    P.linear("self_attn.k_proj", kv_heads * d, d_model, bias=False)
    P.linear("self_attn.v_proj", kv_heads * d, d_model, bias=False)
    P.linear("self_attn.o_proj", d_model, heads * d, bias=False)
    P.rms_norm("cross_attn_layernorm", d_model)
    for n in ("q_proj", "k_proj", "v_proj", "o_proj"):
        P.linear(f"cross_attn.{n}", d_model, d_model)
    P.rms_norm("post_attention_layernorm", d_model)
    P.linear("mlp.gate_proj", inter, d_model, bias=False)
    P.linear("mlp.up_proj", inter, d_model, bias=False)
    P.linear("mlp.down_proj", d_model, inter, bias=False)
    x = randn(rng, 1, seq, d_model)
    memory = randn(rng, 1, mem_len, d_model)

    def onnx_body(g, i):
        x, memory = i["x"], i["memory"]
        h = o_rms_norm(g, x, "input_layernorm")
        q = o_linear(g, h, "self_attn.q_proj", bias=False)
        k = o_linear(g, h, "self_attn.k_proj", bias=False)
        v = o_linear(g, h, "self_attn.v_proj", bias=False)
        q = o_rope(g, q, 1, seq, heads, d)
        k = o_rope(g, k, 1, seq, kv_heads, d)
        a = o_attention(g, q, k, v, 1, seq, seq, heads, kv_heads, d, causal=True)
        x = g.op("Add", x, o_linear(g, a, "self_attn.o_proj", bias=False))
        h = o_rms_norm(g, x, "cross_attn_layernorm")
        q = o_linear(g, h, "cross_attn.q_proj")
        k = o_linear(g, memory, "cross_attn.k_proj")
        v = o_linear(g, memory, "cross_attn.v_proj")
        a = o_attention(g, q, k, v, 1, seq, mem_len, heads, heads, d, causal=False)
        x = g.op("Add", x, o_linear(g, a, "cross_attn.o_proj"))
        h = o_rms_norm(g, x, "post_attention_layernorm")
        gate = o_linear(g, h, "mlp.gate_proj", bias=False)
        up = o_linear(g, h, "mlp.up_proj", bias=False)
        silu = g.op("Mul", gate, g.op("Sigmoid", gate))
        f = o_linear(g, g.op("Mul", silu, up), "mlp.down_proj", bias=False)
        return {"y": g.op("Add", x, f)}

    def reference(W, i):
        x, memory = i["x"], i["memory"]
        h = n_rms_norm(W, x, "input_layernorm")
        q = n_rope(n_linear(W, h, "self_attn.q_proj", bias=False), heads)
        k = n_rope(n_linear(W, h, "self_attn.k_proj", bias=False), kv_heads)
        v = n_linear(W, h, "self_attn.v_proj", bias=False)
        a = n_attention(q, k, v, heads, kv_heads, causal=True)
        x = x + n_linear(W, a, "self_attn.o_proj", bias=False)
        h = n_rms_norm(W, x, "cross_attn_layernorm")
        a = n_attention(n_linear(W, h, "cross_attn.q_proj"), n_linear(W, memory, "cross_attn.k_proj"),
                        n_linear(W, memory, "cross_attn.v_proj"), heads)
        x = x + n_linear(W, a, "cross_attn.o_proj")
        h = n_rms_norm(W, x, "post_attention_layernorm")
        f = n_silu(n_linear(W, h, "mlp.gate_proj", bias=False)) * n_linear(W, h, "mlp.up_proj", bias=False)
        return {"y": x + n_linear(W, f, "mlp.down_proj", bias=False)}

    return Fixture("decoder_layer", DECODER_NN, P, {"x": x, "memory": memory}, onnx_body, reference,
                   notes=["pre-LN (RMSNorm before each sublayer, no final norm)"])


# 6. activations -------------------------------------------------------------------------------

ACTIVATIONS_NN = """\
// Every activation on one input of 160 values spanning a wide range: linspace(-30, 30, 145) and
// +-1e3, +-80, +-20.5, +-3, +-1e-3, 0 and -0, shuffled into [4, 40]. Softmax is over the last
// dim (and once over dim 0).
network activations(x: f32[4, 40]) -> (relu, relu6, leaky_relu_0_01, leaky_relu_0_2, sigmoid,
    tanh, silu, swish, hard_swish, hard_sigmoid, gelu, gelu_tanh, softmax, softmax_dim0)
{
    relu = relu(x)
    relu6 = relu6(x)
    leaky_relu_0_01 = leaky_relu(x)
    leaky_relu_0_2 = leaky_relu(x, negative_slope = 0.2)
    sigmoid = sigmoid(x)
    tanh = tanh(x)
    silu = silu(x)
    swish = swish(x)
    hard_swish = hard_swish(x)
    hard_sigmoid = hard_sigmoid(x)
    gelu = gelu(x)
    gelu_tanh = gelu(x, approximate = "tanh")
    softmax = softmax(x)
    softmax_dim0 = softmax(x, dim = 0)
}
"""


def fixture_activations() -> Fixture:
    rng = rng_for("activations")
    P = Params(rng)
    special = [-1e3, 1e3, -80.0, 80.0, -20.5, 20.5, -3.0, 3.0, -1e-3, 1e-3, 0.0, -0.0, 0.0, 0.0, 0.0]
    values = np.concatenate([np.linspace(-30.0, 30.0, 145), special]).astype(np.float32)
    x = rng.permutation(values).reshape(4, 40)

    def onnx_body(g, i):
        x = i["x"]
        sig = g.op("Sigmoid", x)
        return {
            "relu": g.op("Relu", x),
            "relu6": g.op("Clip", x, g.const(0.0), g.const(6.0)),
            "leaky_relu_0_01": g.op("LeakyRelu", x, alpha=0.01),
            "leaky_relu_0_2": g.op("LeakyRelu", x, alpha=0.2),
            "sigmoid": sig,
            "tanh": g.op("Tanh", x),
            "silu": g.op("Mul", x, sig),
            "swish": g.op("Mul", x, g.op("Sigmoid", x)),
            "hard_swish": g.op("HardSwish", x),
            "hard_sigmoid": g.op("HardSigmoid", x, alpha=1.0 / 6.0, beta=0.5),
            "gelu": g.op("Gelu", x, approximate="none"),
            "gelu_tanh": g.op("Gelu", x, approximate="tanh"),
            "softmax": g.op("Softmax", x, axis=-1),
            "softmax_dim0": g.op("Softmax", x, axis=0),
        }

    def reference(W, i):
        x = i["x"]
        return {
            "relu": np.maximum(x, 0.0),
            "relu6": n_relu6(x),
            "leaky_relu_0_01": n_leaky_relu(x, 0.01),
            "leaky_relu_0_2": n_leaky_relu(x, 0.2),
            "sigmoid": n_sigmoid(x),
            "tanh": np.tanh(x),
            "silu": n_silu(x),
            "swish": n_silu(x),
            "hard_swish": n_hard_swish(x),
            "hard_sigmoid": n_hard_sigmoid(x),
            "gelu": n_gelu(x),
            "gelu_tanh": n_gelu_tanh(x),
            "softmax": n_softmax(x, -1),
            "softmax_dim0": n_softmax(x, 0),
        }

    return Fixture("activations", ACTIVATIONS_NN, P, {"x": x}, onnx_body, reference)


# 7. pooling_conv1d (extra) --------------------------------------------------------------------

POOLING_NN = """\
// Pooling corner cases and a dilated conv1d:
//   seq: conv1d (kernel 3, dilation 2, padding 2) -> layer_norm without affine over the last axis,
//        then avg_pool1d with ceil_mode and count_include_pad = false, and a dilated max_pool1d
//        with ceil_mode;
//   img: avg_pool2d with ceil_mode and count_include_pad = false (the last window holds one real
//        element); with ceil_mode and padding counted (the default), where the divisor of the last
//        window counts the padding but not the part past it (2, not 3); with ceil_mode and no
//        padding (the divisor counts only real elements); with padding counted and no ceil_mode;
//        max_pool2d with ceil_mode; global max pooling;
//   small: PyTorch's ceil_mode rule, where a window starting in the right padding is dropped
//        (5 -> 3, not 4).
network pooling_conv1d(seq: f32[1, 4, 20], img: f32[1, 3, 10, 10], small: f32[1, 2, 5, 5])
    -> (seq_avg: f32[1, 8, 11], seq_max: f32[1, 8, 10], img_avg_ceil: f32[1, 3, 6, 6],
        img_avg_ceil_pad: f32[1, 3, 6, 6], img_avg_ceil_nopad: f32[1, 3, 5, 5],
        img_avg_pad: f32[1, 3, 5, 5], img_max_ceil: f32[1, 3, 5, 5], img_gmax: f32[1, 3, 1, 1],
        small_avg_ceil: f32[1, 2, 3, 3], small_max_ceil: f32[1, 2, 3, 3])
{
    h = conv1d(seq, 8, kernel = 3, dilation = 2, padding = 2) as conv
    h = layer_norm(h, affine = false)
    seq_avg = avg_pool1d(h, kernel = 3, stride = 2, padding = 1, ceil_mode = true, count_include_pad = false)
    seq_max = max_pool1d(h, kernel = 3, stride = 2, padding = 1, dilation = 2, ceil_mode = true)
    img_avg_ceil = avg_pool2d(img, kernel = 3, stride = 2, padding = 1, ceil_mode = true, count_include_pad = false)
    img_avg_ceil_pad = avg_pool2d(img, kernel = 3, stride = 2, padding = 1, ceil_mode = true)
    img_avg_ceil_nopad = avg_pool2d(img, kernel = 3, stride = 2, ceil_mode = true)
    img_avg_pad = avg_pool2d(img, kernel = 3, stride = 2, padding = 1)
    img_max_ceil = max_pool2d(img, kernel = 3, stride = 2, ceil_mode = true)
    img_gmax = global_max_pool(img)
    small_avg_ceil = avg_pool2d(small, kernel = 2, stride = 2, padding = 1, ceil_mode = true, count_include_pad = false)
    small_max_ceil = max_pool2d(small, kernel = 2, stride = 2, padding = 1, ceil_mode = true)
}
"""


def fixture_pooling_conv1d() -> Fixture:
    rng = rng_for("pooling_conv1d")
    P = Params(rng)
    P.conv("conv", 8, 4, (3,))
    seq = randn(rng, 1, 4, 20)
    img = randn(rng, 1, 3, 10, 10)
    small = randn(rng, 1, 2, 5, 5)

    def onnx_body(g, i):
        h = o_conv(g, i["seq"], "conv", (3,), padding=2, dilation=2)
        h = o_layer_norm(g, h, None, 20)
        pool = lambda op, x, **a: g.op(op, x, **a)  # noqa: E731
        return {
            "seq_avg": pool("AveragePool", h, kernel_shape=[3], strides=[2], pads=[1, 1],
                            ceil_mode=1, count_include_pad=0),
            "seq_max": pool("MaxPool", h, kernel_shape=[3], strides=[2], pads=[1, 1],
                            dilations=[2], ceil_mode=1),
            "img_avg_ceil": pool("AveragePool", i["img"], kernel_shape=[3, 3], strides=[2, 2],
                                 pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=0),
            "img_avg_ceil_pad": pool("AveragePool", i["img"], kernel_shape=[3, 3], strides=[2, 2],
                                     pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1),
            "img_avg_ceil_nopad": pool("AveragePool", i["img"], kernel_shape=[3, 3],
                                       strides=[2, 2], ceil_mode=1, count_include_pad=1),
            "img_avg_pad": pool("AveragePool", i["img"], kernel_shape=[3, 3], strides=[2, 2],
                                pads=[1, 1, 1, 1], count_include_pad=1),
            "img_max_ceil": pool("MaxPool", i["img"], kernel_shape=[3, 3], strides=[2, 2],
                                 ceil_mode=1),
            "img_gmax": g.op("GlobalMaxPool", i["img"]),
            "small_avg_ceil": pool("AveragePool", i["small"], kernel_shape=[2, 2], strides=[2, 2],
                                   pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=0),
            "small_max_ceil": pool("MaxPool", i["small"], kernel_shape=[2, 2], strides=[2, 2],
                                   pads=[1, 1, 1, 1], ceil_mode=1),
        }

    def reference(W, i):
        h = n_layer_norm(W, n_conv(W, i["seq"], "conv", padding=2, dilation=2), None)
        img, small = i["img"], i["small"]
        return {
            "seq_avg": n_avg_pool(h, 3, 2, 1, ceil_mode=True, count_include_pad=False),
            "seq_max": n_max_pool(h, 3, 2, 1, dilation=2, ceil_mode=True),
            "img_avg_ceil": n_avg_pool(img, 3, 2, 1, ceil_mode=True, count_include_pad=False),
            "img_avg_ceil_pad": n_avg_pool(img, 3, 2, 1, ceil_mode=True),
            "img_avg_ceil_nopad": n_avg_pool(img, 3, 2, 0, ceil_mode=True),
            "img_avg_pad": n_avg_pool(img, 3, 2, 1),
            "img_max_ceil": n_max_pool(img, 3, 2, ceil_mode=True),
            "img_gmax": img.max(axis=(2, 3), keepdims=True),
            "small_avg_ceil": n_avg_pool(small, 2, 2, 1, ceil_mode=True, count_include_pad=False),
            "small_max_ceil": n_max_pool(small, 2, 2, 1, ceil_mode=True),
        }

    return Fixture("pooling_conv1d", POOLING_NN, P, {"seq": seq, "img": img, "small": small},
                   onnx_body, reference)


# 8. tiny_lm (extra) ---------------------------------------------------------------------------

TINY_LM_NN = """\
// Token embedding + learned position embedding, layer norm, and an output projection tied to the
// token embedding (so there is no lm_head.weight), on int64 token ids.
const vocab = 50
const hidden = 32
const context = 16

network tiny_lm(tokens: i64[batch, seq]) -> (logits: f32[batch, seq, vocab]) where batch = 1, seq = 12 {
    tok = embedding(tokens, vocab, hidden) as wte
    pos = position_embedding(tokens, context, hidden) as wpe
    h = layer_norm(tok + pos) as ln_f
    logits = linear(h, vocab, bias = false, tied = "wte") as lm_head
}
"""


def fixture_tiny_lm() -> Fixture:
    rng = rng_for("tiny_lm")
    P = Params(rng)
    vocab, hidden, context, seq = 50, 32, 16, 12
    P.embedding("wte", vocab, hidden)
    P.embedding("wpe", context, hidden)
    P.layer_norm("ln_f", hidden)
    tokens = rng.integers(0, vocab, (1, seq), dtype=np.int64)
    tokens[0, :3] = [0, vocab - 1, 7]  # both ends of the vocabulary

    def onnx_body(g, i):
        tok = g.op("Gather", g.w("wte.weight"), i["tokens"], axis=0)            # [1, seq, hidden]
        pos = g.op("Slice", g.w("wpe.weight"), g.ints([0]), g.ints([seq]), g.ints([0]))
        h = o_layer_norm(g, g.op("Add", tok, pos), "ln_f", hidden)
        return {"logits": o_linear(g, h, "lm_head", bias=False, weight="wte.weight")}

    def reference(W, i):
        h = W["wte.weight"][i["tokens"]] + W["wpe.weight"][None, :seq]
        h = n_layer_norm(W, h, "ln_f")
        return {"logits": n_linear(W, h, "lm_head", bias=False, weight="wte.weight")}

    return Fixture("tiny_lm", TINY_LM_NN, P, {"tokens": tokens}, onnx_body, reference)


FIXTURES_ALL = [
    fixture_mlp,
    fixture_mobilenet_stack,
    fixture_resnet_block,
    fixture_encoder_layer,
    fixture_decoder_layer,
    fixture_activations,
    fixture_pooling_conv1d,
    fixture_tiny_lm,
]


# --------------------------------------------------------------------------------------------
# Running, comparing, writing, checking against nnc's IR.
# --------------------------------------------------------------------------------------------


def run_ort(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = 1
    options.log_severity_level = 3  # ORT's load-time shape check warns on the ceil_mode pools
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs)))


def agreement(ours: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    ours = ours.astype(np.float64)
    diff = np.abs(ours - ref)
    floored = float(np.max(diff / np.maximum(np.abs(ref), 1.0)))
    scaled = float(diff.max() / max(np.abs(ref).max(), 1e-30))
    return floored, scaled


def read_safetensors_header(path: Path) -> dict:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    header.pop("__metadata__", None)
    return header


IR_VALUE = re.compile(r"^\s*%(\d+): (f32|i64)\[([^\]]*)\] = (param|buffer|input) \"?([^\"\s]+)\"?")
IR_OUTPUT = re.compile(r"^\s*output (\S+) = %(\d+)")


def parse_ir(text: str):
    """The IR's weights, inputs and outputs: name -> (dtype, shape)."""
    values, weights, inputs, outputs = {}, {}, {}, {}
    for line in text.splitlines():
        m = re.match(r"^\s*%(\d+): (f32|i64)\[([^\]]*)\] = ", line)
        if m:
            shape = tuple(int(v) for v in m.group(3).split(",") if v.strip())
            values[m.group(1)] = (m.group(2), shape)
        m = IR_VALUE.match(line)
        if m:
            dtype = m.group(2)
            shape = tuple(int(v) for v in m.group(3).split(",") if v.strip())
            (inputs if m.group(4) == "input" else weights)[m.group(5)] = (dtype, shape)
        m = IR_OUTPUT.match(line)
        if m:
            outputs[m.group(1)] = values[m.group(2)]
    return weights, inputs, outputs


def nnc_check(folder: Path) -> None:
    """Check model.nn with nnc and compare its IR with the files of the fixture."""
    cmd = ["cargo", "run", "-q", "-p", "nnc-compiler", "--", "check",
           str(folder / "model.nn"), "--emit", "ir"]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"nnc check failed for {folder}:\n{result.stdout}\n{result.stderr}")
    weights, inputs, outputs = parse_ir(result.stdout)
    header = read_safetensors_header(folder / "weights.safetensors")
    st = {name: ("f32" if info["dtype"] == "F32" else info["dtype"], tuple(info["shape"]))
          for name, info in header.items()}
    problems = []
    if st != weights:
        for name in sorted(set(st) | set(weights)):
            if st.get(name) != weights.get(name):
                problems.append(f"weight {name}: safetensors {st.get(name)} vs IR {weights.get(name)}")
    dtype_name = {np.dtype(np.float32): "f32", np.dtype(np.int64): "i64"}
    for kind, expected in (("input", inputs), ("output", outputs)):
        files = {p.name[len(kind) + 1:-4]: p for p in folder.glob(f"{kind}_*.npy")}
        if set(files) != set(expected):
            problems.append(f"{kind}s: files {sorted(files)} vs IR {sorted(expected)}")
            continue
        for name, path in files.items():
            a = np.load(path)
            got = (dtype_name.get(a.dtype, str(a.dtype)), tuple(a.shape))
            if got != expected[name]:
                problems.append(f"{kind} {name}: file {got} vs IR {expected[name]}")
    if problems:
        raise SystemExit(f"{folder.name}: the IR and the fixture disagree:\n  " + "\n  ".join(problems))
    print(f"  nnc check --emit ir: {len(weights)} weights, {len(inputs)} inputs, "
          f"{len(outputs)} outputs match the fixture files")


def build(fx: Fixture, out_dir: Path, check_with_nnc: bool) -> dict[str, tuple[float, float]]:
    print(f"{fx.name}:")
    W64 = {k: v.astype(np.float64) for k, v in fx.params.tensors.items()}
    I64 = {k: (v if v.dtype == np.int64 else v.astype(np.float64)) for k, v in fx.inputs.items()}
    ref = fx.reference(W64, I64)

    g = Graph(fx.params.tensors)
    names = {name: g.input(name, value) for name, value in fx.inputs.items()}
    outputs = fx.onnx_body(g, names)
    assert set(ref) == set(outputs), (sorted(ref), sorted(outputs))
    for name, value in outputs.items():
        g.output(name, value, ref[name].shape)
    model = g.model(fx.name)
    got = run_ort(model, fx.inputs)

    figures = {}
    for name in got:
        assert got[name].shape == ref[name].shape, (name, got[name].shape, ref[name].shape)
        assert got[name].dtype == np.float32
        assert np.all(np.isfinite(got[name])), f"{fx.name}/{name}: ORT output is not finite"
        floored, scaled = agreement(got[name], ref[name])
        figures[name] = (floored, scaled)
        print(f"  output {name:<18} {str(list(got[name].shape)):<16} max|ort-ref|/max(|ref|,1) = "
              f"{floored:.2e}   max|ort-ref|/max|ref| = {scaled:.2e}   "
              f"(|ref| max {np.abs(ref[name]).max():.3g}, std {ref[name].std():.3g})")
        if floored > TOLERANCE:
            raise SystemExit(f"{fx.name}/{name}: ORT and the numpy reference disagree: {floored:.3e}")

    folder = out_dir / fx.name
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    (folder / "model.nn").write_text(fx.nn)
    save_file(dict(fx.params.tensors), str(folder / "weights.safetensors"))
    (folder / "weights.safetensors").chmod(0o644)  # safetensors creates it 0600
    for name, value in fx.inputs.items():
        np.save(folder / f"input_{name}.npy", value)
    for name, value in got.items():
        np.save(folder / f"output_{name}.npy", value)
    total = sum(p.stat().st_size for p in folder.iterdir())
    print(f"  wrote {folder.relative_to(ROOT) if folder.is_relative_to(ROOT) else folder} "
          f"({total:,} bytes)")
    assert total < MAX_FIXTURE_BYTES, f"{fx.name} is {total} bytes"
    for note in fx.notes:
        print(f"  note: {note}")
    if check_with_nnc:
        nnc_check(folder)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="fixtures to build (default: all)")
    parser.add_argument("--out", type=Path, default=FIXTURES, help="default: tests/fixtures")
    parser.add_argument("--no-nnc", action="store_true", help="skip the `nnc check` comparison")
    args = parser.parse_args()

    fixtures = [f() for f in FIXTURES_ALL]
    known = [f.name for f in fixtures]
    unknown = set(args.names) - set(known)
    if unknown:
        raise SystemExit(f"unknown fixtures {sorted(unknown)}; known: {known}")
    check_with_nnc = not args.no_nnc and shutil.which("cargo") is not None
    if not args.no_nnc and not check_with_nnc:
        print("cargo not found: skipping the nnc IR check", file=sys.stderr)
    print(f"onnx {onnx.__version__}, onnxruntime {ort.__version__}, numpy {np.__version__}, "
          f"opset {OPSET}")
    worst = 0.0
    for fx in fixtures:
        if not args.names or fx.name in args.names:
            figures = build(fx, args.out, check_with_nnc)
            worst = max([worst] + [f[0] for f in figures.values()])
    print(f"all fixtures agree: worst max|ort-ref|/max(|ref|,1) = {worst:.2e} (tolerance {TOLERANCE:g})")


if __name__ == "__main__":
    main()
