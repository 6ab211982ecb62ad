"""`hgdeploy evaluate`: a model's test-time pipeline on a labeled COCO-format set, on one or more
deployments, scored with pycocotools (and PCKh for the MPII-16 hourglass).

The eager fp32 model is always run as well (it is the reference every deployment is compared
with), so one command answers "how much AP does this fp16/int8 artifact lose?".
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hgdeploy.base.artifacts import artifact_files, read_sidecar
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.images import read_image
from hgdeploy.base.outputs import check_output
from hgdeploy.base.zoo import ModelSpec, get_spec
from hgdeploy.evaluation.labeled_set import LabeledSet, PersonBox, load_labeled_set
from hgdeploy.evaluation.metrics import coco_metrics, pckh
from hgdeploy.pipelines.factory import build_pipeline

PREDICTIONS_FILE = "predictions.json"
METRICS_FILE = "metrics.json"
PLOT_FILE = "metrics.png"
Progress = Callable[[str, int, int], None]  # (run label, done, total)


@dataclass(frozen=True)
class Deployment:
    """One thing to score: the eager model (artifact None) or a backend's artifact."""

    backend: str | None = None
    artifact: Path | None = None

    def label(self) -> str:
        if self.artifact is None:
            from hgdeploy.backends.registry import reference_backend

            return f"{reference_backend().name}-fp32"
        record = read_sidecar(self.artifact) or {}
        precision = record.get("precision", "fp32")
        return f"{self.backend or _suffix_backend(self.artifact)}-{precision}:{self.artifact.name}"

    def check_found(self) -> None:
        """Refuse a missing artifact before any run: a typo must not cost a whole eager pass."""
        if self.artifact is not None and not self.artifact.exists():
            raise HgDeployError(f"artifact not found: {self.artifact}")


@dataclass
class RunScore:
    label: str
    backend: str
    artifact: str | None
    metrics: dict[str, float]
    seconds: float
    predictions: list[dict] = field(repr=False, default_factory=list)


@dataclass
class Evaluation:
    model: str
    annotations: str
    images: str
    metric: str  # the headline metric's name ("AP" for COCO sets)
    runs: list[RunScore]
    written: list[Path] = field(default_factory=list)

    def primary(self) -> RunScore:
        """The first deployment given, or the eager model when none was."""
        return self.runs[1] if len(self.runs) > 1 else self.runs[0]

    def to_json(self) -> dict[str, Any]:
        reference = self.runs[0].metrics.get("AP")
        runs = []
        for run in self.runs:
            entry = {k: v for k, v in run.__dict__.items() if k != "predictions"}
            if reference is not None and "AP" in run.metrics:
                entry["AP_delta"] = run.metrics["AP"] - reference
            runs.append(entry)
        return {
            "model": self.model,
            "annotations": self.annotations,
            "images": self.images,
            **self.primary().metrics,
            "label": self.primary().label,
            "runs": runs,
        }


