"""Writes the ONNX fixtures of `nnc import`'s tests: small models built with onnx.helper, one or a
few operators each, with an input and ONNX Runtime's output, into tests/fixtures/onnx/<case>/:

    model.onnx            the model (weights as initializers, a few KB)
    input_<name>.npy      each input
    output_<name>.npy     each output, as ONNX Runtime computes it

compiler/tests/onnx_import.rs imports each model, runs it in nnc's interpreter and compares the
outputs within 1e-4 relative. With --real DIR it also writes the reference output of the PP-OCR
text-direction classifier that the rapidocr-onnxruntime wheel ships (unpacked under DIR), for the
input the Rust test builds: x[i] = sin(0.01 i) over a [1, 3, 48, 192] image, and of its PP-OCRv4
text detector over a [1, 3, 64, 96] image of dark bars.

Usage: python bench/onnx_import_fixtures.py [--real /tmp/onnximp/rapidocr]
(needs onnx, onnxruntime and numpy: bench/peers/.venv has them).
"""

import argparse
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "onnx"
RNG = np.random.default_rng(15)


def weight(name, *shape, scale=0.5):
    return numpy_helper.from_array((RNG.standard_normal(shape) * scale).astype(np.float32), name)


def ints(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.int64), name)


def floats(name, values):
    return numpy_helper.from_array(np.array(values, dtype=np.float32), name)


