"""Numerical parity of a backend against the eager reference, through Polygraphy's Comparator.

Both runners see the same feeds: real photographs preprocessed as upstream does, and a seeded
random tensor (which reaches activations the photos may not). Tolerances come from the zoo, per
output and per precision.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from polygraphy.backend.base import BaseRunner
from polygraphy.comparator import Comparator, SimpleCompareFunc
from polygraphy.exception import PolygraphyException
from polygraphy.logger import G_LOGGER

from hgdeploy.base.artifacts import tool_versions, write_text_atomic
from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.images import preprocess, sample_images
from hgdeploy.base.precisions import Tolerance
from hgdeploy.base.zoo import ModelSpec

# Our own table is the report, and failures surface as one-line HgDeployErrors: keep Polygraphy
# silent (its critical() still raises PolygraphyException, which compare_runners converts).
G_LOGGER.module_severity = G_LOGGER.CRITICAL + 1
G_LOGGER.colors = False


@dataclass(frozen=True)
class Feed:
    label: str
    arrays: dict[str, np.ndarray]
    noise: bool = False  # the seeded random tensor: judged at fp32 only


@dataclass
class OutputParity:
    name: str
    max_abs: float
    max_rel: float  # Polygraphy's elementwise |a - b| / |b|: large where the reference is ~0
    scale: float  # max |reference|, so max_abs / scale is the error relative to the output range
    atol: float
    rtol: float
    passed: bool
    stat: str = "elemwise"  # which error statistic atol/rtol bound (Polygraphy check_error_stat)
    mean_abs: float = 0.0  # the worst feed's mean |a - b| (what a "mean" tolerance bounds)
    # Task-level agreement on the photographs (heatmap outputs only; see precision.quality):
    # the fraction of the reference's top-k corners / per-joint argmax peaks the backend finds
    # at the same place.
    peak_agreement: float | None = None
    peak_metric: str | None = None


@dataclass
class ParityReport:
    model: str
    backend: str
    precision: str
    batch: int
    feeds: list[str]
    outputs: list[OutputParity]
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)

    def worst_failure(self) -> str | None:
        """One line on the output furthest outside its tolerance (None if all pass)."""
        return describe_failure(self.outputs)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "backend": self.backend,
            "precision": self.precision,
            "batch": self.batch,
            "passed": self.passed,
            "feeds": self.feeds,
            "outputs": [asdict(o) for o in self.outputs],
            **self.details,
            "versions": tool_versions(),
        }

    def write(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")


def checked_error(row: OutputParity) -> float:
    """The error statistic the row's tolerance bounds: mean |a - b| for "mean", else the max."""
    return row.mean_abs if row.stat == "mean" else row.max_abs


def describe_failure(rows: list[OutputParity]) -> str | None:
    failing = [r for r in rows if not r.passed]
    if not failing:
        return None
    worst = max(failing, key=lambda r: checked_error(r) / r.atol if r.atol else math.inf)
    what = "mean abs err" if worst.stat == "mean" else "max abs err"
    return (
        f"{len(failing)}/{len(rows)} outputs differ; worst {worst.name}: {what} "
        f"{checked_error(worst):.3g} > atol {worst.atol:.3g} (rtol {worst.rtol:g})"
    )


def parity_feeds(
    spec: ModelSpec,
    input_name: str,
    batch: int,
    seed: int = 0,
    image_batches: int = 2,
    noise: bool = True,
) -> list[Feed]:
    """`image_batches` batches of real photos (cycling through the samples), then random noise.

    Noise reaches activations photos may not, which is what an fp32 check wants; reduced
    precision is judged on real images only (int8 ranges are calibrated on the data
    distribution, and noise far outside it says nothing about deployment accuracy).
    """
    photos = sample_images()
    feeds = []
    for b in range(image_batches):
        chosen = [photos[(b * batch + i) % len(photos)] for i in range(batch)]
        label = "images: " + ", ".join(name for name, _ in chosen)
        feeds.append(Feed(label, {input_name: preprocess(spec, [img for _, img in chosen])}))
    if noise:
        tensor = np.random.default_rng(seed).standard_normal(spec.input_shape(batch), np.float32)
        feeds.append(Feed(f"random normal (seed {seed})", {input_name: tensor}, noise=True))
    return feeds


