"""Corner pools through ONNX: plugin-form export, and the lowering's exactness on ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from hgdeploy.base.errors import HgDeployError
from hgdeploy.exporters.corner_pool_ops import (
    DOMAIN,
    OP_TYPES,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    corner_pool_opset_import,
    count_corner_pool_nodes,
    custom_translation_table,
    make_corner_pool_node,
    register_corner_pool_schemas,
)
from hgdeploy.exporters.lowering import lower_corner_pools
from hgdeploy.models.corner_pool import (
    CUSTOM_OPS,
    DIRECTIONS,
    BottomPool,
    LeftPool,
    RightPool,
    TopPool,
)

OUTPUTS = ("top", "left", "bottom", "right")
# (H, W) of the exported models: 1, 2, odd, a power of two, on both pooled axes.
EXPORT_SIZES = [(1, 2), (2, 1), (7, 5), (128, 128)]
LOWERING_SIZES = [1, 2, 3, 5, 7, 8, 9, 128, 129]
# Upstream `_cpools` semantics written out independently of DIRECTIONS: (axis, suffix max?).
UPSTREAM_SEMANTICS = {
    "TopPool": (2, True),  # out[.., i, :] = max over rows j >= i
    "BottomPool": (2, False),  # rows j <= i
    "LeftPool": (3, True),  # columns j >= i
    "RightPool": (3, False),  # columns j <= i
}


class FourPools(torch.nn.Module):
    """All four pools on one input, each its own output, so every pool is compared exactly."""

    def __init__(self) -> None:
        super().__init__()
        self.top, self.left = TopPool(), LeftPool()
        self.bottom, self.right = BottomPool(), RightPool()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.top(x), self.left(x), self.bottom(x), self.right(x)


def tricky_input(shape: tuple[int, ...], dtype: np.dtype, seed: int = 0) -> np.ndarray:
    """Small integers (many ties) plus -inf, +inf and the dtype's extremes."""
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, size=shape).astype(dtype)
    flat = x.reshape(-1)
    info = np.finfo(dtype)
    specials = np.array([-np.inf, np.inf, info.max, info.min, -np.inf], dtype=dtype)
    picks = rng.choice(flat.size, size=min(flat.size, 2 * len(specials)), replace=False)
    flat[picks] = np.resize(specials, picks.size)
    if x.shape[2] > 1:
        x[0, 0, 1] = -np.inf  # a whole row of -inf
    return x


def pooled_shape(direction_name: str, size: int, other: int = 3) -> tuple[int, int, int, int]:
    """An NCHW shape whose pooled axis has ``size`` elements and the other spatial one ``other``."""
    pools_rows = UPSTREAM_SEMANTICS[direction_name][0] == 2
    return (2, 2, size, other) if pools_rows else (2, 2, other, size)


def brute_force(x: np.ndarray, direction_name: str) -> np.ndarray:
    """Upstream `_cpools` semantics by explicit loops (independent of the cummax reference)."""
    axis, suffix = UPSTREAM_SEMANTICS[direction_name]
    moved = np.moveaxis(x, axis, -1)
    out = np.empty_like(moved)
    for i in range(moved.shape[-1]):
        window = moved[..., i:] if suffix else moved[..., : i + 1]
        out[..., i] = window.max(axis=-1)
    return np.moveaxis(out, -1, axis)


def export_four_pools(height: int, width: int, path: Path) -> onnx.ModelProto:
    torch.onnx.export(
        FourPools().eval(),
        (torch.zeros(2, 3, height, width),),
        path,
        dynamo=True,
        external_data=False,
        custom_translation_table=custom_translation_table(),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        input_names=["x"],
        output_names=list(OUTPUTS),
        verbose=False,
    )
    return onnx.load(path)


Exports = dict[tuple[int, int], onnx.ModelProto]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    folder = tmp_path_factory.mktemp("corner_pool_onnx")
    return {
        (h, w): export_four_pools(h, w, folder / f"pools_{h}x{w}.onnx") for h, w in EXPORT_SIZES
    }


