"""Int8 Q/DQ placement (which inputs get Q/DQ) and the Q/DQ graph's arithmetic, on tiny graphs.

The placement cases are the patterns of the zoo's networks, built by hand so the right answer is
obvious: a residual block with an identity skip, one with a 1x1-conv skip, a corner-pool sum (no
conv on either side), an Add of a conv with something computed from that same conv (no skip),
an Add with a constant or a graph input. The arithmetic is checked against an independent
numpy/torch fake-quantization reference run on the same weights and ranges.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.onnx_files import metadata
from hgdeploy.precision.int8 import MIN_SCALE, quantize_int8, quantize_weight, symmetric_scale
from hgdeploy.precision.qdq_placement import activation_tensors, quantized_inputs
from hgdeploy.runners.onnxrt_runner import session_builder

CHANNELS = 4
SHAPE = (1, CHANNELS, 6, 5)


def _conv(name: str, source: str, output: str, rng: np.random.Generator) -> tuple:
    weight = numpy_helper.from_array(
        rng.normal(0, 0.3, (CHANNELS, CHANNELS, 3, 3)).astype(np.float32), f"{name}.w"
    )
    bias = numpy_helper.from_array(rng.normal(0, 0.1, CHANNELS).astype(np.float32), f"{name}.b")
    node = helper.make_node(
        "Conv", [source, weight.name, bias.name], [output], name=name, pads=[1, 1, 1, 1]
    )
    return node, [weight, bias]


def _model(nodes: list, initializers: list, output: str, opset: int = 20) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, SHAPE)],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, SHAPE)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.checker.check_model(model, full_check=True)
    return model


def _residual_block(skip: str = "identity", opset: int = 20) -> onnx.ModelProto:
    """r = Relu(x); y = Relu(Conv_b(Relu(Conv_a(r))) + skip(r)), skip = r or BN(Conv_s(r))."""
    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Relu", ["x"], ["r"], name="entry")]
    inits: list = []
    for name, source, output in (("conv_a", "r", "a"), ("conv_b", "a_relu", "b")):
        node, params = _conv(name, source, output, rng)
        nodes.append(node)
        inits += params
        if name == "conv_a":
            nodes.append(helper.make_node("Relu", ["a"], ["a_relu"], name="relu_a"))
    skip_tensor = "r"
    if skip == "conv":
        node, params = _conv("conv_s", "r", "s", rng)
        nodes.append(node)
        inits += params
        bn = [np.ones(CHANNELS), np.zeros(CHANNELS), np.zeros(CHANNELS), np.ones(CHANNELS)]
        names = [f"bn.{k}" for k in ("scale", "bias", "mean", "var")]
        inits += [numpy_helper.from_array(v.astype(np.float32), n) for v, n in zip(bn, names)]
        nodes.append(helper.make_node("BatchNormalization", ["s", *names], ["s_bn"], name="bn"))
        skip_tensor = "s_bn"
    nodes.append(helper.make_node("Add", ["b", skip_tensor], ["sum"], name="add"))
    nodes.append(helper.make_node("Relu", ["sum"], ["y"], name="out"))
    return _model(nodes, inits, "y", opset)


def _sites(model: onnx.ModelProto) -> set[tuple[str, int, str, str]]:
    nodes = list(model.graph.node)
    return {(nodes[s.node].name, s.index, s.tensor, s.reason) for s in quantized_inputs(model)}


def test_identity_skip_is_the_residual_input() -> None:
    model = _residual_block("identity")
    assert _sites(model) == {
        ("conv_a", 0, "r", "weighted"),
        ("conv_b", 0, "a_relu", "weighted"),
        ("add", 1, "r", "residual"),
    }
    assert activation_tensors(model) == ["r", "a_relu"]  # r once, shared by conv_a and add


def test_conv_skip_on_the_shorter_path_is_the_residual_input() -> None:
    # Both Add inputs come from convs: conv_b's branch is longer from r, so TensorRT fuses the
    # Add into conv_b and the skip conv's output (through BN) is the residual.
    sites = _sites(_residual_block("conv"))
    assert ("add", 1, "s_bn", "residual") in sites
    assert not any(node == "add" and index == 0 for node, index, _, _ in sites)


def test_adds_that_are_not_residual_adds() -> None:
    rng = np.random.default_rng(1)
    conv, params = _conv("conv", "r", "c", rng)
    const = numpy_helper.from_array(np.ones(SHAPE, np.float32), "one")
    nodes = [
        helper.make_node("Relu", ["x"], ["r"], name="entry"),
        conv,
        # corner-pool sum: neither input comes from a conv
        helper.make_node("Relu", ["r"], ["p1"], name="pool_a"),
        helper.make_node("Sigmoid", ["r"], ["p2"], name="pool_b"),
        helper.make_node("Add", ["p1", "p2"], ["pools"], name="add_pools"),
        # a conv plus something computed from that same conv: no skip connection
        helper.make_node("Sigmoid", ["c"], ["gate"], name="gate"),
        helper.make_node("Add", ["c", "gate"], ["gated"], name="add_self"),
        # a constant, and a graph input
        helper.make_node("Add", ["gated", "one"], ["biased"], name="add_const"),
        helper.make_node("Add", ["biased", "x"], ["with_x"], name="add_input"),
        helper.make_node("Add", ["with_x", "pools"], ["y"], name="add_last"),
    ]
    sites = _sites(_model(nodes, [*params, const], "y"))
    assert sites == {("conv", 0, "r", "weighted")}


def test_fake_quantized_arithmetic_matches_a_reference() -> None:
    """ORT runs the Q/DQ graph as symmetric fake quantization of exactly the placed tensors."""
    model = _residual_block("identity")
    x = np.random.default_rng(2).normal(0, 1, SHAPE).astype(np.float32)
    amax = {"r": 2.5, "a_relu": 1.5}  # deliberately clipping: some values exceed the range
    quantized = quantize_int8(model, amax, "fp32")
    got = _run(quantized, x)

    weights = {t.name: numpy_helper.to_array(t).astype(np.float64) for t in model.graph.initializer}

    def fake_quant(t: np.ndarray, scale: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(t / scale), -128, 127) * scale

    def conv(t: np.ndarray, name: str) -> np.ndarray:
        w = weights[f"{name}.w"]
        scale = np.abs(w).max(axis=(1, 2, 3), keepdims=True) / 127
        out = torch.nn.functional.conv2d(
            torch.from_numpy(t), torch.from_numpy(fake_quant(w, scale)), padding=1
        )
        return out.numpy() + weights[f"{name}.b"].reshape(1, -1, 1, 1)

    r = fake_quant(np.maximum(x.astype(np.float64), 0), amax["r"] / 127)
    a = fake_quant(np.maximum(conv(r, "conv_a"), 0), amax["a_relu"] / 127)
    expected = np.maximum(conv(a, "conv_b") + r, 0)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert abs(np.abs(got - _run(model, x)).max()) > 1e-3  # the quantization is not a no-op


def test_fp16_high_precision_graph() -> None:
    model = _residual_block("conv")
    amax = {name: 2.0 for name in activation_tensors(model)}
    fp16 = quantize_int8(model, amax, "fp16")
    onnx.checker.check_model(fp16, full_check=True)
    assert metadata(fp16)["hgdeploy.high_precision"] == "fp16"
    for value in (*fp16.graph.input, *fp16.graph.output):
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT
    initializers = {t.name: numpy_helper.to_array(t) for t in fp16.graph.initializer}
    originals = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producer = {out: n for n in fp16.graph.node for out in n.output}
    convs = {n.name: n for n in fp16.graph.node if n.op_type == "Conv"}
    for name, node in convs.items():
        dq = producer[node.input[1]]
        weight, scale = initializers[dq.input[0]], initializers[dq.input[1]]
        assert scale.dtype == np.float16 and initializers[node.input[2]].dtype == np.float16
        # The int8 weights were rounded with exactly the fp16 scale the graph stores.
        expected_weight, expected_scale = quantize_weight(originals[f"{name}.w"], 0, "fp16")
        np.testing.assert_array_equal(weight, expected_weight)
        np.testing.assert_array_equal(scale.astype(np.float32), expected_scale)
    x = np.random.default_rng(3).normal(0, 1, SHAPE).astype(np.float32)
    reference = _run(quantize_int8(model, amax, "fp32"), x)
    # fp16 activations between the int8 kernels: ~1e-3 relative per op; a handful of values
    # land on the other side of an int8 rounding boundary (one step = 2/127 of the range).
    np.testing.assert_allclose(_run(fp16, x), reference, atol=4 * 2.0 / 127, rtol=0)


def test_onnxruntime_runs_fp16_qdq_biases_as_tensorrt_does() -> None:
    """Small scales: x_scale * w_scale underflows fp16. ONNX Runtime's WeightBiasQuantization
    pass would turn the biases into int32 at that scale and destroy them; the project's session
    builder turns it off, so ORT computes what the graph (and TensorRT) says."""
    model = _residual_block("identity")
    x = np.random.default_rng(4).normal(0, 1e-3, SHAPE).astype(np.float32)
    amax = {"r": 3e-3, "a_relu": 0.05}
    reference = _run(quantize_int8(model, amax, "fp32"), x)
    fp16 = quantize_int8(model, amax, "fp16")
    got = session_builder(fp16, ["CPUExecutionProvider"])().run(None, {"x": x})[0]
    np.testing.assert_allclose(got, reference, atol=0.01 * np.abs(reference).max(), rtol=0)
    # The case does trigger the pass (if not, this ORT fixed it and the workaround can go).
    broken = _run(fp16, x)
    assert np.abs(broken - reference).max() > 0.1 * np.abs(reference).max(), (
        "ONNX Runtime's WeightBiasQuantization no longer breaks fp16 biases: "
        "onnxrt_runner.DISABLED_OPTIMIZERS may be dropped"
    )


def test_scales_are_floored_and_fp16_representable() -> None:
    assert symmetric_scale(0.0, "fp32") == MIN_SCALE["fp32"] > 0
    assert symmetric_scale(0.0, "fp16") == np.float32(2.0**-14)
    for amax in (1e-3, 0.37, 3.0, 1234.5):
        scale = symmetric_scale(amax, "fp16")
        assert scale == np.float32(np.float16(scale))
        assert abs(scale - amax / 127) <= max(2.0**-14, abs(amax / 127) * 2.0**-11)


def test_rejects_old_opsets_and_bad_ranges() -> None:
    old = _residual_block("identity", opset=18)
    amax = {"r": 1.0, "a_relu": 1.0}
    quantize_int8(old, amax, "fp32")  # fp32 scales: any opset >= 13
    with pytest.raises(HgDeployError, match="opset >= 19"):
        quantize_int8(old, amax, "fp16")
    model = _residual_block("identity")
    with pytest.raises(HgDeployError, match="lack 1 of the 2"):
        quantize_int8(model, {"r": 1.0})
    with pytest.raises(HgDeployError, match="not finite"):
        quantize_int8(model, {"r": 1.0, "a_relu": float("nan")})
    with pytest.raises(HgDeployError, match="high precision must be"):
        quantize_int8(model, amax, "bf16")
    # A range no scale can hold (a corrupt cache) is refused, not written as an inf scale.
    with pytest.raises(HgDeployError, match="gives a scale fp16 cannot hold"):
        quantize_int8(model, {"r": 1e300, "a_relu": 1.0}, "fp16")
    with pytest.raises(HgDeployError, match="gives a scale fp32 cannot hold"):
        quantize_int8(model, {"r": 1e300, "a_relu": 1.0}, "fp32")


def _run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session.run(None, {"x": x})[0]
