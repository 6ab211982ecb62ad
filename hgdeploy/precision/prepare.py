"""The precision step of ``build-engine --prepare-only``: fp32 ONNX -> the ONNX TensorRT builds.

* ``fp32``: copy-through (the same bytes), with a sidecar saying so.
* ``fp16``: ``convert_fp16``; quality vs fp32 on held-out sample images.
* ``int8``: calibrate on real images (a directory, or scikit-image's bundled samples less two
  held out for the quality check) unless a calibration cache is given; write the cache beside
  the output (``<output>.calib.json``); insert Q/DQ; quality vs fp32 on images the
  calibration did not see.

Every file is written atomically and described by a sidecar (model, precision, source ONNX
sha256, weights, calibration images/method/cache, quantization scheme, quality, versions).
"""

from __future__ import annotations

import importlib.metadata
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx

from hgdeploy.artifacts import atomic_path, read_sidecar, sidecar_path, write_sidecar
from hgdeploy.checkpoints import sha256_file
from hgdeploy.errors import HgDeployError
from hgdeploy.exporters.corner_pool_ops import count_corner_pool_nodes
from hgdeploy.exporters.lowering import lower_corner_pools
from hgdeploy.exporters.onnx_export import INPUT_NAME, METADATA_MODEL_KEY
from hgdeploy.images import images_in, sample_images
from hgdeploy.onnx_files import input_dims, load_onnx, metadata
from hgdeploy.precision.calibration import (
    METHOD,
    calibrate,
    calibration_feeds,
    read_calibration_cache,
    write_calibration_cache,
)
from hgdeploy.precision.fp16 import PRECISION_KEY, convert_fp16, fp16_block_list
from hgdeploy.precision.int8 import (
    DEFAULT_HIGH_PRECISION,
    HIGH_PRECISIONS,
    WEIGHT_AXIS,
    quantize_int8,
    scheme,
)
from hgdeploy.precision.qdq_placement import activation_tensors, quantized_inputs
from hgdeploy.precision.quality import QualityReport, precision_quality
from hgdeploy.zoo import ModelSpec, get_spec

Precision = Literal["fp32", "fp16", "int8"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
# Bundled samples kept out of the default calibration set: people and a street scene, the
# content the pose and detection models are for.
HOLDOUT_SAMPLES = ("astronaut", "motorcycle")
QUALITY_IMAGES = 2  # images the quality check runs on (ORT CPU: ~2-5 s each for Squeeze)
DEFAULT_CALIB_BATCHES = 8
CACHE_SUFFIX = ".calib.json"
# Fields that identify weights (a checkpoint's path may differ between machines; its hash not).
WEIGHT_KEYS = ("weights", "seed", "checkpoint_sha256")


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


def calibration_images(
    calib_dir: Path | None, count: int
) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """The first ``count`` calibration images and the rest (for a quality check on unseen ones).

    From ``calib_dir``, or scikit-image's bundled samples less ``HOLDOUT_SAMPLES``; every int8
    path (TensorRT, ONNX Runtime, OpenVINO) calibrates on this same selection and preprocessing.
    """
    if calib_dir is not None:
        available = images_in(calib_dir)
    else:
        available = [(n, p) for n, p in sample_images() if n not in HOLDOUT_SAMPLES]
    chosen = available[:count]
    return chosen, available[count:] or sample_images(HOLDOUT_SAMPLES)


def image_source(calib_dir: Path | None) -> str:
    return str(calib_dir) if calib_dir is not None else "scikit-image samples"


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
) -> PreparedModel:
    """Write ``output`` (the ONNX for a ``precision`` engine) and its sidecar; see module doc.

    ``checkpoint_info`` describes the weights (as export sidecars do: ``weights``, ``seed`` or
    ``checkpoint``/``sha256``); by default it is read from the fp32 ONNX's sidecar. A
    calibration cache made with other weights, or for another model, is refused.
    ``high_precision`` (int8 only; default fp16) is the type of the layers left unquantized.
    """
    spec = get_spec(name)
    if precision not in PRECISIONS:
        raise HgDeployError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if calib_batches < 1:
        raise HgDeployError(f"--calib-batches must be >= 1, got {calib_batches}")
    if precision != "int8" and (calib_dir is not None or calib_cache is not None):
        raise HgDeployError("--calib-dir/--calib-cache only apply to --int8")
    if precision != "int8" and high_precision is not None:
        raise HgDeployError("--high-precision only applies to --int8")
    high_precision = high_precision or DEFAULT_HIGH_PRECISION
    if high_precision not in HIGH_PRECISIONS:
        raise HgDeployError(f"--high-precision must be one of {', '.join(HIGH_PRECISIONS)}")
    fp32_onnx, output = Path(fp32_onnx), Path(output)
    source = load_onnx(fp32_onnx)
    check_fp32_source(spec, source, fp32_onnx)
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
    ranges_request = _RangesRequest(calib_dir, calib_cache, calib_batches)
    return _prepare_int8(
        spec, source, output, provenance, ranges_request, high_precision, measure_quality
    )


