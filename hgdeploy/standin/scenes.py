"""Procedurally labelled scenes on real photographs, written as COCO sets.

Released checkpoints cannot be downloaded here, so small stand-in detectors and pose nets learn
this task instead, and FP16/INT8 deployments are scored by COCO AP on a held-out set. Every set
is a pure function of its seed (image i draws from its own generator), so it can be rebuilt
byte for byte on the same library builds instead of being shipped.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import cv2
import numpy as np

from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.images import sample_images
from hgdeploy.pipelines.categories import COCO_CATEGORY_IDS, COCO_CLASS_NAMES
from hgdeploy.standin.figures import (
    CENTRE_JOINT_COLOUR,
    LEFT_JOINT_COLOUR,
    RIGHT_JOINT_COLOUR,
    SKELETONS,
    Painter,
    draw_figure,
    figure_keypoints,
    jitter,
    occlude,
    place_figure,
    random_figure,
    rotate,
)

__all__ = [
    "CENTRE_JOINT_COLOUR",
    "CLASS_COLOURS",
    "COLOUR_JITTER",
    "LEFT_JOINT_COLOUR",
    "RIGHT_JOINT_COLOUR",
    "SHAPES",
    "SceneSet",
    "detection_set",
    "pose_set",
    "scene_background",
    "write_set",
]

# Detection class j: a shape and its fill colour (RGB, jittered per object); distinct in both.
SHAPES = ("disc", "framed_rectangle", "triangle", "ring", "cross", "star", "diamond", "hexagon")
CLASS_COLOURS: tuple[tuple[int, int, int], ...] = (
    (220, 40, 40), (40, 80, 220), (240, 210, 30), (40, 190, 70),
    (210, 50, 200), (40, 210, 220), (245, 130, 20), (120, 60, 170),
)  # fmt: skip
FRAME_COLOUR = (240, 240, 240)  # the framed rectangle's border
COLOUR_JITTER = 25
OUTSIDE = 0.15  # at most this fraction of an object's extent lies outside the image


@dataclass
class SceneSet:
    """Images (HxWx3 uint8 RGB) and their COCO dict; images[i] is coco["images"][i]."""

    images: list[np.ndarray]
    coco: dict


# The backgrounds, pinned here: a set rebuilt from its seed must not change when
# hgdeploy.base.images.SAMPLE_IMAGES does.
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle", "immunohistochemistry")


@cache
def _photos() -> tuple[np.ndarray, ...]:
    return tuple(image for _, image in sample_images(PHOTOS))


def _image_rng(seed: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, index])


def scene_background(seed: int, index: int, size: tuple[int, int]) -> np.ndarray:
    """The photo under image `index` of any set made with `seed` and `size` (height, width),
    before anything is drawn on it: what tests compare the drawn objects against."""
    return _background(_image_rng(seed, index), size)


def _background(rng: np.random.Generator, size: tuple[int, int]) -> np.ndarray:
    """A random crop (scale, position, flip) of a bundled photo with brightness/contrast jitter;
    the jitter is a 256-entry table so it is exact integer work on any machine."""
    height, width = size
    photos = _photos()
    photo = photos[rng.integers(len(photos))]
    ph, pw = photo.shape[:2]
    tallest = min(ph, pw * height / width)  # the tallest crop with the output's aspect
    crop_h = max(8, int(tallest * rng.uniform(0.35, 1.0)))
    crop_w = min(pw, max(8, round(crop_h * width / height)))
    top, left = rng.integers(0, ph - crop_h + 1), rng.integers(0, pw - crop_w + 1)
    crop = photo[top : top + crop_h, left : left + crop_w]
    interpolation = cv2.INTER_AREA if crop_h > height else cv2.INTER_LINEAR
    image = cv2.resize(crop, (width, height), interpolation=interpolation)
    if rng.random() < 0.5:
        image = image[:, ::-1]
    contrast, brightness = rng.uniform(0.75, 1.25), rng.uniform(-25.0, 25.0)
    mean = float(image.mean())
    table = np.clip(np.rint((np.arange(256) - mean) * contrast + mean + brightness), 0, 255)
    return np.ascontiguousarray(table.astype(np.uint8)[image])


def _shape_outline(shape: str, radius: float, angle: float) -> np.ndarray:
    """Polygon corners of a shape of outer radius `radius` about the origin."""
    turns = {"triangle": 3, "hexagon": 6, "star": 10}
    if shape in turns:
        n = turns[shape]
        radii = np.where(np.arange(n) % 2, 0.45, 1.0) if shape == "star" else np.ones(n)
        t = np.arange(n) * 2 * np.pi / n - np.pi / 2
        unit = np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1)
    elif shape == "diamond":
        unit = np.array([[0, -1], [0.65, 0], [0, 1], [-0.65, 0]])
    else:  # cross: two bars of half-width w
        w = 0.3
        unit = np.array(
            [[-w, -1], [w, -1], [w, -w], [1, -w], [1, w], [w, w], [w, 1], [-w, 1], [-w, w],
             [-1, w], [-1, -w], [-w, -w]]
        )  # fmt: skip
    return rotate(unit * radius, angle)


def _paint_shape(
    painter: Painter, rng: np.random.Generator, kind: int, centre: np.ndarray, radius: float
) -> None:
    """Class `kind`'s shape in its jittered colour; other random choices (aspect, angle) too."""
    shape, fill = SHAPES[kind], jitter(rng, CLASS_COLOURS[kind], COLOUR_JITTER)
    if shape == "disc":
        painter.circle(centre, radius, fill)
    elif shape == "ring":  # a stroke centred at 0.8 r, 0.4 r wide: outer edge at r
        painter.circle(centre, 0.8 * radius, fill, max(3, round(0.4 * radius)))
    elif shape == "framed_rectangle":
        half = radius * rng.uniform(0.6, 1.0, 2)
        border = max(2.0, 0.15 * float(half.min()))
        frame = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
        painter.polygon(centre + frame, jitter(rng, FRAME_COLOUR, 10))
        painter.polygon(centre + frame * (1 - border / half), fill)
    else:
        angle = rng.uniform(-15, 15) if shape == "diamond" else rng.uniform(0, 360)
        painter.polygon(centre + _shape_outline(shape, radius, angle), fill)


