"""The stick figures of the stand-in pose sets: a random upright pose, placed in the image,
painted part by part (sometimes under a pasted patch) with a label map that says which joints
stay visible, and its COCO keypoints.

Also the two-layer `Painter` (colour image + label map) that the detection shapes share. Every
random draw comes from the caller's generator in a fixed order, so a set rebuilt from its seed is
the same byte for byte.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from hgdeploy.pipelines.categories import (
    COCO_KEYPOINTS,
    COCO_SKELETON,
    MPII_KEYPOINTS,
    MPII_SKELETON,
)

MARKERS = 16  # the first joint marker's value on a figure's label map (parts are 1..6)
OCCLUDED = 0.3  # the share of figures with a photo patch over part of them
OCCLUDER = 255  # the patch's value on the label map
SKELETONS = {"coco": (COCO_KEYPOINTS, COCO_SKELETON), "mpii": (MPII_KEYPOINTS, MPII_SKELETON)}


class Painter:
    """Draws every primitive twice: in colour on the image and as `layer` on a label map, so the
    labels say exactly which pixels each object (or figure part) owns after later ones cover it."""

    def __init__(self, image: np.ndarray, labels: np.ndarray) -> None:
        self.image, self.labels, self.layer = image, labels, 1

    def line(self, a: np.ndarray, b: np.ndarray, colour: tuple, thickness: int) -> None:
        for target, value in ((self.image, colour), (self.labels, self.layer)):
            cv2.line(target, pixel(a), pixel(b), value, max(1, thickness))

    def circle(self, centre: np.ndarray, radius: float, colour: tuple, thickness: int = -1) -> None:
        for target, value in ((self.image, colour), (self.labels, self.layer)):
            cv2.circle(target, pixel(centre), max(1, round(radius)), value, thickness)

    def polygon(self, points: np.ndarray, colour: tuple) -> None:
        corners = np.round(points).astype(np.int32)
        for target, value in ((self.image, colour), (self.labels, self.layer)):
            cv2.fillPoly(target, [corners], value)

    def ellipse(self, centre: np.ndarray, axes: tuple, angle: float, colour: tuple) -> None:
        size = (max(1, round(axes[0])), max(1, round(axes[1])))
        for target, value in ((self.image, colour), (self.labels, self.layer)):
            cv2.ellipse(target, pixel(centre), size, round(angle), 0, 360, value, -1)


def pixel(point: np.ndarray) -> tuple[int, int]:
    """The integer pixel (x, y) a float point is drawn and labelled at."""
    return round(float(point[0])), round(float(point[1]))


def rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    """(N, 2) points turned about the origin (clockwise on screen for y down)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.asarray(points, np.float64) @ np.array([[c, s], [-s, c]])


def jitter(rng: np.random.Generator, colour: tuple, amount: int) -> tuple:
    """`colour` with each channel moved by up to +-amount (clipped to 0..255)."""
    shifted = np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return tuple(int(v) for v in shifted)


# The stick figure in body heights, y down, pelvis at the origin, always facing the camera (+x is
# the person's left). Left parts are warm and right parts cool.
_LIMB_LENGTHS = {"arm": (0.17, 0.15), "leg": (0.245, 0.245)}
_LIMB_WIDTHS = {"arm": (0.05, 0.04), "leg": (0.065, 0.05)}
_LIMB_JOINTS = {"arm": ("shoulder", "elbow", "wrist"), "leg": ("hip", "knee", "ankle")}
# (lowest, highest) angle away from straight down, largest bend at the middle joint (degrees).
_LIMB_RANGES = {"arm": ((-25.0, 170.0), 150.0), "leg": ((-12.0, 40.0), 75.0)}
# Joint markers are never jittered: a visible joint's pixel has exactly its side's colour.
LEFT_JOINT_COLOUR = (255, 255, 120)
RIGHT_JOINT_COLOUR = (150, 255, 255)
CENTRE_JOINT_COLOUR = (255, 255, 255)
_SIDE_COLOURS = {
    "left": {"arm": ((220, 50, 40), (240, 130, 30)), "leg": ((170, 30, 90), (230, 90, 120)),
             "joint": LEFT_JOINT_COLOUR},
    "right": {"arm": ((40, 70, 210), (30, 170, 220)), "leg": ((40, 40, 140), (40, 160, 110)),
              "joint": RIGHT_JOINT_COLOUR},
}  # fmt: skip
_SKIN = ((235, 200, 170), (200, 150, 110), (140, 95, 65), (90, 60, 40))
_HEAD_AXES = (0.06, 0.075)
# Face points: (name, azimuth on the head in degrees, height); yaw turns them, far ones hide.
_FACE = (("nose", 0, -0.43), ("left_eye", 30, -0.455), ("right_eye", -30, -0.455),
         ("left_ear", 90, -0.445), ("right_ear", -90, -0.445))  # fmt: skip


