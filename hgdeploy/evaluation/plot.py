"""One picture of an evaluation: the headline metric of every run, eager fp32 first, with the
difference to eager written on each bar (what a reader of benchmarks/accuracy/ looks for)."""

from __future__ import annotations

import io
from collections.abc import Sequence


def metric_bars_png(
    title: str, labels: Sequence[str], values: Sequence[float], metric: str = "AP"
) -> bytes:
    """A horizontal bar chart as PNG bytes (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 0.5 * len(labels) + 1.5))
    rows = list(range(len(labels)))[::-1]
    axes.barh(rows, values, color=["#555555", *["#3b7dd8"] * (len(values) - 1)])
    axes.set_yticks(rows, labels)
    axes.set_xlabel(metric)
    axes.set_xlim(0, max(1.0, max(values, default=0.0) * 1.1))
    reference = values[0] if values else 0.0
    for row, value in zip(rows, values):
        axes.text(value, row, f" {value:.3f} ({value - reference:+.3f})", va="center")
    axes.set_title(title)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