def evaluate(
    name: str,
    annotations: str | Path,
    images_dir: str | Path,
    *,
    deployments: Sequence[Deployment] = (),
    checkpoint: str | Path | None = None,
    seed: int = 0,
    output: str | Path | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Evaluation:
    """Score the eager model and every deployment on the set; with `output`, write
    predictions.json (the primary run's), one predictions.<n>.json per other run, metrics.json."""
    spec = get_spec(name)
    labeled = load_labeled_set(annotations, images_dir, spec)
    for deployment in deployments:
        deployment.check_found()
    out_dir = _check_outputs(output, labeled, deployments, checkpoint, force)
    runs = []
    for deployment in (Deployment(), *deployments):
        runs.append(score_deployment(spec, labeled, deployment, checkpoint, seed, progress))
    evaluation = Evaluation(name, str(annotations), str(images_dir), "AP", runs)
    if out_dir is not None:
        evaluation.written = _write(evaluation, out_dir)
    return evaluation


def _check_outputs(
    output: str | Path | None,
    labeled: LabeledSet,
    deployments: Sequence[Deployment],
    checkpoint: str | Path | None,
    force: bool,
) -> Path | None:
    """The output directory, after checking every file it will hold against every input: the
    set's annotations and each of its images (a `metrics.png` among them), the weights."""
    if output is None:
        return None
    inputs: dict[str, Any] = {
        "--annotations": labeled.annotations_path,
        "--images": labeled.images_dir,
        "--images image": [image.path for image in labeled.images],
        "--checkpoint": checkpoint,
    }
    inputs.update({f"--artifact {d.artifact}": d.artifact for d in deployments})
    out_dir = check_output(output, inputs=inputs, force=force, directory=True)
    for path in _output_files(out_dir, 1 + len(deployments)):
        check_output(path, inputs=inputs, force=force)
    return out_dir


def _output_files(directory: Path, runs: int) -> list[Path]:
    """predictions.json, predictions.N.json for every further run, metrics.json, metrics.png."""
    extra = [directory / f"predictions.{i}.json" for i in range(1, runs)]
    return [directory / PREDICTIONS_FILE, *extra, directory / METRICS_FILE, directory / PLOT_FILE]


def score_deployment(
    spec: ModelSpec,
    labeled: LabeledSet,
    deployment: Deployment,
    checkpoint: str | Path | None,
    seed: int,
    progress: Progress | None,
) -> RunScore:
    label = deployment.label()
    pipeline = build_pipeline(
        spec.name,
        backend=deployment.backend,
        artifact=deployment.artifact,
        checkpoint=checkpoint,
        seed=seed,
    )
    started = time.perf_counter()
    try:
        if spec.decode is not None:
            results = _detect(pipeline, labeled, label, progress)
        else:
            results = _pose(pipeline, labeled, label, progress)
    finally:
        pipeline.network.close()
    seconds = time.perf_counter() - started
    metrics = _metrics(labeled, results)
    artifact = str(deployment.artifact) if deployment.artifact is not None else None
    return RunScore(label, pipeline.network.backend, artifact, metrics, seconds, results)


def _chunk(pipeline: Any) -> int:
    """Images per pipeline call: one network call's worth (a flip test doubles the batch)."""
    return max(1, pipeline.network.batch // (2 if getattr(pipeline, "flip", False) else 1))


def _detect(
    pipeline: Any, labeled: LabeledSet, label: str, progress: Progress | None
) -> list[dict]:
    results: list[dict] = []
    images = labeled.images
    step = _chunk(pipeline)
    for start in range(0, len(images), step):
        part = images[start : start + step]
        found = pipeline([read_image(im.path) for im in part])
        for image, detections in zip(part, found):
            results += detections.to_coco(image.image_id)
        if progress is not None:
            progress(label, min(start + step, len(images)), len(images))
    return results


def _pose(pipeline: Any, labeled: LabeledSet, label: str, progress: Progress | None) -> list[dict]:
    """Top-down pose on every ground-truth person box (HRNet's USE_GT_BBOX evaluation)."""
    paths = {im.image_id: im.path for im in labeled.images}
    people: list[PersonBox] = labeled.person_boxes
    results: list[dict] = []
    step = _chunk(pipeline)
    cache: dict[int, Any] = {}
    for start in range(0, len(people), step):
        part = people[start : start + step]
        pixels = []
        for person in part:
            if person.image_id not in cache:
                cache = {person.image_id: read_image(paths[person.image_id]), **cache}
            pixels.append(cache[person.image_id])
        cache = {p.image_id: cache[p.image_id] for p in part[-1:]}  # one image kept
        poses = pipeline(pixels, [p.box for p in part])
        for person, pose in zip(part, poses):
            for record in pose.to_coco(person.image_id):
                record["person_box"] = [round(float(v), 2) for v in person.box]
                results.append(record)
        if progress is not None:
            progress(label, min(start + step, len(people)), len(people))
    return results


def _metrics(labeled: LabeledSet, results: list[dict]) -> dict[str, float]:
    if labeled.joints is None:
        return coco_metrics(labeled.coco, results, "bbox")
    metrics = coco_metrics(labeled.coco, results, "keypoints")
    if labeled.joints == 16:  # the MPII skeleton: its own metric first
        metrics = {**pckh(labeled.coco, results), **metrics}
    return metrics


def _write(evaluation: Evaluation, directory: Path) -> list[Path]:
    """predictions of every run and metrics.json, written together (a failure leaves the
    previous set)."""
    from hgdeploy.evaluation.plot import metric_bars_png

    runs = [evaluation.primary()] + [r for r in evaluation.runs if r is not evaluation.primary()]
    paths = _output_files(directory, len(runs))
    *prediction_paths, metrics_path, plot_path = paths
    with artifact_files(*paths) as pending:
        for run, path in zip(runs, prediction_paths):
            pending.tmp(path).write_text(json.dumps(run.predictions))
        pending.tmp(metrics_path).write_text(json.dumps(evaluation.to_json(), indent=2))
        headline = [run.metrics.get(evaluation.metric, 0.0) for run in evaluation.runs]
        title = f"{evaluation.model}: {evaluation.metric} on {Path(evaluation.annotations).name}"
        plot = metric_bars_png(title, [r.label for r in evaluation.runs], headline)
        pending.tmp(plot_path).write_bytes(plot)
        pending.describe(
            {
                "kind": "evaluation",
                "model": evaluation.model,
                "predictions": {p.name: r.label for p, r in zip(prediction_paths, runs)},
            }
        )
    return paths


def _suffix_backend(artifact: Path) -> str:
    from hgdeploy.backends.registry import backend_for_suffix

    return backend_for_suffix(artifact.suffix) or "?"