def run_ort(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def single_pool_model(
    direction_name: str, dims: list[int | str], elem_type: int = TensorProto.FLOAT
) -> onnx.ModelProto:
    """A hand-built plugin-form model: x -> pool -> y."""
    graph = helper.make_graph(
        [make_corner_pool_node(direction_name, "x", "y", name="pool")],
        "single_pool",
        [helper.make_tensor_value_info("x", elem_type, dims)],
        [helper.make_tensor_value_info("y", elem_type, dims)],
    )
    opsets = [helper.make_opsetid("", 20), corner_pool_opset_import()]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


# --- (3) the torch reference against brute force ---------------------------------------------


@pytest.mark.parametrize("direction_name", OP_TYPES)
@pytest.mark.parametrize("size", [1, 2, 7, 128])
def test_torch_reference_matches_brute_force(direction_name: str, size: int) -> None:
    x = tricky_input(pooled_shape(direction_name, size, other=9), np.float32)
    got = CUSTOM_OPS[direction_name](torch.from_numpy(x)).numpy()
    assert np.array_equal(got, brute_force(x, direction_name))


# --- (1) plugin-form export --------------------------------------------------------------------


def test_export_has_one_plugin_node_per_pool(exported: Exports) -> None:
    model = exported[(7, 5)]
    assert count_corner_pool_nodes(model) == {name: 1 for name in OP_TYPES}
    for node in model.graph.node:
        if node.op_type in DIRECTIONS:
            attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            assert node.domain == DOMAIN
            assert attributes == {
                "plugin_version": PLUGIN_VERSION.encode(),
                "plugin_namespace": PLUGIN_NAMESPACE.encode(),
                "aot": 1,  # TensorRT picks the AOT (PTX) implementation
            }
    assert [o.name for o in model.graph.output] == list(OUTPUTS)
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch
    onnx.checker.check_model(model, full_check=True)


def test_export_writes_a_single_file(tmp_path: Path) -> None:
    export_four_pools(2, 3, tmp_path / "pools.onnx")
    assert [p.name for p in tmp_path.iterdir()] == ["pools.onnx"]


def test_schema_registration_is_idempotent() -> None:
    register_corner_pool_schemas()
    register_corner_pool_schemas()
    for op_type in OP_TYPES:
        schema = onnx.defs.get_schema(op_type, 1, DOMAIN)
        assert set(schema.attributes) == {"plugin_version", "plugin_namespace", "aot"}
        assert not schema.attributes["aot"].required


def test_checker_requires_plugin_attributes() -> None:
    model = single_pool_model("TopPool", [1, 1, 4, 4])
    del model.graph.node[0].attribute[:]
    register_corner_pool_schemas()
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model, full_check=True)


# --- (2) lowering ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", EXPORT_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_lowered_export_is_exact_on_ort(exported: Exports, size: tuple[int, int]) -> None:
    plugin_form = exported[size]
    lowered = lower_corner_pools(plugin_form)
    assert sum(count_corner_pool_nodes(lowered).values()) == 0
    assert DOMAIN not in {op.domain for op in lowered.opset_import}
    assert [o.name for o in lowered.graph.output] == list(OUTPUTS)
    assert lowered.ir_version == plugin_form.ir_version <= 10
    onnx.checker.check_model(lowered, full_check=True)
    for batch in (1, 3):
        x = tricky_input((batch, 3, *size), np.float32, seed=batch)
        expected = [t.numpy() for t in FourPools()(torch.from_numpy(x))]
        for got, want in zip(run_ort(lowered, {"x": x}), expected, strict=True):
            assert np.array_equal(got, want)


def test_lowering_unrolls_ceil_log2_steps(exported: Exports) -> None:
    lowered = lower_corner_pools(exported[(7, 5)])
    maxes = sum(node.op_type == "Max" for node in lowered.graph.node)
    assert maxes == 2 * 3 + 2 * 3  # H = 7 and W = 5 both take 3 doubling steps


@pytest.mark.parametrize("direction_name", OP_TYPES)
@pytest.mark.parametrize(
    "elem_type, dtype",
    [(TensorProto.FLOAT, np.float32), (TensorProto.FLOAT16, np.float16)],
    ids=["fp32", "fp16"],
)
def test_lowered_hand_built_pool_is_exact(direction_name: str, elem_type: int, dtype: type) -> None:
    for size in LOWERING_SIZES:
        shape = pooled_shape(direction_name, size)
        model = lower_corner_pools(single_pool_model(direction_name, ["N", *shape[1:]], elem_type))
        onnx.checker.check_model(model, full_check=True)
        x = tricky_input(shape, dtype, seed=size)
        (got,) = run_ort(model, {"x": x})
        assert got.dtype == dtype
        assert np.array_equal(got, brute_force(x, direction_name)), size


class TopLeftCorner(torch.nn.Module):
    """CornerNet's top-left corner pooling: each pool sees a convolution's output."""

    def __init__(self) -> None:
        super().__init__()
        self.p1_conv1 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.p2_conv1 = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.top, self.left = TopPool(), LeftPool()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.top(self.p1_conv1(x)) + self.left(self.p2_conv1(x))


