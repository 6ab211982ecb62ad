"""The steps the CPU backends' builds share: fp32 export -> lowered graph -> artifact + sidecar.

Artifacts sit beside the fp32 export they came from, named by backend and precision so they are
never confused with one another or with TensorRT's ONNX (``*_int8.onnx`` is the symmetric Q/DQ
model for TensorRT; ``*_ort-u8s8.onnx`` the ONNX Runtime CPU model):

* ``NAME_dyn_ort-fp32.onnx``: the plugin-free graph (corner pools as standard ops);
* ``NAME_dyn_ort-u8s8.onnx``: ONNX Runtime int8 (`precision.onnxruntime_int8`);
* ``NAME_dyn_openvino-{fp32,bf16,int8}.xml`` + ``.bin``: OpenVINO IR (`openvino_ir`).

int8 builds calibrate through the one calibration source (`precision.calibration_source`: the
same images and preprocessing as the TensorRT int8 path) and write a calibration cache beside
the artifact (``<artifact>.calib.json`` for ONNX Runtime, the directory ``<artifact>.nncf-stats``
for OpenVINO), each with a sidecar naming the model, weights and images; ``--calib-cache``
reuses one (refused if it was made for another model or other weights).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from hgdeploy.backends.base import Backend, BuildRequest, BuildResult, StepCallback
from hgdeploy.base.artifacts import read_sidecar, sha256_file, verify_sidecar
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.export_settings import METADATA_MODEL_KEY, PRECISION_KEY
from hgdeploy.base.zoo import ModelSpec, get_spec

if TYPE_CHECKING:
    import onnx

    from hgdeploy.precision.calibration_methods import CalibrationChoice
    from hgdeploy.precision.calibration_source import CalibrationSource

TARGET_KEY = "hgdeploy.target"
QUANTIZATION_KEY = "hgdeploy.quantization"
CALIBRATION_BATCH = 1  # CPU artifacts keep the export's dynamic batch; calibrate image by image


@dataclass(frozen=True)
class LoweredSource:
    """A CPU build's input: the fp32 export, lowered, with what the sidecar says about it."""

    spec: ModelSpec
    fp32: Path
    lowered: onnx.ModelProto
    output: Path
    precision: str
    provenance: dict[str, Any]


def lowered_source(
    request: BuildRequest,
    precision: str,
    artifact_tag: str,
    suffix: str,
    kind: str,
    step: StepCallback,
    named: str = "an artifact",
) -> LoweredSource:
    """Check the request, resolve (or export) the fp32 ONNX and lower its corner pools."""
    from hgdeploy.base.onnx_files import check_fp32_source, load_onnx
    from hgdeploy.exporters.corner_pool_ops import count_corner_pool_nodes
    from hgdeploy.exporters.lowering import lower_corner_pools
    from hgdeploy.exporters.onnx_export import fp32_onnx_for
    from hgdeploy.precision.calibration_methods import CalibrationChoice
    from hgdeploy.precision.calibration_source import check_calibration_options, weights_info

    spec = get_spec(request.model)
    check_calibration_options(
        precision,
        request.calib_dir,
        request.calib_cache,
        request.calib_batches,
        CalibrationChoice.from_options(request.calib_method, request.calib_percentile),
    )
    if request.output is not None and request.output.suffix != suffix:
        raise HgDeployError(f"{named} is written as NAME{suffix}, not {request.output.name}")
    fp32 = fp32_onnx_for(request.model, request.onnx, request.checkpoint, step)
    source = load_onnx(fp32)
    check_fp32_source(spec.name, source, fp32)
    output = request.output or default_artifact_path(fp32, artifact_tag, suffix)
    provenance: dict[str, Any] = {
        "kind": kind,
        "model": spec.name,
        "target": request.backend,
        "precision": precision,
        "source": {"path": str(fp32), "sha256": sha256_file(fp32)},
        **weights_info(None, fp32),
        "corner_pool": "lowered to standard ONNX ops"
        if count_corner_pool_nodes(source)
        else "none in the source",
    }
    step(f"lowering corner pools for {request.backend}")
    return LoweredSource(spec, fp32, lower_corner_pools(source), output, precision, provenance)


def default_artifact_path(fp32_onnx: Path, artifact_tag: str, suffix: str) -> Path:
    """``artifacts/hrnet/hrnet_dyn_plugin.onnx`` -> ``artifacts/hrnet/hrnet_dyn_ort-u8s8.onnx``."""
    base = fp32_onnx.stem.removesuffix("_plugin").removesuffix("_onnx")
    return fp32_onnx.with_name(f"{base}_{artifact_tag}{suffix}")


def cache_beside(artifact: Path, cache_suffix: str) -> Path:
    """The calibration cache an int8 build writes beside its artifact: ``<artifact><suffix>``."""
    return artifact.with_name(artifact.name + cache_suffix)


