"""Writes the ONNX fixtures of the layers `nnc import` recognizes in their decomposed form, as
PyTorch's exporter writes them (before opset 17 has LayerNormalization and opset 20 has Gelu), into
tests/fixtures/onnx/<case>/ in the format of bench/onnx_import_fixtures.py (whose helpers it uses):

    pytorch_encoder_layer   a BERT-style layer: linear layers as MatMul by `onnx::MatMul_N`
                            initializers plus a bias Add, attention split into heads with
                            Reshape/Transpose, kᵀ as a second Transpose, Div by √d, a causal mask
                            Add, Softmax, heads merged; LayerNorm as ReduceMean/Sub/Pow/ReduceMean/
                            Add/Sqrt/Div/Mul/Add; exact GELU as Div/Erf/Add/Mul/Mul (opset 14)
    pytorch_llama_mlp       a Llama-style RMSNorm (Pow/ReduceMean with axes as an input/Add/Sqrt/
                            Reciprocal/Mul/Mul), SiLU as x * Sigmoid(x), and the tanh GELU with Pow
                            (opset 18)
    hugging_face_padding_mask
                            two self-attentions with Hugging Face BERT's key padding mask
                            `(1.0 - Cast(mask)) * MIN`: made [batch, 1, 1, keys] by two Unsqueezes
                            before the Cast with MIN = finfo(float32).min, then by a Reshape after
                            the Mul with MIN = -10000.0 (opset 14)
    hugging_face_expanded_mask
                            two self-attentions reading one mask in the form of newer Hugging Face
                            models (`_prepare_4d_attention_mask`): mask[:, None, None, :] by two
                            Unsqueezes, Expand to [batch, 1, queries, keys], Cast to float,
                            `inverted = 1 - m`, `Where(Cast(inverted, bool), MIN, inverted)`
                            (opset 14)

compiler/tests/onnx_import.rs imports each one, checks it against ONNX Runtime within 1e-4
relative and snapshots the imported `.nn`, which must read `attention`, `layer_norm`, `gelu`,
`rms_norm` and `silu` (and `attention(.., mask = ..)` for the padding mask).

Usage: python bench/onnx_recognize_fixtures.py (needs onnx, onnxruntime and numpy).
"""

import pathlib
import sys

import numpy as np
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from onnx_import_fixtures import ints, save, tensor_info, weight  # noqa: E402

RNG = np.random.default_rng(16)


def scalar(name, value):
    return numpy_helper.from_array(np.array(value, dtype=np.float32), name)


def linear(nodes, inits, x, out, scope, n_in, n_out, counter):
    """PyTorch's nn.Linear on a 3-D input: MatMul by the transposed weight, then the bias Add."""
    weight_name = f"onnx::MatMul_{counter}"
    inits.append(weight(weight_name, n_in, n_out))
    inits.append(weight(f"{scope}.bias", n_out))
    nodes.append(helper.make_node("MatMul", [x, weight_name], [f"{out}_mm"], name=f"/{scope}/MatMul"))
    nodes.append(helper.make_node("Add", [f"{out}_mm", f"{scope}.bias"], [out], name=f"/{scope}/Add"))


def layer_norm(nodes, inits, x, out, scope, features, eps):
    """torch.nn.LayerNorm exported before opset 17."""
    p = f"/{scope}"
    inits += [weight(f"{scope}.weight", features), weight(f"{scope}.bias", features)]
    nodes += [
        helper.make_node("ReduceMean", [x], [f"{out}_mean"], name=f"{p}/ReduceMean", axes=[-1]),
        helper.make_node("Sub", [x, f"{out}_mean"], [f"{out}_centered"], name=f"{p}/Sub"),
        helper.make_node("Pow", [f"{out}_centered", "two"], [f"{out}_sq"], name=f"{p}/Pow"),
        helper.make_node("ReduceMean", [f"{out}_sq"], [f"{out}_var"], name=f"{p}/ReduceMean_1", axes=[-1]),
        helper.make_node("Add", [f"{out}_var", f"{scope}_eps"], [f"{out}_var_eps"], name=f"{p}/Add"),
        helper.make_node("Sqrt", [f"{out}_var_eps"], [f"{out}_std"], name=f"{p}/Sqrt"),
        helper.make_node("Div", [f"{out}_centered", f"{out}_std"], [f"{out}_norm"], name=f"{p}/Div"),
        helper.make_node("Mul", [f"{out}_norm", f"{scope}.weight"], [f"{out}_scaled"], name=f"{p}/Mul"),
        helper.make_node("Add", [f"{out}_scaled", f"{scope}.bias"], [out], name=f"{p}/Add_1"),
    ]
    inits.append(scalar(f"{scope}_eps", eps))


