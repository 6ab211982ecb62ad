"""Per-layer int8 sensitivity: on a small conv net with one layer whose weights int8 cannot
represent (a huge weight per output channel beside ordinary ones), that layer ranks first, and
`keep` leaves exactly the named layers unquantized."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from hgdeploy.base.errors import HgDeployError
from hgdeploy.precision.calibration import calibrate
from hgdeploy.precision.fallback import TargetUnreachable, fall_back_to_target
from hgdeploy.precision.int8 import layer_names, quantize_int8
from hgdeploy.precision.sensitivity import layer_sensitivity

CHANNELS = 4


def _conv(name: str, source: str, weight: np.ndarray, output: str) -> tuple:
    bias = np.zeros(weight.shape[0], np.float32)
    node = helper.make_node("Conv", [source, f"{name}_w", f"{name}_b"], [output], name=name,
                            pads=[1, 1, 1, 1])  # fmt: skip
    return node, [numpy_helper.from_array(weight, f"{name}_w"),
                  numpy_helper.from_array(bias, f"{name}_b")]  # fmt: skip


def broken_net() -> onnx.ModelProto:
    """conv_a -> relu -> conv_b -> relu -> conv_c; conv_a's last channel is dead (all zero), and
    conv_b gives every output channel a 1e4 weight on it: per-channel int8 scales of 1e4/127
    round all of conv_b's real weights (~N(0, 0.3)) to zero, though the output never sees 1e4."""
    rng = np.random.default_rng(0)
    a = rng.normal(scale=0.3, size=(CHANNELS, CHANNELS, 3, 3)).astype(np.float32)
    a[-1] = 0
    b = rng.normal(scale=0.3, size=(CHANNELS, CHANNELS, 3, 3)).astype(np.float32)
    b[:, -1, 1, 1] = 1e4
    c = rng.normal(scale=0.3, size=(CHANNELS, CHANNELS, 3, 3)).astype(np.float32)
    nodes, weights = [], []
    for name, source, weight, output in (("conv_a", "x", a, "ya"), ("conv_b", "ra", b, "yb"),
                                         ("conv_c", "rb", c, "y")):  # fmt: skip
        node, tensors = _conv(name, source, weight, output)
        nodes.append(node)
        weights.extend(tensors)
        if output != "y":
            nodes.append(
                helper.make_node("Relu", [output], ["r" + output[1:]], name=f"relu_{output}")
            )
    graph = helper.make_graph(
        nodes, "broken",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", CHANNELS, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", CHANNELS, 16, 16])],
        weights,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def calibrated() -> tuple[onnx.ModelProto, dict[str, float], list[dict[str, np.ndarray]]]:
    model = broken_net()
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.normal(size=(2, CHANNELS, 16, 16)).astype(np.float32)} for _ in range(3)]
    return model, calibrate(model, feeds), feeds


def test_the_layer_int8_cannot_represent_ranks_first(calibrated: tuple) -> None:
    model, amax, feeds = calibrated
    ranking = layer_sensitivity(model, amax, feeds, ["y"])
    assert ranking[0].layer == "conv_b"
    assert ranking[0].relative_l2 > 0.5  # its real weights all round to zero
    assert all(s.relative_l2 < 0.05 for s in ranking[1:])
    assert {s.layer for s in ranking} == {"conv_a", "conv_b", "conv_c"}


def test_keep_leaves_exactly_the_named_layers_in_float(calibrated: tuple) -> None:
    model, amax, _ = calibrated
    assert layer_names(model) == ["conv_a", "conv_b", "conv_c"]
    kept = quantize_int8(model, amax, "fp32", keep={"conv_b"})
    nodes = {node.name: node for node in kept.graph.node}
    assert nodes["conv_b"].input[0] == "ra" and nodes["conv_b"].input[1] == "conv_b_w"
    assert nodes["conv_a"].input[0] != "x" and nodes["conv_c"].input[0] != "rb"
    dequantized = [n.input[0] for n in kept.graph.node if n.op_type == "DequantizeLinear"]
    assert sum("conv_b_w" in name for name in dequantized) == 0
    with pytest.raises(HgDeployError, match="no quantizable layer named 'relu_ya'"):
        quantize_int8(model, amax, "fp32", keep={"relu_ya"})


def test_the_fallback_keeps_the_broken_layer_and_stops_at_the_target(calibrated: tuple) -> None:
    """Score: 1 - the output's relative L2 error against fp32 (a stand-in for AP)."""
    model, amax, feeds = calibrated

    def rank() -> list[str]:
        return [s.layer for s in layer_sensitivity(model, amax, feeds, ["y"])]

    reference = np.concatenate([_run(model, feeds)])
    calls: list[list[str]] = []

    def score(kept: list[str]) -> float:
        calls.append(kept)
        out = _run(quantize_int8(model, amax, "fp32", keep=set(kept)), feeds)
        return 1 - float(np.linalg.norm(out - reference) / np.linalg.norm(reference))

    result = fall_back_to_target(rank, score, target=0.95)
    assert result.kept_layers == ["conv_b"] and result.score >= 0.95
    assert [step.kept for step in result.steps] == [0, 3, 1]  # plain, all, then bisection
    assert calls[0] == [] and result.steps[0].score < 0.5


def test_an_unreachable_target_stops_with_how_close_it_got() -> None:
    scores = {0: 0.2, 1: 0.5, 2: 0.6}
    with pytest.raises(TargetUnreachable) as excinfo:
        fall_back_to_target(lambda: ["a", "b"], lambda kept: scores[len(kept)], target=0.9)
    message = str(excinfo.value)
    assert "\n" not in message and "0.6000" in message and "plain int8 scores 0.2000" in message


def test_when_every_layer_misses_the_counts_between_are_swept() -> None:
    """Non-monotone scores (the HRNet stand-in's U8S8 AP was): all layers miss, 4 of 8 meet,
    so 1, 2 and 4 are measured and 4 is the answer."""
    scores = {0: 0.2, 1: 0.3, 2: 0.4, 4: 0.95, 8: 0.6}
    ranking = [f"layer{i}" for i in range(8)]
    result = fall_back_to_target(lambda: ranking, lambda kept: scores[len(kept)], target=0.9)
    assert result.kept_layers == ranking[:4] and result.score == 0.95
    assert [s.kept for s in result.steps] == [0, 8, 1, 2, 4]


def test_a_met_target_keeps_nothing() -> None:
    def never() -> list[str]:
        raise AssertionError("ranked although plain int8 met the target")

    result = fall_back_to_target(never, lambda kept: 1.0, target=0.9)
    assert result.kept_layers == [] and [s.kept for s in result.steps] == [0]


def _run(model: onnx.ModelProto, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    from hgdeploy.precision.quality import run_all

    return np.concatenate([run[0] for run in run_all(model, feeds, ["y"], None)])