def check_fp32_source(spec: ModelSpec, model: onnx.ModelProto, path: Path) -> None:
    """Refuse an ONNX exported from another model, or one already converted from fp32."""
    props = metadata(model)
    made_for = props.get(METADATA_MODEL_KEY)
    if made_for is not None and made_for != spec.name:
        raise HgDeployError(f"{path} was exported from {made_for!r}, not {spec.name!r}")
    if props.get(PRECISION_KEY, "fp32") != "fp32":
        raise HgDeployError(f"{path} is already {props[PRECISION_KEY]}; start from the fp32 ONNX")


def weights_info(checkpoint_info: dict[str, Any] | None, fp32_onnx: Path) -> dict[str, Any]:
    """What the weights were: the caller's description, else the export sidecar's."""
    if checkpoint_info is not None:
        return {"weights_info": dict(checkpoint_info)}
    sidecar = read_sidecar(fp32_onnx) or {}
    keys = ("weights", "seed", "checkpoint", "checkpoint_sha256")
    info = {k: sidecar[k] for k in keys if k in sidecar}
    return {"weights_info": info}


def _save(model: onnx.ModelProto, path: Path) -> None:
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))


def _copy_through(source: Path, output: Path, provenance: dict[str, Any]) -> PreparedModel:
    """fp32 engines build from the exported ONNX as it is: same bytes, a sidecar to say so."""
    if output.resolve() != source.resolve():
        with atomic_path(output) as tmp:
            shutil.copyfile(source, tmp)
    elif sidecar_path(output).is_file():
        # Same file: its export sidecar already describes it; do not overwrite that.
        return PreparedModel(output, sidecar_path(output), None, None)
    sidecar = write_sidecar(
        output, {**provenance, "conversion": "none (copy-through)", "sha256": sha256_file(output)}
    )
    return PreparedModel(output, sidecar, None, None)


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
        names, pixels = _unpack(sample_images(HOLDOUT_SAMPLES))
        images = names
        quality = _quality(spec, source, converted, pixels, "fp16")
    _save(converted, output)
    fields = {
        **provenance,
        "conversion": {
            "tool": f"onnxconverter-common {_version('onnxconverter-common')}",
            "keep_io_types": True,
            "fp32_op_types": fp16_block_list(),
        },
        "io_types": "fp32 graph inputs/outputs, Cast to/from fp16 at the boundary",
        "quality": _quality_fields(quality, images),
        "sha256": sha256_file(output),
    }
    return PreparedModel(output, write_sidecar(output, fields), quality, None)


def _prepare_int8(
    spec: ModelSpec,
    source: onnx.ModelProto,
    output: Path,
    provenance: dict[str, Any],
    request: _RangesRequest,
    high_precision: str,
    measure_quality: bool,
) -> PreparedModel:
    if request.calib_cache is not None:
        ranges = _ranges_from_cache(spec, Path(request.calib_cache), provenance)
    else:
        ranges = _ranges_from_images(
            spec, source, output, provenance, request.calib_dir, request.calib_batches
        )
    quantized = quantize_int8(source, ranges.amax, high_precision)
    quality, quality_names = None, []
    if measure_quality:
        quality_names, pixels = _unpack(ranges.quality_pool[:QUALITY_IMAGES])
        quality = _quality(spec, source, quantized, pixels, "int8")
    _save(quantized, output)
    fields = {
        **provenance,
        "calibration": ranges.record,
        "quantization": _scheme_fields(source, quantized, high_precision),
        "quality": _quality_fields(quality, quality_names),
        "sha256": sha256_file(output),
    }
    return PreparedModel(output, write_sidecar(output, fields), quality, ranges.cache)


