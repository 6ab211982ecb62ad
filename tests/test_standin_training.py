"""Pose stand-in training: samples are the test pipelines' own crops with targets on the joints,
a few steps lower the loss, and the checkpoint loads back through hgdeploy's loader unchanged."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import get_spec
from hgdeploy.models.loader import load_model
from hgdeploy.pipelines.hourglass import HourglassPipeline, crop_transform
from hgdeploy.pipelines.hrnet import HrnetPipeline, affine_transform
from hgdeploy.pipelines.pose_boxes import hourglass_centre_scale, hrnet_centre_scale
from hgdeploy.standin import pose_training
from hgdeploy.standin.pose_training import (
    CHECKPOINT_FILES,
    TRAINING_SEEDS,
    TrainConfig,
    TrainResult,
    heatmap_targets,
    held_out_set,
    learning_rate,
    person_sample,
    save_checkpoint,
    train_pose,
    training_seed,
)
from hgdeploy.standin.scenes import pose_set

SMALL_HW = {"hrnet": (64, 64), "hourglass": (64, 64)}  # the nets' smallest valid inputs
BATCH = {"hrnet": 4, "hourglass": 4}  # BN on 1x1 innermost maps needs a few samples
SKELETON = {"hrnet": "coco", "hourglass": "mpii"}
JOINTS = {"hrnet": 17, "hourglass": 16}
LEFT_WRIST = {"hrnet": 9, "hourglass": 15}  # and its mirror image, the right wrist
RIGHT_WRIST = {"hrnet": 10, "hourglass": 10}


class _Capture:
    """A network stage that keeps what the pipeline feeds it and answers with empty maps."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        self.shape, self.inputs = shape, None

    def __call__(self, inputs: np.ndarray, times: object = None) -> dict[str, np.ndarray]:
        self.inputs = inputs
        return {"heatmaps": np.zeros((len(inputs), *self.shape), np.float32)}


