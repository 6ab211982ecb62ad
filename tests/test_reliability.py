"""Nothing a user owns is destroyed, an artifact and its sidecar change together, and every bad
input gets one line on stderr and a non-zero exit.

Each test asserts the exit code, that stderr is a single line, and the files on disk before and
after (inputs byte-identical). The cases are the ones a careless new user hit on main 67d2961.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from conftest import invoke_in as _invoke
from conftest import one_stderr_line as _one_line_error
from onnx import TensorProto, helper
from PIL import Image

from hgdeploy.backends import get_backend
from hgdeploy.base import artifacts
from hgdeploy.base.artifacts import artifact_files, read_sidecar, sidecar_path, write_sidecar
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.images import read_image
from hgdeploy.base.outputs import check_output
from hgdeploy.models.checkpoints import read_state_dict
from hgdeploy.parity.job import run_parity

MODEL = "hrnet"


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _tiny_onnx(path: Path, *, broken: bool = False) -> Path:
    """A small graph with hgdeploy's input name; `broken` deletes the node feeding the output."""
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 256, 192])
    y = helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [1, 3, 256, 192])
    nodes = [
        helper.make_node("Relu", ["image"], ["mid"]),
        helper.make_node("Relu", ["mid"], ["heatmaps"]),
    ]
    if broken:
        nodes = nodes[1:]  # "mid" now comes from nowhere
    graph = helper.make_graph(nodes, "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 10
    onnx.save_model(model, str(path))
    return path


# --- 1. a mistyped path never destroys an input ------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["parity", "--model", MODEL, "--onnx", "m.onnx", "--report", "m.onnx"], "is also the --onnx input"),
        (["export", "--model", MODEL, "--checkpoint", "c.pt", "--output", "c.pt"], "is also the --checkpoint input"),
        (["build", "--model", MODEL, "--backend", "onnxruntime", "--onnx", "m.onnx", "--output", "m.onnx"], "is also the --onnx input"),
        (["build", "--model", MODEL, "--backend", "onnxruntime", "--int8", "--onnx", "m.onnx", "--calib-cache", "c.pt", "--output", "c.pt"], "is also the --calib-cache input"),
        (["export", "--model", MODEL, "--output", "notes.txt"], "notes.txt exists and was not written by hgdeploy; pass --force"),
        (["parity", "--model", MODEL, "--onnx", "m.onnx", "--report", "notes.txt"], "was not written by hgdeploy"),
        (["export", "--model", MODEL, "--output", ""], "--output is empty"),
        (["export", "--model", MODEL, "--output", "/proc/x.onnx"], "cannot write to /proc"),
        (["parity", "--model", MODEL, "--onnx", "m.onnx", "--report", "/proc/r.json"], "cannot write to /proc"),
        (["build", "--model", MODEL, "--backend", "onnxruntime", "--onnx", "m.onnx", "--output", "/proc/x.onnx"], "cannot write to /proc"),
        (["build", "--model", MODEL, "--backend", "openvino", "--onnx", "m.onnx", "--output", "/proc/x.xml"], "cannot write to /proc"),
        (["bench", "--model", MODEL, "--output", "/proc"], "cannot write to /proc"),
        (["bench", "--model", MODEL, "--output", "foreign"], "results.json exists and was not written by hgdeploy"),
    ],
)  # fmt: skip
def test_outputs_that_would_destroy_a_file_are_refused_up_front(
    args: list[str], message: str, tmp_path: Path
) -> None:
    (tmp_path / "m.onnx").write_bytes(b"the user's 109 MB model")
    (tmp_path / "c.pt").write_bytes(b"the user's checkpoint")
    (tmp_path / "notes.txt").write_text("the user's notes\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "results.json").write_text('{"mine": true}')
    before = _snapshot(tmp_path)
    started = time.perf_counter()
    code, stderr = _invoke(args, tmp_path)
    _one_line_error(code, stderr, message)
    assert _snapshot(tmp_path) == before  # nothing written, nothing replaced
    assert {p.name for p in tmp_path.iterdir()} == {"m.onnx", "c.pt", "notes.txt", "sub", "foreign"}
    assert time.perf_counter() - started < 20  # refused before any export or run


def test_force_replaces_a_foreign_file_and_artifacts_of_ours_need_no_force(tmp_path: Path) -> None:
    with pytest.raises(HgDeployError, match="is a directory; give a file name"):
        check_output(tmp_path)
    foreign = tmp_path / "notes.txt"
    foreign.write_text("mine")
    with pytest.raises(HgDeployError, match="pass --force"):
        check_output(foreign)
    assert check_output(foreign, force=True) == foreign
    ours = tmp_path / "model.onnx"
    ours.write_bytes(b"onnx")
    write_sidecar(ours, {"kind": "onnx"})
    assert check_output(ours) == ours  # a re-export replaces our own artifact
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"versions": {"hgdeploy": "0.1.0"}}))
    assert check_output(report) == report


