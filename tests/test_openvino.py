"""OpenVINO on the CPU: parity at fp32 and bf16, plugin-form corner pools, and a bench cell.

HRNet (no corner pools, quick to export) is exported once as the bench's shared dynamic-batch
ONNX; the corner-pool path is checked on hand-built one-node graphs against the torch reference.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import use_cached_models
from onnx import TensorProto, helper

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import get_spec
from hgdeploy.cli import main
from hgdeploy.cli.bench import bench_command
from hgdeploy.exporters.corner_pool_ops import corner_pool_opset_import, make_corner_pool_node
from hgdeploy.exporters.onnx_export import SHARED_EXPORT, default_output, export_to_file
from hgdeploy.models.corner_pool import DIRECTIONS, corner_pool_reference
from hgdeploy.parity.job import run_parity
from hgdeploy.runners.openvino_runner import cpu_supports_bf16, openvino_runner

MODEL = "hrnet"
NO_BF16 = "this CPU has no native bf16 (AVX512_BF16 or AMX) for OpenVINO"


@pytest.fixture(autouse=True)
def _fast_models(monkeypatch: pytest.MonkeyPatch) -> None:
    use_cached_models(monkeypatch)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding HRNet's shared dynamic-batch export, where the bench will reuse it."""
    directory = tmp_path_factory.mktemp("openvino")
    with pytest.MonkeyPatch.context() as patch:
        use_cached_models(patch)
        export_to_file(
            MODEL, output=directory / default_output(MODEL, SHARED_EXPORT), options=SHARED_EXPORT
        )
    return directory


def _onnx(workdir: Path) -> Path:
    return workdir / default_output(MODEL, SHARED_EXPORT)


def test_fp32_parity_with_fp32_tolerances(workdir: Path) -> None:
    report = run_parity(MODEL, _onnx(workdir), backend="openvino")
    assert report.precision == "fp32" and report.backend == "openvino"
    assert len(report.feeds) == 3  # two batches of photos and the noise feed
    assert report.passed, report.outputs
    expected = get_spec(MODEL).tolerances["fp32"]["heatmaps"]
    assert report.outputs[0].rtol == expected.rtol


def test_bf16_parity_with_bf16_tolerances(workdir: Path) -> None:
    if not cpu_supports_bf16():
        with pytest.raises(HgDeployError, match="^OpenVINO bf16 needs a CPU with native bf16"):
            run_parity(MODEL, _onnx(workdir), backend="openvino", precision="bf16")
        return
    report = run_parity(MODEL, _onnx(workdir), backend="openvino", precision="bf16")
    assert report.precision == "bf16" and report.feeds[0].startswith("images:")
    assert len(report.feeds) == 2  # reduced precision is judged on real images only
    assert report.passed, report.outputs
    row = report.outputs[0]
    bf16 = get_spec(MODEL).tolerances["bf16"]["heatmaps"]
    assert row.atol == pytest.approx(bf16.effective_atol(row.scale))
    assert 0 < row.max_abs  # really ran in bf16: fp32 would match to ~1e-5 of the range


def test_bf16_is_openvino_only_from_the_cli(workdir: Path) -> None:
    args = ["parity", "--model", MODEL, "--onnx", str(_onnx(workdir)), "--precision", "bf16"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output == "error: bf16 is run by --backend openvino only, not onnxruntime\n"


def _pool_model(direction_name: str, shape: tuple[int, ...]) -> Any:
    """A hand-built plugin-form graph: image -> corner pool -> y."""
    graph = helper.make_graph(
        [make_corner_pool_node(direction_name, "image", "y", name="pool")],
        "single_pool",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
    )
    opsets = [helper.make_opsetid("", 20), corner_pool_opset_import()]
    return helper.make_model(graph, opset_imports=opsets, ir_version=10)


@pytest.mark.parametrize("direction_name", list(DIRECTIONS))
def test_plugin_form_corner_pools_are_lowered_and_exact(direction_name: str) -> None:
    shape = (2, 3, 17, 13)
    rng = np.random.default_rng(0)
    x = (rng.integers(-3, 4, size=shape) + rng.standard_normal(shape) * 0.25).astype(np.float32)
    x[0, 0, 4] = -np.inf  # a row of -inf, as padding can produce
    runner = openvino_runner(_pool_model(direction_name, shape), threads=1)
    with runner:
        got = runner.infer({"image": x})["y"]
    expected = corner_pool_reference(torch.from_numpy(x), DIRECTIONS[direction_name]).numpy()
    assert np.array_equal(got, expected)


def test_bench_cells_are_checked_timed_and_compared_with_torch(workdir: Path) -> None:
    args = ["--model", MODEL, "--batch", "1", "--backend", "torch", "--backend", "openvino"]
    args += ["--precision", "fp32", "--precision", "bf16", "--warmup", "1", "--iterations", "2"]
    with contextlib.chdir(workdir):
        result = CliRunner().invoke(
            bench_command, [*args, "--threads", "1", "--output", "results"], env={"COLUMNS": "220"}
        )
    assert result.exit_code == 0, result.output
    cells = json.loads((workdir / "results" / "results.json").read_text())["cells"]
    by_key = {(c["backend"], c["precision"]): c for c in cells}
    assert by_key[("torch", "bf16")]["status"] == "skipped"  # eager torch is fp32 only
    fp32 = by_key[("openvino", "fp32")]
    assert fp32["status"] == "ok", fp32["reason"]
    assert fp32["trusted"] and fp32["parity"]["passed"]
    assert fp32["speedup_vs_torch"] and fp32["speedup_vs_torch"] > 0
    assert fp32["artifact"].endswith("hrnet_dyn_plugin.onnx")
    bf16 = by_key[("openvino", "bf16")]
    if not cpu_supports_bf16():
        assert bf16["status"] == "skipped" and bf16["reason"] == NO_BF16
        return
    assert bf16["status"] == "ok", bf16["reason"]
    assert bf16["parity"]["passed"] and bf16["speedup_vs_torch"] > 0
    assert len(bf16["parity"]["feeds"]) == 2  # the noise feed is for fp32 only, as in parity


def test_an_unloadable_model_is_a_one_line_error() -> None:
    graph = helper.make_graph(
        [helper.make_node("NoSuchOp", ["image"], ["y"], domain="nowhere")],
        "unsupported",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    opsets = [helper.make_opsetid("", 20), helper.make_opsetid("nowhere", 1)]
    runner = openvino_runner(helper.make_model(graph, opset_imports=opsets))
    with pytest.raises(HgDeployError, match="^OpenVINO cannot load the model: .*nowhere.NoSuchOp"):
        runner.activate()