def _peaks(maps: np.ndarray) -> np.ndarray:
    """(J, h, w) -> (J, 2) x, y of each map's maximum."""
    flat = maps.reshape(len(maps), -1).argmax(1)
    return np.stack([flat % maps.shape[2], flat // maps.shape[2]], axis=1)


@pytest.mark.parametrize("name", ["hrnet", "hourglass"])
def test_unaugmented_samples_are_the_pipeline_crops_with_peaks_on_the_joints(name: str) -> None:
    spec = get_spec(name)
    scenes = pose_set(3, 21, SKELETON[name], spec.input_hw)
    outputs = spec.outputs[0].shape
    capture = _Capture(outputs)
    pipeline_class = HrnetPipeline if name == "hrnet" else HourglassPipeline
    pipeline = pipeline_class(spec, capture, flip=False)  # type: ignore[arg-type]
    for image, ann in zip(scenes.images, scenes.coco["annotations"], strict=True):
        box = tuple(ann["bbox"])
        inputs, targets, weights = person_sample(name, image, ann["keypoints"], box, spec.input_hw)
        pipeline([image], [box])
        assert np.array_equal(inputs, capture.inputs[0])  # byte for byte what evaluation feeds
        points = np.reshape(ann["keypoints"], (-1, 3))
        if name == "hrnet":
            centre, scale = hrnet_centre_scale(box, spec.input_hw[1] / spec.input_hw[0])
            warp = affine_transform(centre, scale, spec.input_hw[::-1])
            expected = np.floor((points[:, :2] @ warp[:, :2].T + warp[:, 2]) / 4 + 0.5)
        else:
            centre, scale = hourglass_centre_scale(box)
            warp = crop_transform(centre, scale, spec.input_hw[0])
            expected = np.floor((points[:, :2] @ warp[:2, :2].T + warp[:2, 2]) / 4)
        shown = targets.max(axis=(1, 2)) > 0
        assert targets.shape[1:] == outputs[-2:]
        assert np.array_equal(shown, points[:, 2] > 0)  # every labelled joint, inside the map
        assert np.array_equal(_peaks(targets)[shown], expected[shown])
        assert targets.max() == pytest.approx(1.0)
        assert np.array_equal(weights > 0, shown if name == "hrnet" else np.ones_like(shown))


@pytest.mark.parametrize("name", ["hrnet", "hourglass"])
def test_augmented_targets_follow_the_pixels_and_swap_sides_when_mirrored(name: str) -> None:
    """One bright dot labelled as the left wrist: mirrored, scaled and turned, the right wrist's
    target peaks on the dot (the image's mirror shows a left wrist as a right one)."""
    image = np.zeros((256, 256, 3), np.uint8)
    image[118:123, 98:103] = 255
    keypoints = np.zeros((JOINTS[name], 3))
    keypoints[LEFT_WRIST[name]] = (100, 120, 2)
    hw = (128, 96) if name == "hrnet" else (128, 128)
    inputs, targets, _ = person_sample(
        name, image, keypoints, (60, 30, 90, 200), hw, flip=True, scale=1.2, rotation=25
    )
    shown = np.flatnonzero(targets.max(axis=(1, 2)) > 0)
    assert shown.tolist() == [RIGHT_WRIST[name]]
    brightness = inputs.sum(0) if name == "hrnet" else inputs.sum(-1)
    ys, xs = np.nonzero(brightness > brightness.min() + 0.5 * np.ptp(brightness))
    dot = np.array([xs.mean(), ys.mean()]) / 4
    assert np.abs(_peaks(targets)[RIGHT_WRIST[name]] - dot).max() <= 1.0


def test_hrnet_weights_drop_joints_that_are_unlabelled_or_off_the_map() -> None:
    points = np.array([[40.0, 60.0], [40.0, 60.0], [-20.0, 60.0], [-60.0, 60.0]])
    labelled = np.array([True, False, True, True])
    maps, weights = heatmap_targets("hrnet", points, labelled, (128, 96), 2.0)
    assert weights.tolist() == [1, 0, 1, 0]  # 5 map pixels off: its Gaussian still reaches in
    assert maps[1].max() == 0 and maps[3].max() == 0 and 0 < maps[2].max() < 1


def test_training_never_draws_held_out_scenes() -> None:
    assert training_seed(0, 0) == TRAINING_SEEDS
    assert training_seed(1, 0) > training_seed(0, 9_999_999)
    with pytest.raises(HgDeployError, match="held-out seeds"):
        held_out_set("hrnet", 1, seed=TRAINING_SEEDS)
    with pytest.raises(HgDeployError, match="no pose stand-in"):
        held_out_set("squeeze", 1)
    assert len(held_out_set("hourglass", 2, seed=3, size=(64, 64)).images) == 2


def test_the_full_size_phase_restarts_the_learning_rate() -> None:
    config = TrainConfig(steps=10, full_steps=4, lr=1e-3, full_lr=3e-4)
    rates = [learning_rate(config, step) for step in range(10)]
    assert rates[0] == 1e-3 and rates[5] < 1e-4  # a cosine over the six reduced-size steps
    assert rates[6] == 3e-4 and rates[9] < rates[8] < rates[7] < rates[6]
    assert learning_rate(TrainConfig(steps=4, full_steps=4), 0) == 1e-3  # all at full size
    with pytest.raises(HgDeployError, match="multiples of 32"):
        train_pose("hrnet", TrainConfig(steps=1, input_hw=(100, 75)))


@pytest.fixture(scope="module", params=["hrnet", "hourglass"])
def trained(request: pytest.FixtureRequest) -> tuple[str, TrainResult]:
    """A few steps on one fixed batch (every step draws the same scenes), at a small size."""
    name = request.param
    torch.manual_seed(0)
    fixed = pose_set(BATCH[name], 77, SKELETON[name], (96, 96))
    patch = pytest.MonkeyPatch()
    patch.setattr(pose_training, "pose_set", lambda *args, **kwargs: fixed)
    calls: list[tuple[int, int]] = []
    config = TrainConfig(steps=6, batch=BATCH[name], input_hw=SMALL_HW[name], augment=False)
    try:
        result = train_pose(
            name, config, progress=lambda done, total, _: calls.append((done, total))
        )
    finally:
        patch.undo()
    assert calls == [(step, 6) for step in range(1, 7)]
    return name, result


def test_a_few_steps_lower_the_loss_on_a_fixed_batch(trained: tuple[str, TrainResult]) -> None:
    _, result = trained
    assert len(result.losses) == 6 and all(np.isfinite(result.losses))
    assert result.losses[-1] < 0.85 * result.losses[0]
    assert not result.model.training


def test_the_checkpoint_loads_back_with_the_same_outputs(
    trained: tuple[str, TrainResult], tmp_path: Path
) -> None:
    name, result = trained
    path = save_checkpoint(result.model, name, tmp_path)
    assert path == tmp_path / CHECKPOINT_FILES[name]
    saved = torch.load(path, weights_only=True)
    if name == "hourglass":  # pytorch_stacked_hourglass's Trainer(DataParallel) layout
        assert all(key.startswith("model.module.") for key in saved["state_dict"])
    else:  # HRNet's final_state.pth: a bare state_dict
        assert "final_layer.weight" in saved
    loaded = load_model(name, checkpoint=path)
    hw = SMALL_HW[name]
    shape = (2, *hw, 3) if name == "hourglass" else (2, 3, *hw)
    inputs = torch.rand(shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(loaded(inputs), result.model(inputs))


def test_the_standin_command_writes_a_checkpoint_every_command_loads(tmp_path: Path) -> None:
    """`hgdeploy standin` (two steps) -> checkpoint + held-out set -> `evaluate` and `predict`
    load it as --checkpoint; a name that is no zoo model is refused in one line."""
    from click.testing import CliRunner

    from hgdeploy.cli import main

    def run(args: list[str]) -> str:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        return result.output

    checkpoint, val = tmp_path / "final_state.pth", tmp_path / "val"
    run(["standin", "--model", "hrnet", "--steps", "2", "--full-steps", "1", "--batch", "4",
         "--output", str(checkpoint), "--val-dir", str(val), "--val-count", "3"])  # fmt: skip
    assert len(list(val.glob("*.png"))) == 3
    output = run(["evaluate", "--model", "hrnet", "--checkpoint", str(checkpoint),
                  "--annotations", str(val / "annotations.json"), "--images", str(val)])  # fmt: skip
    assert "+0.0000" in output  # the eager run against itself
    run(["predict", "--model", "hrnet", "--checkpoint", str(checkpoint), "--image",
         str(next(val.glob("*.png")))])  # fmt: skip
    from hgdeploy.standin.registry import get_standin

    with pytest.raises(HgDeployError, match="no stand-in for resnet: it is not a zoo model"):
        get_standin("resnet")
