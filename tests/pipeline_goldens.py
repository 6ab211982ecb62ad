"""Reading tests/data/pipelines/*.json: upstream's recorded test-time outputs (see its README)."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

import numpy as np

DIR = Path(__file__).parent / "data" / "pipelines"


@cache
def golden(name: str) -> dict:
    return json.loads((DIR / f"{name}.json").read_text())


def as_array(value: object) -> np.ndarray:
    """Recorded arrays are JSON lists, sometimes stored as their repr string."""
    if isinstance(value, str):
        value = json.loads(value.replace("'", '"'))
    return np.asarray(value, dtype=np.float64)


def stats(value: object) -> dict:
    return json.loads(value.replace("'", '"')) if isinstance(value, str) else value  # type: ignore[arg-type]


def assert_same_tensor(array: np.ndarray, recorded: object, atol: float = 1e-5) -> None:
    """`array` has the recorded shape, sum and values at the recorded sample indices.

    The sum is compared relative to the sum of magnitudes, so float32 summation order does not
    matter but a shifted or mis-normalised tensor does."""
    record = stats(recorded)
    assert list(array.shape) == list(record["shape"])
    values = np.asarray(array, dtype=np.float64)
    assert abs(values.sum() - record["sum"]) <= 1e-6 * max(1.0, record["abs_sum"])
    if "sample_indices" in record:  # the CornerNet-Lite recorder's layout
        indices, expected = record["sample_indices"], record["samples"]
    else:
        indices, expected = record["samples"]["indices"], record["samples"]["values"]
    got = np.array([values[tuple(i)] for i in indices])
    np.testing.assert_allclose(got, expected, rtol=0, atol=atol)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of box `a` (x1, y1, x2, y2) with each row of `b` (N, 4), no +1 pixel."""
    w = np.clip(np.minimum(a[2], b[:, 2]) - np.maximum(a[0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[3], b[:, 3]) - np.maximum(a[1], b[:, 1]), 0, None)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - w * h
    return np.where(union > 0, w * h / np.where(union > 0, union, 1), 0.0)


def matched_fraction(reference: np.ndarray, candidate: np.ndarray, top: int = 20) -> float:
    """Of `reference`'s `top` best rows (x1, y1, x2, y2, score, class), the fraction matched by
    a `candidate` row of the same class with IoU >= 0.9 (the issue's detection criterion)."""
    best = reference[np.argsort(-reference[:, 4], kind="stable")][:top]
    if len(best) == 0:
        return 1.0
    hits = 0
    for row in best:
        same = candidate[candidate[:, 5] == row[5]]
        hits += bool(len(same)) and bool((box_iou(row[:4], same[:, :4]) >= 0.9).any())
    return hits / len(best)