# --- 2. an artifact and its sidecar change together -----------------------------------------------


def _write_pair(path: Path, content: bytes, label: str) -> None:
    with artifact_files(path) as pending:
        pending.tmp().write_bytes(content)
        pending.describe({"label": label, "sha256": pending.sha256()})


def test_a_failing_sidecar_write_leaves_the_previous_pair(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    artifact = tmp_path / "model.onnx"
    _write_pair(artifact, b"old model", "old")
    before = _snapshot(tmp_path)
    real_replace = os.replace
    failed: list[Path] = []

    def sidecar_fails(src: str | Path, dst: str | Path) -> None:
        """The disk fills up when the new sidecar is renamed in (after the new model was)."""
        if Path(dst) == sidecar_path(artifact) and not failed:
            failed.append(Path(src))
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(artifacts.os, "replace", sidecar_fails)
    with pytest.raises(
        HgDeployError, match="No space left on device; the previous files are unchanged"
    ):
        _write_pair(artifact, b"new model", "new")
    monkeypatch.undo()
    assert _snapshot(tmp_path) == before  # the old pair, byte for byte, and no temporary files
    assert read_sidecar(artifact)["label"] == "old"


def test_a_failure_while_writing_leaves_nothing_new(tmp_path: Path) -> None:
    artifact = tmp_path / "new" / "deeper" / "model.onnx"
    with pytest.raises(RuntimeError), artifact_files(artifact) as pending:
        pending.tmp().write_bytes(b"half a model")
        raise RuntimeError("the exporter crashed")
    assert list(tmp_path.iterdir()) == []  # no file, no temp, no directory it created


def test_parity_refuses_an_artifact_that_does_not_match_its_sidecar(tmp_path: Path) -> None:
    onnx_path = _tiny_onnx(tmp_path / "m.onnx")
    write_sidecar(onnx_path, {"kind": "onnx", "model": MODEL, "sha256": "0" * 64})
    with pytest.raises(HgDeployError, match="does not match its sidecar m.onnx.json"):
        run_parity(MODEL, onnx_path)


# --- 3. tracebacks become one line -------------------------------------------------------------


def test_unreadable_checkpoints_get_one_line(tmp_path: Path) -> None:
    text = tmp_path / "c.txt"
    text.write_text("hello\n")
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, wrapped)
    nan = tmp_path / "nan.pt"
    torch.save({"conv1.weight": torch.tensor([1.0, float("nan")])}, nan)
    cases = {
        text: "not a PyTorch checkpoint",
        wrapped: "is a dict of 'model' with no tensors at the top level",
        nan: "non-finite values (NaN or inf) in 'conv1.weight'",
    }
    for path, message in cases.items():
        with pytest.raises(HgDeployError, match=re.escape(message)) as caught:
            read_state_dict(path)
        assert "weights_only=False" not in str(caught.value)
    code, stderr = _invoke(["export", "--model", MODEL, "--checkpoint", str(text)], tmp_path)
    _one_line_error(code, stderr, "cannot read checkpoint")


