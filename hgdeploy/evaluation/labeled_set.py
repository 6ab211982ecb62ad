"""A COCO-format labeled set (annotations JSON + image directory), checked before any model runs.

`hgdeploy evaluate` works unchanged on a user's COCO val2017 folder and on the stand-in sets
`hgdeploy standin` writes: both are COCO instances/person-keypoints JSON. Everything a run would
trip over later (not COCO, images missing, no labels for the model's task, an empty set) is
refused here in one line, and every record is checked first (`set_checks`): a broken record
must not change the AP without a word.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hgdeploy.base.artifacts import read_json
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import ModelSpec
from hgdeploy.evaluation.set_checks import PERSON_CATEGORY, check_image_sizes, check_records
from hgdeploy.pipelines.categories import COCO_CATEGORY_IDS

_REQUIRED_KEYS = ("images", "annotations", "categories")


@dataclass(frozen=True)
class SetImage:
    image_id: int
    path: Path
    height: int
    width: int


@dataclass(frozen=True)
class PersonBox:
    """A ground-truth person box to run top-down pose on (HRNet's gt-box evaluation)."""

    image_id: int
    box: tuple[float, float, float, float]  # x, y, w, h in image pixels


@dataclass
class LabeledSet:
    annotations_path: Path
    images_dir: Path
    coco: Any  # pycocotools.coco.COCO
    images: list[SetImage]
    person_boxes: list[PersonBox]  # pose sets only
    joints: int | None  # keypoints per person (pose sets)

    @property
    def category_ids(self) -> list[int]:
        return sorted(self.coco.getCatIds())


def load_labeled_set(
    annotations: str | Path, images_dir: str | Path, spec: ModelSpec
) -> LabeledSet:
    """The set, checked for `spec`'s task: boxes of COCO's 80 categories for a detector,
    person keypoints with the model's joint count for a pose model."""
    annotations, images_dir = Path(annotations), Path(images_dir)
    data = read_json(annotations, "annotations")
    if not isinstance(data, dict) or any(not isinstance(data.get(k), list) for k in _REQUIRED_KEYS):
        raise HgDeployError(
            f"{annotations} is not COCO annotations: it needs lists 'images', 'annotations' "
            "and 'categories'"
        )
    if not images_dir.is_dir():
        raise HgDeployError(f"image directory not found: {images_dir}")
    if not data["images"]:
        raise HgDeployError(f"{annotations} lists no images: nothing to evaluate")
    joints = None if spec.decode is not None else _model_joints(spec)
    check_records(data, annotations, joints)
    images = _images(data["images"], images_dir, annotations)
    coco = _coco(data, annotations)
    if joints is None:
        _check_detection_labels(data, annotations)
        return LabeledSet(annotations, images_dir, coco, images, [], None)
    boxes = _person_boxes(data, joints, annotations)
    with_people = {b.image_id for b in boxes}
    return LabeledSet(
        annotations,
        images_dir,
        coco,
        [im for im in images if im.image_id in with_people],
        boxes,
        joints,
    )


def _coco(data: dict, annotations: Path) -> Any:
    """pycocotools' index of the set (its progress prints are kept off the terminal)."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
    except (KeyError, TypeError) as exc:
        raise HgDeployError(f"{annotations} is not COCO annotations: missing field {exc}") from None
    return coco


def _images(entries: list[dict], images_dir: Path, annotations: Path) -> list[SetImage]:
    """The set's images (records already checked), each file present and of the set's size."""
    images = [
        SetImage(e["id"], images_dir / e["file_name"], e["height"], e["width"]) for e in entries
    ]
    missing = [e["file_name"] for e, im in zip(entries, images) if not im.path.is_file()]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise HgDeployError(f"image {missing[0]}{more} listed in {annotations} not in {images_dir}")
    check_image_sizes(((e, im.path) for e, im in zip(entries, images)), annotations)
    return images


def _check_detection_labels(data: dict, annotations: Path) -> None:
    known = set(COCO_CATEGORY_IDS)
    labelled = [a for a in data["annotations"] if a.get("category_id") in known and "bbox" in a]
    if not labelled:
        raise HgDeployError(
            f"{annotations} has no boxes of COCO's 80 categories: nothing a detector is scored on"
        )


def _model_joints(spec: ModelSpec) -> int:
    """Joints per person: the heatmap channels of the pose model's output."""
    shape = spec.outputs[0].shape
    return int(shape[-3])


def _person_boxes(data: dict, joints: int, annotations: Path) -> list[PersonBox]:
    """Person annotations with at least one labelled joint and a positive box, as HRNet's
    COCO loader keeps them (`_load_coco_keypoint_annotation_kernal`)."""
    boxes = []
    wrong_length = 0
    for ann in data["annotations"]:
        if ann.get("category_id") != PERSON_CATEGORY or "keypoints" not in ann:
            continue
        if len(ann["keypoints"]) != 3 * joints:
            wrong_length += 1
            continue
        x, y, w, h = (float(v) for v in ann.get("bbox", (0, 0, 0, 0)))
        if ann.get("num_keypoints", 1) == 0 or w <= 0 or h <= 0:
            continue
        boxes.append(PersonBox(int(ann["image_id"]), (x, y, w, h)))
    if not boxes:
        why = f" ({wrong_length} have another joint count)" if wrong_length else ""
        raise HgDeployError(
            f"{annotations} has no person keypoint labels with {joints} joints{why}: nothing a "
            "pose model is scored on"
        )
    return boxes