def pytorch_encoder_layer():
    seq, hidden, heads = 5, 8, 2
    head_dim = hidden // heads
    nodes, inits = [], [scalar("two", 2.0)]
    for index, name in enumerate(["query", "key", "value"]):
        linear(nodes, inits, "x", name, f"attention.self.{name}", hidden, hidden, 100 + index)
        nodes.append(helper.make_node("Reshape", [name, "heads_shape"], [f"{name}_4d"],
                                      name=f"/attention/self/{name}/Reshape"))
        nodes.append(helper.make_node("Transpose", [f"{name}_4d"], [f"{name}_heads"],
                                      name=f"/attention/self/{name}/Transpose", perm=[0, 2, 1, 3]))
    causal = np.triu(np.full((seq, seq), np.finfo(np.float32).min, dtype=np.float32), k=1)
    inits += [
        ints("heads_shape", [1, seq, heads, head_dim]),
        ints("merged_shape", [1, seq, hidden]),
        scalar("sqrt_head_dim", float(np.sqrt(head_dim))),
        numpy_helper.from_array(causal.reshape(1, 1, seq, seq), "causal_mask"),
    ]
    s = "/attention/self"
    nodes += [
        helper.make_node("Transpose", ["key_heads"], ["key_t"], name=f"{s}/Transpose_3", perm=[0, 1, 3, 2]),
        helper.make_node("MatMul", ["query_heads", "key_t"], ["scores"], name=f"{s}/MatMul"),
        helper.make_node("Div", ["scores", "sqrt_head_dim"], ["scaled"], name=f"{s}/Div"),
        helper.make_node("Add", ["scaled", "causal_mask"], ["masked"], name=f"{s}/Add"),
        helper.make_node("Softmax", ["masked"], ["probs"], name=f"{s}/Softmax", axis=-1),
        helper.make_node("MatMul", ["probs", "value_heads"], ["context"], name=f"{s}/MatMul_1"),
        helper.make_node("Transpose", ["context"], ["context_t"], name=f"{s}/Transpose_4", perm=[0, 2, 1, 3]),
        helper.make_node("Reshape", ["context_t", "merged_shape"], ["attended"], name=f"{s}/Reshape_3"),
    ]
    linear(nodes, inits, "attended", "projected", "attention.output.dense", hidden, hidden, 103)
    nodes.append(helper.make_node("Add", ["projected", "x"], ["residual"], name="/attention/output/Add_1"))
    layer_norm(nodes, inits, "residual", "h", "attention.output.LayerNorm", hidden, 1e-12)
    linear(nodes, inits, "h", "inter", "intermediate.dense", hidden, 16, 104)
    nodes += [
        helper.make_node("Div", ["inter", "sqrt_2"], ["gelu_scaled"], name="/intermediate/act/Div"),
        helper.make_node("Erf", ["gelu_scaled"], ["gelu_erf"], name="/intermediate/act/Erf"),
        helper.make_node("Add", ["gelu_erf", "one"], ["gelu_shifted"], name="/intermediate/act/Add"),
        helper.make_node("Mul", ["inter", "gelu_shifted"], ["gelu_product"], name="/intermediate/act/Mul"),
        helper.make_node("Mul", ["gelu_product", "half"], ["activated"], name="/intermediate/act/Mul_1"),
    ]
    inits += [scalar("sqrt_2", 1.4142135), scalar("one", 1.0), scalar("half", 0.5)]
    linear(nodes, inits, "activated", "out", "output.dense", 16, hidden, 105)
    nodes.append(helper.make_node("Add", ["out", "h"], ["out_residual"], name="/output/Add_1"))
    layer_norm(nodes, inits, "out_residual", "y", "output.LayerNorm", hidden, 1e-12)
    x = RNG.standard_normal((1, seq, hidden)).astype(np.float32)
    save("pytorch_encoder_layer", nodes, [tensor_info("x", [1, seq, hidden])],
         [tensor_info("y", [1, seq, hidden])], inits, 14, {"x": x})