def compare_runners(
    spec: ModelSpec,
    reference: BaseRunner,
    candidate: BaseRunner,
    feeds: list[Feed],
    tolerances: dict[str, Tolerance],
) -> list[OutputParity]:
    """Run both runners on every feed; per output, the worst error over all feeds."""
    try:
        results = Comparator.run([reference, candidate], data_loader=[f.arrays for f in feeds])
    except PolygraphyException as exc:
        raise HgDeployError(f"parity run failed: {first_line(exc)}") from None
    scales = _reference_scales(results)
    missing = [name for name in spec.output_names if name not in scales]
    if missing:
        raise HgDeployError(f"the reference produced no output named {', '.join(missing)}")
    atol = {name: tolerances[name].effective_atol(scales[name]) for name in spec.output_names}
    rtol = {name: tolerances[name].rtol for name in spec.output_names}
    stat = {name: tolerances[name].stat for name in spec.output_names}
    compare = SimpleCompareFunc(atol=atol, rtol=rtol, check_error_stat=stat, check_shapes=True)
    try:
        accuracy = Comparator.compare_accuracy(results, compare_func=compare)
    except PolygraphyException as exc:
        raise HgDeployError(f"parity comparison failed: {first_line(exc)}") from None
    # Polygraphy >= 0.53 returns a list of AccuracyResult (one per compare function); older
    # versions return the AccuracyResult itself: {runner pair: [per-iteration {output: result}]}.
    per_function = [accuracy] if hasattr(accuracy, "items") else list(accuracy)
    rows = {
        name: OutputParity(name, 0.0, 0.0, scales[name], atol[name], rtol[name], True, stat[name])
        for name in spec.output_names
    }
    seen: set[str] = set()
    for acc in per_function:
        for iterations in acc.values():
            for per_output in iterations:
                for name, result in per_output.items():
                    row = rows[name]
                    seen.add(name)
                    row.passed = row.passed and bool(result)
                    if isinstance(result, bool):  # a shape mismatch carries no metrics
                        row.max_abs = row.max_rel = row.mean_abs = math.inf
                        continue
                    row.max_abs = max(row.max_abs, _finite_or_inf(result.max_absdiff))
                    row.mean_abs = max(row.mean_abs, _finite_or_inf(result.mean_absdiff))
                    row.max_rel = max(row.max_rel, _finite_or_inf(result.max_reldiff))
    unmatched = [name for name in spec.output_names if name not in seen]
    if unmatched:
        raise HgDeployError(f"the backend produced no output named {', '.join(unmatched)}")
    _add_peak_agreement(spec, results, feeds, rows)
    return list(rows.values())


def _add_peak_agreement(
    spec: ModelSpec, results: Any, feeds: list[Feed], rows: dict[str, OutputParity]
) -> None:
    """Peak agreement of the candidate with the reference over the photograph feeds."""
    from hgdeploy.precision.quality import heatmap_peak_agreement

    photos = [i for i, feed in enumerate(feeds) if not feed.noise]
    if not photos:
        return
    (_, reference), (_, candidate) = results[0], results[1]
    for name, row in rows.items():
        if row.max_abs == math.inf:
            continue  # a shape mismatch: no peaks to compare
        ref = np.concatenate([np.asarray(reference[i][name]) for i in photos])
        cand = np.concatenate([np.asarray(candidate[i][name]) for i in photos])
        row.peak_agreement, row.peak_metric = heatmap_peak_agreement(spec, name, ref, cand)


def _reference_scales(results: Any) -> dict[str, float]:
    """max |reference value| per output over all feeds (the first runner is the reference)."""
    _, iterations = results[0]
    scales: dict[str, float] = {}
    for iteration in iterations:
        for name, array in iteration.items():
            scales[name] = max(scales.get(name, 0.0), float(np.abs(array).max()))
    return scales


def _finite_or_inf(value: float | None) -> float:
    return math.inf if value is None or not math.isfinite(value) else float(value)
