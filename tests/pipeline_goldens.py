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