def pytorch_llama_mlp():
    seq, hidden, ffn = 3, 8, 12
    n = "/model/norm"
    nodes = [
        helper.make_node("Pow", ["x", "two"], ["sq"], name=f"{n}/Pow"),
        helper.make_node("ReduceMean", ["sq", "last_axis"], ["variance"], name=f"{n}/ReduceMean"),
        helper.make_node("Add", ["variance", "eps"], ["variance_eps"], name=f"{n}/Add"),
        helper.make_node("Sqrt", ["variance_eps"], ["root"], name=f"{n}/Sqrt"),
        helper.make_node("Reciprocal", ["root"], ["inverse"], name=f"{n}/Reciprocal"),
        helper.make_node("Mul", ["x", "inverse"], ["normalized"], name=f"{n}/Mul"),
        helper.make_node("Mul", ["model.norm.weight", "normalized"], ["h"], name=f"{n}/Mul_1"),
        helper.make_node("MatMul", ["h", "onnx::MatMul_200"], ["gate"], name="/mlp/gate_proj/MatMul"),
        helper.make_node("MatMul", ["h", "onnx::MatMul_201"], ["up"], name="/mlp/up_proj/MatMul"),
        helper.make_node("Sigmoid", ["gate"], ["gate_sigmoid"], name="/mlp/act_fn/Sigmoid"),
        helper.make_node("Mul", ["gate", "gate_sigmoid"], ["gate_silu"], name="/mlp/act_fn/Mul"),
        helper.make_node("Mul", ["gate_silu", "up"], ["swiglu"], name="/mlp/Mul"),
        helper.make_node("MatMul", ["swiglu", "onnx::MatMul_202"], ["y"], name="/mlp/down_proj/MatMul"),
        # The tanh GELU of x, with x³ as Pow.
        helper.make_node("Mul", ["x", "half"], ["half_x"], name="/act/Mul"),
        helper.make_node("Pow", ["x", "three"], ["cube"], name="/act/Pow"),
        helper.make_node("Mul", ["cube", "kappa"], ["cube_term"], name="/act/Mul_1"),
        helper.make_node("Add", ["x", "cube_term"], ["inner"], name="/act/Add"),
        helper.make_node("Mul", ["inner", "beta"], ["argument"], name="/act/Mul_2"),
        helper.make_node("Tanh", ["argument"], ["tanh"], name="/act/Tanh"),
        helper.make_node("Add", ["tanh", "one"], ["shifted"], name="/act/Add_1"),
        helper.make_node("Mul", ["half_x", "shifted"], ["z"], name="/act/Mul_3"),
    ]
    inits = [
        scalar("two", 2.0), ints("last_axis", [-1]), scalar("eps", 1e-6),
        weight("model.norm.weight", hidden), weight("onnx::MatMul_200", hidden, ffn),
        weight("onnx::MatMul_201", hidden, ffn), weight("onnx::MatMul_202", ffn, hidden),
        scalar("half", 0.5), scalar("three", 3.0), scalar("kappa", 0.044715),
        scalar("beta", float(np.sqrt(2.0 / np.pi))), scalar("one", 1.0),
    ]
    x = RNG.standard_normal((1, seq, hidden)).astype(np.float32)
    save("pytorch_llama_mlp", nodes, [tensor_info("x", [1, seq, hidden])],
         [tensor_info("y", [1, seq, hidden]), tensor_info("z", [1, seq, hidden])], inits, 18, {"x": x})


