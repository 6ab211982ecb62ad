"""TensorRT engines: profiles, compatibility checks, the CPU half of build-engine, and (on a GPU
machine with TensorRT 11) engine builds per precision with parity against the eager models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hgdeploy.backends.profile import BatchProfile, batch_profile
from hgdeploy.backends.tensorrt_runner import check_engine_compatible, engine_record
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import ZOO
from hgdeploy.cli import main


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("cornernet", BatchProfile(1, 4, 4)),
        ("squeeze", BatchProfile(1, 13, 13)),
        ("saccade", BatchProfile(1, 4, 4)),  # train 4, test 2: opt at the first documented
        ("hourglass", BatchProfile(1, 16, 16)),
        ("hrnet", BatchProfile(1, 32, 32)),
    ],
)
def test_default_profile_spans_the_documented_batches(name: str, expected: BatchProfile) -> None:
    assert batch_profile(ZOO[name]) == expected


def test_profile_options() -> None:
    spec = ZOO["squeeze"]
    assert batch_profile(spec, batch=2) == BatchProfile(2, 2, 2)
    assert batch_profile(spec, min_batch=2, max_batch=8) == BatchProfile(2, 8, 8)
    assert batch_profile(spec, opt_batch=3) == BatchProfile(1, 3, 13)
    with pytest.raises(HgDeployError, match="either --batch or"):
        batch_profile(spec, batch=2, max_batch=4)
    with pytest.raises(HgDeployError, match="min <= opt <= max"):
        batch_profile(spec, min_batch=8, max_batch=4)
    assert BatchProfile(1, 4, 8).shapes(spec) == (
        (1, 3, 511, 511),
        (4, 3, 511, 511),
        (8, 3, 511, 511),
    )


RECORD = {
    "kind": "tensorrt-engine",
    "model": "squeeze",
    "tensorrt": "11.4.0",
    "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
    "profile": {"min": 1, "opt": 13, "max": 13},
}


def _check(**overrides: object) -> None:
    kwargs = {
        "model": "squeeze",
        "batch": 4,
        "tensorrt_version": "11.4.0",
        "gpu_name": "NVIDIA H100 80GB HBM3",
    }
    kwargs.update(overrides)
    check_engine_compatible(RECORD, Path("e.engine"), **kwargs)  # type: ignore[arg-type]


def test_engine_compatibility_checks() -> None:
    _check()
    with pytest.raises(HgDeployError, match="built for 'squeeze', not 'hrnet'"):
        _check(model="hrnet")
    with pytest.raises(HgDeployError, match="built by TensorRT 11.4.0, this is TensorRT 11.5.0"):
        _check(tensorrt_version="11.5.0")
    with pytest.raises(HgDeployError, match="built on NVIDIA H100 80GB HBM3, this GPU is NVIDIA"):
        _check(gpu_name="NVIDIA H200")
    with pytest.raises(HgDeployError, match="batch 14 is outside .* profile \\(min 1, max 13\\)"):
        _check(batch=14)


def test_int8_artifacts_are_named_by_their_layer_type() -> None:
    from hgdeploy.backends.tensorrt_build import default_engine_path, file_tag

    def tag(precision: str, high: str | None) -> str:
        return file_tag(precision, high)

    assert [tag("int8", None), tag("int8", "fp16"), tag("int8", "fp32")] == [
        "int8",
        "int8",
        "int8-fp32",
    ]
    assert tag("fp16", None) == "fp16"
    engine = default_engine_path(Path("a/squeeze_dyn_plugin.onnx"), "int8-fp32")
    assert engine == Path("a/squeeze_int8-fp32.engine")


def test_engine_without_sidecar_is_refused(tmp_path: Path) -> None:
    engine = tmp_path / "model.engine"
    with pytest.raises(HgDeployError, match="engine not found"):
        engine_record(engine)
    engine.write_bytes(b"not really an engine")
    with pytest.raises(HgDeployError, match="has no engine sidecar"):
        engine_record(engine)


def test_parity_tensorrt_needs_an_engine() -> None:
    result = CliRunner().invoke(main, ["parity", "--model", "squeeze", "--backend", "tensorrt"])
    assert result.exit_code == 1
    assert (
        result.output == "error: --backend tensorrt needs --engine PATH (hgdeploy build-engine)\n"
    )


# --- GPU + TensorRT 11: every model, every precision, parity against eager ----------------------


@pytest.fixture(scope="module")
def dynamic_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return {}


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("name", list(ZOO))
def test_engine_matches_eager_within_precision_tolerance(
    name: str, precision: str, dynamic_exports: dict[str, Path], tmp_path_factory
) -> None:
    from hgdeploy.backends import BuildRequest
    from hgdeploy.backends.tensorrt_build import run_build_engine
    from hgdeploy.backends.tensorrt_engine import BuildSettings
    from hgdeploy.exporters.onnx_export import ExportOptions, export_to_file
    from hgdeploy.parity.job import run_parity

    directory = tmp_path_factory.mktemp(f"{name}_{precision}")
    if name not in dynamic_exports:
        options = ExportOptions(batch=1, dynamic_batch=True, corner_pool="plugin")
        dynamic_exports[name] = export_to_file(
            name, output=directory / f"{name}.onnx", options=options
        ).path
    profile = batch_profile(ZOO[name], min_batch=1, opt_batch=2, max_batch=2)
    request = BuildRequest(
        model=name,
        backend="tensorrt",
        precision=precision,
        onnx=dynamic_exports[name],
        output=directory / f"{name}_{precision}.engine",
    )
    result = run_build_engine(request, BuildSettings(profile))
    assert result.engine is not None and result.engine.is_file()
    record = json.loads(Path(str(result.engine) + ".json").read_text())
    assert record["precision"] == precision and record["profile"] == profile.to_json()
    for batch in (1, 2):
        if precision == "int8":
            # int8 accuracy vs fp32 is a property of the Q/DQ ONNX (measured on the CPU, and
            # poor for synthetic weights); what the engine must show is that TensorRT runs
            # that Q/DQ graph as ONNX Runtime does.
            _engine_matches_onnxruntime(name, result.engine, result.prepared.path, batch)
            continue
        report = run_parity(name, result.engine, backend="tensorrt", batch=batch)
        assert report.precision == precision
        assert report.passed, [o for o in report.outputs if not o.passed]
    with pytest.raises(HgDeployError, match="outside"):
        run_parity(name, result.engine, backend="tensorrt", batch=3)


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_int8_engine_with_fp32_layers(tmp_path: Path) -> None:
    """`--high-precision fp32`: the same Q/DQ placement over fp32 layers (plugins in fp32)."""
    from hgdeploy.backends import BuildRequest
    from hgdeploy.backends.tensorrt_build import run_build_engine
    from hgdeploy.backends.tensorrt_engine import BuildSettings
    from hgdeploy.exporters.onnx_export import ExportOptions, export_to_file

    name = "squeeze"
    options = ExportOptions(batch=1, dynamic_batch=True, corner_pool="plugin")
    fp32 = export_to_file(name, output=tmp_path / f"{name}.onnx", options=options).path
    profile = batch_profile(ZOO[name], min_batch=1, opt_batch=1, max_batch=1)
    request = BuildRequest(
        model=name, backend="tensorrt", precision="int8", onnx=fp32, high_precision="fp32"
    )
    result = run_build_engine(request, BuildSettings(profile))
    assert result.prepared.path.name == f"{name}_int8-fp32.onnx"
    assert result.engine is not None and result.engine.name == f"{name}_int8-fp32.engine"
    _engine_matches_onnxruntime(name, result.engine, result.prepared.path, 1)


def _engine_matches_onnxruntime(name: str, engine: Path, onnx_path: Path, batch: int) -> None:
    from hgdeploy.backends.tensorrt_runner import tensorrt_runner
    from hgdeploy.base.precisions import Tolerance
    from hgdeploy.parity.compare import compare_runners, parity_feeds
    from hgdeploy.runners.onnxrt_runner import onnxruntime_runner

    spec = ZOO[name]
    # Same quantized arithmetic on both sides; requantization rounding may differ by one step
    # at a few elements and propagate, so bound the mean error tightly and not each element.
    tolerance = {
        o: Tolerance(atol=1e-3, rtol=0.0, range_fraction=0.01, stat="mean")
        for o in spec.output_names
    }
    rows = compare_runners(
        spec,
        onnxruntime_runner(onnx_path, providers=["CPUExecutionProvider"]),
        tensorrt_runner(engine, model=name, batch=batch),
        parity_feeds(spec, "image", batch, noise=False),
        tolerance,
    )
    assert all(row.passed for row in rows), rows