def random_figure(rng: np.random.Generator) -> tuple[dict[str, np.ndarray], set[str]]:
    """Joints of a random upright pose facing the camera (mirrored and tilted at random), in
    body heights, and the face points turned away from the camera."""
    shoulder, hip = rng.uniform(0.10, 0.13), rng.uniform(0.06, 0.08)
    upper = {"thorax": (0, -0.30), "neck": (0, -0.375), "head_centre": (0, -0.45),
             "head_top": (0, -0.525), "left_shoulder": (shoulder, -0.33),
             "right_shoulder": (-shoulder, -0.33)}  # fmt: skip
    yaw, hidden = rng.uniform(-50, 50), set()
    for name, azimuth, y in _FACE:
        turned = math.radians(azimuth + yaw)
        upper[name] = (_HEAD_AXES[0] * math.sin(turned), y)
        if math.cos(turned) < -0.35:
            hidden.add(name)
    lean = rotate(np.array(list(upper.values())), rng.uniform(-12, 12))
    joints = dict(zip(upper, lean, strict=True))
    joints |= {
        "pelvis": np.zeros(2),
        "left_hip": np.array([hip, 0]),
        "right_hip": np.array([-hip, 0]),
    }
    for side, sign in (("left", 1), ("right", -1)):
        for limb, (root, middle, end) in _LIMB_JOINTS.items():
            (lowest, highest), bend = _LIMB_RANGES[limb]
            away = math.radians(rng.uniform(lowest, highest))
            direction = np.array([sign * math.sin(away), math.cos(away)])
            lengths = np.array(_LIMB_LENGTHS[limb]) * rng.uniform(0.75, 1.0, 2)  # foreshortened
            start = joints[f"{side}_{root}"]
            joints[f"{side}_{middle}"] = start + direction * lengths[0]
            turn = rng.uniform(0, bend) * (1 if rng.random() < 0.5 else -1)
            direction = rotate(direction[None], turn)[0]
            joints[f"{side}_{end}"] = joints[f"{side}_{middle}"] + direction * lengths[1]
    points, names = np.array(list(joints.values())), list(joints)
    if rng.random() < 0.5:
        # A mirrored pose, still facing the camera: its left joints are the ones now on +x.
        # (Mirroring without renaming would put the person's left on the image's left, which
        # no flip-tested pose model can tell from a mirror image: upstream's flip test and
        # flip augmentation assume left/right follow from geometry, as for real people.)
        points[:, 0] *= -1
        names, hidden = [_other_side(n) for n in names], {_other_side(n) for n in hidden}
    return dict(zip(names, rotate(points, rng.uniform(-10, 10)), strict=True)), hidden


def _other_side(name: str) -> str:
    for side, other in (("left_", "right_"), ("right_", "left_")):
        if name.startswith(side):
            return other + name[len(side) :]
    return name


def place_figure(rng: np.random.Generator, joints: dict, size: tuple[int, int]) -> float:
    """Scale the figure to 55-90% of the image height and put it mostly inside (`joints` become
    image pixels in place); its height in pixels."""
    height, width = size
    tall = rng.uniform(0.55, 0.9) * height
    points = np.array(list(joints.values())) * tall
    low, high = points.min(0) - 0.06 * tall, points.max(0) + 0.06 * tall
    slack = 0.08 * (high - low)
    shift = np.array(
        [rng.uniform(*sorted((-low[a] - slack[a], limit - high[a] + slack[a])))
         for a, limit in ((0, width), (1, height))]
    )  # fmt: skip
    for name, point in zip(joints, points, strict=True):
        joints[name] = point + shift
    return tall


