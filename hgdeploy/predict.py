"""`hgdeploy predict`: a model's test-time pipeline on images, on any backend, in image pixels.

Writes `predictions.json` (COCO results format) and one PNG per image with what was found.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hgdeploy.base.artifacts import artifact_files, read_sidecar
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.images import image_id_for, image_paths_in, read_image, sample_images
from hgdeploy.base.outputs import check_output
from hgdeploy.base.zoo import get_spec
from hgdeploy.pipelines.drawing import draw_detections, draw_pose, encode_png
from hgdeploy.pipelines.factory import build_pipeline
from hgdeploy.pipelines.pose_boxes import check_box_numbers, clip_box
from hgdeploy.pipelines.results import Detections, Pose

Box = tuple[float, float, float, float]
DEFAULT_IMAGE = "astronaut"
PREDICTIONS_FILE = "predictions.json"


@dataclass
class ImagePrediction:
    image_id: int | str
    name: str
    pixels: np.ndarray  # HxWx3 uint8 RGB
    found: Detections | Pose


@dataclass
class PredictRun:
    model: str
    backend: str
    predictions: list[ImagePrediction]
    stage_seconds: dict[str, float]
    written: list[Path] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # what the CLI prints as `warning:` lines

    def coco_results(self) -> list[dict[str, Any]]:
        return [rec for p in self.predictions for rec in p.found.to_coco(p.image_id)]


def gather_images(
    image: str | Path | None, images_dir: str | Path | None
) -> list[tuple[Any, str, Path | None]]:
    """(image_id, name, path) for --image / --images; the bundled astronaut when neither."""
    if image is not None and images_dir is not None:
        raise HgDeployError("give --image or --images, not both")
    if image is not None:
        path = Path(image)
        return [(image_id_for(path), path.name, path)]
    if images_dir is not None:
        return [(image_id_for(p), p.name, p) for p in image_paths_in(images_dir)]
    return [(DEFAULT_IMAGE, DEFAULT_IMAGE, None)]


def predict(
    name: str,
    *,
    image: str | Path | None = None,
    images_dir: str | Path | None = None,
    backend: str | None = None,
    artifact: str | Path | None = None,
    checkpoint: str | Path | None = None,
    seed: int = 0,
    box: Box | None = None,
    output: str | Path | None = None,
    force: bool = False,
    on_batch: Callable[[int, int], None] | None = None,
) -> PredictRun:
    """Run `name`'s pipeline on the images; with `output`, write predictions.json and PNGs."""
    spec = get_spec(name)
    if box is not None and spec.decode is not None:
        raise HgDeployError("--box is for the pose models (a person box); detectors find boxes")
    if box is not None:
        check_box_numbers(box)
    listed = gather_images(image, images_dir)
    out_dir = None
    if output is not None:
        inputs: dict[str, str | Path | None] = {
            "--images": images_dir,
            "--artifact": artifact,
            "--checkpoint": checkpoint,
        }
        inputs.update({f"image {name}": path for _, name, path in listed})
        out_dir = check_output(output, inputs=inputs, force=force, directory=True)
        # Every file it will write: a drawing must not replace a photo it was made from.
        # A drawing an earlier run wrote (its predictions.json's sidecar lists it) is ours.
        ours = set((read_sidecar(out_dir / PREDICTIONS_FILE) or {}).get("drawings", []))
        for path in (out_dir / PREDICTIONS_FILE, *drawing_paths(out_dir, listed)):
            check_output(path, inputs=inputs, force=force or path.name in ours)
    pipeline = build_pipeline(
        name, backend=backend, artifact=artifact, checkpoint=checkpoint, seed=seed
    )
    chunk = max(1, pipeline.network.batch // (2 if getattr(pipeline, "flip", False) else 1))
    predictions: list[ImagePrediction] = []
    clipped: list[str] = []
    try:
        for start in range(0, len(listed), chunk):
            part = listed[start : start + chunk]
            pixels = [
                read_image(path) if path is not None else sample_images([nm])[0][1]
                for _, nm, path in part
            ]
            found: Sequence[Detections | Pose]
            if spec.decode is not None:
                found = pipeline(pixels)
            else:
                boxes = [_person_box(box, im) for im in pixels]
                clipped += [nm for (_, nm, _), b in zip(part, boxes) if box and b != box]
                found = pipeline(pixels, boxes)
            predictions += [
                ImagePrediction(image_id, nm, im, f)
                for (image_id, nm, _), im, f in zip(part, pixels, found)
            ]
            if on_batch is not None:
                on_batch(min(start + chunk, len(listed)), len(listed))
    finally:
        pipeline.network.close()
    run = PredictRun(name, pipeline.network.backend, predictions, pipeline.times.as_dict())
    if clipped:
        run.warnings.append(
            f"--box {','.join(f'{v:g}' for v in box or ())} reaches past the edges of "
            f"{len(clipped)} of {len(listed)} image(s) (e.g. {clipped[0]}): cut to the image there"
        )
    if out_dir is not None:
        run.written = write_outputs(run, out_dir, artifact)
    return run


def drawing_paths(directory: Path, listed: Sequence[tuple[Any, str, Path | None]]) -> list[Path]:
    """One `<image stem>.png` per image in the output directory."""
    return [directory / f"{Path(name).stem}.png" for _, name, _ in listed]


def _person_box(box: Box | None, image: np.ndarray) -> Box:
    """--box, checked against the image and cut to it; without it the whole image is the
    person box."""
    height, width = image.shape[:2]
    if box is None:
        return (0.0, 0.0, float(width), float(height))
    return clip_box(box, height, width)


def write_outputs(
    run: PredictRun, directory: Path, artifact: str | Path | None = None
) -> list[Path]:
    """predictions.json, its sidecar and one `<image>.png` drawing per image, written together
    (a failure leaves the previous set)."""
    results = directory / PREDICTIONS_FILE
    drawings = drawing_paths(directory, [(p.image_id, p.name, None) for p in run.predictions])
    with artifact_files(results, *drawings) as pending:
        for prediction, path in zip(run.predictions, drawings):
            found = prediction.found
            if isinstance(found, Detections):
                drawing = draw_detections(prediction.pixels, found)
            else:
                drawing = draw_pose(prediction.pixels, found)
            pending.tmp(path).write_bytes(encode_png(drawing))
        pending.tmp(results).write_text(json.dumps(run.coco_results()))
        pending.describe(
            {
                "kind": "predictions",
                "model": run.model,
                "backend": run.backend,
                "artifact": str(artifact) if artifact is not None else None,
                "images": [p.name for p in run.predictions],
                "drawings": [path.name for path in drawings],
                "stage_seconds": run.stage_seconds,
            }
        )
    return [*drawings, results]
