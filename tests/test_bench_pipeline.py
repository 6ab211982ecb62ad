"""`bench --op pipeline` on given deployments and photos: what each row measured is what the
pipeline did (detections, Saccade's crops), and misused options get one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_line_error, synthetic_model
from conftest import run_cli as run
from PIL import Image
from pipeline_inputs import corner_heads, detector_test_weights

from hgdeploy.base.images import sample_images
from hgdeploy.pipelines.saccade import ATTENTION_NAMES


def detecting_checkpoint(name: str, directory: Path) -> Path:
    """Seeded weights that pair corners (squeeze finds boxes on photos), in upstream's format."""
    model = detector_test_weights(copy.deepcopy(synthetic_model(name)))
    path = directory / f"{name}_test.pkl"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    return path


def photo_crops(directory: Path, size: int = 255) -> list[np.ndarray]:
    """Two bundled photos cut to size x size, written as PNGs (what `--images` reads)."""
    directory.mkdir()
    crops = []
    for name, pixels in sample_images(["astronaut", "coffee"]):
        crop = np.ascontiguousarray(pixels[:size, :size])
        Image.fromarray(crop).save(directory / f"{name}.png")
        crops.append(crop)
    return crops


def test_pipeline_bench_times_an_artifact_on_given_photos(tmp_path: Path) -> None:
    """The eager row, then the artifact's row labelled as `evaluate` labels it; the photos are
    --images' files, and each row's detections per image is what its pipeline finds on them."""
    from hgdeploy.pipelines import build_pipeline

    checkpoint = detecting_checkpoint("squeeze", tmp_path)
    crops = photo_crops(tmp_path / "photos")
    artifact = tmp_path / "squeeze_255.onnx"
    code, output = run(["export", "--model", "squeeze", "--input-size", "255x255",
                        "--checkpoint", str(checkpoint), "--output", str(artifact)])  # fmt: skip
    assert code == 0, output
    code, output = run(["bench", "--op", "pipeline", "--model", "squeeze", "--checkpoint",
                        str(checkpoint), "--artifact", str(artifact), "--images",
                        str(tmp_path / "photos"), "--iterations", "1", "--output",
                        str(tmp_path / "out")])  # fmt: skip
    assert code == 0, output
    report = json.loads((tmp_path / "out" / "pipeline.json").read_text())
    assert report["photos"] == ["astronaut.png", "coffee.png"]
    assert report["images_dir"] == str(tmp_path / "photos")
    eager_row, deployed_row = report["rows"]
    assert eager_row["label"] == "torch-fp32"
    assert deployed_row["label"] == "onnxruntime-fp32:squeeze_255.onnx"
    assert deployed_row["backend"] == "onnxruntime"
    for row, artifact_used in ((eager_row, None), (deployed_row, artifact)):
        pipeline = build_pipeline("squeeze", artifact=artifact_used, checkpoint=checkpoint)
        counts = [len(pipeline([crop])[0]) for crop in crops]
        assert min(counts) > 0
        assert row["detections_per_image"] == pytest.approx(np.mean(counts))
        assert row["crops_per_image"] is None  # only Saccade zooms
    markdown = (tmp_path / "out" / "pipeline.md").read_text()
    assert "| squeeze | onnxruntime | onnxruntime-fp32:squeeze_255.onnx |" in markdown


class CannedRunner:
    """A stand-in for Saccade's network whose attention depends on the photo: no corner above
    the box threshold, and 1-4 attention peaks (by a hash of the input batch) on each map, so
    photos ask for different numbers of crops and a second pass over a photo asks for the
    same ones, without running the 55 M-parameter network."""

    is_active = False

    def activate(self) -> None:
        self.is_active = True

    def deactivate(self) -> None:
        self.is_active = False

    def infer(self, feed: dict[str, np.ndarray], check_inputs: bool = False) -> dict:
        (batch,) = feed.values()
        peaks = 1 + int(abs(float(batch.astype(np.float64).sum())) * 1000) % 4
        outputs = corner_heads(len(batch), 64, seed=0)
        outputs["tl_heat"] -= 20.0  # sigmoid ~ 0: no boxes, so no reference locations
        outputs["br_heat"] -= 20.0
        for name in ATTENTION_NAMES:
            side = int(name.split("_")[1])
            att = np.zeros((len(batch), 1, side, side), np.float32)
            for k in range(peaks):  # far apart, so location NMS keeps each
                att[:, 0, (k * side) // 4, (k * side) // 4] = 0.9
            outputs[name] = att
        return outputs


def test_pipeline_bench_records_saccade_crops_per_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saccade's row says how many zoomed crops stage 1 ran per photo (mean and max): the
    numbers its pipeline reports for each photo when run on its own."""
    from hgdeploy.base.zoo import get_spec
    from hgdeploy.bench import pipeline_stages
    from hgdeploy.evaluation.run import Deployment
    from hgdeploy.pipelines.network import Network
    from hgdeploy.pipelines.saccade import SaccadePipeline

    def canned_pipeline(*args: object, **kwargs: object) -> SaccadePipeline:
        network = Network(CannedRunner(), 8, False, None, "NCHW")  # type: ignore[arg-type]
        return SaccadePipeline(get_spec("saccade"), network)

    monkeypatch.setattr(pipeline_stages, "build_pipeline", canned_pipeline)
    photos = [p for _, p in sample_images(["astronaut", "coffee", "chelsea"])]
    row = pipeline_stages.time_pipeline("saccade", Deployment(), 2, photos=photos)
    counts = [canned_pipeline()([photo])[0].details["crops"] for photo in photos]
    assert len(set(counts)) > 1  # the photos differ, so the mean is not the max
    assert row.crops_per_image == {"mean": pytest.approx(np.mean(counts)), "max": max(counts)}
    assert {"stage 0 network", "stage 1 network"} <= set(row.per_image_ms)


TWO_BACKENDS = ["--backend", "onnxruntime", "--backend", "openvino"]
MISUSE = [
    (["--artifact", "x.onnx"], "--artifact and --images go with --op pipeline"),
    (["--op", "pipeline", "--artifact", "x.onnx", *TWO_BACKENDS], "at most one --backend"),
    (
        ["--op", "pipeline", "--model", "squeeze", "--model", "hrnet", "--artifact", "x.onnx"],
        "--artifact with --op pipeline needs exactly one --model",
    ),
    (  # refused before the eager model is timed, not after it
        ["--op", "pipeline", "--model", "squeeze", "--artifact", "missing.onnx"],
        "artifact not found",
    ),
]


@pytest.mark.parametrize(("extra", "words"), MISUSE)
def test_pipeline_bench_option_misuse_is_one_line(
    tmp_path: Path, extra: list[str], words: str
) -> None:
    (tmp_path / "x.onnx").write_bytes(b"not read")
    args = [a if a != "x.onnx" else str(tmp_path / a) for a in extra]
    code, output = run(["bench", *args, "--output", str(tmp_path / "out")])
    one_line_error(code, output, words)
    assert not (tmp_path / "out").exists()
