"""Ratios of a benchmark: each cell's median against the eager reference (fp32) and against the
CPU peer (the backend that declares one: OpenVINO with no precision hint), at the same (model,
batch) in the same run."""

from __future__ import annotations

from hgdeploy.backends.registry import cpu_peer, reference_backend
from hgdeploy.bench.results import CellResult


def compute_speedups(cells: list[CellResult]) -> None:
    """Cell median vs eager torch fp32 and vs OpenVINO's default, at the same (model, batch)."""
    eager = _baseline(cells, reference_backend().name, "fp32")
    peer_backend, peer_precision = cpu_peer()
    peer = _baseline(cells, peer_backend, peer_precision)
    for cell in cells:
        if cell.latency is None or cell.latency.median_ms <= 0:
            continue
        key = (cell.model, cell.batch)
        if key in eager:
            cell.speedup_vs_torch = eager[key] / cell.latency.median_ms
        if key in peer:
            cell.speedup_vs_openvino_default = peer[key] / cell.latency.median_ms


def _baseline(
    cells: list[CellResult], backend: str, precision: str
) -> dict[tuple[str, int], float]:
    return {
        (c.model, c.batch): c.latency.median_ms
        for c in cells
        if c.backend == backend and c.precision == precision and c.status == "ok" and c.latency
    }
