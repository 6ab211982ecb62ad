"""One pipeline, any backend: the same pipeline on ONNX Runtime and OpenVINO fp32 artifacts gives
the eager pipeline's predictions (the issue's criteria: keypoints within 1 px; of the eager top
20 detections >= 90% matched by one of the same class with IoU >= 0.9), through the commands a
user runs: export, build, predict."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import synthetic_model
from pipeline_inputs import detector_test_weights

from hgdeploy.base.images import sample_images
from hgdeploy.cli import main

PHOTOS = ("astronaut", "coffee")


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from PIL import Image

    directory = tmp_path_factory.mktemp("photos")
    for name, pixels in sample_images(PHOTOS):
        Image.fromarray(pixels).save(directory / f"{name}.png")
    return directory


def predictions(args: list[str], out: Path) -> list[dict]:
    invoke([*args, "--output", str(out)])
    return json.loads((out / "predictions.json").read_text())


def artifacts(name: str, root: Path, checkpoint: Path | None, batch: int) -> dict[str, Path]:
    """The fp32 ONNX export and the OpenVINO IR built from it, as a user makes them."""
    onnx_path = root / f"{name}.onnx"
    weights = ["--checkpoint", str(checkpoint)] if checkpoint else []
    invoke(["export", "--model", name, "--batch", str(batch), "--output", str(onnx_path), *weights])
    dynamic = root / f"{name}_dyn.onnx"  # the IR keeps the export's batch axis: a dynamic one
    invoke(["export", "--model", name, "--dynamic-batch", "--output", str(dynamic), *weights])
    ir = root / f"{name}.xml"
    invoke(["build", "--model", name, "--backend", "openvino", "--fp32", "--onnx", str(dynamic),
            "--output", str(ir)])  # fmt: skip
    return {"onnxruntime": onnx_path, "openvino": ir}


def iou(a: list[float], b: list[float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    union = a[2] * a[3] + b[2] * b[3] - w * h
    return w * h / union if union > 0 else 0.0


def matched_fraction(reference: list[dict], candidate: list[dict], top: int = 20) -> float:
    """Of `reference`'s `top` best per image, the fraction with a same-class IoU >= 0.9 box."""
    hits = total = 0
    for image_id in {r["image_id"] for r in reference}:
        mine = sorted(
            (r for r in reference if r["image_id"] == image_id), key=lambda r: -r["score"]
        )
        theirs = [r for r in candidate if r["image_id"] == image_id]
        for ref in mine[:top]:
            total += 1
            hits += any(
                c["category_id"] == ref["category_id"] and iou(c["bbox"], ref["bbox"]) >= 0.9
                for c in theirs
            )
    return hits / total


def test_hrnet_pipeline_on_every_cpu_backend(tmp_path: Path, photos_dir: Path) -> None:
    """Batch 2 artifacts: the flip pair of each image runs in one call."""
    eager = predictions(
        ["predict", "--model", "hrnet", "--images", str(photos_dir)], tmp_path / "e"
    )
    assert len(eager) == len(PHOTOS)
    for backend, artifact in artifacts("hrnet", tmp_path, None, batch=2).items():
        deployed = predictions(
            ["predict", "--model", "hrnet", "--backend", backend, "--artifact", str(artifact),
             "--images", str(photos_dir)], tmp_path / backend,
        )  # fmt: skip
        for ref, got in zip(eager, deployed):
            assert got["image_id"] == ref["image_id"]
            ref_xy = np.reshape(ref["keypoints"], (-1, 3))[:, :2]
            got_xy = np.reshape(got["keypoints"], (-1, 3))[:, :2]
            np.testing.assert_allclose(got_xy, ref_xy, atol=1.0, err_msg=backend)


@pytest.fixture(scope="module")
def squeeze_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, Path]:
    """Squeeze weights that detect something, saved as an upstream checkpoint (`module.` keys)."""
    model = detector_test_weights(copy.deepcopy(synthetic_model("squeeze")))  # not the cached one
    checkpoint = tmp_path_factory.mktemp("weights") / "squeeze_test.pkl"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, checkpoint)
    return model, checkpoint


def squeeze_reference(model: torch.nn.Module) -> list[dict]:
    """The eager pipeline's COCO results at the artifacts' 511x511 (a fixed export pads each
    photo into it), so eager and deployed networks see the same input."""
    from hgdeploy.base.zoo import get_spec
    from hgdeploy.pipelines.cornernet import CornerNetPipeline
    from hgdeploy.pipelines.network import Network
    from hgdeploy.runners.torch_runner import TorchRunner

    spec = get_spec("squeeze")
    runner = TorchRunner(model, "image", spec.input_shape(1), spec.output_names)
    pipeline = CornerNetPipeline(
        spec, Network(runner, 4, False, None, "NCHW"), flip=False, input_hw=spec.input_hw
    )
    photos = sample_images(PHOTOS)
    found = pipeline([pixels for _, pixels in photos])
    reference = [rec for (name, _), dets in zip(photos, found) for rec in dets.to_coco(name)]
    assert len(reference) >= 15, "the test weights must detect something"
    return reference