def tensor_info(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def save(case, nodes, inputs, outputs, initializers, opset, feeds):
    graph = helper.make_graph(nodes, case, inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    model.producer_name = "onnx_import_fixtures.py"
    onnx.checker.check_model(model, full_check=True)
    folder = FIXTURES / case
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, folder / "model.onnx")
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    results = session.run(None, feeds)
    for name, value in feeds.items():
        np.save(folder / f"input_{name}.npy", value)
    for info, value in zip(outputs, results):
        np.save(folder / f"output_{info.name}.npy", value.astype(np.float32))
    print(f"{case}: opset {opset}, outputs {[r.shape for r in results]}")


def image(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


def conv_bn_relu():
    nodes = [
        helper.make_node("Conv", ["x", "conv1.weight", "conv1.bias"], ["c"], name="/conv1/Conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2]),
        helper.make_node("BatchNormalization", ["c", "bn1.weight", "bn1.bias", "bn1.running_mean",
                                                "bn1.running_var"], ["b"], name="/bn1/BatchNormalization",
                         epsilon=1e-3),
        helper.make_node("Relu", ["b"], ["y"], name="/relu/Relu"),
    ]
    inits = [weight("conv1.weight", 6, 3, 3, 3), weight("conv1.bias", 6), weight("bn1.weight", 6),
             weight("bn1.bias", 6), weight("bn1.running_mean", 6),
             numpy_helper.from_array(RNG.uniform(0.5, 2.0, 6).astype(np.float32), "bn1.running_var")]
    save("conv_bn_relu", nodes, [tensor_info("x", [1, 3, 9, 11])], [tensor_info("y", [1, 6, 5, 6])],
         inits, 17, {"x": image(1, 3, 9, 11)})


def conv_groups_dilation_clip():
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="Conv@0", kernel_shape=[3, 3],
                         pads=[2, 2, 2, 2], dilations=[2, 2], group=2),
        helper.make_node("Clip", ["c", "zero", "six"], ["y"], name="Clip@0"),
    ]
    inits = [weight("w", 4, 2, 3, 3), floats("zero", 0.0), floats("six", 6.0)]
    save("conv_groups_dilation_clip", nodes, [tensor_info("x", [1, 4, 7, 8])],
         [tensor_info("y", [1, 4, 7, 8])], inits, 11, {"x": image(1, 4, 7, 8) * 4})


def conv1d_same_leaky():
    nodes = [
        helper.make_node("Conv", ["x", "encoder.conv.weight", "encoder.conv.bias"], ["c"],
                         auto_pad="SAME_UPPER", kernel_shape=[5]),
        helper.make_node("LeakyRelu", ["c"], ["y"], alpha=0.2),
    ]
    inits = [weight("encoder.conv.weight", 5, 3, 5), weight("encoder.conv.bias", 5)]
    save("conv1d_same_leaky", nodes, [tensor_info("x", ["batch", 3, 10])],
         [tensor_info("y", ["batch", 5, 10])], inits, 13, {"x": image(1, 3, 10)})


def pools():
    nodes = [
        helper.make_node("MaxPool", ["x"], ["a"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("AveragePool", ["a"], ["b"], kernel_shape=[3, 3], strides=[1, 1],
                         pads=[1, 1, 1, 1], count_include_pad=0),
        helper.make_node("MaxPool", ["b"], ["c"], kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1),
        helper.make_node("AveragePool", ["c"], ["d"], kernel_shape=[2, 2], strides=[1, 1]),
        helper.make_node("GlobalAveragePool", ["d"], ["e"]),
        helper.make_node("Flatten", ["e"], ["y"], axis=1),
        helper.make_node("GlobalMaxPool", ["a"], ["z"]),
    ]
    save("pools", nodes, [tensor_info("x", [2, 3, 13, 10])],
         [tensor_info("y", [2, 3]), tensor_info("z", [2, 3, 1, 1])], [], 12, {"x": image(2, 3, 13, 10)})


def gemm():
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["h"], name="/fc1/Gemm",
                         transB=1, alpha=0.5, beta=2.0),
        helper.make_node("Sigmoid", ["h"], ["s"]),
        helper.make_node("Gemm", ["s", "fc2_w", "fc2_b"], ["g"], name="Gemm@1"),
        helper.make_node("Tanh", ["g"], ["y"]),
    ]
    inits = [weight("fc1.weight", 7, 5), weight("fc1.bias", 7), weight("fc2_w", 7, 4), weight("fc2_b", 1, 4)]
    save("gemm", nodes, [tensor_info("x", [3, 5])], [tensor_info("y", [3, 4])], inits, 11,
         {"x": image(3, 5)})


def matmul_gelu_softmax():
    nodes = [
        helper.make_node("MatMul", ["x", "proj.weight_t"], ["m"], name="/proj/MatMul"),
        helper.make_node("Add", ["m", "proj.bias"], ["a"], name="/proj/Add"),
        helper.make_node("Gelu", ["a"], ["g"], approximate="tanh"),
        helper.make_node("MatMul", ["g", "head_w"], ["h"], name="/head/MatMul"),
        helper.make_node("Softmax", ["h"], ["y"], axis=-1),
        helper.make_node("Transpose", ["g"], ["gt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["g", "gt"], ["z"]),
    ]
    inits = [weight("proj.weight_t", 8, 6), weight("proj.bias", 6), weight("head_w", 6, 4)]
    save("matmul_gelu_softmax", nodes, [tensor_info("x", [2, 5, 8])],
         [tensor_info("y", [2, 5, 4]), tensor_info("z", [2, 5, 5])], inits, 20, {"x": image(2, 5, 8)})


def layer_norm_activations():
    nodes = [
        helper.make_node("LayerNormalization", ["x", "norm.weight", "norm.bias"], ["n"], axis=-1,
                         epsilon=1e-6),
        helper.make_node("HardSwish", ["n"], ["a"]),
        helper.make_node("HardSigmoid", ["n"], ["b"], alpha=0.2, beta=0.5),
        helper.make_node("HardSigmoid", ["n"], ["c"], alpha=1.0 / 6.0, beta=0.5),
        helper.make_node("Add", ["a", "b"], ["ab"]),
        helper.make_node("Mul", ["ab", "c"], ["y"]),
        helper.make_node("Softplus", ["n"], ["s"]),
        helper.make_node("Sub", ["one", "s"], ["z"]),
    ]
    inits = [weight("norm.weight", 6), weight("norm.bias", 6), floats("one", [1.0])]
    save("layer_norm_activations", nodes, [tensor_info("x", [2, 3, 6])],
         [tensor_info("y", [2, 3, 6]), tensor_info("z", [2, 3, 6])], inits, 17, {"x": image(2, 3, 6) * 3})


def shape_chain_flatten():
    """PyTorch's x.view(x.size(0), -1) after a conv: Shape, Gather, Unsqueeze, Concat, Reshape."""
    nodes = [
        helper.make_node("Conv", ["x", "features.0.weight", "features.0.bias"], ["c"],
                         name="/features/features.0/Conv", kernel_shape=[3, 3]),
        helper.make_node("Shape", ["c"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"], ["n1"]),
        helper.make_node("Concat", ["n1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["c", "target"], ["flat"]),
        helper.make_node("Gemm", ["flat", "classifier.weight", "classifier.bias"], ["y"],
                         name="/classifier/Gemm", transB=1),
    ]
    inits = [weight("features.0.weight", 4, 2, 3, 3), weight("features.0.bias", 4),
             ints("zero", 0), ints("axes0", [0]), ints("minus_one", [-1]),
             weight("classifier.weight", 3, 4 * 4 * 5, scale=0.1), weight("classifier.bias", 3)]
    save("shape_chain_flatten", nodes, [tensor_info("x", [2, 2, 6, 7])], [tensor_info("y", [2, 3])],
         inits, 13, {"x": image(2, 2, 6, 7)})


def reshapes_opset11():
    """Squeeze and Unsqueeze with attribute axes (before opset 13), Transpose, scalar arithmetic."""
    nodes = [
        helper.make_node("Unsqueeze", ["x"], ["u"], axes=[1]),
        helper.make_node("Squeeze", ["u"], ["s"], axes=[1]),
        helper.make_node("Transpose", ["s"], ["t"], perm=[0, 2, 1]),
        helper.make_node("Mul", ["t", "two"], ["m"]),
        helper.make_node("Sub", ["m", "one"], ["d"]),
        helper.make_node("Div", ["d", "four"], ["q"]),
        helper.make_node("Reshape", ["q", "shape"], ["y"]),
        helper.make_node("Softmax", ["y"], ["z"], axis=1),
    ]
    inits = [floats("two", 2.0), floats("one", [1.0]), floats("four", 4.0), ints("shape", [2, -1])]
    save("reshapes_opset11", nodes, [tensor_info("x", [2, 3, 4])],
         [tensor_info("y", [2, 12]), tensor_info("z", [2, 12])], inits, 11, {"x": image(2, 3, 4)})


def slice_split_concat():
    nodes = [
        helper.make_node("Slice", ["x", "starts", "ends", "axes"], ["s"]),
        helper.make_node("Split", ["s", "sizes"], ["a", "b"], axis=1),
        helper.make_node("Concat", ["b", "a"], ["c"], axis=1),
        helper.make_node("Add", ["c", "s"], ["y"]),
        helper.make_node("Transpose", ["y"], ["z"], perm=[2, 0, 1]),
    ]
    inits = [ints("starts", [1]), ints("ends", [-1]), ints("axes", [2]), ints("sizes", [2, 3])]
    save("slice_split_concat", nodes, [tensor_info("x", [2, 5, 7])],
         [tensor_info("y", [2, 5, 5]), tensor_info("z", [5, 2, 5])], inits, 13, {"x": image(2, 5, 7)})


def broadcast_binary():
    nodes = [
        helper.make_node("Add", ["x", "gate"], ["a"]),
        helper.make_node("Mul", ["a", "gate"], ["m"]),
        helper.make_node("Sub", ["m", "x"], ["s"]),
        helper.make_node("Div", ["s", "scale"], ["y"]),
    ]
    save("broadcast_binary", nodes,
         [tensor_info("x", [2, 3, 4, 5]), tensor_info("gate", [2, 3, 1, 1]), tensor_info("scale", [1, 1, 4, 5])],
         [tensor_info("y", [2, 3, 4, 5])], [], 14,
         {"x": image(2, 3, 4, 5), "gate": image(2, 3, 1, 1),
          "scale": RNG.uniform(1.0, 2.0, (1, 1, 4, 5)).astype(np.float32)})


def paddle_hardswish_se():
    """Paddle's export of a conv with a bias Add, hard swish spelled out, and squeeze-excite."""
    nodes = [
        helper.make_node("Conv", ["x", "conv1_weights"], ["c"], name="Conv@0", kernel_shape=[3, 3],
                         pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["conv1_offset", "bias_shape"], ["bias4"], name="Reshape@0"),
        helper.make_node("Add", ["c", "bias4"], ["cb"], name="Add@0"),
        helper.make_node("Add", ["cb", "three"], ["p"], name="Add@1"),
        helper.make_node("Clip", ["p", "zero", "six"], ["r"], name="Clip@0"),
        helper.make_node("Mul", ["cb", "r"], ["m"], name="Mul@0"),
        helper.make_node("Div", ["m", "six"], ["hs"], name="Div@0"),
        helper.make_node("GlobalAveragePool", ["hs"], ["g"]),
        helper.make_node("Conv", ["g", "se_weights"], ["e"], kernel_shape=[1, 1]),
        helper.make_node("HardSigmoid", ["e"], ["gate"], alpha=0.2, beta=0.5),
        helper.make_node("Mul", ["hs", "gate"], ["y"]),
    ]
    inits = [weight("conv1_weights", 4, 3, 3, 3), weight("conv1_offset", 4), ints("bias_shape", [1, 4, 1, 1]),
             floats("three", 3.0), floats("zero", 0.0), floats("six", 6.0), weight("se_weights", 4, 4, 1, 1)]
    save("paddle_hardswish_se", nodes, [tensor_info("x", [1, 3, 6, 6])], [tensor_info("y", [1, 4, 6, 6])],
         inits, 11, {"x": image(1, 3, 6, 6) * 2})


def gather_embedding():
    nodes = [
        helper.make_node("Gather", ["embeddings.word_embeddings.weight", "ids"], ["e"], axis=0),
        helper.make_node("Gather", ["e", "one"], ["first"], axis=1),
        helper.make_node("Gather", ["e", "last"], ["y"], axis=1),
        helper.make_node("Relu", ["first"], ["z"]),
    ]
    inits = [weight("embeddings.word_embeddings.weight", 11, 4), ints("one", 1), ints("last", [-1])]
    ids = np.array([[3, 0, 10], [7, 7, 1]], dtype=np.int64)
    save("gather_embedding", nodes, [tensor_info("ids", [2, 3], TensorProto.INT64)],
         [tensor_info("y", [2, 1, 4]), tensor_info("z", [2, 4])], inits, 13, {"ids": ids})


def resize_pytorch():
    """Resize as torch.onnx exports nn.Upsample and F.interpolate at opset 11 (an empty roi and
    empty scales as inputs): nearest by scales (asymmetric, floor), bilinear to a size
    (pytorch_half_pixel), bilinear by a fractional scale with align_corners."""
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight", "conv.bias"], ["c"], name="/conv/Conv",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["c", "roi", "up_scales"], ["u"], name="/up/Resize", mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Resize", ["u", "roi", "no_scales", "sizes"], ["b"], name="/smooth/Resize", mode="linear",
                         coordinate_transformation_mode="pytorch_half_pixel"),
        helper.make_node("Resize", ["b", "roi", "corner_scales"], ["y"], name="/corners/Resize",
                         mode="linear", coordinate_transformation_mode="align_corners"),
    ]
    inits = [weight("conv.weight", 4, 3, 3, 3), weight("conv.bias", 4),
             floats("roi", []), floats("no_scales", []),
             floats("up_scales", [1, 1, 2, 2]), ints("sizes", [1, 4, 13, 17]),
             floats("corner_scales", [1, 1, 1.5, 1.25])]
    save("resize_pytorch", nodes, [tensor_info("x", [1, 3, 5, 7])], [tensor_info("y", [1, 4, 19, 21])],
         inits, 11, {"x": image(1, 3, 5, 7)})


def resize_onnx_modes():
    """Resize's other coordinate transforms and roundings (opset 19: axes): half-pixel nearest
    rounding halves up by a fractional scale, linear half-pixel to sizes given for axes [2, 3],
    asymmetric round-prefer-floor downsampling, tf-style ceil."""
    nodes = [
        helper.make_node("Resize", ["x", "", "scales"], ["a"], name="/a/Resize", mode="nearest",
                         nearest_mode="round_prefer_ceil"),
        helper.make_node("Resize", ["a", "", "", "sizes"], ["b"], name="/b/Resize", mode="linear",
                         axes=[2, 3]),
        helper.make_node("Resize", ["b", "", "down"], ["c"], name="/c/Resize", mode="nearest",
                         coordinate_transformation_mode="asymmetric"),
        helper.make_node("Resize", ["c", "", "up"], ["y"], name="/d/Resize", mode="nearest",
                         coordinate_transformation_mode="half_pixel", nearest_mode="ceil"),
    ]
    inits = [floats("scales", [1, 1, 1.5, 2.5]), ints("sizes", [11, 9]), floats("down", [1, 1, 0.5, 0.75]),
             floats("up", [1, 1, 3, 2])]
    save("resize_onnx_modes", nodes, [tensor_info("x", [2, 2, 6, 5])], [tensor_info("y", [2, 2, 15, 12])],
         inits, 19, {"x": image(2, 2, 6, 5)})


def conv_transpose():
    """ConvTranspose as PyTorch exports ConvTranspose2d (stride 2, padding 1, output_padding 1,
    groups, bias), a dilated one without bias on a 3x2 kernel, and one sized by output_shape."""
    nodes = [
        helper.make_node("ConvTranspose", ["x", "up1.weight", "up1.bias"], ["a"],
                         name="/up1/ConvTranspose", kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 1, 1, 1], output_padding=[1, 1], group=2),
        helper.make_node("Relu", ["a"], ["r"], name="/relu/Relu"),
        helper.make_node("ConvTranspose", ["r", "up2.weight"], ["b"], name="/up2/ConvTranspose",
                         kernel_shape=[3, 2], dilations=[2, 1], strides=[1, 3]),
        helper.make_node("ConvTranspose", ["b", "up3.weight", "up3.bias"], ["y"],
                         name="/up3/ConvTranspose", strides=[2, 2], output_shape=[27, 59]),
    ]
    inits = [weight("up1.weight", 4, 3, 3, 3), weight("up1.bias", 6), weight("up2.weight", 6, 5, 3, 2),
             weight("up3.weight", 5, 2, 3, 3), weight("up3.bias", 2)]
    save("conv_transpose", nodes, [tensor_info("x", [1, 4, 5, 5])], [tensor_info("y", [1, 2, 27, 59])],
         inits, 13, {"x": image(1, 4, 5, 5)})


def pad_modes():
    """Pad with pads as an input (opset 18, with axes): reflect, edge, and a constant value."""
    nodes = [
        helper.make_node("Pad", ["x", "reflect_pads"], ["a"], name="/reflect/Pad", mode="reflect"),
        helper.make_node("Pad", ["a", "edge_pads"], ["b"], name="/edge/Pad", mode="edge"),
        helper.make_node("Pad", ["b", "constant_pads", "value", "axes"], ["y"], name="/constant/Pad"),
    ]
    inits = [ints("reflect_pads", [0, 0, 2, 1, 0, 0, 1, 3]), ints("edge_pads", [0, 1, 0, 2, 0, 0, 3, 0]),
             ints("constant_pads", [1, 2, 2, 0]),
             numpy_helper.from_array(np.array(0.5, dtype=np.float32), "value"), ints("axes", [1, 3])]
    save("pad_modes", nodes, [tensor_info("x", [1, 3, 4, 5])], [tensor_info("y", [1, 7, 10, 13])],
         inits, 18, {"x": image(1, 3, 4, 5)})


def reductions_opset13():
    """Reductions before opset 18: ReduceMean and ReduceMax take their axes as an attribute
    (negative ones included, kept or dropped), ReduceSum (from opset 13) as an input; a
    ReduceMean without axes reduces every axis."""
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["mean"], name="/center/ReduceMean", axes=[-1]),
        helper.make_node("Sub", ["x", "mean"], ["centered"], name="/center/Sub"),
        helper.make_node("ReduceMax", ["centered"], ["peak"], name="/peak/ReduceMax", axes=[1, -2],
                         keepdims=0),
        helper.make_node("ReduceSum", ["x", "sum_axes"], ["total"], name="/total/ReduceSum"),
        helper.make_node("Mul", ["centered", "centered"], ["scaled"], name="/square/Mul"),
        helper.make_node("ReduceMean", ["scaled"], ["overall"], name="/overall/ReduceMean"),
    ]
    save("reductions_opset13", nodes, [tensor_info("x", [2, 3, 4, 5])],
         [tensor_info("peak", [2, 5]), tensor_info("total", [2, 1, 4, 1]),
          tensor_info("overall", [1, 1, 1, 1])],
         [ints("sum_axes", [-1, 1])], 13, {"x": image(2, 3, 4, 5)})


def reductions_opset18():
    """Reductions from opset 18: every one takes its axes as an input; no axes reduce every axis,
    or, with noop_with_empty_axes, none (the identity)."""
    nodes = [
        helper.make_node("ReduceMean", ["x", "mean_axes"], ["mean"], name="/mean/ReduceMean",
                         keepdims=0),
        helper.make_node("ReduceMax", ["mean", "max_axes"], ["peak"], name="/peak/ReduceMax"),
        helper.make_node("ReduceSum", ["x"], ["same"], name="/same/ReduceSum", noop_with_empty_axes=1),
        helper.make_node("ReduceSum", ["same"], ["total"], name="/total/ReduceSum", keepdims=0),
        helper.make_node("Add", ["peak", "total"], ["y"], name="/add/Add"),
    ]
    save("reductions_opset18", nodes, [tensor_info("x", [3, 6, 7])], [tensor_info("y", [3, 1])],
         [ints("mean_axes", [1]), ints("max_axes", [-1])], 18, {"x": image(3, 6, 7)})


def log_softmax_math():
    """LogSoftmax over the last and a middle axis, and the unary math ops on tensors computed
    at run time: Abs, Sqrt, Exp, Erf, Neg, and Pow by a scalar constant and by a one-element
    tensor."""
    nodes = [
        helper.make_node("LogSoftmax", ["x"], ["logits"], name="/head/LogSoftmax", axis=-1),
        helper.make_node("LogSoftmax", ["x"], ["middle"], name="/middle/LogSoftmax", axis=1),
        helper.make_node("Abs", ["x"], ["magnitude"], name="/abs/Abs"),
        helper.make_node("Sqrt", ["magnitude"], ["root"], name="/sqrt/Sqrt"),
        helper.make_node("Neg", ["root"], ["negated"], name="/neg/Neg"),
        helper.make_node("Exp", ["negated"], ["decay"], name="/exp/Exp"),
        helper.make_node("Erf", ["x"], ["erf"], name="/erf/Erf"),
        helper.make_node("Pow", ["erf", "two"], ["square"], name="/square/Pow"),
        helper.make_node("Pow", ["decay", "three"], ["cube"], name="/cube/Pow"),
        helper.make_node("Add", ["square", "cube"], ["sum"], name="/sum/Add"),
        helper.make_node("Add", ["sum", "middle"], ["y"], name="/y/Add"),
    ]
    save("log_softmax_math", nodes, [tensor_info("x", [2, 5, 9])],
         [tensor_info("logits", [2, 5, 9]), tensor_info("y", [2, 5, 9])],
         [numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two"), floats("three", [3.0])],
         17, {"x": image(2, 5, 9)})


def pow_tensor_exponent():
    """Pow with exponents computed at run time, broadcast: positive bases [2, 3, 4] to exponents
    [3, 1], and bases of both signs to integer exponents [4] (a negative base with a fractional
    exponent is NaN in both, which the relative error cannot compare)."""
    nodes = [
        helper.make_node("Pow", ["a", "b"], ["y"], name="/y/Pow"),
        helper.make_node("Pow", ["c", "e"], ["z"], name="/z/Pow"),
    ]
    feeds = {
        "a": RNG.uniform(0.2, 2.0, (2, 3, 4)).astype(np.float32),
        "b": RNG.uniform(-2.0, 2.0, (3, 1)).astype(np.float32),
        "c": image(2, 3, 4),
        "e": np.array([0.0, 1.0, 2.0, 3.0], dtype=np.float32),
    }
    save("pow_tensor_exponent", nodes,
         [tensor_info("a", [2, 3, 4]), tensor_info("b", [3, 1]), tensor_info("c", [2, 3, 4]),
          tensor_info("e", [4])],
         [tensor_info("y", [2, 3, 4]), tensor_info("z", [2, 3, 4])], [], 15, feeds)


def constant_tensors():
    """Constant tensors in arithmetic, each a `parameter` in the import: a baked-in input
    normalization ((x - pixel_mean) / pixel_std, per channel), a layer scale over the last axis,
    a [4, 5] offset, a constant on the left of a Sub, pixel_mean read twice (one parameter), Pow
    by a constant exponent per column, and a class token concatenated before the rows."""
    nodes = [
        helper.make_node("Sub", ["x", "pixel_mean"], ["centered"], name="/Sub"),
        helper.make_node("Div", ["centered", "pixel_std"], ["normalized"], name="/Div"),
        helper.make_node("Mul", ["normalized", "blocks.0.gamma"], ["scaled"], name="/blocks.0/Mul"),
        helper.make_node("Add", ["scaled", "offset"], ["shifted"], name="/Add"),
        helper.make_node("Sub", ["bias_left", "shifted"], ["flipped"], name="/Sub_1"),
        helper.make_node("Add", ["flipped", "pixel_mean"], ["summed"], name="/Add_1"),
        helper.make_node("Pow", ["summed", "exponents"], ["y"], name="/Pow"),
        helper.make_node("Concat", ["cls_token", "x"], ["z"], name="/Concat", axis=2),
    ]
    inits = [
        weight("pixel_mean", 1, 3, 1, 1),
        numpy_helper.from_array(RNG.uniform(0.5, 2.0, (3, 1, 1)).astype(np.float32), "pixel_std"),
        weight("blocks.0.gamma", 5),
        weight("offset", 4, 5),
        weight("bias_left", 3, 4, 5),
        numpy_helper.from_array(np.array([1.0, 2.0, 3.0, 2.0, 1.0], dtype=np.float32), "exponents"),
        weight("cls_token", 2, 3, 1, 5),
    ]
    save("constant_tensors", nodes, [tensor_info("x", [2, 3, 4, 5])],
         [tensor_info("y", [2, 3, 4, 5]), tensor_info("z", [2, 3, 5, 5])], inits, 14,
         {"x": image(2, 3, 4, 5)})


def more_reductions_opset13():
    """ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceSumSquare and ReduceLogSumExp before
    opset 18: axes as an attribute (negative ones included, kept or dropped), and none (every
    axis)."""
    nodes = [
        helper.make_node("ReduceMin", ["x"], ["low"], name="/low/ReduceMin", axes=[-1], keepdims=0),
        helper.make_node("ReduceProd", ["x"], ["product"], name="/product/ReduceProd", axes=[1, 2]),
        helper.make_node("ReduceL1", ["x"], ["l1"], name="/l1/ReduceL1", axes=[0, -1], keepdims=0),
        helper.make_node("ReduceL2", ["x"], ["l2"], name="/l2/ReduceL2", axes=[2]),
        helper.make_node("ReduceSumSquare", ["x"], ["squares"], name="/squares/ReduceSumSquare"),
        helper.make_node("ReduceLogSumExp", ["x"], ["lse"], name="/lse/ReduceLogSumExp", axes=[1]),
    ]
    save("more_reductions_opset13", nodes, [tensor_info("x", [2, 3, 4, 5])],
         [tensor_info("low", [2, 3, 4]), tensor_info("product", [2, 1, 1, 5]),
          tensor_info("l1", [3, 4]), tensor_info("l2", [2, 3, 1, 5]),
          tensor_info("squares", [1, 1, 1, 1]), tensor_info("lse", [2, 1, 4, 5])],
         [], 13, {"x": image(2, 3, 4, 5)})


def more_reductions_opset18():
    """The same reductions from opset 18, axes as an input; ReduceLogSumExp of large values (a
    naive sum of exponentials overflows); ReduceMin with noop_with_empty_axes is the identity."""
    nodes = [
        helper.make_node("ReduceMin", ["x", "last"], ["low"], name="/low/ReduceMin"),
        helper.make_node("ReduceMin", ["low"], ["same"], name="/same/ReduceMin", noop_with_empty_axes=1),
        helper.make_node("ReduceProd", ["x", "middle"], ["product"], name="/product/ReduceProd", keepdims=0),
        helper.make_node("ReduceL1", ["x", "middle"], ["l1"], name="/l1/ReduceL1"),
        helper.make_node("ReduceL2", ["x", "both"], ["l2"], name="/l2/ReduceL2", keepdims=0),
        helper.make_node("ReduceSumSquare", ["x", "last"], ["squares"], name="/squares/ReduceSumSquare"),
        helper.make_node("Mul", ["x", "hundred"], ["large"], name="/large/Mul"),
        helper.make_node("ReduceLogSumExp", ["large", "both"], ["lse"], name="/lse/ReduceLogSumExp"),
    ]
    save("more_reductions_opset18", nodes, [tensor_info("x", [3, 6, 7])],
         [tensor_info("same", [3, 6, 1]), tensor_info("product", [3, 7]), tensor_info("l1", [3, 1, 7]),
          tensor_info("l2", [6]), tensor_info("squares", [3, 6, 1]), tensor_info("lse", [1, 6, 1])],
         [ints("last", [-1]), ints("middle", [1]), ints("both", [0, 2]), floats("hundred", 100.0)],
         18, {"x": image(3, 6, 7)})


def real_model(root):
    path = next(pathlib.Path(root).glob("**/ch_ppocr_mobile_v2.0_cls_infer.onnx"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.sin(0.01 * np.arange(1 * 3 * 48 * 192, dtype=np.float64)).astype(np.float32).reshape(1, 3, 48, 192)
    (y,) = session.run(None, {"x": x})
    folder = FIXTURES / "ppocr_cls"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "output.npy", y.astype(np.float32))
    print(f"ppocr_cls: {path.name} -> {y}")


def real_det_model(root):
    """PP-OCRv4's text detector (DBNet: Resize and ConvTranspose) from the same wheel, on a
    [1, 3, 64, 96] image of dark bars (-2 where x % 12 < 4 in the rows y with y / 16 even, 2
    elsewhere), which it finds text in (a smooth image gives a map of zeros)."""
    path = next(pathlib.Path(root).glob("**/ch_PP-OCRv4_det_infer.onnx"))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    dark = (np.arange(96) % 12 < 4)[None, None, None, :] & (np.arange(64) // 16 % 2 == 0)[None, None, :, None]
    x = np.broadcast_to(np.where(dark, -2.0, 2.0), (1, 3, 64, 96)).astype(np.float32)
    (y,) = session.run(None, {"x": x})
    folder = FIXTURES / "ppocr_det"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "output.npy", y.astype(np.float32))
    print(f"ppocr_det: {path.name} -> {y.shape}, mean {y.mean()}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--real", help="the unpacked rapidocr-onnxruntime wheel")
    parser.add_argument("--only", nargs="*", help="write only these cases (the later ones, which "
                        "seed their own generator, come out the same as in a full run)")
    args = parser.parse_args()
    cases = [conv_bn_relu, conv_groups_dilation_clip, conv1d_same_leaky, pools, gemm,
             matmul_gelu_softmax, layer_norm_activations, shape_chain_flatten, reshapes_opset11,
             slice_split_concat, broadcast_binary, paddle_hardswish_se, gather_embedding]
    # Cases added later draw from a generator of their own, so that adding one leaves the data
    # of the others unchanged.
    later = [resize_pytorch, resize_onnx_modes, conv_transpose, pad_modes, reductions_opset13,
             reductions_opset18, log_softmax_math, pow_tensor_exponent, more_reductions_opset13,
             more_reductions_opset18, constant_tensors]
    global RNG
    for case in cases + later:
        if case in later:
            RNG = np.random.default_rng(100 + later.index(case))
        if args.only is None or case.__name__ in args.only:
            case()
    if args.real:
        real_model(args.real)
        real_det_model(args.real)


if __name__ == "__main__":
    main()
