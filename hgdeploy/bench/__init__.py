"""Benchmarks: every backend timed against eager torch on real images, each cell checked first.

* `timing`: timing one runner (warm-up excluded, host or CUDA-event clock) and its memory;
* `matrix`: models x backends x precisions x batches, parity-checked, skips and failures recorded;
* `report`: results.json / results.md / results.png;
* `corner_pool`: the corner-pooling micro-benchmark against the memory-bandwidth floor;
* `command`: the `hgdeploy bench` click command.

Benchmarks measure and record; they never assert a time.
"""

from hgdeploy.bench.matrix import (
    BACKEND_PRECISIONS,
    RUNNER_FACTORIES,
    Artifacts,
    BenchConfig,
    BenchRun,
    CellResult,
    RunnerFactory,
    SkipCell,
    run_matrix,
)
from hgdeploy.bench.report import write_results
from hgdeploy.bench.timing import LatencyStats, TimingPlan, time_callable

__all__ = [
    "BACKEND_PRECISIONS",
    "RUNNER_FACTORIES",
    "Artifacts",
    "BenchConfig",
    "BenchRun",
    "CellResult",
    "LatencyStats",
    "RunnerFactory",
    "SkipCell",
    "TimingPlan",
    "run_matrix",
    "time_callable",
    "write_results",
]
