"""The batch optimization profile of an engine: min <= opt <= max, defaulting to the zoo's
documented batch shapes."""

from __future__ import annotations

from dataclasses import dataclass

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.zoo import ModelSpec


@dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def contains(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    def shapes(self, spec: ModelSpec) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes for Polygraphy's `Profile.add`."""
        return spec.input_shape(self.min), spec.input_shape(self.opt), spec.input_shape(self.max)

    def to_json(self) -> dict[str, int]:
        return {"min": self.min, "opt": self.opt, "max": self.max}


def batch_profile(
    spec: ModelSpec,
    batch: int | None = None,
    min_batch: int | None = None,
    opt_batch: int | None = None,
    max_batch: int | None = None,
) -> BatchProfile:
    """`--batch N` fixes all three; otherwise 1 .. the largest documented batch, optimised for
    the first documented batch (e.g. CornerNet-Saccade: 1..4, opt 4)."""
    if batch is not None:
        if any(b is not None for b in (min_batch, opt_batch, max_batch)):
            raise HgDeployError("give either --batch or --min/--opt/--max-batch, not both")
        min_batch = opt_batch = max_batch = batch
    documented = list(spec.batches.values())
    low = min_batch if min_batch is not None else 1
    high = max_batch if max_batch is not None else max(documented + [low])
    opt = opt_batch if opt_batch is not None else min(max(spec.default_batch, low), high)
    if low < 1:
        raise HgDeployError(f"batch sizes must be >= 1, got min {low}")
    if not low <= opt <= high:
        raise HgDeployError(f"the profile needs min <= opt <= max, got {low} <= {opt} <= {high}")
    return BatchProfile(low, opt, high)
