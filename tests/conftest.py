"""Shared fixtures: models with deterministic synthetic weights, built once per test session."""

from __future__ import annotations

import functools
import importlib.util
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from hgdeploy.models.loader import load_model

GOLDEN_INPUT_SEED = 7  # the input seed used when tests/data/golden was recorded upstream


def synthetic_model(name: str, seed: int = 0) -> nn.Module:
    """`load_model(name)` with synthetic weights; cached because CornerNet alone takes ~10 s
    (one entry per (name, seed), however the caller spells the arguments)."""
    return _synthetic_model(name, seed)


@functools.cache
def _synthetic_model(name: str, seed: int) -> nn.Module:
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return load_model(name, seed=seed)


# hgdeploy modules that call `load_model` (imported by name), patched in tests that export,
# check parity or bench a model many times.
LOAD_MODEL_USERS = ("models.loader", "exporters.onnx_export")


def cached_load_model(name: str, checkpoint: object = None, *, seed: int = 0) -> nn.Module:
    """`load_model` without a checkpoint, from the session cache (HRNet's BN calibration is
    slow on 2 cores and every export, parity check or bench run would repeat it)."""
    assert checkpoint is None
    return synthetic_model(name, seed)


def use_cached_models(patch: pytest.MonkeyPatch) -> None:
    """Route every `load_model` call of hgdeploy to `cached_load_model`."""
    for where in LOAD_MODEL_USERS:
        patch.setattr(f"hgdeploy.{where}.load_model", cached_load_model)


def golden_input(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(GOLDEN_INPUT_SEED))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests without a CUDA device, and `tensorrt` tests without TensorRT too, with a
    reason that says what is missing.

    On the GPU CI runner HGDEPLOY_REQUIRE_GPU=1 makes that an error: a GPU job that skipped
    everything would pass without testing anything.
    """
    has_cuda = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    needs = {
        "gpu": [] if has_cuda else ["a CUDA GPU"],
        "tensorrt": [w for w, ok in (("a CUDA GPU", has_cuda), ("TensorRT", has_trt)) if not ok],
    }
    for item in items:
        missing = sorted({m for marker, ms in needs.items() if marker in item.keywords for m in ms})
        if not missing:
            continue
        reason = f"needs {' and '.join(missing)}, not present on this machine"
        if os.environ.get("HGDEPLOY_REQUIRE_GPU") == "1":
            raise pytest.UsageError(f"HGDEPLOY_REQUIRE_GPU=1 but {item.nodeid} {reason}")
        item.add_marker(pytest.mark.skip(reason=reason))


def run_cli(args: list[str]) -> tuple[int, str]:
    """`hgdeploy ARGS` in-process: (exit code, everything it printed)."""
    from click.testing import CliRunner

    from hgdeploy.cli import main

    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def one_line_error(code: int, output: str, words: str) -> None:
    """A refusal as users must see it: exit 1, one `error:` line naming `words`, no traceback."""
    assert code == 1, output
    assert output.strip().count("\n") == 0 and output.strip().startswith("error:"), output
    assert words in output, output
    assert "Traceback" not in output


def invoke_in(args: list[str], cwd: Path) -> tuple[int, str]:
    """`hgdeploy ARGS` in-process with `cwd` as the working directory: (exit code, stderr)."""
    from click.testing import CliRunner

    from hgdeploy.cli import main

    previous = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, args)
    finally:
        os.chdir(previous)
    return result.exit_code, result.stderr


def one_stderr_line(code: int, stderr: str, expected: str) -> None:
    """Exit 1 and exactly one `error:` line on stderr that names `expected`."""
    assert code == 1, stderr
    assert stderr.count("\n") == 1 and stderr.startswith("error: "), stderr
    assert expected in stderr, stderr