def calibration_for(
    source: LoweredSource,
    request: BuildRequest,
    cache_suffix: str,
    default_batches: int,
    methods: Mapping[str, object],
    label: Callable[[CalibrationChoice], str],
) -> CalibrationSource:
    """The int8 build's calibration source: the given cache, or images with the cache beside
    the artifact (``<artifact><cache_suffix>``); `--calib-method` checked against the tool's
    `methods` and recorded as `label` names it."""
    from hgdeploy.precision.calibration_methods import CalibrationChoice
    from hgdeploy.precision.calibration_source import CalibrationSource

    choice = CalibrationChoice.from_options(request.calib_method, request.calib_percentile)
    choice.check_supported(request.backend, methods)
    return CalibrationSource.for_build(
        source.spec,
        source.provenance,
        calib_cache=request.calib_cache,
        default_cache=cache_beside(source.output, cache_suffix),
        calib_dir=request.calib_dir,
        batches=request.calib_batches or default_batches,
        batch=CALIBRATION_BATCH,
        choice=choice,
        method=label(choice),
    )


def calibration_feeds_or_none(
    calibration: CalibrationSource, spec: ModelSpec, check_cache: Callable[[Path], None]
) -> list[dict[str, Any]] | None:
    """Preprocessed calibration inputs, or None when quantizing from a cache (its content
    checked by `check_cache` first, then its record)."""
    from hgdeploy.precision.calibration import calibration_feeds

    if calibration.from_cache:
        check_cache(calibration.cache)
        calibration.adopt_sidecar()
        return None
    _, pixels = calibration.images()
    return calibration_feeds(spec, pixels, calibration.batch)


def set_metadata(model: onnx.ModelProto, provenance: dict[str, Any], scheme: str | None) -> None:
    """The model, precision, target (and quantization scheme) as ONNX metadata."""
    from hgdeploy.base.onnx_files import set_metadata_props

    props = {
        METADATA_MODEL_KEY: provenance["model"],
        PRECISION_KEY: provenance["precision"],
        TARGET_KEY: provenance["target"],
    }
    if scheme:
        props[QUANTIZATION_KEY] = scheme
    set_metadata_props(model, props)


def _matches_sidecar(path: Path) -> bool:
    """Whether the artifact is the one its sidecar describes (else it is rebuilt)."""
    try:
        verify_sidecar(path)
    except HgDeployError:
        return False
    return True


class CpuArtifactBackend(Backend):
    """What the CPU backends share: artifacts named by tag beside the fp32 export, a lowered
    source, a calibration cache beside the artifact, and reuse while the export is unchanged."""

    artifact_suffix: ClassVar[str]
    cache_suffix: ClassVar[str]
    sidecar_kind: ClassVar[str]  # the sidecar's "kind" field

    def artifact_tag(self, precision: str) -> str:
        raise NotImplementedError

    def default_artifact(self, fp32_onnx: Path, precision: str) -> Path:
        return default_artifact_path(fp32_onnx, self.artifact_tag(precision), self.artifact_suffix)

    def companions(self, request: BuildRequest) -> tuple[Path, ...]:
        """The calibration cache an int8 build writes beside --output (not when it reads one)."""
        if request.output is None or request.precision != "int8" or request.calib_cache:
            return ()
        return (cache_beside(request.output, self.cache_suffix),)

    def ensure_artifact(self, name: str, fp32_onnx: Path, precision: str) -> Path:
        """The default artifact if its sidecar says it was made from this exact `fp32_onnx`,
        else built now."""
        path = self.default_artifact(fp32_onnx, precision)
        record = read_sidecar(path) if path.is_file() else None
        same_source = record is not None and record.get("source", {}).get("sha256") == sha256_file(
            fp32_onnx
        )
        if same_source and _matches_sidecar(path):
            return path
        result = self.build(BuildRequest(name, self.name, precision, onnx=fp32_onnx))
        assert result.artifact is not None
        return result.artifact

    def lowered(self, request: BuildRequest, precision: str, step: StepCallback) -> LoweredSource:
        from hgdeploy.precision.calibration_methods import CalibrationChoice

        choice = CalibrationChoice.from_options(request.calib_method, request.calib_percentile)
        choice.check_supported(self.name, self.calibration_methods())  # before any export
        tag = self.artifact_tag(precision)
        return lowered_source(
            request,
            precision,
            tag,
            self.artifact_suffix,
            self.sidecar_kind,
            step,
            named=self.artifact_kinds[self.artifact_suffix],
        )

    def calibration(self, source: LoweredSource, request: BuildRequest) -> CalibrationSource:
        return calibration_for(
            source,
            request,
            self.cache_suffix,
            self.default_calib_batches,
            self.calibration_methods(),
            self.calibration_label,
        )

    def calibration_methods(self) -> Mapping[str, object]:
        """hgdeploy's --calib-method names this tool's calibration offers (default: max)."""
        return {"max": None}

    def calibration_label(self, choice: CalibrationChoice) -> str:
        """What this tool's caches and sidecars record as the method of `choice`."""
        return choice.label


def describe(artifact: Path, sidecar: Path, cache: Path | None) -> BuildResult:
    """The BuildResult of a CPU artifact, with the lines the CLI prints."""
    record = json.loads(sidecar.read_text())
    extra = f", weights {record['weights_file']}" if "weights_file" in record else ""
    lines = [
        f"{record['target']} {record['precision']} artifact: {artifact}{extra} (sidecar {sidecar})"
    ]
    if cache is not None:
        lines.append(f"calibration cache: {cache}")
    check = (
        f"check it: hgdeploy parity --model {record['model']} --backend {record['target']} "
        f"--onnx {artifact}"
    )
    return BuildResult(artifact, sidecar, cache, summary=tuple(lines), closing=(check,))
