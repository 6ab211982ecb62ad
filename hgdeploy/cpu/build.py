"""`hgdeploy build-engine --target onnxruntime|openvino`: fp32 export -> a CPU artifact + sidecar.

Artifacts sit beside the fp32 export they came from, named by target and precision so they are
never confused with one another or with TensorRT's ONNX (``*_int8.onnx`` is the symmetric Q/DQ
model for TensorRT; ``*_ort-u8s8.onnx`` the ONNX Runtime CPU model):

* ``NAME_dyn_ort-fp32.onnx``: the plugin-free graph (corner pools as standard ops);
* ``NAME_dyn_ort-u8s8.onnx``: ONNX Runtime int8 (`onnxruntime_int8`);
* ``NAME_dyn_openvino-{fp32,bf16,int8}.xml`` + ``.bin``: OpenVINO IR (`openvino_ir`).

int8 builds calibrate on the same images and preprocessing as the TensorRT int8 path
(`precision.prepare.calibration_images`) and write a calibration cache beside the artifact
(``<artifact>.calib.json`` for ONNX Runtime, the directory ``<artifact>.nncf-stats`` for
OpenVINO), each with a sidecar naming the model, weights and images; ``--calib-cache`` reuses
one (refused if it was made for another model or other weights).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import onnx

from hgdeploy.artifacts import atomic_path, read_sidecar, sidecar_path, write_sidecar
from hgdeploy.checkpoints import sha256_file
from hgdeploy.errors import HgDeployError
from hgdeploy.exporters.corner_pool_ops import count_corner_pool_nodes
from hgdeploy.exporters.lowering import lower_corner_pools
from hgdeploy.exporters.onnx_export import METADATA_MODEL_KEY, fp32_onnx_for
from hgdeploy.onnx_files import load_onnx
from hgdeploy.precision.calibration import calibration_feeds
from hgdeploy.precision.fp16 import PRECISION_KEY
from hgdeploy.precision.prepare import (
    DEFAULT_CALIB_BATCHES,
    calibration_images,
    check_cache_provenance,
    check_fp32_source,
    image_source,
    weights_info,
)
from hgdeploy.targets import CPU_ARTIFACT_TAGS, CPU_TARGETS, check_target
from hgdeploy.zoo import ModelSpec, get_spec

StepCallback = Callable[[str], None]
TARGET_KEY = "hgdeploy.target"
QUANTIZATION_KEY = "hgdeploy.quantization"
CALIBRATION_BATCH = 1  # CPU artifacts keep the export's dynamic batch; calibrate image by image


@dataclass(frozen=True)
class CpuBuildRequest:
    model: str
    target: str  # "onnxruntime" or "openvino"
    precision: str
    onnx: Path | None = None  # an fp32 ONNX (plugin or lowered form); default: the shared export
    checkpoint: Path | None = None
    output: Path | None = None
    calib_dir: Path | None = None
    calib_cache: Path | None = None
    calib_batches: int = DEFAULT_CALIB_BATCHES


@dataclass(frozen=True)
class CpuArtifact:
    path: Path
    sidecar: Path
    calibration_cache: Path | None


def default_cpu_artifact_path(fp32_onnx: Path, target: str, precision: str) -> Path:
    """``artifacts/hrnet/hrnet_dyn_plugin.onnx`` -> ``artifacts/hrnet/hrnet_dyn_ort-u8s8.onnx``."""
    tag = CPU_ARTIFACT_TAGS[(target, precision)]
    base = fp32_onnx.stem.removesuffix("_plugin").removesuffix("_onnx")
    suffix = ".xml" if target == "openvino" else ".onnx"
    return fp32_onnx.with_name(f"{base}_{tag}{suffix}")


def cache_path_for(artifact: Path, target: str) -> Path:
    suffix = ".nncf-stats" if target == "openvino" else ".calib.json"
    return artifact.with_name(artifact.name + suffix)


def build_cpu_artifact(
    request: CpuBuildRequest, on_step: StepCallback | None = None
) -> CpuArtifact:
    """Write the artifact for (target, precision) and its sidecar; see the module doc."""
    step = on_step or (lambda _: None)
    if request.target not in CPU_TARGETS:
        raise HgDeployError(f"{request.target!r} is not a CPU target ({', '.join(CPU_TARGETS)})")
    precision = check_target(request.target, request.precision)
    spec = get_spec(request.model)
    if precision != "int8" and (request.calib_dir is not None or request.calib_cache is not None):
        raise HgDeployError("--calib-dir/--calib-cache only apply to --int8")
    if request.calib_batches < 1:
        raise HgDeployError(f"--calib-batches must be >= 1, got {request.calib_batches}")
    _check_output_suffix(request.target, request.output)
    fp32 = fp32_onnx_for(request.model, request.onnx, request.checkpoint, step)
    source = load_onnx(fp32)
    check_fp32_source(spec, source, fp32)
    output = request.output or default_cpu_artifact_path(fp32, request.target, precision)
    provenance: dict[str, Any] = {
        "kind": "openvino-ir" if request.target == "openvino" else "onnx",
        "model": spec.name,
        "target": request.target,
        "precision": precision,
        "source": {"path": str(fp32), "sha256": sha256_file(fp32)},
        **weights_info(None, fp32),
        "corner_pool": "lowered to standard ONNX ops"
        if count_corner_pool_nodes(source)
        else "none in the source",
    }
    step(f"lowering corner pools for {request.target}")
    lowered = lower_corner_pools(source)
    del source
    calibration = _Calibration(spec, request, output, provenance) if precision == "int8" else None
    if request.target == "onnxruntime":
        return _build_onnxruntime(lowered, output, precision, provenance, calibration, step)
    return _build_openvino(lowered, output, precision, provenance, calibration, step)


def _check_output_suffix(target: str, output: Path | None) -> None:
    """Refuse an --output the target's runtime would not recognise (before any slow step)."""
    if output is None:
        return
    if target == "openvino" and output.suffix != ".xml":
        raise HgDeployError(f"an OpenVINO IR is written as NAME.xml (+ .bin), not {output.name}")
    if target == "onnxruntime" and output.suffix != ".onnx":
        raise HgDeployError(f"an ONNX Runtime model is written as NAME.onnx, not {output.name}")