@dataclass(frozen=True)
class _RangesRequest:
    """Where int8 ranges come from: a calibration cache, else images (a directory or samples)."""

    calib_dir: Path | None
    calib_cache: Path | None
    calib_batches: int


@dataclass(frozen=True)
class _Ranges:
    """Calibrated ranges, where they came from, and images they did not see (for quality)."""

    amax: dict[str, float]
    record: dict[str, Any]  # what the sidecar says about the calibration
    cache: Path
    quality_pool: list[tuple[str, np.ndarray]]


def _ranges_from_cache(spec: ModelSpec, path: Path, provenance: dict[str, Any]) -> _Ranges:
    record = read_calibration_cache(path)
    check_cache_provenance(record, spec, provenance, path)
    described = {k: v for k, v in record.items() if k not in ("amax", "format")}
    described["cache"] = str(path)
    # Another export of the same weights (other batch size, opset) keeps the tensor names and
    # ranges; record whether this exact file was the one calibrated.
    described["cache_from_this_source"] = (
        record.get("source_sha256") == provenance["source"]["sha256"]
    )
    used = set(record.get("images", []))
    unseen = [(n, p) for n, p in sample_images() if n not in used]
    return _Ranges(record["amax"], described, path, unseen or sample_images())


def _ranges_from_images(
    spec: ModelSpec,
    source: onnx.ModelProto,
    output: Path,
    provenance: dict[str, Any],
    calib_dir: Path | None,
    calib_batches: int,
) -> _Ranges:
    """Calibrate on the lowered graph and write the cache beside ``output``."""
    batch = _feed_batch(source)
    chosen, unseen = calibration_images(calib_dir, calib_batches * batch)
    names, pixels = _unpack(chosen)
    amax = calibrate(
        lower_corner_pools(source),
        calibration_feeds(spec, pixels, batch),
        tensors=activation_tensors(source),
    )
    described = {
        "model": spec.name,
        "method": METHOD,
        "images": names,
        "image_source": image_source(calib_dir),
        "batch": batch,
        "batches": -(-len(chosen) // batch),
        "source_sha256": provenance["source"]["sha256"],
        "weights_info": provenance["weights_info"],
    }
    cache = write_calibration_cache(calibration_cache_path(output), amax, described)
    return _Ranges(amax, {**described, "cache": str(cache)}, cache, unseen)


def check_cache_provenance(
    record: dict[str, Any], spec: ModelSpec, provenance: dict[str, Any], path: Path
) -> None:
    """Refuse a cache made for another model or other weights (tensor names alone may match)."""
    if record.get("model") != spec.name:
        raise HgDeployError(
            f"calibration cache {path} is for model {record.get('model')!r}, not {spec.name!r}"
        )
    theirs, ours = record.get("weights_info") or {}, provenance["weights_info"]
    shared = [k for k in WEIGHT_KEYS if k in theirs and k in ours]
    if any(theirs[k] != ours[k] for k in shared):
        raise HgDeployError(
            f"calibration cache {path} was made with other weights ({theirs}); recalibrate"
        )


def _feed_batch(model: onnx.ModelProto) -> int:
    """The model's static batch size, or 1 for a dynamic batch axis."""
    dims = input_dims(model, INPUT_NAME)
    return dims[0] if isinstance(dims[0], int) and dims[0] > 0 else 1


def _unpack(pairs: Sequence[tuple[str, np.ndarray]]) -> tuple[list[str], list[np.ndarray]]:
    return [name for name, _ in pairs], [pixels for _, pixels in pairs]


def _quality(
    spec: ModelSpec,
    reference: onnx.ModelProto,
    candidate: onnx.ModelProto,
    images: list[np.ndarray],
    label: str,
) -> QualityReport:
    batch = _feed_batch(reference)
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
