"""TensorRT engines: profiles, compatibility checks, the CPU half of build-engine, and (on a GPU
machine with TensorRT 11) engine builds per precision with parity against the eager models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hgdeploy.cli import main
from hgdeploy.engine.profile import BatchProfile, batch_profile
from hgdeploy.errors import HgDeployError
from hgdeploy.runners.tensorrt_runner import check_engine_compatible, engine_record
from hgdeploy.zoo import ZOO


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
    assert BatchProfile(1, 4, 8).shapes(spec) == ((1, 3, 511, 511), (4, 3, 511, 511), (8, 3, 511, 511))


RECORD = {
    "kind": "tensorrt-engine",
    "model": "squeeze",
    "tensorrt": "11.4.0",
    "gpu": {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"},
    "profile": {"min": 1, "opt": 13, "max": 13},
}


def _check(**overrides: object) -> None:
    kwargs = {"model": "squeeze", "batch": 4, "tensorrt_version": "11.4.0",
              "gpu_name": "NVIDIA H100 80GB HBM3"}
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
    assert result.output == "error: --backend tensorrt needs --engine PATH (hgdeploy build-engine)\n"
