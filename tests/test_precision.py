"""Precision preparation (fp16 conversion, int8 calibration + Q/DQ) on real exports.

Two small zoo models with synthetic weights, each exported once: ``squeeze`` (corner-pool
plugin nodes, ConvTranspose, BatchNorm after Concat) and ``hrnet`` (no pools, Resize, folded
BN). Quality is measured on ONNX Runtime CPU on two bundled sample images that int8
calibration does not see.

Bounds, from measurements (2 held-out images, seed-0 synthetic weights):

* fp16: relative L2 0.003-0.007 per output (11-bit mantissa: ~5e-4 rounding per op, summed
  over ~100 layers); bound 0.02. Peak agreement 0.97-1.0; bound 0.85 (HRNet's synthetic
  heatmaps have near-ties, so one argmax in 34 can flip under any rounding).
* int8 (Conv and residual-Add inputs quantized, other layers fp16): relative L2 0.14-0.27 per
  output, peak agreement 0.55-0.70 (Squeeze top-20 corners) and 0.26 (HRNet per-joint argmax;
  chance is 1/3072). Random-weight networks amplify rounding noise far more than trained ones:
  weight rounding alone, with exact activations, gives 0.15 on HRNet, and ONNX Runtime's own
  quantize_static (MinMax, per-channel, symmetric, Conv only) measured 0.21 on the same HRNet;
  quantizing the residual Adds too adds 0.00-0.03, fp16 instead of fp32 layers -0.01-+0.01. A
  real defect is far outside the bounds: activation scales 4x too small or 8x too large
  measured 0.6-1.4 relative L2 and peak agreement 0.0-0.28. Bounds: relative L2 0.35, peak
  agreement 0.4 (Squeeze) / 0.2 (HRNet).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from PIL import Image

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.images import sample_images
from hgdeploy.base.onnx_files import metadata
from hgdeploy.base.zoo import get_spec
from hgdeploy.exporters.corner_pool_ops import (
    count_corner_pool_nodes,
    is_corner_pool_node,
    register_corner_pool_schemas,
)
from hgdeploy.exporters.onnx_export import export_to_file
from hgdeploy.precision.calibration import (
    CACHE_FORMAT,
    calibrate,
    calibration_feeds,
    read_calibration_cache,
    write_calibration_cache,
)
from hgdeploy.precision.calibration_methods import CalibrationChoice
from hgdeploy.precision.int8 import quantize_int8
from hgdeploy.precision.qdq_placement import activation_tensors, quantized_inputs
from hgdeploy.precision.tensorrt_graphs import (
    HOLDOUT_SAMPLES,
    PreparedModel,
    calibration_cache_path,
    prepare_precision,
)

pytestmark = pytest.mark.slow

MODELS = ("squeeze", "hrnet")
PLUGIN_NODES = {"squeeze": 4, "hrnet": 0}
FP16_MAX_REL_L2 = 0.02
FP16_MIN_PEAKS = 0.85
INT8_MAX_REL_L2 = 0.35
INT8_MIN_PEAKS = {"squeeze": 0.4, "hrnet": 0.2}
# The int8 graphs checked: the default (fp16 layers) for both models, and fp32 layers for one.
INT8_GRAPHS = [("squeeze", "int8"), ("hrnet", "int8"), ("squeeze", "int8-fp32")]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("precision")


@pytest.fixture(scope="module")
def fp32_onnx(workdir: Path) -> dict[str, Path]:
    """{model: plugin-form fp32 ONNX}, each exported once (15-25 s each)."""
    return {name: export_to_file(name, output=workdir / f"{name}.onnx").path for name in MODELS}


@pytest.fixture(scope="module")
def prepared(workdir: Path, fp32_onnx: dict[str, Path]) -> dict[tuple[str, str], PreparedModel]:
    """{(model, precision): prepare_precision(...) with the default sample images}."""
    results = {}
    for name in MODELS:
        for precision in ("fp16", "int8"):
            results[name, precision] = prepare_precision(
                name,
                fp32_onnx[name],
                precision,
                workdir / f"{name}_{precision}.onnx",
                calib_dir=None,
                calib_cache=None,
                calib_batches=8,
                checkpoint_info=None,
            )
    # fp32 layers from the same ranges (the cache): the Q/DQ placement and int8 values are the
    # same, only the type of everything else differs.
    results["squeeze", "int8-fp32"] = prepare_precision(
        "squeeze",
        fp32_onnx["squeeze"],
        "int8",
        workdir / "squeeze_int8-fp32.onnx",
        calib_cache=results["squeeze", "int8"].calibration_cache,
        measure_quality=False,
        high_precision="fp32",
    )
    return results


def _load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path))


def _full_check(model: onnx.ModelProto) -> None:
    register_corner_pool_schemas()
    onnx.checker.check_model(model, full_check=True)


def _one_line_error(excinfo: pytest.ExceptionInfo[HgDeployError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# -- fp16 ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_fp16_graph_keeps_fp32_io_and_fp16_weights(
    name: str, prepared: dict, fp32_onnx: dict[str, Path]
) -> None:
    model = _load(prepared[name, "fp16"].path)
    _full_check(model)
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT, value.name
    initializers = {t.name: t for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    assert convs and all(initializers[n.input[1]].data_type == TensorProto.FLOAT16 for n in convs)
    fp32_left = [t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT]
    # Only Resize scales may stay fp32 (the schema allows nothing else).
    resize_scales = {n.input[2] for n in model.graph.node if n.op_type == "Resize"}
    assert {t.name for t in fp32_left} <= resize_scales
    assert metadata(model)["hgdeploy.precision"] == "fp16"
    assert count_corner_pool_nodes(model) == count_corner_pool_nodes(_load(fp32_onnx[name]))


def test_fp16_plugin_nodes_run_in_fp16(prepared: dict) -> None:
    register_corner_pool_schemas()
    model = onnx.shape_inference.infer_shapes(_load(prepared["squeeze", "fp16"].path))
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    pools = [n for n in model.graph.node if is_corner_pool_node(n)]
    assert len(pools) == PLUGIN_NODES["squeeze"]
    for node in pools:
        assert types[node.input[0]] == TensorProto.FLOAT16
        assert types[node.output[0]] == TensorProto.FLOAT16
        assert node.attribute  # plugin_version / plugin_namespace survive the conversion


@pytest.mark.parametrize("name", MODELS)
def test_fp16_outputs_close_to_fp32(name: str, prepared: dict) -> None:
    result = prepared[name, "fp16"]
    report = result.quality
    assert report is not None and report.samples == len(HOLDOUT_SAMPLES)
    assert {row.output for row in report.rows} == set(get_spec(name).output_names)
    for row in report.rows:
        assert row.relative_l2 < FP16_MAX_REL_L2, row
        if row.peak_agreement is not None:
            assert row.peak_agreement >= FP16_MIN_PEAKS, row
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["precision"] == "fp16" and sidecar["model"] == name
    assert sidecar["quality"]["images"] == list(HOLDOUT_SAMPLES)
    assert len(sidecar["source"]["sha256"]) == 64
    json.loads(report.to_json())


# -- int8 ----------------------------------------------------------------------------------


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {output: node for node in model.graph.node for output in node.output}


@pytest.mark.parametrize("key", INT8_GRAPHS, ids="-".join)
def test_int8_qdq_on_every_conv_input(
    key: tuple[str, str], prepared: dict, fp32_onnx: dict[str, Path]
) -> None:
    model = _load(prepared[key].path)
    _full_check(model)
    high = np.float16 if key[1] == "int8" else np.float32
    producer = _producers(model)
    initializers = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    convs = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    for conv in convs:
        dq = producer[conv.input[0]]
        assert dq.op_type == "DequantizeLinear", conv.name
        assert producer[dq.input[0]].op_type == "QuantizeLinear", conv.name
        assert initializers[dq.input[1]].shape == () and initializers[dq.input[1]].dtype == high
        assert initializers[dq.input[2]].dtype == np.int8 and initializers[dq.input[2]] == 0
        weight_dq = producer[conv.input[1]]
        assert weight_dq.op_type == "DequantizeLinear", conv.name
        weight = initializers[weight_dq.input[0]]
        scale, zero = initializers[weight_dq.input[1]], initializers[weight_dq.input[2]]
        axis = onnx.helper.get_attribute_value(weight_dq.attribute[0])
        assert axis == (0 if conv.op_type == "Conv" else 1)
        assert weight.dtype == np.int8 and scale.dtype == high
        assert scale.shape == (weight.shape[axis],) and np.all(scale > 0)
        assert zero.dtype == np.int8 and zero.shape == scale.shape and not zero.any()
        if len(conv.input) > 2:  # biases stay in the high-precision type
            assert initializers[conv.input[2]].dtype == high
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == TensorProto.FLOAT, value.name
    ops = [n.op_type for n in model.graph.node]
    quantized = activation_tensors(_load(fp32_onnx[key[0]]))
    assert ops.count("QuantizeLinear") == len(quantized)
    assert ops.count("DequantizeLinear") == len(quantized) + len(convs)
    assert metadata(model)["hgdeploy.precision"] == "int8"
    assert metadata(model)["hgdeploy.high_precision"] == high.__name__.replace("float", "fp")


@pytest.mark.parametrize("key", INT8_GRAPHS, ids="-".join)
def test_int8_residual_adds_read_a_quantized_skip(
    key: tuple[str, str], prepared: dict, fp32_onnx: dict[str, Path]
) -> None:
    """Each residual Add reads its skip through Q/DQ and its conv branch directly (fusible)."""
    model = _load(prepared[key].path)
    producer = _producers(model)
    residual = 0
    for add in (n for n in model.graph.node if n.op_type == "Add"):
        kinds = [producer[i].op_type if i in producer else "input" for i in add.input]
        if "DequantizeLinear" not in kinds:
            continue
        residual += 1
        assert kinds.count("DequantizeLinear") == 1, add.name
        branch = producer[add.input[1 - kinds.index("DequantizeLinear")]]
        while branch.op_type in ("Relu", "BatchNormalization"):
            branch = producer[branch.input[0]]
        assert branch.op_type in ("Conv", "ConvTranspose"), add.name
    sites = quantized_inputs(_load(fp32_onnx[key[0]]))
    assert residual == sum(site.reason == "residual" for site in sites) > 0
    sidecar = json.loads(prepared[key].sidecar.read_text())
    assert sidecar["quantization"]["residual_add_inputs"] == residual


@pytest.mark.parametrize("name", MODELS)
def test_int8_outputs_close_to_fp32(name: str, prepared: dict) -> None:
    result = prepared[name, "int8"]
    report = result.quality
    assert report is not None
    for row in report.rows:
        assert row.relative_l2 < INT8_MAX_REL_L2, row
        if row.peak_agreement is not None:
            assert row.peak_agreement >= INT8_MIN_PEAKS[name], row
    sidecar = json.loads(result.sidecar.read_text())
    calibration = sidecar["calibration"]
    assert calibration["method"] == "max"
    assert not set(calibration["images"]) & set(sidecar["quality"]["images"])
    assert sidecar["quantization"]["plugin_nodes"]["TopPool"] == PLUGIN_NODES[name] // 4
    assert sidecar["quantization"]["plugin_dtype"] == sidecar["quantization"]["high_precision"]
    assert Path(calibration["cache"]) == calibration_cache_path(result.path)


def test_cache_reproduces_the_same_model(prepared: dict, fp32_onnx: dict, workdir: Path) -> None:
    first = prepared["squeeze", "int8"]
    again = prepare_precision(
        "squeeze",
        fp32_onnx["squeeze"],
        "int8",
        workdir / "again.onnx",
        calib_dir=None,
        calib_cache=first.calibration_cache,
        calib_batches=8,
        checkpoint_info=None,
        measure_quality=False,
    )
    assert again.path.read_bytes() == first.path.read_bytes()
    assert again.calibration_cache == first.calibration_cache
    assert not calibration_cache_path(again.path).exists()  # reused, not rewritten
    calibration = json.loads(again.sidecar.read_text())["calibration"]
    assert calibration["cache_from_this_source"] and calibration["method"] == "max"


def test_calibration_from_a_directory_holds_out_the_rest(
    fp32_onnx: dict[str, Path], workdir: Path
) -> None:
    images = workdir / "calib"
    images.mkdir()
    for name, pixels in sample_images(("chelsea", "coffee")):
        Image.fromarray(pixels).save(images / f"{name}.png")
    result = prepare_precision(
        "hrnet",
        fp32_onnx["hrnet"],
        "int8",
        workdir / "hrnet_dir.onnx",
        calib_dir=images,
        calib_cache=None,
        calib_batches=1,
        checkpoint_info={"seed": 0},
    )
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["calibration"]["images"] == ["chelsea.png"]
    assert sidecar["quality"]["images"] == ["coffee.png"]
    cache = read_calibration_cache(result.calibration_cache)
    assert cache["model"] == "hrnet" and cache["weights_info"] == {"seed": 0}


# -- calibration pieces ----------------------------------------------------------------------


def test_calibration_feeds_fill_the_last_batch() -> None:
    spec = get_spec("hrnet")
    pixels = [p for _, p in sample_images(("chelsea", "coffee", "rocket"))]
    feeds = calibration_feeds(spec, pixels, batch=2)
    assert [f["image"].shape for f in feeds] == [(2, 3, 256, 192)] * 2
    np.testing.assert_array_equal(feeds[1]["image"][1], feeds[0]["image"][0])


def test_calibrate_measures_absolute_max(fp32_onnx: dict[str, Path], workdir: Path) -> None:
    spec = get_spec("hrnet")
    model = _load(fp32_onnx["hrnet"])
    feeds = calibration_feeds(spec, [p for _, p in sample_images(("rocket",))], 1)
    amax = calibrate(model, feeds)
    assert list(amax) == activation_tensors(model)
    assert amax["image"] == float(np.abs(feeds[0]["image"]).max())
    path = write_calibration_cache(workdir / "c.json", amax, {"model": "hrnet"})
    assert read_calibration_cache(path)["amax"] == amax  # exact float round trip
    first = quantize_int8(model, amax).SerializeToString()
    assert quantize_int8(model, read_calibration_cache(path)["amax"]).SerializeToString() == first


# -- bad inputs ------------------------------------------------------------------------------


def _prepare_int8(fp32: Path, out: Path, **kwargs: object) -> PreparedModel:
    options = {
        "calib_dir": None,
        "calib_cache": None,
        "calib_batches": 8,
        "checkpoint_info": None,
        "measure_quality": False,
        **kwargs,
    }
    return prepare_precision("squeeze", fp32, "int8", out, **options)


def test_rejects_missing_and_empty_calibration_dirs(fp32_onnx: dict, workdir: Path) -> None:
    with pytest.raises(HgDeployError) as missing:
        _prepare_int8(fp32_onnx["squeeze"], workdir / "x.onnx", calib_dir=workdir / "nope")
    assert "not found" in _one_line_error(missing)
    empty = workdir / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(HgDeployError) as no_images:
        _prepare_int8(fp32_onnx["squeeze"], workdir / "x.onnx", calib_dir=empty)
    assert "no " in _one_line_error(no_images)
    assert not (workdir / "x.onnx").exists()


def test_rejects_bad_caches(prepared: dict, fp32_onnx: dict, workdir: Path) -> None:
    squeeze = fp32_onnx["squeeze"]
    corrupt = workdir / "corrupt.calib.json"
    corrupt.write_text('{"format": "%s", "amax": {"a": ' % CACHE_FORMAT)
    other_model = prepared["hrnet", "int8"].calibration_cache
    record = json.loads(prepared["squeeze", "int8"].calibration_cache.read_text())
    other_weights = workdir / "seed1.calib.json"
    other_weights.write_text(json.dumps({**record, "weights_info": {"seed": 1}}))
    partial = workdir / "partial.calib.json"
    partial.write_text(json.dumps({**record, "amax": {"image": 1.0}}))
    older = workdir / "older.calib.json"
    older.write_text(json.dumps({**record, "format": "hgdeploy-calibration/1"}))
    cases = {
        workdir / "absent.json": "not found",
        corrupt: "corrupt",
        other_model: "is for model 'hrnet'",
        other_weights: "other weights",
        partial: "different graph",
        older: "older calibration cache",
    }
    for cache, expected in cases.items():
        with pytest.raises(HgDeployError) as excinfo:
            _prepare_int8(squeeze, workdir / "x.onnx", calib_cache=cache)
        assert expected in _one_line_error(excinfo), cache


def test_rejects_wrong_sources_and_options(prepared: dict, fp32_onnx: dict, workdir: Path) -> None:
    out = workdir / "y.onnx"
    cases = [
        (("hrnet", fp32_onnx["squeeze"], "fp16"), {}, "exported from 'squeeze'"),
        (("squeeze", prepared["squeeze", "fp16"].path, "int8"), {}, "already fp16"),
        (("squeeze", fp32_onnx["squeeze"], "int4"), {}, "precision must be"),
        (("squeeze", fp32_onnx["squeeze"], "fp16"), {"calib_dir": workdir}, "only apply"),
        (("squeeze", fp32_onnx["squeeze"], "int8"), {"calib_batches": 0}, "calib-batches"),
        (("squeeze", fp32_onnx["squeeze"], "fp16"), {"high_precision": "fp32"}, "only applies"),
        (("squeeze", fp32_onnx["squeeze"], "int8"), {"high_precision": "bf16"}, "one of fp16"),
    ]
    for args, kwargs, expected in cases:
        with pytest.raises(HgDeployError) as excinfo:
            prepare_precision(*args, out, **kwargs)  # type: ignore[arg-type]
        assert expected in _one_line_error(excinfo)
    assert not out.exists()


def test_fp32_is_a_copy_through(fp32_onnx: dict[str, Path], workdir: Path) -> None:
    result = prepare_precision("hrnet", fp32_onnx["hrnet"], "fp32", workdir / "fp32.onnx")
    assert result.path.read_bytes() == fp32_onnx["hrnet"].read_bytes()
    sidecar = json.loads(result.sidecar.read_text())
    assert sidecar["precision"] == "fp32" and sidecar["weights_info"]["seed"] == 0


@pytest.mark.parametrize("method", ["mse", "percentile"])
def test_calibration_method_is_used_recorded_and_enforced_on_reuse(
    method: str, fp32_onnx: dict, workdir: Path
) -> None:
    """Same images, two methods: every range at most max's (both clip), the method in the
    sidecar and the cache, a cache of another method refused when a method is asked for, and
    a build from the method's own cache byte-identical to the calibrated one."""
    hrnet = fp32_onnx["hrnet"]
    common = {"calib_dir": None, "calib_cache": None, "calib_batches": 2,
              "checkpoint_info": None, "measure_quality": False}  # fmt: skip
    by_max = prepare_precision("hrnet", hrnet, "int8", workdir / "m_max.onnx", **common)
    choice = CalibrationChoice.from_options(method, 99.9 if method == "percentile" else None)
    chosen = prepare_precision(
        "hrnet", hrnet, "int8", workdir / f"m_{method}.onnx", calib_choice=choice, **common
    )
    label = "percentile 99.9" if method == "percentile" else "mse"
    maxima = json.loads(by_max.calibration_cache.read_text())["amax"]
    cache = json.loads(chosen.calibration_cache.read_text())
    assert cache["method"] == label
    assert json.loads(chosen.sidecar.read_text())["calibration"]["method"] == label
    assert all(cache["amax"][name] <= maxima[name] * (1 + 1e-6) for name in maxima)
    assert sum(cache["amax"][name] < 0.9 * maxima[name] for name in maxima) > len(maxima) // 4
    with pytest.raises(HgDeployError) as excinfo:
        prepare_precision("hrnet", hrnet, "int8", workdir / "again.onnx", **{
            **common, "calib_cache": by_max.calibration_cache, "calib_choice": choice})  # fmt: skip
    assert "was made by 'max'" in _one_line_error(excinfo)
    again = prepare_precision("hrnet", hrnet, "int8", workdir / f"again_{method}.onnx", **{
        **common, "calib_cache": chosen.calibration_cache, "calib_choice": choice})  # fmt: skip
    assert again.path.read_bytes() == chosen.path.read_bytes()  # the cache reproduces it
