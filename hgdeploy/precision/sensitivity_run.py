"""`hgdeploy sensitivity` as a library call: the fp32 ONNX, its calibration (any method), the
per-layer ranking of `sensitivity`, and sensitivity.json + sensitivity.png written together."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hgdeploy.base.artifacts import artifact_files
from hgdeploy.base.onnx_files import check_fp32_source, load_onnx
from hgdeploy.base.outputs import check_output, files_under
from hgdeploy.base.zoo import get_spec
from hgdeploy.exporters.lowering import lower_corner_pools
from hgdeploy.exporters.onnx_export import fp32_onnx_for
from hgdeploy.precision.calibration import calibrate, calibration_feeds, sized_for
from hgdeploy.precision.calibration_methods import CalibrationChoice
from hgdeploy.precision.calibration_source import calibration_images, image_source, unpack
from hgdeploy.precision.qdq_placement import activation_tensors
from hgdeploy.precision.sensitivity import LayerProgress, LayerSensitivity, layer_sensitivity
from hgdeploy.precision.tensorrt_graphs import feed_batch

JSON_FILE, PLOT_FILE = "sensitivity.json", "sensitivity.png"
PLOTTED_LAYERS = 30


@dataclass
class SensitivityReport:
    model: str
    source: str
    calibration: dict[str, Any]
    measured_on: list[str]
    layers: list[LayerSensitivity] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "source": self.source,
            "calibration": self.calibration,
            "measured_on": self.measured_on,
            "metric": "relative L2 of the worst output with only this layer in int8 "
            "(fp32 elsewhere)",
            "layers": [layer.to_dict() for layer in self.layers],
        }


def run_sensitivity(
    model: str,
    output: Path,
    *,
    onnx_path: Path | None = None,
    checkpoint: Path | None = None,
    calib_dir: Path | None = None,
    calib_batches: int = 4,
    choice: CalibrationChoice | None = None,
    force: bool = False,
    progress: LayerProgress | None = None,
) -> SensitivityReport:
    """Rank `model`'s quantizable layers; the same images calibrate and measure."""
    spec = get_spec(model)
    choice = choice or CalibrationChoice()
    inputs = {
        "--onnx": onnx_path,
        "--checkpoint": checkpoint,
        "--calib-dir file": files_under(calib_dir),  # its images: a sensitivity.png among them
    }
    paths = [
        check_output(output / name, inputs=inputs, force=force) for name in (JSON_FILE, PLOT_FILE)
    ]
    fp32 = fp32_onnx_for(model, onnx_path, checkpoint)
    source = load_onnx(fp32)
    check_fp32_source(spec.name, source, fp32)
    spec = sized_for(spec, source)
    chosen, _ = calibration_images(calib_dir, calib_batches)
    names, pixels = unpack(chosen)
    feeds = calibration_feeds(spec, pixels, feed_batch(source))
    amax = calibrate(lower_corner_pools(source), feeds, tensors=activation_tensors(source),
                     method=choice.method, percentile=choice.percentile)  # fmt: skip
    layers = layer_sensitivity(source, amax, feeds, spec.output_names, spec=spec,
                               progress=progress)  # fmt: skip
    calibration = {"method": choice.label, "images": names, "image_source": image_source(calib_dir)}
    report = SensitivityReport(spec.name, str(fp32), calibration, names, layers, paths)
    with artifact_files(*paths) as pending:
        pending.tmp(paths[0]).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        pending.tmp(paths[1]).write_bytes(_plot(report))
        pending.describe({"kind": "sensitivity", "model": spec.name, "source": str(fp32)})
    return report


def _plot(report: SensitivityReport) -> bytes:
    """The most sensitive layers as horizontal bars (matplotlib Agg), worst on top."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    shown = report.layers[:PLOTTED_LAYERS]
    figure, axes = plt.subplots(figsize=(9, 0.28 * len(shown) + 1.6))
    rows = list(range(len(shown)))[::-1]
    axes.barh(rows, [layer.relative_l2 for layer in shown], color="#d8563b")
    axes.set_yticks(rows, [f"{layer.layer} ({layer.op_type})" for layer in shown], fontsize=7)
    axes.set_xlabel("output relative L2 error, this layer alone in int8")
    axes.set_title(f"{report.model}: int8 sensitivity ({report.calibration['method']} ranges)")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()
