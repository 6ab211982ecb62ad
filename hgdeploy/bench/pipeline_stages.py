"""End-to-end pipeline timing: preprocess, network, post-process (and Saccade's stages) per
backend at batch 1, beside the network alone, on the bundled photographs.

Each (model, backend) runs the model's pipeline once to warm up, then `repeats` times over
every photo, one image per call; a stage's figure is its median per image. The network stage of
the deployed backends is the shared dynamic-batch ONNX (ONNX Runtime lowers the corner pools,
OpenVINO compiles the same file). CornerNet/Squeeze's eager pipeline pads each photo to upstream's
native 128k-1 size; the deployed graph is 511x511, so their network times are not the same input.
"""

from __future__ import annotations

import datetime as _dt
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from hgdeploy.backends.base import ensure_onnx
from hgdeploy.base.artifacts import tool_versions
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.images import sample_images
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
    detections_per_image: float | None = None


@dataclass
class PipelineReport:
    started: str
    repeats: int
    photos: tuple[str, ...]
    weights: str = "synthetic, seed 0"
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
    name: str, backend: str, repeats: int, seed: int = 0, checkpoint: Path | None = None
) -> PipelineTiming:
    artifact = None if backend == "torch" else ensure_onnx(name, checkpoint, seed)
    pipeline = build_pipeline(
        name,
        backend=None if backend == "torch" else backend,
        artifact=artifact,
        checkpoint=checkpoint,
        seed=seed,
    )
    photos = [pixels for _, pixels in sample_images(PHOTOS)]
    pose = pipeline.spec.decode is None
    found: list[Any] = []

    def once(image: Any) -> list[Any]:
        if pose:
            return pipeline([image], [(0, 0, image.shape[1], image.shape[0])])
        return pipeline([image])

    for image in photos:  # warm-up
        once(image)
    samples: dict[str, list[float]] = {}
    totals: list[float] = []
    for _ in range(repeats):
        for image in photos:
            pipeline.times.reset()
            started = time.perf_counter()
            found = once(image)
            totals.append((time.perf_counter() - started) * 1000)
            for stage, seconds in pipeline.times.as_dict().items():
                samples.setdefault(stage, []).append(seconds * 1000)
    pipeline.network.close()
    medians = {stage: statistics.median(values) for stage, values in samples.items()}
    end_to_end = statistics.median(totals)
    network = medians.get("network", 0.0)
    post = end_to_end - network - medians.get("preprocess", 0.0)
    count = None if pose else float(len(found[0]))
    return PipelineTiming(name, backend, medians, end_to_end, network, post / end_to_end, count)


def measure(
    models: tuple[str, ...],
    backends: tuple[str, ...],
    repeats: int = 3,
    seed: int = 0,
    checkpoint: Path | None = None,
) -> PipelineReport:
    """Every (model, backend) pair; `checkpoint` (one model only) replaces the synthetic
    weights, e.g. with weights that detect something, so post-processing sees real work."""
    if checkpoint is not None and len(models) != 1:
        raise HgDeployError("--checkpoint with --op pipeline needs exactly one --model")
    report = PipelineReport(
        _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        repeats,
        PHOTOS,
        weights=str(checkpoint) if checkpoint is not None else f"synthetic, seed {seed}",
    )
    for name in models:
        for backend in backends:
            report.rows.append(time_pipeline(name, backend, repeats, seed, checkpoint))
    return report


def report_markdown(report: PipelineReport) -> str:
    lines = [
        "| model | backend | end to end ms | network ms | preprocess ms | post-processing share "
        "| stages (ms) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        stages = ", ".join(
            f"{k} {v:.1f}"
            for k, v in row.per_image_ms.items()
            if k not in ("network", "preprocess")
        )
        lines.append(
            f"| {row.model} | {row.backend} | {row.end_to_end_ms:.1f} | {row.network_ms:.1f} | "
            f"{row.per_image_ms.get('preprocess', 0.0):.1f} | {100 * row.post_share:.1f}% "
            f"| {stages} |"
        )
    return "\n".join(lines) + "\n"


def report_json(report: PipelineReport) -> dict[str, Any]:
    return asdict(report)