def _detection_image(
    rng: np.random.Generator, size: tuple[int, int], classes: int, max_objects: int
) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """One scene: its image and (class, visible bbox) per object hidden at most half."""
    height, width = size
    background = _background(rng, size)
    largest = 0.45 * min(height, width)
    smallest = min(24.0, largest / 2)
    pad = math.ceil(OUTSIDE * largest) + 2
    canvas = cv2.copyMakeBorder(background, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    owner = np.full(canvas.shape[:2], -1, np.int16)
    areas, kinds = [], []
    for k in range(int(rng.integers(1, max_objects + 1))):
        kind = int(rng.integers(classes))
        radius = rng.uniform(smallest, largest) / 2
        reach = radius * (1 - 2 * OUTSIDE)  # the centre may sit this close to an edge
        centre = pad + np.array(
            [rng.uniform(reach, width - reach), rng.uniform(reach, height - reach)]
        )
        mask = np.zeros(owner.shape, np.uint8)
        _paint_shape(Painter(canvas, mask), rng, kind, centre, radius)
        owner[mask > 0] = k
        areas.append(int(np.count_nonzero(mask)))
        kinds.append(kind)
    visible = owner[pad : pad + height, pad : pad + width]
    objects = []
    for k, kind in enumerate(kinds):
        ys, xs = np.nonzero(visible == k)
        if len(xs) == 0 or len(xs) < 0.5 * areas[k]:
            continue
        x0, y0 = float(xs.min()), float(ys.min())
        objects.append((kind, [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0]))
    return np.ascontiguousarray(canvas[pad : pad + height, pad : pad + width]), objects


def _check(count: int, seed: int, size: tuple[int, int]) -> None:
    if count < 1 or seed < 0:
        raise HgDeployError(f"need count >= 1 and seed >= 0 (got count {count}, seed {seed})")
    if min(size) < 32:
        raise HgDeployError(f"image size {size[0]}x{size[1]} is too small (at least 32x32)")


def _coco_images(count: int, size: tuple[int, int]) -> list[dict]:
    height, width = size
    return [
        {"id": i + 1, "file_name": f"{i + 1:06d}.png", "height": height, "width": width}
        for i in range(count)
    ]


def detection_set(
    count: int,
    seed: int,
    size: tuple[int, int] = (256, 256),
    classes: int = 4,
    max_objects: int = 4,
) -> SceneSet:
    """`count` photos (size is height, width) each with 1..max_objects shapes of `classes`
    kinds; class j is labelled COCO_CATEGORY_IDS[j], the id the detection pipelines give it."""
    _check(count, seed, size)
    if not 1 <= classes <= len(SHAPES) or max_objects < 1:
        raise HgDeployError(
            f"need 1 <= classes <= {len(SHAPES)} and max_objects >= 1 "
            f"(got {classes}, {max_objects})"
        )
    images, annotations = [], []
    for index in range(count):
        image, objects = _detection_image(_image_rng(seed, index), size, classes, max_objects)
        images.append(image)
        for kind, box in objects:
            annotations.append(
                {"id": len(annotations) + 1, "image_id": index + 1,
                 "category_id": COCO_CATEGORY_IDS[kind], "bbox": box, "area": box[2] * box[3],
                 "iscrowd": 0}
            )  # fmt: skip
    categories = [{"id": COCO_CATEGORY_IDS[j], "name": COCO_CLASS_NAMES[j]} for j in range(classes)]
    info = {"description": "hgdeploy stand-in detection set", "seed": seed, "classes": classes,
            "max_objects": max_objects}  # fmt: skip
    coco = {"info": info, "images": _coco_images(count, size), "annotations": annotations,
            "categories": categories}  # fmt: skip
    return SceneSet(images, coco)


def pose_set(count: int, seed: int, skeleton: str, size: tuple[int, int] = (256, 192)) -> SceneSet:
    """`count` photos (size is height, width) each with one stick figure labelled in COCO
    keypoint format with `skeleton`'s joints ("coco": 17, "mpii": 16): v=2 visible, v=1
    covered (by a later-drawn part, a pasted patch or a face turned away), v=0 outside (x=y=0).
    bbox and area are the whole drawn figure's, also where a patch covers it, within the image."""
    _check(count, seed, size)
    if skeleton not in SKELETONS:
        raise HgDeployError(f"unknown skeleton {skeleton!r}: use one of {', '.join(SKELETONS)}")
    names, edges = SKELETONS[skeleton]
    images, annotations = [], []
    for index in range(count):
        rng = _image_rng(seed, index)
        image = _background(rng, size).copy()
        joints, hidden = random_figure(rng)
        tall = place_figure(rng, joints, size)
        labels, marker_of = draw_figure(rng, image, joints, hidden, tall)
        ys, xs = np.nonzero(labels)  # the whole figure, also where the occluder will cover it
        occlude(rng, image, labels, joints, _background)
        keypoints = figure_keypoints(names, joints, hidden, labels, marker_of)
        x0, y0 = float(xs.min()), float(ys.min())
        annotations.append(
            {"id": index + 1, "image_id": index + 1, "category_id": 1, "keypoints": keypoints,
             "num_keypoints": sum(1 for v in keypoints[2::3] if v > 0),
             "bbox": [x0, y0, float(xs.max()) + 1 - x0, float(ys.max()) + 1 - y0],
             "area": float(len(xs)), "iscrowd": 0}
        )  # fmt: skip
        images.append(image)
    category = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(names),
                "skeleton": [[a + 1, b + 1] for a, b in edges]}  # fmt: skip
    info = {"description": f"hgdeploy stand-in pose set ({skeleton})", "seed": seed}
    coco = {"info": info, "images": _coco_images(count, size), "annotations": annotations,
            "categories": [category]}  # fmt: skip
    return SceneSet(images, coco)


