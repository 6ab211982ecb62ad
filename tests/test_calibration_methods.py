"""Calibration methods against numpy references on known distributions: percentile against
np.percentile, entropy against a plain loop of TensorRT's algorithm, MSE against a brute-force
search on the samples themselves, and the ONNX Runtime histogram pass against numpy."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import one_line_error, run_cli
from onnx import TensorProto, helper

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.precisions import CALIBRATION_METHOD_NAMES
from hgdeploy.precision.calibration import calibrate
from hgdeploy.precision.calibration_methods import (
    CALIBRATION_METHODS,
    INT8_MAX,
    absolute_histogram,
    entropy_amax,
    get_method,
    mse_amax,
    percentile_amax,
)


def _histogram(samples: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    amax = float(np.abs(samples).max())
    return absolute_histogram(samples, amax, bins), np.linspace(0, amax, bins + 1)


def test_absolute_histogram_equals_numpy() -> None:
    samples = np.random.default_rng(0).normal(size=50_000).astype(np.float32)
    amax = float(np.abs(samples).max())
    want, _ = np.histogram(np.abs(samples), bins=256, range=(0, amax))
    got = absolute_histogram(samples, amax, 256)
    # the two bin the few values sitting exactly on an edge differently (float rounding)
    assert got.sum() == samples.size and np.abs(got - want).sum() <= 4


@pytest.mark.parametrize("percentile", [99.0, 99.9, 99.99])
def test_percentile_is_numpys_within_a_bin(percentile: float) -> None:
    samples = np.random.default_rng(1).laplace(size=200_000)
    hist, edges = _histogram(samples, 2048)
    want = np.percentile(np.abs(samples), percentile)
    assert abs(percentile_amax(hist, edges, percentile) - want) <= edges[1]


def _loop_entropy(hist: np.ndarray, edges: np.ndarray, levels: int = 128) -> float:
    """TensorRT's entropy calibration as its GTC 2017 slides spell it, one bin at a time, with
    ModelOpt's zero-bin rule (bin 0 counted as bin 1)."""
    hist = hist.copy()
    hist[0] = hist[1]
    best, best_i = math.inf, len(hist)
    for i in range(levels, len(hist) + 1):
        p = [float(c) for c in hist[:i]]
        p[-1] += float(sum(hist[i:]))
        merged = [0.0] * levels
        nonzero = [0] * levels
        for j in range(i):
            level = min(j * levels // i, levels - 1)
            merged[level] += float(hist[j])
            nonzero[level] += hist[j] > 0
        q = [merged[min(j * levels // i, levels - 1)] / nonzero[min(j * levels // i, levels - 1)]
             if hist[j] > 0 else 0.0 for j in range(i)]  # fmt: skip
        sp, sq = sum(p), sum(q)
        kl = 0.0
        for a, b in zip(p, q):
            if a > 0:
                kl = math.inf if b == 0 else kl + a / sp * math.log((a / sp) / (b / sq))
        if kl <= best:
            best, best_i = kl, i
    return float(edges[best_i])


@pytest.mark.parametrize("seed, relu", [(0, False), (1, False), (2, True)])
def test_entropy_equals_a_plain_loop_of_tensorrts_algorithm(seed: int, relu: bool) -> None:
    """Gaussian bulks with sparse far outliers (empty tail bins); relu: half the values 0."""
    rng = np.random.default_rng(seed)
    samples = np.concatenate([rng.normal(size=20_000), rng.normal(scale=8, size=40)])
    if relu:
        samples = np.maximum(samples, 0)
    hist, edges = _histogram(samples, 384)
    assert entropy_amax(hist, edges) == pytest.approx(_loop_entropy(hist, edges), rel=1e-12)


def test_entropy_clips_rare_outliers_and_keeps_a_uniform_range() -> None:
    rng = np.random.default_rng(2)
    outliers = np.concatenate([rng.normal(size=100_000), [60.0, -55.0]])
    hist, edges = _histogram(outliers, 2048)
    assert entropy_amax(hist, edges) < 0.2 * edges[-1]  # the bulk is within |x| < 5 of 60
    uniform = rng.uniform(-1, 1, size=200_000)
    hist, edges = _histogram(uniform, 1024)
    assert entropy_amax(hist, edges) == edges[-1]


def test_mse_matches_a_brute_force_search_on_the_samples() -> None:
    rng = np.random.default_rng(3)
    samples = np.abs(np.concatenate([rng.normal(size=100_000), [40.0]]))
    hist, edges = _histogram(samples, 2048)

    def sample_mse(amax: float) -> float:
        scale = amax / INT8_MAX
        return float(np.mean((np.clip(np.round(samples / scale), 0, INT8_MAX) * scale
                              - samples) ** 2))  # fmt: skip

    candidates = np.unique(np.append(edges[128::8], edges[-1]))
    best = min(sample_mse(c) for c in candidates)
    chosen = mse_amax(hist, edges)
    assert sample_mse(chosen) <= 1.02 * best  # bin centres stand in for the samples
    assert sample_mse(chosen) < 0.8 * sample_mse(edges[-1])  # max rounds the bulk coarsely


def test_the_cli_lists_exactly_the_registered_methods() -> None:
    assert tuple(CALIBRATION_METHODS) == CALIBRATION_METHOD_NAMES


def test_unknown_method_is_refused_in_one_line() -> None:
    with pytest.raises(HgDeployError, match="unknown calibration method 'kl'.*max, percentile"):
        get_method("kl")


def _identity_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    relu = helper.make_node("Relu", ["x"], ["r"])
    neg = helper.make_node("Neg", ["r"], ["y"])
    graph = helper.make_graph([relu, neg], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("method", ["max", "percentile", "entropy", "mse"])
def test_calibrate_runs_each_method_on_the_tensors_of_every_feed(method: str) -> None:
    rng = np.random.default_rng(4)
    feeds = [{"x": rng.normal(size=(500, 4)).astype(np.float32)} for _ in range(3)]
    ranges = calibrate(_identity_model(), feeds, tensors=["x", "r"], method=method)
    for name, values in (
        ("x", [f["x"] for f in feeds]),
        ("r", [np.maximum(f["x"], 0) for f in feeds]),
    ):
        everything = np.concatenate([v.ravel() for v in values])
        hist, edges = _histogram(everything, 2048)
        want = get_method(method).choose(hist, edges, 99.99)
        assert ranges[name] == pytest.approx(want, rel=1e-6), name


@pytest.mark.parametrize(
    "args, words",
    [
        (["--backend", "onnxruntime", "--int8", "--calib-method", "mse"],
         "not available for onnxruntime"),
        (["--backend", "onnxruntime", "--int8", "--calib-method", "entropy"],
         "not available for onnxruntime (it offers max, percentile)"),
        (["--backend", "openvino", "--int8", "--calib-method", "entropy"],
         "not available for openvino"),
        (["--backend", "tensorrt", "--fp16", "--prepare-only", "--calib-method", "mse"],
         "--calib-method only applies to --int8"),
        (["--backend", "tensorrt", "--int8", "--prepare-only", "--calib-percentile", "99"],
         "only applies to --calib-method percentile"),
        (["--backend", "tensorrt", "--int8", "--calib-method", "percentile",
          "--calib-percentile", "120"], "must be in (0, 100]"),
    ],
)  # fmt: skip
def test_build_refuses_methods_a_tool_lacks_before_any_work(
    args: list[str], words: str, tmp_path: Path
) -> None:
    output = tmp_path / "out.onnx"
    code, printed = run_cli(["build", "--model", "hrnet", "--output", str(output), *args])
    one_line_error(code, printed, words)
    assert not list(tmp_path.iterdir())  # nothing exported, nothing written


def _image_model(dims: list) -> onnx.ModelProto:
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, dims)
    out = helper.make_tensor_value_info("out", TensorProto.FLOAT, dims)
    graph = helper.make_graph([helper.make_node("Relu", ["image"], ["out"])], "g", [image], [out])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_calibration_images_are_made_at_the_graphs_own_input_size() -> None:
    """An `export --input-size 255x255` graph is calibrated on 255x255 inputs, not the zoo's."""
    from hgdeploy.base.zoo import get_spec
    from hgdeploy.precision.calibration import calibration_feeds, sized_for

    spec = get_spec("squeeze")
    sized = sized_for(spec, _image_model(["batch", 3, 255, 255]))
    assert sized.input_hw == (255, 255) and sized.name == "squeeze"
    assert sized_for(spec, _image_model(["batch", 3, "h", "w"])) is spec
    pixels = np.zeros((40, 60, 3), np.uint8)
    assert calibration_feeds(sized, [pixels], 1)[0]["image"].shape == (1, 3, 255, 255)
