"""Run an eager reference model on one real image and summarise what it found."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hgdeploy.base.images import preprocess, read_image, sample_images
from hgdeploy.base.zoo import get_spec
from hgdeploy.models.decode import decode_with
from hgdeploy.models.loader import load_model


@dataclass
class Prediction:
    image_name: str
    outputs: dict[str, np.ndarray]  # zoo output name -> array
    detections: np.ndarray | None  # CornerNet family: (num_dets, 8), best first
    keypoints: np.ndarray | None  # pose models: (joints, 3) = x, y, peak value on the heatmap


def predict(
    name: str, checkpoint: str | Path | None = None, image: str | Path | None = None, seed: int = 0
) -> Prediction:
    """Eager forward on `image` (default: scikit-image's astronaut) plus the upstream decoding."""
    spec = get_spec(name)
    if image is None:
        image_name, pixels = sample_images(["astronaut"])[0]
    else:
        image_name, pixels = str(image), read_image(image)
    model = load_model(name, checkpoint, seed=seed)
    inputs = torch.from_numpy(preprocess(spec, [pixels]))
    with torch.no_grad():
        raw = model(inputs)
    heads = raw if isinstance(raw, tuple) else (raw,)
    outputs = {o.name: t.numpy() for o, t in zip(spec.outputs, heads)}
    detections = keypoints = None
    if spec.decode is not None:
        dets = decode_with(spec.decode, heads[:6])[0].numpy()
        detections = dets[dets[:, 4] >= 0]
    else:
        heatmaps = outputs["heatmaps"][0]
        keypoints = heatmap_peaks(heatmaps[-1] if heatmaps.ndim == 4 else heatmaps)
    return Prediction(image_name, outputs, detections, keypoints)


def heatmap_peaks(heatmaps: np.ndarray) -> np.ndarray:
    """(joints, 3): column, row and value of each joint heatmap's maximum."""
    joints, _, width = heatmaps.shape
    flat = heatmaps.reshape(joints, -1)
    index = flat.argmax(axis=1)
    return np.stack([index % width, index // width, flat.max(axis=1)], axis=1).astype(np.float32)