def test_squeeze_pipeline_on_every_cpu_backend(
    tmp_path: Path, photos_dir: Path, squeeze_checkpoint: tuple[torch.nn.Module, Path]
) -> None:
    """Weights that detect something (see `detector_test_weights`), saved as an upstream
    checkpoint so every command loads them."""
    model, checkpoint = squeeze_checkpoint
    reference = squeeze_reference(model)
    for backend, artifact in artifacts("squeeze", tmp_path, checkpoint, batch=1).items():
        deployed = predictions(
            ["predict", "--model", "squeeze", "--backend", backend, "--artifact", str(artifact),
             "--checkpoint", str(checkpoint), "--images", str(photos_dir)], tmp_path / backend,
        )  # fmt: skip
        assert matched_fraction(reference, deployed) >= 0.9, backend


def test_squeeze_at_upstream_native_size_on_onnxruntime(
    tmp_path: Path, squeeze_checkpoint: tuple[torch.nn.Module, Path]
) -> None:
    """`export --input-size 639x639`: a 512x512 photo runs as upstream runs it (padded to
    639x639), so the deployed pipeline gives the eager (upstream-exact) pipeline's detections."""
    from hgdeploy.pipelines import build_pipeline

    _, checkpoint = squeeze_checkpoint
    onnx_path = tmp_path / "squeeze_639.onnx"
    invoke(["export", "--model", "squeeze", "--input-size", "639x639", "--checkpoint",
            str(checkpoint), "--output", str(onnx_path)])  # fmt: skip
    pixels = sample_images(["astronaut"])[0][1]
    eager = build_pipeline("squeeze", checkpoint=checkpoint)([pixels])[0]
    deployed = build_pipeline("squeeze", artifact=onnx_path, checkpoint=checkpoint)([pixels])[0]
    assert len(eager) >= 20
    assert len(deployed) == len(eager)
    np.testing.assert_allclose(deployed.boxes, eager.boxes, atol=0.5)
    np.testing.assert_array_equal(deployed.classes, eager.classes)


def test_saccade_pipeline_on_onnxruntime(tmp_path: Path) -> None:
    """Saccade's two stages through a deployed network: the init-size batch and every zoomed
    crop run on the dynamic-batch ONNX in calls of the artifact's batch; the crops taken and
    the detections are the eager pipeline's."""
    from hgdeploy.pipelines import build_pipeline

    model = detector_test_weights(copy.deepcopy(synthetic_model("saccade")))
    checkpoint = tmp_path / "saccade_test.pkl"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, checkpoint)
    onnx_path = tmp_path / "saccade.onnx"
    invoke(["export", "--model", "saccade", "--dynamic-batch", "--checkpoint", str(checkpoint),
            "--output", str(onnx_path)])  # fmt: skip
    pixels = sample_images(["coffee"])[0][1]
    eager = build_pipeline("saccade", checkpoint=checkpoint)([pixels])[0]
    deployed = build_pipeline("saccade", artifact=onnx_path, checkpoint=checkpoint)([pixels])[0]
    assert len(eager) > 0 and deployed.details["crops"] == eager.details["crops"]
    reference, found = eager.to_coco("coffee"), deployed.to_coco("coffee")
    assert matched_fraction(reference, found) >= 0.9


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_squeeze_and_hrnet_pipelines_on_a_tensorrt_engine(
    tmp_path: Path, photos_dir: Path, squeeze_checkpoint: tuple[torch.nn.Module, Path]
) -> None:
    """The same pipeline with an fp32 TensorRT engine as its network stage (plugin corner
    pools), through `build` and `predict` as a user runs them: the eager pipeline's predictions
    by the same criteria as the CPU backends."""
    model, checkpoint = squeeze_checkpoint
    for name, weights in (("squeeze", ["--checkpoint", str(checkpoint)]), ("hrnet", [])):
        engine = tmp_path / f"{name}.engine"
        invoke(["build", "--model", name, "--backend", "tensorrt", "--fp32", "--output",
                str(engine), *weights])  # fmt: skip
        args = ["predict", "--model", name, *weights, "--images", str(photos_dir)]
        deployed = predictions(
            [*args, "--backend", "tensorrt", "--artifact", str(engine)], tmp_path / name
        )
        if name == "hrnet":
            eager = predictions(args, tmp_path / f"{name}_eager")
            for ref, got in zip(eager, deployed):
                ref_xy = np.reshape(ref["keypoints"], (-1, 3))[:, :2]
                got_xy = np.reshape(got["keypoints"], (-1, 3))[:, :2]
                np.testing.assert_allclose(got_xy, ref_xy, atol=1.0)
        else:
            assert matched_fraction(squeeze_reference(model), deployed) >= 0.9
