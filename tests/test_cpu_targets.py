"""CPU backends (`hgdeploy build --backend onnxruntime|openvino`): artifacts, parity at each backend's
precision, calibration caches that reproduce the int8 model, and rejected combinations.

HRNet is the small model (15 GFLOP/image, no corner pools to wait for in export); the corner
pools' lowering is exercised by test_openvino / test_corner_pool_onnx. Parity is judged with the
zoo's tolerances for the artifact's precision (int8: mean error <= 5% of the output range on
real photographs). Synthetic weights give flat heatmaps (median top-1/top-2 margin ~3% of the
range), so heatmap-peak agreement is reported but only checked to be computed: on such maps it
measures noise, not the deployment (see benchmarks/README.md).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import use_cached_models

from hgdeploy.backends import BuildRequest, get_backend
from hgdeploy.backends.build_job import run_build
from hgdeploy.backends.registry import backend_choices
from hgdeploy.base.artifacts import read_sidecar, sidecar_path, write_sidecar
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.images import preprocess, sample_images
from hgdeploy.base.zoo import get_spec
from hgdeploy.bench.matrix import CellResult, compute_speedups
from hgdeploy.bench.timing import LatencyStats
from hgdeploy.cli import main
from hgdeploy.cli.bench import bench_command
from hgdeploy.exporters.onnx_export import SHARED_EXPORT, default_output, export_to_file
from hgdeploy.parity.job import run_parity
from hgdeploy.runners.openvino_runner import cpu_supports_bf16, openvino_runner

MODEL = "hrnet"


@pytest.fixture(autouse=True)
def _fast_models(monkeypatch: pytest.MonkeyPatch) -> None:
    use_cached_models(monkeypatch)


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """HRNet's shared dynamic-batch plugin-form export, in a fresh directory."""
    directory = tmp_path_factory.mktemp("cpu_targets")
    output = directory / default_output(MODEL, SHARED_EXPORT)
    with pytest.MonkeyPatch.context() as patch:
        use_cached_models(patch)
        export_to_file(MODEL, output=output, options=SHARED_EXPORT)
    return output


def _build(fp32_onnx: Path, backend: str, precision: str, **kwargs: Any) -> Any:
    return run_build(BuildRequest(MODEL, backend, precision, onnx=fp32_onnx, **kwargs))


@pytest.fixture(scope="module")
def ort_int8(fp32_onnx: Path) -> Any:
    return _build(fp32_onnx, "onnxruntime", "int8")


@pytest.fixture(scope="module")
def openvino_int8(fp32_onnx: Path) -> Any:
    return _build(fp32_onnx, "openvino", "int8")


def _photos() -> np.ndarray:
    return preprocess(get_spec(MODEL), [p for _, p in sample_images(["astronaut", "chelsea"])])


# --- target x precision table --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "precision", "message"),
    [
        ("openvino", "fp16", "--backend openvino builds fp32, bf16, int8, not fp16"),
        ("onnxruntime", "bf16", "--backend onnxruntime builds fp32, int8, not bf16"),
        ("onnxruntime", "fp16", "--backend onnxruntime builds fp32, int8, not fp16"),
        ("tensorrt", "bf16", "--backend tensorrt builds fp32, fp16, int8, not bf16"),
        ("coreml", "fp32", "unknown backend 'coreml'"),
    ],
)
def test_unsupported_target_precision_is_refused(target: str, precision: str, message: str) -> None:
    with pytest.raises(HgDeployError, match=f"^{message}"):
        get_backend(target).check_precision(precision)