def draw_figure(
    rng: np.random.Generator, image: np.ndarray, joints: dict, hidden: set[str], tall: float
) -> tuple[np.ndarray, dict[str, int]]:
    """Paint the figure back to front (torso, legs, head, arms; sides in random order). Each
    joint's marker has its own value on the label map: a joint is visible where its centre pixel
    still shows its marker. Returns the label map and each joint's marker value."""
    labels = np.zeros(image.shape[:2], np.uint8)
    painter, marker_of = Painter(image, labels), {}
    marker, face = max(2.0, 0.02 * tall), max(1.5, 0.012 * tall)

    def mark(names: tuple[str, ...], colour: tuple, radius: float) -> None:
        for name in names:
            marker_of[name] = painter.layer = MARKERS + len(marker_of)
            painter.circle(joints[name], radius, colour)

    def torso() -> None:
        ls, rs, lh, rh = (
            joints[n] for n in ("left_shoulder", "right_shoulder", "left_hip", "right_hip")
        )
        out_s, out_h = (
            (ls - rs) * 0.03 * tall / np.linalg.norm(ls - rs),
            (lh - rh) * 0.03 * tall / np.linalg.norm(lh - rh),
        )
        painter.polygon(
            np.array([ls + out_s, rs - out_s, rh - out_h, lh + out_h]),
            jitter(rng, (rng.integers(50, 200),) * 3, 30),
        )
        mark(("pelvis", "thorax"), CENTRE_JOINT_COLOUR, marker)

    def head() -> None:
        neck, top, centre = joints["neck"], joints["head_top"], joints["head_centre"]
        painter.line(neck, neck + (joints["thorax"] - neck) * 0.27, skin, round(0.045 * tall))
        up = top - centre
        painter.ellipse(
            centre,
            tuple(a * tall for a in _HEAD_AXES),
            math.degrees(math.atan2(up[0], -up[1])),
            skin,
        )
        mark(("neck", "head_top"), CENTRE_JOINT_COLOUR, marker)
        for side in ("left", "right"):
            names = tuple(f"{side}_{p}" for p in ("eye", "ear") if f"{side}_{p}" not in hidden)
            mark(names, _SIDE_COLOURS[side]["joint"], face)
        mark(("nose",), CENTRE_JOINT_COLOUR, face)  # last: a turned head hides an eye behind it

    def limb(side: str, kind: str) -> None:
        names = tuple(f"{side}_{j}" for j in _LIMB_JOINTS[kind])
        for (a, b), colour, width in zip(
            ((0, 1), (1, 2)), _SIDE_COLOURS[side][kind], _LIMB_WIDTHS[kind], strict=True
        ):
            painter.line(
                joints[names[a]], joints[names[b]], jitter(rng, colour, 15), round(width * tall)
            )
        mark(names, _SIDE_COLOURS[side]["joint"], marker)

    skin = jitter(rng, _SKIN[rng.integers(len(_SKIN))], 15)
    sides = ("left", "right") if rng.random() < 0.5 else ("right", "left")
    steps = [torso, *(lambda s=s: limb(s, "leg") for s in sides), head]
    steps += [lambda s=s: limb(s, "arm") for s in sides[:: 1 if rng.random() < 0.5 else -1]]
    for layer, step in enumerate(steps, start=1):
        painter.layer = layer
        step()
    return labels, marker_of


def occlude(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: np.ndarray,
    joints: dict[str, np.ndarray],
    patch: Callable[[np.random.Generator, tuple[int, int]], np.ndarray],
) -> None:
    """Sometimes paste a `patch(rng, (h, w))` of photo over part of the figure, as things in
    front of people do: the joints under it stay labelled, as covered (v=1)."""
    if rng.random() >= OCCLUDED:
        return
    height, width = labels.shape
    h = int(rng.uniform(0.12, 0.3) * height)
    w = min(int(rng.uniform(0.12, 0.3) * height), width - 1)
    points = list(joints.values())
    cx, cy = pixel(points[rng.integers(len(points))])
    y0, x0 = int(np.clip(cy - h // 2, 0, height - h)), int(np.clip(cx - w // 2, 0, width - w))
    image[y0 : y0 + h, x0 : x0 + w] = patch(rng, (h, w))
    labels[y0 : y0 + h, x0 : x0 + w] = OCCLUDER


def figure_keypoints(
    names: tuple[str, ...],
    joints: dict[str, np.ndarray],
    hidden: set[str],
    labels: np.ndarray,
    marker_of: dict[str, int],
) -> list[float]:
    """COCO keypoints [x, y, v, ...] of a drawn figure for the skeleton's joint `names`: v=2
    where the joint's marker still shows on `labels`, 1 where something covers it (or the face
    turned it away), 0 (x=y=0) outside the image."""
    height, width = labels.shape
    keypoints: list[float] = []
    for name in map(_figure_joint, names):
        x, y = pixel(joints[name])
        if not (0 <= x < width and 0 <= y < height):
            keypoints += [0.0, 0.0, 0]
            continue
        covered = name in hidden or labels[y, x] != marker_of[name]
        keypoints += [float(x), float(y), 1 if covered else 2]
    return keypoints


def _figure_joint(name: str) -> str:
    """A skeleton's joint name -> the figure's: MPII r_knee -> right_knee, head -> head_top
    (COCO names are the figure's own)."""
    if name == "head":
        return "head_top"
    for short, full in (("r_", "right_"), ("l_", "left_")):
        if name.startswith(short):
            return full + name[len(short) :]
    return name
