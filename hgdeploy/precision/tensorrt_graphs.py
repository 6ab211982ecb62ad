"""The precision step of ``hgdeploy build --backend tensorrt``: fp32 ONNX -> the ONNX TensorRT
builds (all of it runs on the CPU; ``--prepare-only`` stops here).

* ``fp32``: copy-through (the same bytes), with a sidecar saying so.
* ``fp16``: ``convert_fp16``; quality vs fp32 on held-out sample images.
* ``int8``: calibrate on real images (a directory, or scikit-image's bundled samples less two
  held out for the quality check: `calibration_source`) unless a calibration cache is given;
  write the cache beside
  the output (``<output>.calib.json``); insert Q/DQ; quality vs fp32 on images the
  calibration did not see.

Every file is written atomically and described by a sidecar (model, precision, source ONNX
sha256, weights, calibration images/method/cache, quantization scheme, quality, versions).
"""

from __future__ import annotations

import importlib.metadata
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from hgdeploy.base.artifacts import (
    artifact_files,
    sha256_file,
    sidecar_path,
)
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.export_settings import INPUT_NAME
from hgdeploy.base.images import sample_images
from hgdeploy.base.onnx_files import check_fp32_source, input_dims, load_onnx
from hgdeploy.base.zoo import ModelSpec, get_spec
from hgdeploy.exporters.corner_pool_ops import count_corner_pool_nodes
from hgdeploy.exporters.lowering import lower_corner_pools
from hgdeploy.precision.calibration import (
    METHOD,
    calibrate,
    calibration_feeds,
    read_calibration_cache,
    sized_for,
    write_calibration_cache,
)
from hgdeploy.precision.calibration_methods import CalibrationChoice
from hgdeploy.precision.calibration_source import (
    DEFAULT_CALIB_BATCHES,
    HOLDOUT_SAMPLES,
    CalibrationSource,
    check_calibration_options,
    unpack,
    weights_info,
)
from hgdeploy.precision.fp16 import convert_fp16, fp16_block_list
from hgdeploy.precision.int8 import (
    WEIGHT_AXIS,
    check_high_precision,
    quantize_int8,
    scheme,
)
from hgdeploy.precision.qdq_placement import activation_tensors, quantized_inputs
from hgdeploy.precision.quality import QualityReport, precision_quality

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
QUALITY_IMAGES = 2  # images the quality check runs on (ORT CPU: ~2-5 s each for Squeeze)
CACHE_SUFFIX = ".calib.json"


@dataclass(frozen=True)
class PreparedModel:
    path: Path
    sidecar: Path
    quality: QualityReport | None
    calibration_cache: Path | None


def calibration_cache_path(output: str | Path) -> Path:
    """``model.onnx`` -> ``model.onnx.calib.json``."""
    output = Path(output)
    return output.with_name(output.name + CACHE_SUFFIX)


def prepare_precision(
    name: str,
    fp32_onnx: Path,
    precision: Precision,
    output: Path,
    *,
    calib_dir: Path | None = None,
    calib_cache: Path | None = None,
    calib_batches: int = DEFAULT_CALIB_BATCHES,
    checkpoint_info: dict[str, Any] | None = None,
    measure_quality: bool = True,
    high_precision: str | None = None,
    calib_choice: CalibrationChoice | None = None,
    keep: Sequence[str] = (),
    accuracy: Mapping[str, Any] | None = None,
) -> PreparedModel:
    """Write ``output`` (the ONNX for a ``precision`` engine) and its sidecar; see module doc.

    ``checkpoint_info`` describes the weights (as export sidecars do: ``weights``, ``seed`` or
    ``checkpoint``/``sha256``); by default it is read from the fp32 ONNX's sidecar. A
    calibration cache made with other weights, or for another model, is refused.
    ``high_precision`` (int8 only; default fp16) is the type of the layers left unquantized.
    ``calib_choice`` (int8 only; default max) is how activation ranges are chosen; ``keep``
    (int8 only) names layers left in high precision (see ``int8.layer_names``), recorded in
    the sidecar with ``accuracy`` (what an accuracy target measured, when one chose them).
    """
    spec = get_spec(name)
    if precision not in PRECISIONS:
        raise HgDeployError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    check_calibration_options(precision, calib_dir, calib_cache, calib_batches, calib_choice)
    high_precision = check_high_precision(precision, high_precision)
    fp32_onnx, output = Path(fp32_onnx), Path(output)
    source = load_onnx(fp32_onnx)
    check_fp32_source(spec.name, source, fp32_onnx)
    spec = sized_for(spec, source)  # an --input-size export calibrates at its own size
    provenance = {
        "kind": "onnx",
        "model": spec.name,
        "precision": precision,
        "source": {"path": str(fp32_onnx), "sha256": sha256_file(fp32_onnx)},
        **weights_info(checkpoint_info, fp32_onnx),
        "corner_pool_nodes": count_corner_pool_nodes(source),
    }
    if precision == "fp32":
        return _copy_through(fp32_onnx, output, provenance)
    if precision == "fp16":
        return _prepare_fp16(spec, source, output, provenance, measure_quality)
    calibration = CalibrationSource.for_build(
        spec,
        provenance,
        calib_cache=calib_cache,
        default_cache=calibration_cache_path(output),
        calib_dir=calib_dir,
        batches=calib_batches,
        batch=feed_batch(source),
        choice=calib_choice,
    )
    return _prepare_int8(
        spec, source, output, provenance, calibration, high_precision, measure_quality,
        list(keep), accuracy,
    )  # fmt: skip


