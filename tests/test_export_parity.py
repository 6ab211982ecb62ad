"""Export to ONNX (plugin and lowered forms) and parity on ONNX Runtime for every zoo model.

Each model is exported once, from an upstream-format checkpoint file (the weights are the
synthetic ones, saved the way the upstream training code saves them); the lowered form is
derived from the same trace. Both forms must reproduce the eager model on ONNX Runtime CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from conftest import synthetic_model

from hgdeploy.base.artifacts import sha256_file, sidecar_path, write_sidecar
from hgdeploy.base.zoo import ZOO
from hgdeploy.cli import main
from hgdeploy.exporters.corner_pool_ops import (
    DOMAIN,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    count_corner_pool_nodes,
)
from hgdeploy.exporters.lowering import lower_corner_pools
from hgdeploy.exporters.onnx_export import ExportOptions, check_onnx, export_to_file, save_onnx
from hgdeploy.parity.job import run_parity

CORNER_MODELS = ("cornernet", "squeeze", "saccade")
ONE_POOL_EACH = {"TopPool": 1, "BottomPool": 1, "LeftPool": 1, "RightPool": 1}
NO_POOLS = {"TopPool": 0, "BottomPool": 0, "LeftPool": 0, "RightPool": 0}


def _upstream_checkpoint(name: str, directory: Path) -> Path:
    """Synthetic weights saved in the upstream project's own checkpoint format."""
    state = synthetic_model(name).state_dict()
    if name in CORNER_MODELS:
        path, obj = directory / f"{name}_500000.pkl", {f"module.{k}": v for k, v in state.items()}
    elif name == "hourglass":
        path = directory / "checkpoint.pt"
        obj = {"state_dict": {f"model.module.{k}": v for k, v in state.items()}, "epoch": 1}
    else:
        path, obj = directory / "final_state.pth", state
    torch.save(obj, path)
    return path


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Path]]:
    """{model: {"checkpoint", "plugin", "onnx"}} paths, exported once per test session."""
    return {}


def _exported(name: str, exports: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    if name not in exports:
        directory = tmp_path_factory.mktemp(name)
        checkpoint = _upstream_checkpoint(name, directory)
        plugin = export_to_file(name, checkpoint=checkpoint, output=directory / "plugin.onnx")
        lowered = directory / "lowered.onnx"
        proto = lower_corner_pools(onnx.load(str(plugin.path)))
        check_onnx(proto)
        save_onnx(proto, lowered)
        _retie_sidecar(plugin.path, lowered, corner_pool="onnx")
        exports[name] = {"checkpoint": checkpoint, "plugin": plugin.path, "onnx": lowered}
    return exports[name]


@pytest.mark.parametrize("name", list(ZOO))
def test_export_both_forms_match_eager_on_onnxruntime(name, exports, tmp_path_factory) -> None:
    paths = _exported(name, exports, tmp_path_factory)
    spec = ZOO[name]
    plugin = onnx.load(str(paths["plugin"]))
    lowered = onnx.load(str(paths["onnx"]))

    assert [i.name for i in plugin.graph.input] == ["image"]
    assert [o.name for o in plugin.graph.output] == list(spec.output_names)
    assert [o.name for o in lowered.graph.output] == list(spec.output_names)
    expected = ONE_POOL_EACH if name in CORNER_MODELS else NO_POOLS
    assert count_corner_pool_nodes(plugin) == expected
    assert count_corner_pool_nodes(lowered) == NO_POOLS
    for node in plugin.graph.node:
        if node.op_type in ONE_POOL_EACH:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert node.domain == DOMAIN
            assert attrs == {
                "plugin_version": PLUGIN_VERSION.encode(),
                "plugin_namespace": PLUGIN_NAMESPACE.encode(),
                "aot": 1,
            }

    sidecar = json.loads(Path(str(paths["plugin"]) + ".json").read_text())
    assert sidecar["model"] == name and sidecar["weights"] == "checkpoint"
    assert sidecar["sha256"] == sha256_file(paths["plugin"])
    assert sidecar["checkpoint"] == str(paths["checkpoint"])
    assert sidecar["corner_pool_nodes"] == expected

    forms = ("plugin", "onnx") if name in CORNER_MODELS else ("plugin",)
    for form in forms:
        report = run_parity(name, paths[form], seed=3)
        assert report.passed, [o for o in report.outputs if not o.passed]
        assert report.details["weights"] == str(paths["checkpoint"])  # the sidecar's checkpoint
        for row in report.outputs:
            # fp32 on both sides: expect ~1e-5 of the output range (see the zoo tolerances)
            assert row.max_abs <= 1e-4 * max(row.scale, 1.0), row


def test_dynamic_batch_export_runs_any_batch(tmp_path: Path) -> None:
    options = ExportOptions(batch=1, dynamic_batch=True, corner_pool="onnx")
    result = export_to_file("squeeze", output=tmp_path / "dyn.onnx", options=options)
    dims = onnx.load(str(result.path)).graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 511, 511]
    report = run_parity("squeeze", result.path, batch=2)
    assert report.passed and report.batch == 2
    assert len(report.feeds) == 3 and report.feeds[0].startswith("images:")


