"""`build --int8 --max-ap-drop`: the accuracy target's record reaches the sidecar, a target no
fallback meets stops in one line with nothing written, and a set without labels is refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import one_line_error, run_cli, use_cached_models

from hgdeploy.base.errors import HgDeployError
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


def _fake_search(monkeypatch: pytest.MonkeyPatch, score: object, ranking: list[str]) -> None:
    """Scores from `score`, and `ranking` as the sensitivity ranking (the search is tested)."""
    monkeypatch.setattr(accuracy_target, "score_deployment", score)
    monkeypatch.setattr(
        accuracy_target, "layer_sensitivity",
        lambda *args, **kwargs: [LayerSensitivity(n, "Conv", 1.0, None) for n in ranking],
    )  # fmt: skip


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

    _fake_search(monkeypatch, fake_score, first_two)
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


def _dequantized_inputs(model_path: Path, node_name: str) -> list[str]:
    """The inputs of `node_name` that a DequantizeLinear produces (int8 there)."""
    import onnx

    model = onnx.load_model(str(model_path))
    nodes = model.graph.node
    dequantized = {out for n in nodes if n.op_type == "DequantizeLinear" for out in n.output}
    node = next(n for n in model.graph.node if n.name == node_name)
    return [name for name in node.input if name in dequantized]


def test_onnxruntime_u8s8_falls_back_until_the_target_and_keeps_the_layer_in_float(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ONNX Runtime builds, with faked scores: eager 0.9, int8 0.1 unless the first
    ranked layer is kept in float (then 0.895). The search measures 0, then both ranked
    layers, then one; the artifact keeps exactly that layer out of the quantizer."""
    use_cached_models(monkeypatch)
    first_two = layer_names(load_onnx(workdir / "hrnet.onnx"))[:2]

    def fake_score(spec, labeled, deployment, *args) -> RunScore:
        if deployment.artifact is None:
            return RunScore("eager", "torch", None, {"AP": 0.9}, 0.0, [])
        record = json.loads(Path(f"{deployment.artifact}.json").read_text())
        kept = record["quantization"]["kept_in_high_precision"]
        return RunScore("x", "onnxruntime", None, {"AP": 0.895 if first_two[0] in kept else 0.1},
                        0.0, [])  # fmt: skip

    _fake_search(monkeypatch, fake_score, first_two)
    output = workdir / "ort_target.onnx"
    args = _build(workdir, output, "1.0")
    for flag in ("--prepare-only", "--batch"):
        at = args.index(flag)
        del args[at : at + (1 if flag == "--prepare-only" else 2)]
    args[args.index("tensorrt")] = "onnxruntime"
    code, printed = run_cli(args)
    assert code == 0, printed
    assert "with 1 layers in high precision" in printed and first_two[0] in printed
    record = json.loads(output.with_name(output.name + ".json").read_text())
    assert record["quantization"]["kept_in_high_precision"] == [first_two[0]]
    target = record["accuracy_target"]
    assert [s["kept"] for s in target["steps"]] == [0, 2, 1] and target["reached"] == 0.895
    assert _dequantized_inputs(output, first_two[0]) == []
    assert _dequantized_inputs(output, first_two[1])  # the other ranked layer is int8


def test_onnxruntime_u8s8_refuses_to_keep_a_layer_the_graph_lacks(
    workdir: Path, tmp_path: Path
) -> None:
    """ONNX Runtime's quantizer ignores unknown `nodes_to_exclude`: hgdeploy must not."""
    from hgdeploy.exporters.lowering import runnable_model
    from hgdeploy.precision.onnxruntime_int8 import quantize_u8s8

    lowered = runnable_model(load_onnx(workdir / "hrnet.onnx"))
    with pytest.raises(Exception, match="cannot keep 'no_such_conv' in float"):
        quantize_u8s8(lowered, feeds=[{}], cache=tmp_path / "cache.json", write_cache=True,
                      keep=["no_such_conv"])  # fmt: skip
    assert not (tmp_path / "cache.json").exists()


def test_openvino_int8_keeps_named_layers_out_of_nncf(workdir: Path, tmp_path: Path) -> None:
    """NNCF quantizes a conv by a FakeQuantize on its input; a kept layer (conv with a bias,
    which OpenVINO splits into convolution + Add) has none, its neighbour still does; an
    unknown layer, or a statistics cache for a build that keeps layers, is refused."""
    import openvino as ov

    from hgdeploy.backends import BuildRequest
    from hgdeploy.backends.build_job import run_build

    first, second = layer_names(load_onnx(workdir / "hrnet.onnx"))[:2]
    common = {"onnx": workdir / "hrnet.onnx", "calib_batches": 1}
    plain = run_build(BuildRequest("hrnet", "openvino", "int8", output=tmp_path / "plain.xml",
                                   **common))  # fmt: skip
    run_build(BuildRequest("hrnet", "openvino", "int8", output=tmp_path / "kept.xml",
                           keep_layers=(first,), **common))  # fmt: skip

    def quantized_input(xml: Path, layer: str) -> bool:
        ops = {op.get_friendly_name(): op for op in ov.Core().read_model(xml).get_ops()}
        conv = ops.get(f"{layer}/WithoutBiases") or ops[layer]
        return conv.input_value(0).get_node().get_type_name() == "FakeQuantize"

    assert quantized_input(tmp_path / "plain.xml", first)
    assert not quantized_input(tmp_path / "kept.xml", first)
    assert quantized_input(tmp_path / "kept.xml", second)
    record = json.loads((tmp_path / "kept.xml.json").read_text())
    assert record["quantization"]["kept_in_high_precision"] == [first]
    with pytest.raises(Exception, match="cannot keep 'no_such_conv' in float"):
        run_build(BuildRequest("hrnet", "openvino", "int8", output=tmp_path / "bad.xml",
                               keep_layers=("no_such_conv",), **common))  # fmt: skip
    # NNCF's statistics depend on what is ignored: a plain build's cache is refused up front
    with pytest.raises(HgDeployError, match="cannot serve a build that keeps layers"):
        run_build(BuildRequest("hrnet", "openvino", "int8", output=tmp_path / "bad.xml",
                               calib_cache=plain.calibration_cache, keep_layers=(first,),
                               **common))  # fmt: skip
    assert not (tmp_path / "bad.xml").exists()
    args = _build(workdir, tmp_path / "target.xml", "1.0")
    for flag in ("--prepare-only", "--batch"):
        at = args.index(flag)
        del args[at : at + (1 if flag == "--prepare-only" else 2)]
    args[args.index("tensorrt")] = "openvino"
    args += ["--calib-cache", str(plain.calibration_cache)]
    one_line_error(*run_cli(args), "--max-ap-drop on openvino needs --calib-dir, not --calib-cache")