def test_every_supported_combination_passes_and_defaults_are_listed() -> None:
    for target in backend_choices(builds=True):
        precisions = get_backend(target).builds
        assert get_backend(target).check_precision(None) in precisions
        for precision in precisions:
            assert get_backend(target).check_precision(precision) == precision


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--backend", "openvino", "--fp16"],
            "--backend openvino builds fp32, bf16, int8, not fp16",
        ),
        (
            ["--backend", "onnxruntime", "--bf16"],
            "--backend onnxruntime builds fp32, int8, not bf16",
        ),
        (
            ["--backend", "tensorrt", "--bf16"],
            "--backend tensorrt builds fp32, fp16, int8, not bf16",
        ),
        (
            ["--target", "openvino", "--fp16"],
            "--backend openvino builds fp32, bf16, int8, not fp16",
        ),
        (["--backend", "openvino", "--int8", "--max-batch", "4"], "--max-batch: only for"),
        (["--backend", "onnxruntime", "--prepare-only"], "--prepare-only: only for"),
        (["--backend", "openvino", "--int8", "--high-precision", "fp32"], "--high-precision: only"),
        (["--fp16", "--high-precision", "fp32"], "--high-precision only applies to --int8"),
        (["--backend", "onnxruntime", "--calib-cache", "x.json"], "--calib-dir/--calib-cache only"),
        (["--backend", "openvino", "--output", "x.onnx"], "an OpenVINO IR is written as NAME.xml"),
    ],
)
def test_cli_refuses_bad_combinations_in_one_line(
    args: list[str], message: str, tmp_path: Path
) -> None:
    onnx_args = ["--onnx", str(tmp_path / "absent.onnx")]
    result = CliRunner().invoke(main, ["build-engine", "--model", MODEL, *args, *onnx_args])
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"error: {message}") and result.output.count("\n") == 1


# --- ONNX Runtime -----------------------------------------------------------------------------


def test_ort_fp32_artifact_is_plugin_free_and_matches_eager(fp32_onnx: Path) -> None:
    built = _build(fp32_onnx, "onnxruntime", "fp32")
    assert built.artifact == get_backend("onnxruntime").default_artifact(fp32_onnx, "fp32")
    assert built.artifact.name == "hrnet_dyn_ort-fp32.onnx"
    report = run_parity(MODEL, built.artifact, backend="onnxruntime")
    assert report.precision == "fp32" and report.passed, report.outputs
    assert report.outputs[0].peak_agreement == 1.0  # fp32: every joint's argmax is the same


def test_ort_int8_is_a_u8s8_qdq_model_named_apart_from_tensorrt(ort_int8: Any) -> None:
    assert ort_int8.artifact.name == "hrnet_dyn_ort-u8s8.onnx"  # TensorRT's is *_int8.onnx
    model = onnx.load(str(ort_int8.artifact))
    props = {p.key: p.value for p in model.metadata_props}
    assert props["hgdeploy.target"] == "onnxruntime" and props["hgdeploy.precision"] == "int8"
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize
    zero_points = {i.name: i for i in model.graph.initializer}
    activation_types = {zero_points[n.input[2]].data_type for n in quantize if len(n.input) > 2}
    assert activation_types == {onnx.TensorProto.UINT8}  # U8 activations
    int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len([t for t in int8_weights if len(t.dims) == 4]) >= 290  # every conv weight, S8
    record = read_sidecar(ort_int8.artifact)
    assert record["calibration"]["images"] == [
        "chelsea",
        "coffee",
        "rocket",
        "immunohistochemistry",
    ]
    assert record["quantization"]["scheme"].startswith("onnxruntime U8S8")


def test_ort_int8_parity_at_int8_tolerances(ort_int8: Any) -> None:
    report = run_parity(MODEL, ort_int8.artifact, backend="onnxruntime")
    assert report.precision == "int8" and len(report.feeds) == 2  # photos only
    assert report.passed, report.outputs
    row = report.outputs[0]
    assert row.stat == "mean" and 0 < row.max_abs  # really quantized
    assert row.peak_agreement is not None and row.peak_metric == "per-joint argmax"


