"""End-to-end pipeline timing: preprocess, network, post-process (and Saccade's stages) per
deployment at batch 1, beside the network alone, on the bundled photographs or a directory.

Each (model, deployment) runs the model's pipeline once over the photos to warm up, then
`repeats` times over every photo, one image per call; a stage's figure is its median per image.
Without explicit artifacts the network stage of the deployed backends is the shared
dynamic-batch ONNX (ONNX Runtime lowers the corner pools, OpenVINO compiles the same file);
with them, each artifact as built (an int8 IR, a 255x255 export). CornerNet/Squeeze's eager
pipeline pads each photo to upstream's native 128k-1 size; a deployed graph has one size, so
their network times are the same input only where the photo's padded size is the graph's.
Saccade's crops per image (how many zoomed crops stage 1 ran) decide its cost, so they are
recorded with every Saccade row.
"""

from __future__ import annotations

import datetime as _dt
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hgdeploy.backends.base import ensure_onnx
from hgdeploy.base.artifacts import tool_versions
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.images import images_in, sample_images
from hgdeploy.evaluation.run import Deployment
from hgdeploy.pipelines.factory import build_pipeline

PHOTOS = ("astronaut", "coffee", "chelsea")


@dataclass
class PipelineTiming:
    model: str
    backend: str
    per_image_ms: dict[str, float]  # stage -> median ms per image
    end_to_end_ms: float
    network_ms: float
    post_share: float  # post-processing / end to end (every non-network, non-preprocess stage)
    detections_per_image: float | None = None  # mean over the photos (detectors)
    label: str = ""  # e.g. "openvino-int8:cornernet_ov_int8.xml"; "torch-fp32" for eager
    crops_per_image: dict[str, float] | None = None  # Saccade: {"mean": .., "max": ..}


@dataclass
class PipelineReport:
    started: str
    repeats: int
    photos: tuple[str, ...]
    weights: str = "synthetic, seed 0"
    images_dir: str | None = None  # where the photos came from (None: the bundled ones)
    rows: list[PipelineTiming] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=tool_versions)


def pipeline_backends() -> tuple[str, ...]:
    """The backends a pipeline bench runs by default: the reference and every available one
    that runs the shared ONNX (an engine-only backend needs a built artifact)."""
    from hgdeploy.backends.registry import registered_backends

    return tuple(
        b.name
        for b in registered_backends()
        if b.is_reference or (".onnx" in b.artifact_suffixes and b.unavailable_reason() is None)
    )


def time_pipeline(
    name: str,
    deployment: Deployment,
    repeats: int,
    seed: int = 0,
    checkpoint: Path | None = None,
    photos: Sequence[np.ndarray] | None = None,
) -> PipelineTiming:
    """One deployment's pipeline over `photos` (default: the bundled three). A deployment with
    a non-reference backend and no artifact runs the shared ONNX."""
    from hgdeploy.backends.registry import reference_backend

    eager = deployment.artifact is None and deployment.backend in (None, reference_backend().name)
    artifact = deployment.artifact
    if artifact is None and not eager:
        artifact = ensure_onnx(name, checkpoint, seed)
    pipeline = build_pipeline(
        name,
        backend=None if eager else deployment.backend,
        artifact=artifact,
        checkpoint=checkpoint,
        seed=seed,
    )
    images = list(photos) if photos is not None else [p for _, p in sample_images(PHOTOS)]
    pose = pipeline.spec.decode is None

    def once(image: Any) -> Any:
        if pose:
            return pipeline([image], [(0, 0, image.shape[1], image.shape[0])])[0]
        return pipeline([image])[0]

    for image in images:  # warm-up
        once(image)
    samples: dict[str, list[float]] = {}
    totals: list[float] = []
    last_pass: list[Any] = []
    for _ in range(repeats):
        last_pass = []
        for image in images:
            pipeline.times.reset()
            started = time.perf_counter()
            last_pass.append(once(image))
            totals.append((time.perf_counter() - started) * 1000)
            for stage, seconds in pipeline.times.as_dict().items():
                samples.setdefault(stage, []).append(seconds * 1000)
    pipeline.network.close()
    medians = {stage: statistics.median(values) for stage, values in samples.items()}
    end_to_end = statistics.median(totals)
    network = medians.get("network", 0.0)  # the runner's own calls (Saccade: both stages')
    post = end_to_end - network - medians.get("preprocess", 0.0)
    found = None if pose else float(np.mean([len(d) for d in last_pass]))
    crops = [d.details["crops"] for d in last_pass if not pose and "crops" in d.details]
    crop_stats = {"mean": float(np.mean(crops)), "max": float(max(crops))} if crops else None
    # evaluate's run label, so a timing row and an AP row name a deployment alike
    label = Deployment().label() if eager else Deployment(deployment.backend, artifact).label()
    return PipelineTiming(name, pipeline.network.backend, medians, end_to_end, network,
                          post / end_to_end, found, label, crop_stats)  # fmt: skip


def measure(
    models: tuple[str, ...],
    deployments: Sequence[Deployment],
    repeats: int = 3,
    seed: int = 0,
    checkpoint: Path | None = None,
    images_dir: Path | None = None,
) -> PipelineReport:
    """Every (model, deployment) pair; `checkpoint` (one model only) replaces the synthetic
    weights, e.g. with weights that detect something, so post-processing sees real work;
    deployments with an artifact need exactly one model (the artifact's)."""
    if checkpoint is not None and len(models) != 1:
        raise HgDeployError("--checkpoint with --op pipeline needs exactly one --model")
    if any(d.artifact is not None for d in deployments) and len(models) != 1:
        raise HgDeployError("--artifact with --op pipeline needs exactly one --model")
    for deployment in deployments:
        deployment.check_found()
    if images_dir is not None:
        named = images_in(images_dir)
        names, photos = tuple(n for n, _ in named), [p for _, p in named]
    else:
        names, photos = PHOTOS, None
    report = PipelineReport(
        _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        repeats,
        names,
        weights=str(checkpoint) if checkpoint is not None else f"synthetic, seed {seed}",
        images_dir=str(images_dir) if images_dir is not None else None,
    )
    for name in models:
        for deployment in deployments:
            report.rows.append(time_pipeline(name, deployment, repeats, seed, checkpoint, photos))
    return report


def report_markdown(report: PipelineReport) -> str:
    header = (
        "| model | backend | run | end to end ms | network ms | preprocess ms "
        "| post-processing share | detections/image | crops/image (mean, max) | stages (ms) |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|"]
    for row in report.rows:
        stages = ", ".join(
            f"{k} {v:.1f}"
            for k, v in row.per_image_ms.items()
            if k not in ("network", "preprocess")
        )
        found = "" if row.detections_per_image is None else f"{row.detections_per_image:.1f}"
        crops = row.crops_per_image
        crop_text = "" if crops is None else f"{crops['mean']:.2f}, {crops['max']:.0f}"
        lines.append(
            f"| {row.model} | {row.backend} | {row.label} | {row.end_to_end_ms:.1f} "
            f"| {row.network_ms:.1f} | {row.per_image_ms.get('preprocess', 0.0):.1f} "
            f"| {100 * row.post_share:.1f}% | {found} | {crop_text} | {stages} |"
        )
    return "\n".join(lines) + "\n"


def report_json(report: PipelineReport) -> dict[str, Any]:
    return asdict(report)