def test_lowering_infers_shapes_behind_weights(tmp_path: Path) -> None:
    """Pool inputs with no value_info: shape inference runs through weight-stripped convs."""
    torch.manual_seed(0)
    module = TopLeftCorner().eval()
    path = tmp_path / "top_left.onnx"
    torch.onnx.export(
        module,
        (torch.zeros(2, 16, 9, 6),),
        path,
        dynamo=True,
        external_data=False,
        custom_translation_table=custom_translation_table(),
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    model = onnx.load(path)
    del model.graph.value_info[:]
    lowered = lower_corner_pools(model)
    onnx.checker.check_model(lowered, full_check=True)
    x = np.random.default_rng(0).standard_normal((3, 16, 9, 6)).astype(np.float32)
    (got,) = run_ort(lowered, {lowered.graph.input[0].name: x})
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # the convs may round differently


def test_chained_pools_in_any_domain_are_lowered() -> None:
    """Pool -> pool (shape inference sees through the first), and a foreign plugin domain."""
    nodes = [
        make_corner_pool_node("TopPool", "x", "t", name="top"),
        make_corner_pool_node("LeftPool", "t", "y", name="left", domain="trt.plugins"),
    ]
    dims: list[int | str] = ["N", 1, 5, 6]
    graph = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    opsets = [
        helper.make_opsetid("", 20),
        corner_pool_opset_import(),
        helper.make_opsetid("trt.plugins", 1),
    ]
    lowered = lower_corner_pools(helper.make_model(graph, opset_imports=opsets, ir_version=10))
    assert [op.domain for op in lowered.opset_import] == [""]
    onnx.checker.check_model(lowered, full_check=True)
    x = tricky_input((2, 1, 5, 6), np.float32)
    (got,) = run_ort(lowered, {"x": x})
    assert np.array_equal(got, brute_force(brute_force(x, "TopPool"), "LeftPool"))


def test_only_the_scanned_axis_must_be_static() -> None:
    model = lower_corner_pools(single_pool_model("TopPool", ["N", 2, 4, "W"]))
    x = tricky_input((1, 2, 4, 7), np.float32)
    (got,) = run_ort(model, {"x": x})
    assert np.array_equal(got, brute_force(x, "TopPool"))


# --- (4) dynamic H/W ---------------------------------------------------------------------------


@pytest.mark.parametrize("direction_name", OP_TYPES)
def test_dynamic_pooled_axis_is_a_clear_error(direction_name: str) -> None:
    model = single_pool_model(direction_name, ["N", 3, "H", "W"])
    with pytest.raises(HgDeployError, match=r"dynamic.*static input height and width"):
        lower_corner_pools(model)


def test_lowering_without_pools_is_a_copy() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "plain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)
    lowered = lower_corner_pools(model)
    assert lowered == model and lowered is not model


def test_int8_targets_leave_the_infinity_padded_shift_chains_in_float() -> None:
    """The lowering pads with -inf (a max never picks it); MinMax would give those tensors an
    infinite range, so ONNX Runtime's U8S8 quantizer is told to skip every Pad, Slice and Max
    of the chains (and nothing else)."""
    from hgdeploy.precision.onnxruntime_int8 import infinity_padded_nodes

    model = lower_corner_pools(single_pool_model("TopPool", ["N", 2, 8, 5], TensorProto.FLOAT))
    excluded = infinity_padded_nodes(model)
    chain = [n.name for n in model.graph.node if n.op_type in ("Pad", "Slice", "Max")]
    assert sorted(excluded) == sorted(chain) and len(chain) == 3 * 3  # ceil(log2(8)) steps


@pytest.mark.parametrize("method", ["max", "percentile"])
def test_onnx_runtime_calibrators_never_see_the_infinite_shift_tensors(
    method: str, tmp_path: Path
) -> None:
    """Conv -> TopPool -> Conv, lowered, quantized by ONNX Runtime U8S8 with each of its
    calibrators: its histogram method failed on the -inf Pad outputs (range [0, inf]) until
    Pad and Slice left its op types; every cached range is finite and both convs are int8."""
    from hgdeploy.precision.calibration_methods import CalibrationChoice
    from hgdeploy.precision.onnxruntime_int8 import quantize_u8s8

    rng = np.random.default_rng(0)
    weight = [numpy_helper.from_array(rng.standard_normal((2, 2, 1, 1)).astype(np.float32), n)
              for n in ("w1", "w2")]  # fmt: skip
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"], name="conv1"),
         make_corner_pool_node("TopPool", "a", "b", name="pool"),
         helper.make_node("Conv", ["b", "w2"], ["y"], name="conv2")],
        "conv_pool_conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2, 8, 5])],
        weight,
    )  # fmt: skip
    opsets = [helper.make_opsetid("", 20), corner_pool_opset_import()]
    lowered = lower_corner_pools(helper.make_model(graph, opset_imports=opsets, ir_version=10))
    feeds = [{"x": rng.standard_normal((1, 2, 8, 5)).astype(np.float32)} for _ in range(3)]
    choice = CalibrationChoice.from_options(method, 99.9 if method == "percentile" else None)
    model = quantize_u8s8(lowered, feeds=feeds, cache=tmp_path / "cache.json", write_cache=True,
                          choice=choice)  # fmt: skip
    ranges = json.loads((tmp_path / "cache.json").read_text())
    assert all(np.isfinite(v).all() for v in _numbers(ranges)) and ranges
    dequantized = {o for n in model.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert len(convs) == 2 and all(n.input[0] in dequantized for n in convs)


def _numbers(value: object) -> list[float]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    return [float(value)] if isinstance(value, (int, float)) else []