def check_empty_directory(directory: str | Path) -> Path:
    """`directory` if a set can be written there (absent or empty), else a one-line error;
    callers check it before hours of work, `write_set` again before writing."""
    directory = Path(directory)
    if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
        raise HgDeployError(f"{directory} exists and is not an empty directory: choose another")
    return directory


def write_set(scene_set: SceneSet, directory: Path) -> Path:
    """Write `<id:06d>.png` images and annotations.json into `directory` as one unit: built in a
    temporary sibling and renamed into place, so a failure leaves nothing half-written."""
    directory = check_empty_directory(directory)
    entries = scene_set.coco["images"]
    if len(entries) != len(scene_set.images):
        raise HgDeployError(f"{len(scene_set.images)} images but {len(entries)} COCO entries")
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        for entry, image in zip(entries, scene_set.images, strict=True):
            ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
            if not ok:
                raise HgDeployError(f"cannot encode {entry['file_name']} as PNG")
            (staging / entry["file_name"]).write_bytes(png.tobytes())
        (staging / "annotations.json").write_text(json.dumps(scene_set.coco))
        if directory.exists():
            directory.rmdir()
        staging.rename(directory)
    except BaseException as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if isinstance(exc, OSError):
            raise HgDeployError(f"cannot write {directory}: {first_line(exc)}") from None
        raise
    return directory