def test_ort_int8_from_its_calibration_cache_is_byte_identical(
    ort_int8: Any, fp32_onnx: Path, tmp_path: Path
) -> None:
    again = _build(
        fp32_onnx,
        "onnxruntime",
        "int8",
        calib_cache=ort_int8.calibration_cache,
        output=tmp_path / "from_cache.onnx",
    )
    assert again.artifact.read_bytes() == ort_int8.artifact.read_bytes()
    assert read_sidecar(again.artifact)["calibration"]["from_cache"] is True


def test_a_cache_for_other_weights_or_another_model_is_refused(
    ort_int8: Any, fp32_onnx: Path, tmp_path: Path
) -> None:
    cache = tmp_path / "cache.json"
    cache.write_bytes(ort_int8.calibration_cache.read_bytes())
    record = json.loads(sidecar_path(ort_int8.calibration_cache).read_text())
    write_sidecar(cache, {**record, "weights_info": {"weights": "random-init", "seed": 7}})
    with pytest.raises(HgDeployError, match="was made with other weights"):
        _build(fp32_onnx, "onnxruntime", "int8", calib_cache=cache, output=tmp_path / "o.onnx")
    write_sidecar(cache, {**record, "model": "squeeze"})
    with pytest.raises(HgDeployError, match="is for model 'squeeze', not 'hrnet'"):
        _build(fp32_onnx, "onnxruntime", "int8", calib_cache=cache, output=tmp_path / "o.onnx")
    assert not (tmp_path / "o.onnx").exists()


# --- OpenVINO ---------------------------------------------------------------------------------


def test_openvino_fp32_ir_matches_eager_at_fp32_tolerances(fp32_onnx: Path) -> None:
    built = _build(fp32_onnx, "openvino", "fp32")
    assert built.artifact.name == "hrnet_dyn_openvino-fp32.xml"
    assert built.artifact.with_suffix(".bin").is_file()
    report = run_parity(MODEL, built.artifact, backend="openvino")
    assert report.precision == "fp32" and report.passed, report.outputs


def test_openvino_bf16_ir_runs_with_the_bf16_hint(fp32_onnx: Path) -> None:
    built = _build(fp32_onnx, "openvino", "bf16")
    if not cpu_supports_bf16():  # the artifact builds anywhere; running it needs bf16 hardware
        with pytest.raises(HgDeployError, match="^OpenVINO bf16 needs a CPU with native bf16"):
            run_parity(MODEL, built.artifact, backend="openvino")
        return
    assert read_sidecar(built.artifact)["inference_precision_hint"] == "bf16"
    report = run_parity(MODEL, built.artifact, backend="openvino")
    assert report.precision == "bf16" and report.passed, report.outputs
    assert report.outputs[0].max_abs / report.outputs[0].scale > 1e-3  # not fp32 in disguise


def test_openvino_int8_parity_at_int8_tolerances(openvino_int8: Any) -> None:
    assert openvino_int8.artifact.name == "hrnet_dyn_openvino-int8.xml"
    assert openvino_int8.calibration_cache.name == "hrnet_dyn_openvino-int8.xml.nncf-stats"
    report = run_parity(MODEL, openvino_int8.artifact, backend="openvino")
    assert report.precision == "int8" and report.passed, report.outputs
    assert 0 < report.outputs[0].max_abs


def test_openvino_int8_from_its_statistics_cache_is_the_same_model(
    openvino_int8: Any, fp32_onnx: Path, tmp_path: Path
) -> None:
    """Same weights and quantizer ranges (.bin byte-identical), same outputs; the .xml may
    differ only in OpenVINO's auto-generated node names."""
    again = _build(
        fp32_onnx,
        "openvino",
        "int8",
        calib_cache=openvino_int8.calibration_cache,
        output=tmp_path / "from_cache.xml",
    )
    first_bin = openvino_int8.artifact.with_suffix(".bin").read_bytes()
    assert again.artifact.with_suffix(".bin").read_bytes() == first_bin
    photos = _photos()
    outputs = []
    for path in (openvino_int8.artifact, again.artifact):
        with openvino_runner(path, precision="int8") as runner:
            outputs.append(runner.infer({"image": photos})["heatmaps"])
    assert np.array_equal(outputs[0], outputs[1])