def ensure_cpu_artifact(
    name: str,
    fp32_onnx: Path,
    target: str,
    precision: str,
    on_step: StepCallback | None = None,
) -> Path:
    """The default-path artifact of ``fp32_onnx`` for (target, precision), built unless one
    made from this exact file (sha256 in its sidecar) is already there."""
    path = default_cpu_artifact_path(fp32_onnx, target, precision)
    record = read_sidecar(path) if path.is_file() else None
    if record is not None and record.get("source", {}).get("sha256") == sha256_file(fp32_onnx):
        return path
    request = CpuBuildRequest(name, target, precision, onnx=fp32_onnx)
    return build_cpu_artifact(request, on_step).path


class _Calibration:
    """Where an int8 build's ranges come from: images now (cache written) or a given cache."""

    def __init__(
        self, spec: ModelSpec, request: CpuBuildRequest, output: Path, provenance: dict[str, Any]
    ) -> None:
        self.spec = spec
        self.provenance = provenance
        self.from_cache = request.calib_cache is not None
        self.cache = request.calib_cache or cache_path_for(output, request.target)
        self.calib_dir = request.calib_dir
        self.count = request.calib_batches * CALIBRATION_BATCH
        self.record: dict[str, Any] = {}

    def feeds(self) -> list[dict[str, Any]] | None:
        """Preprocessed calibration inputs, or None when quantizing from a cache."""
        if self.from_cache:
            self._check_cache()
            return None
        chosen, _ = calibration_images(self.calib_dir, self.count)
        if not chosen:
            raise HgDeployError("no calibration images")
        names = [name for name, _ in chosen]
        self.record = {
            "model": self.spec.name,
            "images": names,
            "image_source": image_source(self.calib_dir),
            "batch": CALIBRATION_BATCH,
            "source_sha256": self.provenance["source"]["sha256"],
            "weights_info": self.provenance["weights_info"],
        }
        return calibration_feeds(self.spec, [p for _, p in chosen], CALIBRATION_BATCH)

    def _check_cache(self) -> None:
        if not self.cache.exists():
            raise HgDeployError(f"calibration cache not found: {self.cache}")
        record = read_sidecar(self.cache)
        if record is None:
            raise HgDeployError(
                f"calibration cache {self.cache} has no sidecar ({sidecar_path(self.cache).name}) "
                "saying which model and weights it was made for"
            )
        check_cache_provenance(record, self.spec, self.provenance, self.cache)
        keep = ("images", "image_source", "method", "source_sha256")
        self.record = {k: record[k] for k in keep if k in record}

    def finish(self, method: str, cache_format: str) -> dict[str, Any]:
        """Write the cache's sidecar (after calibrating) and what the artifact's sidecar says."""
        if not self.from_cache:
            write_sidecar(self.cache, {**self.record, "method": method, "format": cache_format})
        return {
            **self.record,
            "method": method,
            "cache": str(self.cache),
            "from_cache": self.from_cache,
        }