def _perturbed_copy(source: Path, target: Path) -> Path:
    model = onnx.load(str(source))
    weight = next(t for t in model.graph.initializer if len(t.dims) == 4 and t.dims[0] == 80)
    array = onnx.numpy_helper.to_array(weight).copy()
    array *= 1.05  # a 5% error in one head's last conv: small, but far outside fp32 tolerances
    weight.CopyFrom(onnx.numpy_helper.from_array(array, weight.name))
    onnx.save(model, str(target))
    _retie_sidecar(source, target)
    return target


def _retie_sidecar(source: Path, target: Path, **changes: object) -> None:
    """`source`'s sidecar record (its weights, shapes) for `target`, with `target`'s own sha256:
    parity refuses a sidecar that describes another file."""
    record = json.loads(sidecar_path(source).read_text())
    for written_anew in ("artifact", "created", "versions"):
        record.pop(written_anew)
    record.update(changes, sha256=sha256_file(target))
    write_sidecar(target, record)


def test_cli_export_then_parity_and_a_perturbed_model_fails(tmp_path: Path) -> None:
    runner = CliRunner()
    onnx_path = tmp_path / "squeeze.onnx"
    result = runner.invoke(main, ["export", "--model", "squeeze", "--output", str(onnx_path)])
    assert result.exit_code == 0, result.output
    assert onnx_path.is_file() and Path(str(onnx_path) + ".json").is_file()
    assert "4 corner-pool plugin nodes" in result.output

    report = tmp_path / "report.json"
    args = ["parity", "--model", "squeeze", "--onnx", str(onnx_path), "--report", str(report)]
    result = runner.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and json.loads(report.read_text())["passed"] is True

    bad = _perturbed_copy(onnx_path, tmp_path / "perturbed.onnx")
    result = runner.invoke(main, ["parity", "--model", "squeeze", "--onnx", str(bad)])
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output
    verdict = json.loads(Path(str(bad) + ".parity.json").read_text())
    assert verdict["passed"] is False
    failed = {o["name"] for o in verdict["outputs"] if not o["passed"]}
    assert failed and failed <= {"tl_heat", "br_heat"}


def _one_line_error(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    return result.output


def test_export_bad_checkpoint_leaves_no_file(tmp_path: Path) -> None:
    checkpoint = tmp_path / "broken.pkl"
    checkpoint.write_bytes(b"\x00" * 64)
    output = tmp_path / "out" / "model.onnx"
    message = _one_line_error(
        ["export", "--model", "squeeze", "--checkpoint", str(checkpoint), "--output", str(output)]
    )
    assert "cannot read checkpoint" in message
    assert (
        not output.exists()
        and not (tmp_path / "out").exists()
        or not any((tmp_path / "out").iterdir())
    )


def test_export_unwritable_output_leaves_no_file(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    message = _one_line_error(
        ["export", "--model", "hrnet", "--output", str(blocker / "model.onnx")]
    )
    assert "cannot create" in message


def test_export_unknown_model() -> None:
    result = CliRunner().invoke(main, ["export", "--model", "resnet50"])
    assert result.exit_code == 2 and "'resnet50' is not one of" in result.output


def test_parity_rejects_corrupt_and_missing_onnx(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(np.random.default_rng(0).bytes(1000))
    assert "cannot read ONNX" in _one_line_error(
        ["parity", "--model", "hrnet", "--onnx", str(corrupt)]
    )
    assert "ONNX file not found" in _one_line_error(
        ["parity", "--model", "hrnet", "--onnx", str(tmp_path / "missing.onnx")]
    )


def test_parity_rejects_onnx_of_another_model_or_batch(tmp_path: Path) -> None:
    result = export_to_file("hrnet", output=tmp_path / "hrnet.onnx")
    assert "holds model 'hrnet', not 'hourglass'" in _one_line_error(
        ["parity", "--model", "hourglass", "--onnx", str(result.path)]
    )
    assert "static batch of 1" in _one_line_error(
        ["parity", "--model", "hrnet", "--onnx", str(result.path), "--batch", "2"]
    )