def test_broken_onnx_files_get_one_line_before_anything_runs(tmp_path: Path) -> None:
    broken = _tiny_onnx(tmp_path / "broken.onnx", broken=True)
    listed = _tiny_onnx(tmp_path / "listed.onnx")
    sidecar_path(listed).write_text("[1, 2]")
    external = tmp_path / "external.onnx"
    weights = helper.make_tensor(
        "w", TensorProto.FLOAT, [256], np.ones(256, np.float32).tobytes(), raw=True
    )
    x = helper.make_tensor_value_info("image", TensorProto.FLOAT, [256])
    y = helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [256])
    graph = helper.make_graph(
        [helper.make_node("Add", ["image", "w"], ["heatmaps"])], "g", [x], [y], [weights]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    onnx.save_model(
        model,
        str(external),
        save_as_external_data=True,
        location="external.onnx.data",
        size_threshold=0,
    )
    (tmp_path / "external.onnx.data").unlink()
    cases = {
        broken: "is not a valid ONNX graph",
        listed: "is not a JSON object",
        external: "cannot read ONNX",
    }  # fmt: skip
    for path, message in cases.items():
        started = time.perf_counter()
        code, stderr = _invoke(["parity", "--model", MODEL, "--onnx", str(path)], tmp_path)
        _one_line_error(code, stderr, message)
        assert time.perf_counter() - started < 20, path  # not after running the eager model


def test_huge_inputs_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, stderr = _invoke(["export", "--model", MODEL, "--batch", "100000"], tmp_path)
    _one_line_error(code, stderr, "use --dynamic-batch")
    image = tmp_path / "big.png"
    Image.new("RGB", (200, 200)).save(image)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 40000 pixels > 2x the limit
    code, stderr = _invoke(["predict", "--model", MODEL, "--image", str(image)], tmp_path)
    _one_line_error(code, stderr, "refused as a possible decompression bomb")


def test_an_unexpected_exception_is_one_line_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def crash(*_: object, **__: object) -> None:
        raise KeyError("something deep\nwith a second line")

    monkeypatch.setattr("hgdeploy.predict.predict", crash)
    code, stderr = _invoke(["predict", "--model", MODEL], tmp_path)
    _one_line_error(code, stderr, "unexpected KeyError: 'something deep")


# --- 4. accepted and wrong -> refused --------------------------------------------------------


def test_options_that_were_silently_wrong_are_refused(tmp_path: Path) -> None:
    onnx_path = str(_tiny_onnx(tmp_path / "m.onnx"))
    cases = [
        (["export", "--model", MODEL, "--opset", "99"], "--opset 99: this onnx knows opsets up to"),
        (["build", "--model", MODEL, "--int8", "--fp16", "--onnx", onnx_path], "give one precision flag, not --fp16 and --int8"),
        (["build", "--model", MODEL, "--fp16", "--onnx", onnx_path, "--max-batch", "4"], "has a static batch of 1, so its profile can only be 1..1"),
        (["build", "--model", MODEL, "--fp16", "--prepare-only", "--onnx", onnx_path, "--batch", "1", "--output", "x.engine"], "--output names the prepared ONNX"),
    ]  # fmt: skip
    for args, message in cases:
        code, stderr = _invoke(args, tmp_path)
        _one_line_error(code, stderr, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


def test_bench_of_only_unavailable_backends_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The machine may or may not have TensorRT; the case is "the only backend asked for
    # cannot run here", so make that so on every machine.
    monkeypatch.setattr(get_backend("tensorrt"), "unavailable_reason", lambda: "no CUDA GPU")
    code, stderr = _invoke(["bench", "--model", MODEL, "--backend", "tensorrt"], tmp_path)
    _one_line_error(code, stderr, "no requested backend can run here (tensorrt: no CUDA GPU)")
    assert not (tmp_path / "benchmarks").exists()


# --- 5. silent wrong results -----------------------------------------------------------------


def test_a_16_bit_png_keeps_its_content(tmp_path: Path) -> None:
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    path = tmp_path / "ramp16.png"
    Image.fromarray(ramp).save(path)
    pixels = read_image(path)
    assert pixels.shape == (64, 64, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[..., 0], (ramp >> 8).astype(np.uint8))  # as cv2.imread
    assert len(np.unique(pixels)) == 256  # before: everything above 255 saturated to 255


def test_sidecars_record_the_checkpoint_path_absolute(tmp_path: Path) -> None:
    from hgdeploy.models.loader import weights_provenance

    checkpoint = tmp_path / "c.pt"
    checkpoint.write_bytes(b"x")
    previous = Path.cwd()
    os.chdir(tmp_path)
    try:
        recorded = weights_provenance("c.pt")["checkpoint"]
    finally:
        os.chdir(previous)
    assert recorded == str(checkpoint.resolve())


# --- 6. SIGTERM leaves no temporary file -----------------------------------------------------

# The writer is slowed down where it writes (the real onnx/OpenVINO save is swapped for one that
# writes part of a file and waits), so the signal lands mid-write every time.
_SLOW_WRITE = """
import sys, time
from pathlib import Path

def slow_write(path):
    Path(path).write_bytes(b"x" * 2**20)
    print("WRITING", flush=True)
    time.sleep(60)
"""

_EXPORT_SCRIPT = (
    _SLOW_WRITE
    + """
import onnx
from hgdeploy.exporters import onnx_export
onnx_export.load_model = lambda *a, **k: None
onnx_export.export_onnx = lambda *a, **k: onnx.ModelProto()
onnx_export.check_onnx = lambda proto: None
onnx.save_model = lambda proto, path, *a, **k: slow_write(path)
from hgdeploy.cli import main
main(["export", "--model", "hrnet", "--output", sys.argv[1]])
"""
)

_OPENVINO_SCRIPT = (
    _SLOW_WRITE
    + """
import openvino as ov
from hgdeploy.backends import openvino_ir
from hgdeploy.backends.openvino import OpenVinoBackend
from hgdeploy.backends.cpu_artifacts import LoweredSource
from hgdeploy.base.zoo import get_spec

def lowered(self, request, precision, step):
    provenance = {"model": "hrnet", "target": "openvino", "precision": precision}
    return LoweredSource(get_spec("hrnet"), Path("x.onnx"), None, request.output, precision, provenance)

def save_model(model, path, **kwargs):
    Path(path).with_suffix(".bin").write_bytes(b"w" * 2**20)
    slow_write(path)

OpenVinoBackend.lowered = lowered
openvino_ir.ov_model_from_onnx = lambda model: type("M", (), {"set_rt_info": lambda *a: None})()
ov.save_model = save_model
from hgdeploy.cli import main
main(["build", "--model", "hrnet", "--backend", "openvino", "--output", sys.argv[1]])
"""
)


@pytest.mark.parametrize(
    ("script", "name"), [(_EXPORT_SCRIPT, "m.onnx"), (_OPENVINO_SCRIPT, "m.xml")]
)
def test_sigterm_mid_write_leaves_no_temporary_file(script: str, name: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    process = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script), str(out / name)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    for line in process.stdout:
        if line.strip() == "WRITING":
            break
    else:
        raise AssertionError(f"the writer never started: {process.stderr.read()}")
    leftovers = [p.name for p in out.rglob("*")]
    assert any(n.startswith(".") for n in leftovers), leftovers  # a temporary file exists now
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 128 + signal.SIGTERM
    assert not out.exists() or list(out.rglob("*")) == []  # no temp, no artifact, no empty dir


# --- 7. late or misleading errors --------------------------------------------------------------


def test_a_corrupt_cpu_calibration_cache_says_corrupt(tmp_path: Path) -> None:
    onnx_path = str(_tiny_onnx(tmp_path / "m.onnx"))
    cache = tmp_path / "cache.json"
    cache.write_text('{"conv": [0.0, ')
    args = ["build", "--model", MODEL, "--backend", "onnxruntime", "--int8", "--onnx", onnx_path]
    code, stderr = _invoke([*args, "--calib-cache", str(cache), "--output", "q.onnx"], tmp_path)
    _one_line_error(code, stderr, f"corrupt calibration cache {cache}")
    assert not (tmp_path / "q.onnx").exists()


def test_a_corrupt_openvino_ir_is_one_line_without_native_noise(tmp_path: Path) -> None:
    """OpenVINO's frontends print absl log lines straight to the process's stderr; the IR is
    checked before OpenVINO sees it, so stderr (captured at the file descriptor) is one line."""
    xml = tmp_path / "bad.xml"
    xml.write_text('<?xml version="1.0"?><net><layers><layer id="0"')
    xml.with_suffix(".bin").write_bytes(b"\0" * 64)
    done = subprocess.run(
        [sys.executable, "-m", "hgdeploy", "parity", "--model", MODEL, "--backend", "openvino"]
        + ["--onnx", str(xml)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stderr.count("\n") == 1 and "is not an OpenVINO IR" in done.stderr, done.stderr


def test_prepare_only_writes_the_prepared_onnx_at_output(tmp_path: Path) -> None:
    """`--prepare-only --output X` writes X (with its sidecar), not the default artifact."""
    onnx_path = _tiny_onnx(tmp_path / "m.onnx")
    before = onnx_path.read_bytes()
    args = ["build", "--model", MODEL, "--fp32", "--prepare-only", "--batch", "1"]
    code, stderr = _invoke([*args, "--onnx", str(onnx_path), "--output", "p.onnx"], tmp_path)
    assert code == 0, stderr
    assert (tmp_path / "p.onnx").read_bytes() == before  # fp32: the same graph, copied
    assert read_sidecar(tmp_path / "p.onnx")["conversion"] == "none (copy-through)"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "p.onnx", "p.onnx.json"]


def test_a_failed_export_leaves_no_directory_it_would_have_created(tmp_path: Path) -> None:
    text = tmp_path / "c.txt"
    text.write_text("not a checkpoint\n")
    args = ["export", "--model", MODEL, "--checkpoint", str(text), "--output", "new/dir/x.onnx"]
    code, stderr = _invoke(args, tmp_path)
    _one_line_error(code, stderr, "cannot read checkpoint")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]
