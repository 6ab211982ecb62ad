"""The pose pipelines against upstream's own test-time outputs (tests/data/pipelines).

HRNet: deep-high-resolution-net's validate/get_final_preds; the stacked hourglass: its test.py
inference/post_process. Recorded by running the upstream code on the same synthetic weights
(seed 0) and photographs; each stage is also checked alone on seeded heatmaps.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import synthetic_model
from pipeline_goldens import as_array, assert_same_tensor, golden
from pipeline_inputs import pose_heatmaps

from hgdeploy.base.images import sample_images
from hgdeploy.base.zoo import get_spec
from hgdeploy.pipelines import hourglass as hg
from hgdeploy.pipelines import hrnet
from hgdeploy.pipelines.factory import pipeline_for
from hgdeploy.pipelines.network import Network
from hgdeploy.pipelines.pose_boxes import hrnet_centre_scale
from hgdeploy.runners.torch_runner import TorchRunner

PX = 1.0  # the end-to-end bound, in image pixels
STAGE_PX = 1e-3  # post-processing alone, same inputs


def eager_pipeline(name: str):
    spec = get_spec(name)
    runner = TorchRunner(synthetic_model(name), "image", spec.input_shape(1), spec.output_names)
    return pipeline_for(spec, Network(runner, 8, False, None, spec.layout))


def photo(name: str) -> np.ndarray:
    return sample_images([name])[0][1]


# --- HRNet -------------------------------------------------------------------------------------


def test_hrnet_affine_matches_upstream() -> None:
    for case in golden("hrnet")["stages"]["affine"]["cases"]:
        centre = np.float32(case["center"])
        scale = np.float32(case["scale"])
        forward = hrnet.affine_transform(centre, scale, tuple(case["forward_output_size"]))
        inverse = hrnet.affine_transform(
            centre, scale, tuple(case["inverse_output_size"]), inverse=True
        )
        np.testing.assert_allclose(forward, case["forward"], atol=1e-9)
        np.testing.assert_allclose(inverse, case["inverse"], atol=1e-9)


def test_hrnet_box_to_centre_scale_matches_upstream() -> None:
    for case in golden("hrnet")["end_to_end"].values():
        centre, scale = hrnet_centre_scale(tuple(case["box"]), 192 / 256)
        np.testing.assert_array_equal(centre, np.float32(case["center"]))
        np.testing.assert_array_equal(scale, np.float32(case["scale"]))


def test_hrnet_postprocess_alone_matches_upstream() -> None:
    stage = golden("hrnet")["stages"]["postprocess"]
    out = pose_heatmaps(2, 17, 64, 48, seed=71)
    flipped = pose_heatmaps(2, 17, 64, 48, seed=72)
    centres = np.float32(stage["args"]["center"])
    scales = np.float32(stage["args"]["scale"])
    assert_same_tensor(hrnet.flip_back(flipped), stage["flip"]["flipped_back_stats"])
    merged = hrnet.merge_flip(out, flipped)
    assert_same_tensor(merged, stage["flip"]["merged_stats"])
    for heatmaps, key in ((merged, "flip"), (out, "no_flip")):
        preds, maxvals = hrnet.final_predictions(heatmaps, centres, scales)
        np.testing.assert_allclose(preds, as_array(stage[key]["preds"]), atol=STAGE_PX)
        np.testing.assert_allclose(maxvals, as_array(stage[key]["maxvals"]), atol=1e-6)


@pytest.mark.parametrize(
    "case", ["astronaut_whole", "astronaut_person", "coffee_whole", "coffee_person"]
)
def test_hrnet_end_to_end_matches_upstream(case: str) -> None:
    record = golden("hrnet")["end_to_end"][case]
    pipeline = eager_pipeline("hrnet")
    image = photo(record["image"])
    pose = pipeline([image], [tuple(record["box"])])[0]
    expected = as_array(record["keypoints"])
    np.testing.assert_allclose(pose.keypoints[:, :2], expected[:, :2], atol=PX)
    np.testing.assert_allclose(pose.keypoints[:, 2], expected[:, 2], rtol=1e-4, atol=1e-4)
    assert pose.score == pytest.approx(record["score"], rel=1e-4)


def test_hrnet_preprocessing_matches_upstream() -> None:
    record = golden("hrnet")["end_to_end"]["coffee_person"]
    captured = {}
    pipeline = eager_pipeline("hrnet")
    network = pipeline.network

    def capture(inputs, times=None):
        captured["inputs"] = inputs
        return Network.__call__(network, inputs, times)

    pipeline.network = capture
    pipeline.flip = False
    pipeline([photo("coffee")], [tuple(record["box"])])
    assert_same_tensor(captured["inputs"], record["input_stats"])


# --- stacked hourglass --------------------------------------------------------------------------


def test_hourglass_crop_matches_upstream() -> None:
    for case in golden("hourglass")["stages"]["crop"]["cases"]:
        window = hg.crop(photo(case["image"]), np.array(case["center"]), case["scale"])
        assert_same_tensor(window, case["stats"], atol=1e-9)


def test_hourglass_postprocess_alone_matches_upstream() -> None:
    stage = golden("hourglass")["stages"]["postprocess"]
    det = pose_heatmaps(1, 16, 64, 64, seed=81)[0]
    flipped = pose_heatmaps(1, 16, 64, 64, seed=82)[0]
    centre, scale = np.array(stage["args"]["center"]), stage["args"]["scale"]
    merged = hg.merge_flip(det, flipped)
    assert_same_tensor(merged, stage["flip"]["merged_stats"])
    parsed = hg.parse_heatmaps(merged)
    np.testing.assert_allclose(parsed, as_array(stage["flip"]["parse_heatmap_coords"]), atol=1e-6)
    keypoints = hg.to_image_keypoints(parsed, centre, scale)
    np.testing.assert_allclose(keypoints, as_array(stage["flip"]["keypoints"]), atol=STAGE_PX)
    unflipped = hg.parse_heatmaps(det)
    np.testing.assert_allclose(
        unflipped, as_array(stage["no_flip"]["parse_heatmap_coords"]), atol=1e-6
    )


@pytest.mark.parametrize("case", ["astronaut_whole", "coffee_whole"])
def test_hourglass_end_to_end_matches_upstream(case: str) -> None:
    """Joints whose merged map is <= 0 everywhere decode at a tie among zeros (the recorder
    lists them): upstream's answer there is torch.topk's tie order, not the model's."""
    record = golden("hourglass")["end_to_end"][case]
    image = photo(record["image"])
    height, width = image.shape[:2]
    pose = eager_pipeline("hourglass")([image], [(0, 0, width, height)])[0]
    expected = as_array(record["keypoints"])
    ties = set(as_array(record.get("tie_dependent_joints", "[]")).astype(int).tolist())
    peaked = [j for j in range(16) if j not in ties]
    np.testing.assert_allclose(pose.keypoints[peaked, :2], expected[peaked, :2], atol=PX)
    np.testing.assert_allclose(pose.keypoints[peaked, 2], expected[peaked, 2], atol=1e-4)