def test_an_ir_is_not_run_by_onnxruntime(openvino_int8: Any) -> None:
    with pytest.raises(HgDeployError, match="is an OpenVINO IR; check it with --backend openvino"):
        run_parity(MODEL, openvino_int8.artifact, backend="onnxruntime")


def test_cli_builds_a_cpu_artifact_and_names_the_check(fp32_onnx: Path, tmp_path: Path) -> None:
    output = tmp_path / "hrnet_ort.onnx"
    args = ["build-engine", "--model", MODEL, "--target", "onnxruntime", "--fp32"]
    args += ["--onnx", str(fp32_onnx), "--output", str(output)]
    result = CliRunner().invoke(main, args, env={"COLUMNS": "300"})
    assert result.exit_code == 0, result.output
    assert f"onnxruntime fp32 artifact: {output}" in result.output
    assert f"hgdeploy parity --model hrnet --backend onnxruntime --onnx {output}" in result.output
    assert read_sidecar(output)["target"] == "onnxruntime"


# --- bench ---------------------------------------------------------------------------------


def test_bench_runs_cpu_int8_and_openvino_default_cells(
    fp32_onnx: Path, ort_int8: Any, openvino_int8: Any
) -> None:
    """CPU int8 cells run the default-path artifacts (reused: built from this very export), and
    every cell gets its ratio to OpenVINO's default."""
    workdir = fp32_onnx.parents[2]  # <workdir>/artifacts/hrnet/hrnet_dyn_plugin.onnx
    args = ["--model", MODEL, "--batch", "1", "--backend", "torch", "--backend", "onnxruntime"]
    args += ["--backend", "openvino", "--precision", "int8", "--precision", "default"]
    args += ["--warmup", "1", "--iterations", "2", "--threads", "1", "--output", "results"]
    with contextlib.chdir(workdir):
        result = CliRunner().invoke(bench_command, args, env={"COLUMNS": "220"})
    assert result.exit_code == 0, result.output
    cells = json.loads((workdir / "results" / "results.json").read_text())["cells"]
    by_key = {(c["backend"], c["precision"]): c for c in cells}
    for key, built in ((("onnxruntime", "int8"), ort_int8), (("openvino", "int8"), openvino_int8)):
        cell = by_key[key]
        assert cell["status"] == "ok", cell["reason"]
        assert cell["artifact"] == str(built.artifact.relative_to(workdir))
        assert cell["parity"]["passed"] and cell["speedup_vs_openvino_default"] > 0
    default = by_key[("openvino", "default")]
    assert default["status"] == "ok", default["reason"]
    assert default["speedup_vs_openvino_default"] == pytest.approx(1.0)
    assert default["providers"][0].startswith("CPU (inference precision ")
    assert by_key[("torch", "default")]["status"] == "skipped"


# --- bench ratios ---------------------------------------------------------------------------


def _cell(backend: str, precision: str, median_ms: float) -> CellResult:
    cell = CellResult(MODEL, backend, precision, 1, status="ok")
    cell.latency = LatencyStats.from_samples("perf_counter", [median_ms] * 3)
    return cell


def test_ratios_against_eager_and_openvino_default() -> None:
    cells = [
        _cell("torch", "fp32", 120.0),
        _cell("openvino", "default", 40.0),
        _cell("onnxruntime", "int8", 20.0),
    ]
    compute_speedups(cells)
    assert cells[2].speedup_vs_torch == pytest.approx(6.0)
    assert cells[2].speedup_vs_openvino_default == pytest.approx(2.0)
    assert cells[1].speedup_vs_openvino_default == pytest.approx(1.0)