def hugging_face_padding_mask():
    batch, seq, hidden, heads = 2, 5, 8, 2
    head_dim = hidden // heads
    nodes = []
    inits = [
        ints("heads_shape", [batch, seq, heads, head_dim]),
        ints("merged_shape", [batch, seq, hidden]),
        ints("axis_1", [1]),
        ints("axis_2", [2]),
        ints("mask_rows", [batch, 1, 1, seq]),
        scalar("sqrt_head_dim", float(np.sqrt(head_dim))),
        scalar("one", 1.0),
        scalar("finfo_min", float(np.finfo(np.float32).min)),
        scalar("minus_10000", -10000.0),
    ]
    # Layer 0 (BERT's get_extended_attention_mask): mask[:, None, None, :], to(float), (1 - m) * min.
    nodes += [
        helper.make_node("Unsqueeze", ["attention_mask", "axis_1"], ["mask_3d"], name="/Unsqueeze"),
        helper.make_node("Unsqueeze", ["mask_3d", "axis_2"], ["mask_4d"], name="/Unsqueeze_1"),
        helper.make_node("Cast", ["mask_4d"], ["mask_float"], name="/Cast", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "mask_float"], ["inverted"], name="/Sub"),
        helper.make_node("Mul", ["inverted", "finfo_min"], ["extended_0"], name="/Mul"),
        # Layer 1: the same computed on [batch, keys], reshaped after the Mul, MIN = -10000.
        helper.make_node("Cast", ["attention_mask"], ["mask_float_1"], name="/Cast_1", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "mask_float_1"], ["inverted_1"], name="/Sub_1"),
        helper.make_node("Mul", ["inverted_1", "minus_10000"], ["additive_1"], name="/Mul_1"),
        helper.make_node("Reshape", ["additive_1", "mask_rows"], ["extended_1"], name="/Reshape"),
    ]
    attention_layers(nodes, inits, hidden, heads, ["extended_0", "extended_1"])
    # The second sequence is padded after 3 tokens; every row keeps at least one key.
    save_masked_attention("hugging_face_padding_mask", nodes, inits, hidden,
                          [[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


def hugging_face_expanded_mask():
    batch, seq, hidden, heads = 2, 5, 8, 2
    head_dim = hidden // heads
    inits = [
        ints("heads_shape", [batch, seq, heads, head_dim]),
        ints("merged_shape", [batch, seq, hidden]),
        ints("axis_1", [1]),
        ints("axis_2", [2]),
        ints("expanded_shape", [batch, 1, seq, seq]),
        scalar("sqrt_head_dim", float(np.sqrt(head_dim))),
        scalar("one", 1.0),
        scalar("finfo_min", float(np.finfo(np.float32).min)),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["attention_mask", "axis_1"], ["mask_3d"], name="/Unsqueeze"),
        helper.make_node("Unsqueeze", ["mask_3d", "axis_2"], ["mask_4d"], name="/Unsqueeze_1"),
        helper.make_node("Expand", ["mask_4d", "expanded_shape"], ["expanded"], name="/Expand"),
        helper.make_node("Cast", ["expanded"], ["mask_float"], name="/Cast", to=TensorProto.FLOAT),
        helper.make_node("Sub", ["one", "mask_float"], ["inverted"], name="/Sub"),
        helper.make_node("Cast", ["inverted"], ["inverted_bool"], name="/Cast_1", to=TensorProto.BOOL),
        helper.make_node("Where", ["inverted_bool", "finfo_min", "inverted"], ["extended"], name="/Where"),
    ]
    # Both layers read the one mask, as in a Hugging Face model.
    attention_layers(nodes, inits, hidden, heads, ["extended", "extended"])
    save_masked_attention("hugging_face_expanded_mask", nodes, inits, hidden,
                          [[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])


def save_masked_attention(case, nodes, inits, hidden, mask):
    """Saves attention layers from `x` to `y` with the key padding mask input `attention_mask`,
    run on a random `x` and `mask` (opset 14)."""
    batch, seq = len(mask), len(mask[0])
    x_value = RNG.standard_normal((batch, seq, hidden)).astype(np.float32)
    save(case, nodes,
         [tensor_info("x", [batch, seq, hidden]), tensor_info("attention_mask", [batch, seq], TensorProto.INT64)],
         [tensor_info("y", [batch, seq, hidden])], inits, 14,
         {"x": x_value, "attention_mask": np.array(mask, dtype=np.int64)})


def attention_layers(nodes, inits, hidden, heads, masks):
    """BERT self-attentions from `x` to `y`, one per additive mask in `masks`, with the
    `heads_shape`, `merged_shape` and `sqrt_head_dim` initializers of the caller."""
    x = "x"
    for layer, extended in enumerate(masks):
        scope = f"encoder.layer.{layer}.attention.self"
        s = f"/{scope.replace('.', '/')}"
        for index, name in enumerate(["query", "key", "value"]):
            out = f"{name}_{layer}"
            linear(nodes, inits, x, out, f"{scope}.{name}", hidden, hidden, 300 + 10 * layer + index)
            nodes.append(helper.make_node("Reshape", [out, "heads_shape"], [f"{out}_4d"],
                                          name=f"{s}/{name}/Reshape"))
            nodes.append(helper.make_node("Transpose", [f"{out}_4d"], [f"{out}_heads"],
                                          name=f"{s}/{name}/Transpose", perm=[0, 2, 1, 3]))
        y = "y" if layer == len(masks) - 1 else f"attended_{layer}"
        nodes += [
            helper.make_node("Transpose", [f"key_{layer}_heads"], [f"key_t_{layer}"], name=f"{s}/Transpose_3",
                             perm=[0, 1, 3, 2]),
            helper.make_node("MatMul", [f"query_{layer}_heads", f"key_t_{layer}"], [f"scores_{layer}"],
                             name=f"{s}/MatMul"),
            helper.make_node("Div", [f"scores_{layer}", "sqrt_head_dim"], [f"scaled_{layer}"], name=f"{s}/Div"),
            helper.make_node("Add", [f"scaled_{layer}", extended], [f"masked_{layer}"], name=f"{s}/Add"),
            helper.make_node("Softmax", [f"masked_{layer}"], [f"probs_{layer}"], name=f"{s}/Softmax", axis=-1),
            helper.make_node("MatMul", [f"probs_{layer}", f"value_{layer}_heads"], [f"context_{layer}"],
                             name=f"{s}/MatMul_1"),
            helper.make_node("Transpose", [f"context_{layer}"], [f"context_t_{layer}"], name=f"{s}/Transpose_4",
                             perm=[0, 2, 1, 3]),
            helper.make_node("Reshape", [f"context_t_{layer}", "merged_shape"], [y], name=f"{s}/Reshape_3"),
        ]
        x = y


def main():
    for case in [pytorch_encoder_layer, pytorch_llama_mlp, hugging_face_padding_mask,
                 hugging_face_expanded_mask]:
        case()


if __name__ == "__main__":
    main()
