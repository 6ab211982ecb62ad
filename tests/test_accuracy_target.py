"""`build --int8 --max-ap-drop`: the accuracy target's record reaches the sidecar, a target no
fallback meets stops in one line with nothing written, and a set without labels is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import one_line_error, run_cli, use_cached_models

from hgdeploy.base.onnx_files import load_onnx
from hgdeploy.evaluation import accuracy_target
from hgdeploy.evaluation.run import RunScore
from hgdeploy.exporters.onnx_export import export_to_file
from hgdeploy.precision.int8 import layer_names
from hgdeploy.precision.sensitivity import LayerSensitivity
from hgdeploy.standin.pose_training import held_out_set
from hgdeploy.standin.scenes import write_set


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An fp32 HRNet export (synthetic weights) and a 2-person held-out set."""
    work = tmp_path_factory.mktemp("ap_target")
    patch = pytest.MonkeyPatch()
    use_cached_models(patch)
    try:
        export_to_file("hrnet", output=work / "hrnet.onnx")
    finally:
        patch.undo()
    write_set(held_out_set("hrnet", 2, seed=3), work / "val")
    return work


def _build(work: Path, output: Path, drop: str) -> list[str]:
    val = work / "val"
    return ["build", "--model", "hrnet", "--backend", "tensorrt", "--int8", "--prepare-only",
            "--onnx", str(work / "hrnet.onnx"), "--batch", "1", "--calib-batches", "1",
            "--max-ap-drop", drop,
            "--annotations", str(val / "annotations.json"), "--images", str(val),
            "--output", str(output)]  # fmt: skip


def test_a_met_target_is_recorded_in_the_sidecar(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_cached_models(monkeypatch)
    output = workdir / "met.onnx"
    code, printed = run_cli(_build(workdir, output, "100"))
    assert code == 0, printed
    assert "accuracy target: AP" in printed and "with 0 layers in high precision" in printed
    record = json.loads(output.with_name(output.name + ".json").read_text())
    target = record["accuracy_target"]
    assert target["kept_layers"] == [] and [s["kept"] for s in target["steps"]] == [0]
    assert target["reached"] >= target["eager_fp32"] - 1.0
    assert record["quantization"]["kept_in_high_precision"] == []


def test_an_unreachable_target_stops_in_one_line_and_writes_nothing(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Eager scores 0.9, every int8 graph 0.1 (scores faked: the search is what is tested);
    the ranking is the graph's first two layers."""
    use_cached_models(monkeypatch)
    first_two = layer_names(load_onnx(workdir / "hrnet.onnx"))[:2]

    def fake_score(spec, labeled, deployment, *args) -> RunScore:
        ap = 0.9 if deployment.artifact is None else 0.1
        return RunScore("x", "onnxruntime", None, {"AP": ap}, 0.0, [])

    monkeypatch.setattr(accuracy_target, "score_deployment", fake_score)
    monkeypatch.setattr(
        accuracy_target, "layer_sensitivity",
        lambda *args, **kwargs: [LayerSensitivity(n, "Conv", 1.0, None) for n in first_two],
    )  # fmt: skip
    output = workdir / "missed.onnx"
    code, printed = run_cli(_build(workdir, output, "1.0"))
    one_line_error(code, printed, "no fallback meets the target 0.8900")
    assert "plain int8 scores 0.1000" in printed and "all 2 ranked layers" in printed
    assert not output.exists() and not list(workdir.glob("missed*"))


def test_a_set_without_labels_is_refused(workdir: Path, tmp_path: Path) -> None:
    coco = json.loads((workdir / "val" / "annotations.json").read_text())
    coco["annotations"] = []
    (tmp_path / "annotations.json").write_text(json.dumps(coco))
    val = workdir / "val"
    args = _build(workdir, tmp_path / "x.onnx", "1.0")
    args[args.index(str(val / "annotations.json"))] = str(tmp_path / "annotations.json")
    one_line_error(*run_cli(args), "no person keypoint labels")


def test_the_sensitivity_command_ranks_layers_and_writes_json_and_png(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The whole command on the real graph, measuring its first three layers (all ~300 take
    minutes): ranked largest error first, files written together."""
    from hgdeploy.precision import sensitivity_run

    real = sensitivity_run.layer_sensitivity
    first_three = layer_names(load_onnx(workdir / "hrnet.onnx"))[:3]
    monkeypatch.setattr(
        sensitivity_run, "layer_sensitivity",
        lambda *args, **kwargs: real(*args, **{**kwargs, "layers": first_three}),
    )  # fmt: skip
    code, printed = run_cli(["sensitivity", "--model", "hrnet", "--onnx",
                             str(workdir / "hrnet.onnx"), "--calib-batches", "1",
                             "--output", str(tmp_path)])  # fmt: skip
    assert code == 0, printed
    report = json.loads((tmp_path / "sensitivity.json").read_text())
    errors = [layer["relative_l2"] for layer in report["layers"]]
    assert sorted(layer["layer"] for layer in report["layers"]) == sorted(first_three)
    assert errors == sorted(errors, reverse=True) and errors[0] > 0
    assert (tmp_path / "sensitivity.png").read_bytes()[:4] == b"\x89PNG"
    assert report["calibration"]["method"] == "max" and "1." in printed
