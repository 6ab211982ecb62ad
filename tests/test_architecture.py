"""The structure the code promises: layers that import downward only (import-linter), one
backend registry every command reads, and a CLI that starts without loading a framework."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import hgdeploy
from hgdeploy.backends import (
    Backend,
    backend_names,
    get_backend,
    register_backend,
    unregister_backend,
)
from hgdeploy.base.errors import HgDeployError
from hgdeploy.bench.results import BenchConfig
from hgdeploy.cli import main

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = Path(hgdeploy.__file__).parent


def _contract() -> dict[str, Any]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (contract,) = config["contracts"]
    return contract


def test_lint_imports_keeps_the_layers_contract() -> None:
    """`lint-imports` (import-linter) on the installed package: every import points down."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 kept, 0 broken" in done.stdout


def test_the_contract_covers_every_subpackage_and_ignores_nothing() -> None:
    contract = _contract()
    assert contract["type"] == "layers" and contract.get("exhaustive") is True
    assert "ignore_imports" not in contract
    named = {part.strip() for layer in contract["layers"] for part in layer.split("|")}
    children = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    children |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert children == named


class _FakeBackend(Backend):
    """A backend that exists only in this test: one module's worth of declarations."""

    name = "fake-npu"
    summary = "a backend registered by a test"
    runs = ("fp32",)


@pytest.fixture()
def fake_backend() -> Iterator[Backend]:
    backend = register_backend(_FakeBackend())
    yield backend
    unregister_backend(backend.name)


def test_a_registered_backend_is_a_choice_of_parity_and_bench(fake_backend: Backend) -> None:
    for command in ("parity", "bench"):
        result = CliRunner().invoke(main, [command, "--help"], env={"COLUMNS": "400"})
        assert result.exit_code == 0, result.output
        assert "fake-npu" in result.output, command
    BenchConfig(models=("hrnet",), backends=("torch", "fake-npu")).validate()
    # It is a valid choice: parity gets past click and asks the backend for a runner.
    result = CliRunner().invoke(
        main, ["parity", "--model", "hrnet", "--backend", "fake-npu", "--onnx", "absent.onnx"]
    )
    assert result.exit_code == 1 and result.output == "error: --backend fake-npu runs no artifact\n"
    assert "fake-npu" not in CliRunner().invoke(main, ["build", "--help"]).output  # no build step


def test_an_unregistered_backend_is_refused_everywhere() -> None:
    assert "fake-npu" not in backend_names()
    with pytest.raises(HgDeployError, match="^unknown backend 'fake-npu'; choose from torch"):
        get_backend("fake-npu")
    result = CliRunner().invoke(main, ["bench", "--backend", "fake-npu"])
    assert result.exit_code == 2 and "'fake-npu' is not one of" in result.output


def test_a_close_model_name_is_suggested() -> None:
    result = CliRunner().invoke(main, ["export", "--model", "SQUEEZE"])
    assert result.exit_code == 2 and "Did you mean 'squeeze'?" in result.output


def test_build_and_its_old_names_are_one_command(tmp_path: Path) -> None:
    absent = str(tmp_path / "absent.onnx")
    for args in (
        ["build", "--backend", "openvino", "--fp16"],
        ["build-engine", "--backend", "openvino", "--fp16"],
        ["build-engine", "--target", "openvino", "--fp16"],
    ):
        result = CliRunner().invoke(main, [*args, "--model", "hrnet", "--onnx", absent])
        assert result.exit_code == 1, args
        assert result.output == (
            "error: --backend openvino builds fp32, bf16, int8, not fp16 "
            "(fp16 is built by --backend tensorrt)\n"
        )
    listing = CliRunner().invoke(main, ["--help"]).output
    assert (
        " build " in listing
        and "build-engine" not in listing
        and "--target" not in (CliRunner().invoke(main, ["build", "--help"]).output)
    )


def test_the_cli_imports_no_framework() -> None:
    """`hgdeploy --help` must not load torch, onnx or a runtime (it did: 2.1-2.3 s)."""
    code = (
        "import sys, hgdeploy.cli; "
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'openvino', 'polygraphy', "
        "'numpy') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
