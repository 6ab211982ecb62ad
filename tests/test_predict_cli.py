"""`hgdeploy predict` from a user's side: outputs in image pixels, and bad input in one line."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from conftest import one_line_error, use_cached_models
from conftest import run_cli as run
from onnx import TensorProto, helper

from hgdeploy.base.images import sample_images
from hgdeploy.base.onnx_files import METADATA_MODEL_KEY


@pytest.fixture(autouse=True)
def cached(monkeypatch: pytest.MonkeyPatch) -> None:
    use_cached_models(monkeypatch)


def test_predictions_json_and_drawing_in_image_pixels(tmp_path: Path) -> None:
    code, output = run(["predict", "--model", "hrnet", "--output", str(tmp_path / "out")])
    assert code == 0, output
    records = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert len(records) == 1 and records[0]["category_id"] == 1
    keypoints = np.reshape(records[0]["keypoints"], (17, 3))
    assert keypoints[:, :2].max() > 64  # image pixels (512x512), not heatmap cells (48x64)
    assert cv2.imread(str(tmp_path / "out" / "astronaut.png")).shape == (512, 512, 3)
    code, output = run(["predict", "--model", "hrnet", "--output", str(tmp_path / "out")])
    assert code == 0, output  # its own previous output is replaced without --force


def test_a_16_bit_png_reads_as_opencv_reads_it(tmp_path: Path) -> None:
    """The high byte of each sample (what cv2.imread, upstream's reader, gives), not saturated."""
    pixels = sample_images(["coffee"])[0][1]
    wide = pixels.astype(np.uint16) * 257  # the same picture at 16 bits
    cv2.imwrite(str(tmp_path / "wide.png"), np.ascontiguousarray(wide[..., ::-1]))
    cv2.imwrite(str(tmp_path / "narrow.png"), np.ascontiguousarray(pixels[..., ::-1]))
    results = []
    for name in ("wide", "narrow"):
        code, output = run(["predict", "--model", "hrnet", "--image", str(tmp_path / f"{name}.png"),
                            "--output", str(tmp_path / name)])  # fmt: skip
        assert code == 0, output
        results.append(json.loads((tmp_path / name / "predictions.json").read_text()))
    assert results[0][0]["keypoints"] == results[1][0]["keypoints"]


def test_box_outside_the_image_is_refused() -> None:
    code, output = run(["predict", "--model", "hrnet", "--box", "600,10,50,50"])
    one_line_error(code, output, "lies outside the 512x512 image")
    code, output = run(["predict", "--model", "hrnet", "--box", "1,2,3"])
    one_line_error(code, output, "give x,y,w,h")
    code, output = run(["predict", "--model", "squeeze", "--box", "1,2,3,4"])
    one_line_error(code, output, "--box is for the pose models")


def test_artifact_of_another_model_is_refused(tmp_path: Path) -> None:
    node = helper.make_node("Identity", ["image"], ["heatmaps"])
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 511, 511])],
        [helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, [1, 3, 511, 511])],
    )  # fmt: skip
    model = helper.make_model(graph)
    helper.set_model_props(model, {METADATA_MODEL_KEY: "squeeze"})
    path = tmp_path / "squeeze.onnx"
    onnx.save(model, path)
    code, output = run(["predict", "--model", "hrnet", "--artifact", str(path)])
    one_line_error(code, output, "was made from 'squeeze', not 'hrnet'")


def test_backend_not_installed_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from hgdeploy.backends.registry import get_backend

    backend = get_backend("openvino")
    monkeypatch.setattr(
        type(backend), "unavailable_reason", lambda self: "openvino is not installed"
    )
    artifact = tmp_path / "hrnet.xml"
    artifact.write_text("<net/>")
    code, output = run(
        ["predict", "--model", "hrnet", "--backend", "openvino", "--artifact", str(artifact)]
    )
    one_line_error(code, output, "cannot run here: openvino is not installed")


def test_unreadable_image_and_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"no image")
    code, output = run(["predict", "--model", "hrnet", "--image", str(tmp_path / "bad.jpg")])
    one_line_error(code, output, "cannot read image")
    empty = tmp_path / "empty"
    empty.mkdir()
    code, output = run(["predict", "--model", "hrnet", "--images", str(empty)])
    one_line_error(code, output, "no .jpg/.jpeg/.png/.bmp images in")


def test_bench_pipeline_records_each_stage(tmp_path: Path) -> None:
    """`bench --op pipeline` measures and records (it never asserts a time)."""
    code, output = run(["bench", "--op", "pipeline", "--model", "hrnet", "--backend", "torch",
                        "--iterations", "1", "--output", str(tmp_path)])  # fmt: skip
    assert code == 0, output
    data = json.loads((tmp_path / "pipeline.json").read_text())
    (row,) = data["rows"]
    assert {"preprocess", "network", "postprocess"} <= set(row["per_image_ms"])
    assert row["end_to_end_ms"] >= row["network_ms"] > 0
    assert "| hrnet | torch |" in (tmp_path / "pipeline.md").read_text()


def test_drawings_never_replace_the_photos(tmp_path: Path) -> None:
    """The drawing of photos/astronaut.png would be photos/astronaut.png with --output photos."""
    photos = tmp_path / "photos"
    photos.mkdir()
    cv2.imwrite(str(photos / "astronaut.png"), sample_images(["astronaut"])[0][1][..., ::-1])
    before = (photos / "astronaut.png").read_bytes()
    code, output = run(
        ["predict", "--model", "hrnet", "--image", str(photos / "astronaut.png"), "--output",
         str(photos)]
    )  # fmt: skip
    one_line_error(code, output, "astronaut.png")
    code, output = run(
        ["predict", "--model", "hrnet", "--images", str(photos), "--output", str(photos)]
    )
    one_line_error(code, output, "is also the --images input")
    assert (photos / "astronaut.png").read_bytes() == before
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "astronaut.png").write_bytes(b"a user's own file")
    code, output = run(
        ["predict", "--model", "hrnet", "--images", str(photos), "--output", str(tmp_path / "out")]
    )
    one_line_error(code, output, "--force")
    assert (tmp_path / "out" / "astronaut.png").read_bytes() == b"a user's own file"
