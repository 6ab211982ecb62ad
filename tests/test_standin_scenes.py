"""Stand-in scenes: byte-for-byte reproducible COCO sets whose labels sit on what was drawn, so
a held-out set rebuilt from its seed scores deployments the same way everywhere."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

from hgdeploy.base.errors import HgDeployError
from hgdeploy.pipelines.categories import COCO_CATEGORY_IDS, COCO_KEYPOINTS, MPII_KEYPOINTS
from hgdeploy.standin.scenes import (
    CENTRE_JOINT_COLOUR,
    CLASS_COLOURS,
    COLOUR_JITTER,
    LEFT_JOINT_COLOUR,
    RIGHT_JOINT_COLOUR,
    SceneSet,
    detection_set,
    pose_set,
    scene_background,
    write_set,
)

SIZE = (96, 96)
POSE_SIZE = (128, 96)


def _files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def _load(scene_set: SceneSet, directory: Path) -> COCO:
    return COCO(str(write_set(scene_set, directory) / "annotations.json"))


def _inside(box: list[float], height: int, width: int) -> bool:
    x, y, w, h = box
    return 0 <= x and 0 <= y and w > 0 and h > 0 and x + w <= width and y + h <= height


def test_the_same_seed_writes_the_same_bytes_and_another_seed_differs(tmp_path: Path) -> None:
    for name, make in (
        ("det", lambda seed: detection_set(3, seed, SIZE)),
        ("pose", lambda seed: pose_set(3, seed, "coco", POSE_SIZE)),
    ):
        first = _files(write_set(make(5), tmp_path / f"{name}-a"))
        again = _files(write_set(make(5), tmp_path / f"{name}-b"))
        other = _files(write_set(make(6), tmp_path / f"{name}-c"))
        assert sorted(first) == ["000001.png", "000002.png", "000003.png", "annotations.json"]
        assert first == again
        assert sorted(other) == sorted(first)
        assert all(other[file] != first[file] for file in first)
    # Image i comes from its own generator: a longer set starts with the shorter one.
    longer = detection_set(4, 5, SIZE)
    assert all(
        np.array_equal(a, b) for a, b in zip(detection_set(2, 5, SIZE).images, longer.images)
    )


def test_detection_labels_sit_on_the_drawn_shapes(tmp_path: Path) -> None:
    scenes = detection_set(8, 3, SIZE)
    coco = _load(scenes, tmp_path / "det")
    assert sorted(coco.getCatIds()) == list(COCO_CATEGORY_IDS[:4])
    assert len(coco.getAnnIds()) >= len(scenes.images)  # the last object drawn is never hidden
    height, width = SIZE
    for index, image in enumerate(scenes.images):
        entry = coco.imgs[index + 1]
        assert entry["file_name"] == f"{index + 1:06d}.png"
        assert image.shape == (entry["height"], entry["width"], 3) == (height, width, 3)
        background = scene_background(3, index, SIZE).astype(int)
        changed = np.abs(image.astype(int) - background).max(-1) > 0
        annotations = coco.loadAnns(coco.getAnnIds(imgIds=index + 1))
        assert annotations
        for ann in annotations:
            assert _inside(ann["bbox"], height, width) and ann["iscrowd"] == 0
            x, y, w, h = (int(v) for v in ann["bbox"])
            assert ann["area"] == w * h
            drawn = changed[y : y + h, x : x + w]
            # Tight: every edge row and column of the box holds drawn pixels.
            assert drawn[0].any() and drawn[-1].any() and drawn[:, 0].any() and drawn[:, -1].any()
            assert drawn.mean() > 0.3
            # The category's colour fills a good part of its box.
            colour = CLASS_COLOURS[COCO_CATEGORY_IDS.index(ann["category_id"])]
            near = np.abs(image[y : y + h, x : x + w].astype(int) - colour).max(-1)
            assert (near <= COLOUR_JITTER).mean() > 0.2


def _joint_colour(name: str) -> tuple[int, int, int]:
    if name.startswith(("left_", "l_")):
        return LEFT_JOINT_COLOUR
    if name.startswith(("right_", "r_")):
        return RIGHT_JOINT_COLOUR
    return CENTRE_JOINT_COLOUR


@pytest.mark.parametrize("skeleton, names", [("coco", COCO_KEYPOINTS), ("mpii", MPII_KEYPOINTS)])
def test_pose_keypoints_follow_the_coco_convention_and_sit_on_the_joints(
    tmp_path: Path, skeleton: str, names: tuple[str, ...]
) -> None:
    scenes = pose_set(12, 4, skeleton, POSE_SIZE)
    coco = _load(scenes, tmp_path / skeleton)
    (category,) = coco.loadCats(coco.getCatIds())
    assert category["id"] == 1 and category["name"] == "person"
    assert category["keypoints"] == list(names)
    assert all(1 <= a <= len(names) and 1 <= b <= len(names) for a, b in category["skeleton"])
    height, width = POSE_SIZE
    seen = np.zeros(3, int)
    for index, image in enumerate(scenes.images):
        (ann,) = coco.loadAnns(coco.getAnnIds(imgIds=index + 1))
        keypoints = np.asarray(ann["keypoints"]).reshape(-1, 3)
        assert keypoints.shape == (len(names), 3)
        flags = keypoints[:, 2].astype(int)
        assert set(flags) <= {0, 1, 2}
        seen += np.bincount(flags, minlength=3)
        assert ann["num_keypoints"] == np.count_nonzero(flags) > 0
        assert (keypoints[flags == 0, :2] == 0).all()
        x0, y0, w, h = ann["bbox"]
        assert _inside(ann["bbox"], height, width) and 0 < ann["area"] <= w * h
        for name, (x, y, flag) in zip(names, keypoints, strict=True):
            if flag == 0:
                continue
            assert 0 <= x < width and 0 <= y < height
            assert x0 <= x < x0 + w and y0 <= y < y0 + h  # the box holds the covered parts too
            if flag == 2:  # shown: the centre of its marker, in its side's colour
                assert tuple(image[int(y), int(x)]) == _joint_colour(name), name
    assert seen[2] > seen[1] > 0  # most joints show, some are covered


def test_write_set_refuses_a_non_empty_directory_and_leaves_it_alone(tmp_path: Path) -> None:
    scenes = detection_set(1, 0, SIZE)
    target = tmp_path / "taken"
    target.mkdir()
    (target / "notes.txt").write_text("keep me")
    with pytest.raises(HgDeployError, match="not an empty directory"):
        write_set(scenes, target)
    assert _files(target) == {"notes.txt": b"keep me"}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert sorted(_files(write_set(scenes, empty))) == ["000001.png", "annotations.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty", "taken"]  # no staging left


def test_bad_arguments_are_one_line_errors() -> None:
    with pytest.raises(HgDeployError, match="unknown skeleton"):
        pose_set(1, 0, "h36m")
    with pytest.raises(HgDeployError, match="classes"):
        detection_set(1, 0, classes=9)
    with pytest.raises(HgDeployError, match="too small"):
        detection_set(1, 0, size=(16, 16))


def test_figures_face_the_camera_so_left_and_right_follow_from_geometry() -> None:
    """The person's left shoulder and hip are on the image's right, mirrored poses included:
    what upstream's flip test and flip augmentation assume of real people (a mirror image is
    a person with left and right renamed)."""

    for skeleton, pairs in (("coco", ((5, 6), (11, 12))), ("mpii", ((13, 12), (3, 2)))):
        annotations = pose_set(40, 3, skeleton).coco["annotations"]
        for ann in annotations:
            joints = np.reshape(ann["keypoints"], (-1, 3))
            for left, right in pairs:
                if joints[left, 2] > 0 and joints[right, 2] > 0:
                    assert joints[left, 0] > joints[right, 0], (skeleton, ann["id"])
