"""Best CPU target per model and the fraction of the roofline it reaches, from recorded results.

Reads a bench ``results.json`` (models x CPU backends x precisions) and a ``matmul_peak.json``
(`hgdeploy bench --op matmul-peak`, same machine) and writes the summary table of
benchmarks/README.md:

    python -m hgdeploy.bench.roofline benchmarks/results_cpu_int8 benchmarks/matmul_peak

Per model: eager fp32 latency; the fastest *trusted* cell (parity passed at its precision's
tolerances) and its ratio to eager; its heatmap-peak agreement with eager; and its GFLOP/s
(the model's GFLOP per image, counted with ``torch.utils.flop_counter``, 2 FLOP per
multiply-add, divided by the latency) as a fraction of the measured matmul peak of the same
backend and precision.
"""

from __future__ import annotations

import json
import sys
from functools import cache
from pathlib import Path
from typing import Any

from hgdeploy.backends.registry import reference_backend

PROBED_PRECISIONS = ("fp32", "bf16", "int8")  # the matmul-peak probes; "default" = compiled


@cache
def model_gflop(name: str) -> float:
    """GFLOP of one image through the model (batch 1), counted by torch's FlopCounterMode."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from hgdeploy.base.zoo import get_spec

    spec = get_spec(name)
    model = spec.build()
    x = torch.zeros(spec.input_shape(1))
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def _peaks(peak_record: dict[str, Any]) -> dict[tuple[str, str], float]:
    return {(p["backend"], p["precision"]): p["gflops"] for p in peak_record["probes"]}


def _probe_precision(cell: dict[str, Any]) -> str | None:
    if cell["precision"] != "default":
        return cell["precision"] if cell["precision"] in PROBED_PRECISIONS else None
    providers = " ".join(cell.get("providers") or [])
    return "bf16" if "bf16" in providers else "fp32"


def _peak_agreement(cell: dict[str, Any]) -> float | None:
    outputs = (cell.get("parity") or {}).get("outputs") or []
    values = [o["peak_agreement"] for o in outputs if o.get("peak_agreement") is not None]
    return min(values) if values else None


def summary_rows(results: dict[str, Any], peak_record: dict[str, Any]) -> list[dict[str, Any]]:
    peaks = _peaks(peak_record)
    reference = reference_backend().name
    rows = []
    for model in dict.fromkeys(c["model"] for c in results["cells"]):
        cells = [c for c in results["cells"] if c["model"] == model and c["latency_ms"]]
        eager = next((c for c in cells if c["backend"] == reference), None)
        trusted = [c for c in cells if c["backend"] != reference and c["trusted"]]
        if eager is None or not trusted:
            continue
        best = min(trusted, key=lambda c: c["latency_ms"]["median_ms"])
        others = [c for c in cells if c["backend"] != reference]
        fastest = min(others, key=lambda c: c["latency_ms"]["median_ms"])
        latency = best["latency_ms"]["median_ms"]
        gflops = model_gflop(model) / (latency / 1000)
        probe = _probe_precision(best)
        peak = peaks.get((best["backend"], probe)) if probe else None
        rows.append(
            {
                "model": model,
                "gflop": model_gflop(model),
                "eager_ms": eager["latency_ms"]["median_ms"],
                "best": f"{best['backend']} {best['precision']}",
                "best_ms": latency,
                "vs_eager": eager["latency_ms"]["median_ms"] / latency,
                "peak_agreement": _peak_agreement(best),
                "gflops": gflops,
                "peak_probe": f"{best['backend']} {probe}",
                "roofline_fraction": gflops / peak if peak else None,
                "fastest": f"{fastest['backend']} {fastest['precision']}",
                "fastest_ms": fastest["latency_ms"]["median_ms"],
                "fastest_trusted": bool(fastest["trusted"]),
            }
        )
    return rows


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| model | GFLOP/image | eager fp32 ms | best trusted CPU target | ms | vs eager | "
        "peak agreement | GFLOP/s | of matmul peak | fastest cell (any parity) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        agreement = "-" if r["peak_agreement"] is None else f"{r['peak_agreement']:.0%}"
        fraction = "-" if r["roofline_fraction"] is None else f"{r['roofline_fraction']:.0%}"
        lines.append(
            f"| {r['model']} | {r['gflop']:.1f} | {r['eager_ms']:.0f} | {r['best']} | "
            f"{r['best_ms']:.1f} | {r['vs_eager']:.2f}x | {agreement} | {r['gflops']:.0f} | "
            f"{fraction} ({r['peak_probe']}) | {_fastest(r)} |"
        )
    return "\n".join(lines) + "\n"


def _fastest(row: dict[str, Any]) -> str:
    if row["fastest"] == row["best"]:
        return "the same"
    ratio = row["eager_ms"] / row["fastest_ms"]
    verdict = "" if row["fastest_trusted"] else ", parity FAILED"
    return f"{row['fastest']} {row['fastest_ms']:.1f} ms ({ratio:.2f}x{verdict})"


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m hgdeploy.bench.roofline RESULTS_DIR PEAK_DIR", file=sys.stderr)
        return 2
    results = json.loads((Path(argv[0]) / "results.json").read_text())
    peak_record = json.loads((Path(argv[1]) / "matmul_peak.json").read_text())
    print(summary_markdown(summary_rows(results, peak_record)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