def _build_onnxruntime(
    lowered: onnx.ModelProto,
    output: Path,
    precision: str,
    provenance: dict[str, Any],
    calibration: _Calibration | None,
    step: StepCallback,
) -> CpuArtifact:
    fields: dict[str, Any] = {}
    model = lowered
    if calibration is not None:
        from hgdeploy.cpu import onnxruntime_int8

        feeds = calibration.feeds()
        step("calibrating and quantizing (ONNX Runtime U8S8)" if feeds else "quantizing (cache)")
        model = onnxruntime_int8.quantize_u8s8(
            lowered, feeds=feeds, cache=calibration.cache, write_cache=feeds is not None
        )
        fields["calibration"] = calibration.finish(
            "onnxruntime MinMax", onnxruntime_int8.CACHE_FORMAT
        )
        fields["quantization"] = {
            "scheme": onnxruntime_int8.SCHEME,
            **onnxruntime_int8.qdq_summary(model),
        }
    _set_props(model, provenance, fields.get("quantization", {}).get("scheme"))
    with atomic_path(output) as tmp:
        onnx.save_model(model, str(tmp))
    sidecar = write_sidecar(output, {**provenance, **fields, "sha256": sha256_file(output)})
    return CpuArtifact(output, sidecar, calibration.cache if calibration else None)


def _set_props(model: onnx.ModelProto, provenance: dict[str, Any], scheme: str | None) -> None:
    props = {
        METADATA_MODEL_KEY: provenance["model"],
        PRECISION_KEY: provenance["precision"],
        TARGET_KEY: provenance["target"],
    }
    if scheme:
        props[QUANTIZATION_KEY] = scheme
    kept = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in props.items():
        model.metadata_props.add(key=key, value=value)


def _build_openvino(
    lowered: onnx.ModelProto,
    output: Path,
    precision: str,
    provenance: dict[str, Any],
    calibration: _Calibration | None,
    step: StepCallback,
) -> CpuArtifact:
    from hgdeploy.cpu import openvino_ir

    step("converting to OpenVINO IR")
    model = openvino_ir.ov_model_from_onnx(lowered)
    del lowered
    fields: dict[str, Any] = {"inference_precision_hint": "bf16" if precision == "bf16" else "f32"}
    if calibration is not None:
        feeds = calibration.feeds()
        step("collecting statistics and quantizing (NNCF)" if feeds else "quantizing (cache)")
        model = openvino_ir.quantize_nncf(
            model, feeds=feeds, statistics=calibration.cache, write_statistics=feeds is not None
        )
        fields["calibration"] = calibration.finish(
            "NNCF MinMax + fast bias correction", openvino_ir.STATISTICS_FORMAT
        )
        fields["quantization"] = {"scheme": openvino_ir.SCHEME}
    openvino_ir.save_ir(model, output, precision)
    bin_path = output.with_suffix(".bin")
    record = {
        **provenance,
        **fields,
        "weights_file": bin_path.name,
        "sha256": sha256_file(output),
        "weights_sha256": sha256_file(bin_path),
    }
    sidecar = write_sidecar(output, record)
    return CpuArtifact(output, sidecar, calibration.cache if calibration else None)


def describe(artifact: CpuArtifact) -> str:
    """One line for the CLI: what was written."""
    record = json.loads(artifact.sidecar.read_text())
    extra = f", weights {record['weights_file']}" if "weights_file" in record else ""
    return f"{record['target']} {record['precision']} artifact: {artifact.path}{extra}"