def _write(model: onnx.ModelProto, path: Path, fields: dict[str, Any]) -> Path:
    """The prepared ONNX and its sidecar, together; returns the sidecar."""
    with artifact_files(path) as pending:
        onnx.save_model(model, str(pending.tmp()))
        pending.describe({**fields, "sha256": pending.sha256()})
    return sidecar_path(path)


def _copy_through(source: Path, output: Path, provenance: dict[str, Any]) -> PreparedModel:
    """fp32 engines build from the exported ONNX as it is: same bytes, a sidecar to say so."""
    if output.resolve() == source.resolve() and sidecar_path(output).is_file():
        # Same file: its export sidecar already describes it; do not overwrite that.
        return PreparedModel(output, sidecar_path(output), None, None)
    with artifact_files(output) as pending:
        shutil.copyfile(source, pending.tmp())
        fields = {**provenance, "conversion": "none (copy-through)", "sha256": pending.sha256()}
        pending.describe(fields)
    return PreparedModel(output, sidecar_path(output), None, None)


def _prepare_fp16(
    spec: ModelSpec,
    source: onnx.ModelProto,
    output: Path,
    provenance: dict[str, Any],
    measure_quality: bool,
) -> PreparedModel:
    converted = convert_fp16(source)
    quality = None
    images: list[str] = []
    if measure_quality:
        names, pixels = unpack(sample_images(HOLDOUT_SAMPLES))
        images = names
        quality = _quality(spec, source, converted, pixels, "fp16")
    fields = {
        **provenance,
        "conversion": {
            "tool": f"onnxconverter-common {_version('onnxconverter-common')}",
            "keep_io_types": True,
            "fp32_op_types": fp16_block_list(),
        },
        "io_types": "fp32 graph inputs/outputs, Cast to/from fp16 at the boundary",
        "quality": _quality_fields(quality, images),
    }
    return PreparedModel(output, _write(converted, output, fields), quality, None)


def _prepare_int8(
    spec: ModelSpec,
    source: onnx.ModelProto,
    output: Path,
    provenance: dict[str, Any],
    calibration: CalibrationSource,
    high_precision: str,
    measure_quality: bool,
    keep: list[str],
    accuracy: Mapping[str, Any] | None,
) -> PreparedModel:
    amax = _ranges(spec, source, provenance, calibration)
    quantized = quantize_int8(source, amax, high_precision, keep=keep)
    quality, quality_names = None, []
    if measure_quality:
        quality_names, pixels = unpack(calibration.unseen[:QUALITY_IMAGES])
        quality = _quality(spec, source, quantized, pixels, "int8")
    described = calibration.describe(calibration.record.get("method", METHOD))
    del described["from_cache"]
    if calibration.from_cache:
        # Another export of the same weights (other batch size, opset) keeps the tensor names
        # and ranges; record whether this exact file was the one calibrated.
        described["cache_from_this_source"] = (
            calibration.record.get("source_sha256") == provenance["source"]["sha256"]
        )
    fields = {
        **provenance,
        "calibration": described,
        "quantization": {
            **_scheme_fields(source, quantized, high_precision),
            "kept_in_high_precision": keep,
        },
        **({"accuracy_target": dict(accuracy)} if accuracy is not None else {}),
        "quality": _quality_fields(quality, quality_names),
    }
    sidecar = _write(quantized, output, fields)
    return PreparedModel(output, sidecar, quality, calibration.cache)


def _ranges(
    spec: ModelSpec,
    source: onnx.ModelProto,
    provenance: dict[str, Any],
    calibration: CalibrationSource,
) -> dict[str, float]:
    """Activation amax from the given cache, or calibrated on the lowered graph (the cache
    is then written, its record inside, where `calibration` says)."""
    if calibration.from_cache:
        record = read_calibration_cache(calibration.cache)
        calibration.adopt(record)
        return record["amax"]
    _, pixels = calibration.images()
    amax = calibrate(
        lower_corner_pools(source),
        calibration_feeds(spec, pixels, calibration.batch),
        tensors=activation_tensors(source),
        method=calibration.choice.method,
        percentile=calibration.choice.percentile,
    )
    method = calibration.method
    write_calibration_cache(calibration.cache, amax, {**calibration.record, "method": method})
    calibration.record["method"] = method
    return amax


def feed_batch(model: onnx.ModelProto) -> int:
    """The model's static batch size, or 1 for a dynamic batch axis."""
    dims = input_dims(model, INPUT_NAME)
    return dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1


def _quality(
    spec: ModelSpec,
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    images: list[np.ndarray],
    label: str,
) -> QualityReport:
    batch = feed_batch(reference)
    feeds = calibration_feeds(spec, images, batch)
    return precision_quality(spec, reference, candidate, feeds, candidate=label, count=len(images))


def _quality_fields(report: QualityReport | None, images: list[str]) -> dict[str, Any] | None:
    if report is None:
        return None
    return {"images": images, **report.to_dict()}


def _scheme_fields(
    source: onnx.ModelProto, quantized: onnx.ModelProto, high_precision: str
) -> dict[str, Any]:
    ops = [node.op_type for node in quantized.graph.node]
    sites = quantized_inputs(source)
    return {
        "scheme": scheme(high_precision),
        "high_precision": high_precision,
        "weight_axis": WEIGHT_AXIS,
        "quantize_linear_nodes": ops.count("QuantizeLinear"),
        "dequantize_linear_nodes": ops.count("DequantizeLinear"),
        "quantized_ops": {op: ops.count(op) for op in WEIGHT_AXIS},
        "residual_add_inputs": sum(site.reason == "residual" for site in sites),
        "plugin_nodes": count_corner_pool_nodes(quantized),
        "plugin_dtype": high_precision,
    }


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
