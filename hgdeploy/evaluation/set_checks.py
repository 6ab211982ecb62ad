"""Every record of a COCO labeled set checked before pycocotools sees it.

pycocotools trusts its input: a duplicate annotation id silently replaces the first in its
index, a category id outside `categories` is never scored, a NaN box matches nothing, a
keypoint list of the wrong length or of strings fails deep inside COCOeval with a KeyError or a
UFuncTypeError. Any of these changes the AP without a word, so each is refused here in one
line naming the file, the record and what is wrong. Fields are checked only where the model's
task reads them (keypoints for pose sets), and `file_name` may not leave the images directory:
`evaluate` reads nothing outside `--images`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from hgdeploy.base.errors import HgDeployError

PERSON_CATEGORY = 1
VISIBILITY_FLAGS = (0, 1, 2)  # COCO: not labelled, labelled but hidden, labelled and visible
_PLURAL = {"image": "images", "annotation": "annotations", "category": "categories"}


def check_records(data: dict[str, Any], annotations: Path, joints: int | None) -> None:
    """Refuse the first bad record of `data` (a COCO dict whose three lists exist); `joints`
    is the pose model's joint count, None for a detector."""
    image_ids = _check_images(data["images"], annotations)
    category_ids = {e["id"] for _, e in _records(data["categories"], "category", annotations)}
    people: list[str] = []  # person records (pose sets): where each is
    other_length: list[str] = []  # those with another joint count
    for where, ann in _records(data["annotations"], "annotation", annotations):
        if _integer(ann, "image_id", where) not in image_ids:
            raise HgDeployError(f"{where}: image_id {ann['image_id']} is not in 'images'")
        if _integer(ann, "category_id", where) not in category_ids:
            raise HgDeployError(f"{where}: category_id {ann['category_id']} is not in 'categories'")
        _check_box(ann, where)
        if _number(ann, "area", where) < 0:
            raise HgDeployError(f"{where}: area {ann['area']} is negative")
        if ann.get("iscrowd", None) not in (0, 1) or isinstance(ann["iscrowd"], bool):
            raise HgDeployError(f"{where}: iscrowd must be 0 or 1, got {ann.get('iscrowd')!r}")
        if joints is not None and ann["category_id"] == PERSON_CATEGORY:
            people.append(where)
            if "keypoints" not in ann:
                other_length.append(f"{where}: a person without keypoints, unlike the other")
                continue
            _check_keypoints(ann, joints, where)
            if len(ann["keypoints"]) != 3 * joints:
                other_length.append(f"{where}: keypoints not {joints} x [x, y, v] like the other")
    # A whole set of another skeleton (MPII's 16 for a COCO model) is the loader's "no labels
    # for this model" refusal; a few odd records in a set of the right one are broken records.
    if other_length and len(other_length) < len(people):
        raise HgDeployError(f"{other_length[0]} {len(people) - len(other_length)} people's")


def check_image_sizes(entries: Iterable[tuple[dict[str, Any], Path]], annotations: Path) -> None:
    """The height and width a set gives each image must be the file's own: a mismatch means the
    labels were made on another picture (a resized copy), and every box would be off."""
    from PIL import Image, UnidentifiedImageError

    for index, (entry, path) in enumerate(entries):
        try:
            with Image.open(path) as image:
                width, height = image.size  # the header only; no pixels are decoded
        except (OSError, UnidentifiedImageError):
            raise HgDeployError(f"{path} (in {annotations}) is not a readable image") from None
        if (entry["height"], entry["width"]) != (height, width):
            where = _record(annotations, "image", entry, index)
            raise HgDeployError(
                f"{where} ({entry['file_name']}): the set says {entry['width']}x"
                f"{entry['height']}, the file is {width}x{height} (width x height)"
            )


def _records(entries: list[Any], kind: str, annotations: Path) -> Iterator[tuple[str, dict]]:
    """(how an error names it, the record) for each record of a section, each checked to be an
    object with an integer id no earlier record of the section has."""
    ids: set[int] = set()
    for index, entry in enumerate(entries):
        where = _record(annotations, kind, entry, index)
        if not isinstance(entry, dict):
            raise HgDeployError(f"{where} is not an object")
        record_id = _integer(entry, "id", where)
        if record_id in ids:
            raise HgDeployError(f"{where}: id {record_id} is used by an earlier {kind}")
        ids.add(record_id)
        yield where, entry


def _check_images(entries: list[Any], annotations: Path) -> set[int]:
    for where, entry in _records(entries, "image", annotations):
        name = entry.get("file_name")
        if not isinstance(name, str) or not name.strip():
            raise HgDeployError(f"{where}: file_name must be a file name, got {name!r}")
        if _leaves_directory(name):
            raise HgDeployError(
                f"{where}: file_name {name!r} leaves the images directory (give a path inside it)"
            )
        for side in ("height", "width"):
            if _integer(entry, side, where) <= 0:
                raise HgDeployError(f"{where}: {side} must be > 0, got {entry[side]}")
    return {entry["id"] for entry in entries}


def _check_box(ann: dict[str, Any], where: str) -> None:
    box = ann.get("bbox")
    if not isinstance(box, list) or len(box) != 4:
        got = f"{len(box)} values" if isinstance(box, list) else repr(box)
        raise HgDeployError(f"{where}: bbox must be 4 numbers [x, y, w, h], got {got:.40}")
    if not all(_is_finite_number(v) for v in box):
        raise HgDeployError(f"{where}: bbox {box} holds a value that is not a finite number")
    if box[2] < 0 or box[3] < 0:
        raise HgDeployError(f"{where}: bbox {box} has a negative width or height")


def _check_keypoints(ann: dict[str, Any], joints: int, where: str) -> None:
    points = ann["keypoints"]
    if not isinstance(points, list):
        raise HgDeployError(f"{where}: keypoints must be a list of {joints} x [x, y, v]")
    if not all(_is_finite_number(v) for v in points):
        raise HgDeployError(f"{where}: keypoints hold a value that is not a finite number")
    if len(points) == 3 * joints and any(v not in VISIBILITY_FLAGS for v in points[2::3]):
        raise HgDeployError(f"{where}: a keypoint visibility is not 0, 1 or 2")
    if _integer(ann, "num_keypoints", where) < 0:
        raise HgDeployError(f"{where}: num_keypoints is negative")


def _record(annotations: Path, kind: str, entry: Any, index: int) -> str:
    """How an error names a record: by its id where it has a usable one, else its position."""
    record_id = entry.get("id") if isinstance(entry, dict) else None
    if isinstance(record_id, int) and not isinstance(record_id, bool):
        return f"{annotations}: {kind} id {record_id}"
    return f"{annotations}: {kind} #{index} in '{_PLURAL[kind]}'"


def _integer(record: dict[str, Any], key: str, where: str) -> int:
    value = record.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise HgDeployError(f"{where}: {key} must be an integer, got {value!r:.40}")
    return value


def _number(record: dict[str, Any], key: str, where: str) -> float:
    value = record.get(key)
    if not _is_finite_number(value):
        raise HgDeployError(f"{where}: {key} must be a finite number, got {value!r:.40}")
    return float(value)


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _leaves_directory(name: str) -> bool:
    """Whether `name` is absolute or climbs out (`..`), in POSIX or Windows spelling."""
    for pure in (PurePosixPath(name), PureWindowsPath(name)):
        if pure.is_absolute() or pure.anchor or ".." in pure.parts:
            return True
    return False
