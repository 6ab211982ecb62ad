"""Fall the most int8-sensitive layers back to high precision until a metric target is met.

Given the layers ranked by `sensitivity` (worst first) and a score for "these layers kept in
high precision, the rest int8" (a task metric such as COCO AP, higher is better), find the
fewest top-ranked layers to keep so that score >= target: plain int8 first (nothing kept),
then all of them, then bisection on the count between, assuming that keeping more of the
ranking never loses much (each score is measured, so a non-monotone step only costs layers,
never a false claim: the answer is a measured point).

The assumption fails at targets near the metric's noise: the HRNet stand-in's ONNX Runtime
U8S8 AP was -0.29, -0.70, -0.70, -0.08 and -0.24 points from eager with 0, 4, 16, 64 and all
418 layers in float, so all layers missed a 0.1 target that 64 met. When all layers miss, the
counts 1, 2, 4, ... are measured too (about log2 of the layer count more builds) before the
target is declared unreachable; the smallest that meets it wins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

from hgdeploy.base.errors import HgDeployError

Score = Callable[[Sequence[str]], float]  # layers kept in high precision -> metric


@dataclass(frozen=True)
class FallbackStep:
    kept: int  # how many top-ranked layers were kept in high precision
    score: float


@dataclass
class FallbackResult:
    target: float
    kept_layers: list[str]
    score: float  # measured with exactly kept_layers in high precision
    steps: list[FallbackStep] = field(default_factory=list)  # every measured point, in order

    def to_dict(self) -> dict:
        return {**asdict(self), "steps": [asdict(step) for step in self.steps]}


class TargetUnreachable(HgDeployError):
    """Even every ranked layer in high precision misses the target."""


def fall_back_to_target(
    rank: Callable[[], Sequence[str]], score: Score, target: float
) -> FallbackResult:
    """The smallest measured prefix of the ranking whose score meets `target` (see module
    doc); `rank` runs only when plain int8 misses. TargetUnreachable (one line, with the best
    score reached) when no prefix meets it."""
    steps: list[FallbackStep] = []
    measured: dict[int, float] = {}
    ranking: Sequence[str] = ()

    def measure(count: int) -> float:
        if count not in measured:
            measured[count] = score(list(ranking[:count]))
            steps.append(FallbackStep(count, measured[count]))
        return measured[count]

    if measure(0) >= target:
        return FallbackResult(target, [], measured[0], steps)
    ranking = rank()
    if measure(len(ranking)) < target:
        count = 1
        while count < len(ranking):
            if measure(count) >= target:
                return FallbackResult(target, list(ranking[:count]), measured[count], steps)
            count *= 2
        best = max(measured.values())
        raise TargetUnreachable(
            f"no fallback meets the target {target:.4f}: plain int8 scores {measured[0]:.4f}, "
            f"all {len(ranking)} ranked layers in high precision {measured[len(ranking)]:.4f} "
            f"(best {best:.4f} over {len(measured)} measured counts)"
        )
    low, high = 0, len(ranking)  # score(low) < target <= score(high)
    while high - low > 1:
        middle = (low + high) // 2
        if measure(middle) >= target:
            high = middle
        else:
            low = middle
    return FallbackResult(target, list(ranking[:high]), measured[high], steps)
