"""OpenVINO on the CPU as a Polygraphy runner: an ONNX (plugin form lowered) or an OpenVINO IR.

OpenVINO, like ONNX Runtime, has no kernels for the TensorRT corner-pool plugin ops, so an ONNX
is rewritten with the exact standard-op lowering before it is read (same weights, same tensor
names); an IR from `hgdeploy build --backend openvino` is already lowered. bf16 is not a separate
graph: the fp32 model is compiled with the bf16 inference-precision hint. The hint is always
set explicitly (an int8 IR's non-quantized ops run fp32), because on a CPU with native bf16
OpenVINO otherwise picks bf16 by itself and an "fp32" run would silently be bf16; only the
``default`` precision leaves the choice to OpenVINO (the peer the bench compares against).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import numpy as np
import onnx
import openvino as ov
import openvino.properties as props
import openvino.properties.hint as hints
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata

from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.onnx_files import load_onnx
from hgdeploy.exporters.lowering import runnable_model

DEVICE = "CPU"
# precision -> inference-precision hint (None: OpenVINO's own default for this CPU).
INFERENCE_PRECISIONS: dict[str, ov.Type | None] = {
    "fp32": ov.Type.f32,
    "bf16": ov.Type.bf16,
    "int8": ov.Type.f32,  # the IR's FakeQuantize ops run int8; the rest stays fp32
    "default": None,
}


def cpu_supports_bf16(core: ov.Core | None = None) -> bool:
    """Whether OpenVINO's CPU plugin reports native bf16 (AVX512_BF16 or AMX) on this machine."""
    core = core or ov.Core()
    return "BF16" in core.get_property(DEVICE, props.device.capabilities)


_NOISE = ("Exception from", "Check '", "Summary:", "To facilitate")


def _reason(exc: Exception) -> str:
    """OpenVINO's message without its source-location and boilerplate lines, kept short."""
    lines = [line.strip() for line in str(exc).splitlines()]
    kept = " ".join(line for line in lines if line and not line.startswith(_NOISE))
    kept = kept or type(exc).__name__
    return kept if len(kept) <= 240 else kept[:237] + "..."


def _check_xml(path: Path) -> None:
    """Refuse a malformed IR before OpenVINO tries every frontend on it (its TensorFlow frontend
    then prints absl noise to stderr)."""
    try:
        root = ElementTree.parse(path).getroot()
    except (ElementTree.ParseError, OSError) as exc:
        raise HgDeployError(f"{path} is not an OpenVINO IR: {first_line(exc)}") from None
    if root.tag != "net":
        raise HgDeployError(f"{path} is not an OpenVINO IR (root element <{root.tag}>)")


class OpenVinoRunner(BaseRunner):
    """Compiles the (lowered) ONNX for OpenVINO's CPU plugin on activation, latency-tuned."""

    def __init__(
        self,
        onnx_model: str | Path | onnx.ModelProto,
        precision: str = "fp32",
        threads: int | None = None,
        name: str | None = None,
    ) -> None:
        """``onnx_model``: an ONNX (path or proto) or the path of an OpenVINO IR (.xml)."""
        super().__init__(name=name, prefix="openvino-runner")
        if precision not in INFERENCE_PRECISIONS:
            raise HgDeployError(
                f"OpenVINO runs {', '.join(INFERENCE_PRECISIONS)} only, not {precision}"
            )
        self._onnx_model = onnx_model
        self.precision = precision
        self._threads = threads
        self._compiled: Any = None
        self._request: Any = None

    def compile_config(self) -> dict[Any, Any]:
        """The CPU plugin properties: precision hint, latency mode, and threads if given."""
        config: dict[Any, Any] = {hints.performance_mode: hints.PerformanceMode.LATENCY}
        hint = INFERENCE_PRECISIONS[self.precision]
        if hint is not None:
            config[hints.inference_precision] = hint
        if self._threads:
            config[props.inference_num_threads] = self._threads
        return config

    def activate_impl(self) -> None:
        core = ov.Core()
        if self.precision == "bf16" and not cpu_supports_bf16(core):
            raise HgDeployError(
                "OpenVINO bf16 needs a CPU with native bf16 (AVX512_BF16 or AMX); this one has none"
            )
        try:
            ov_model = self._read(core)
            self._compiled = core.compile_model(ov_model, DEVICE, self.compile_config())
        except RuntimeError as exc:
            raise HgDeployError(f"OpenVINO cannot load the model: {_reason(exc)}") from None
        self._request = self._compiled.create_infer_request()

    def _read(self, core: ov.Core) -> ov.Model:
        source = self._onnx_model
        if not isinstance(source, onnx.ModelProto) and Path(source).suffix == ".xml":
            if not Path(source).with_suffix(".bin").is_file():
                raise HgDeployError(f"{source} has no weights file beside it (.bin)")
            _check_xml(Path(source))
            return core.read_model(str(source))
        model = source if isinstance(source, onnx.ModelProto) else load_onnx(source)
        # read_model takes an in-memory ONNX as bytes; no temporary file is needed.
        return core.read_model(runnable_model(model).SerializeToString())

    @property
    def compiled_precision(self) -> str | None:
        """The inference precision OpenVINO compiled with ("bf16" for "default" on a CPU with
        bf16, "f32"); None before activation."""
        if self._compiled is None:
            return None
        return self._compiled.get_property(hints.inference_precision).to_string()

    def get_input_metadata_impl(self) -> TensorMetadata:
        meta = TensorMetadata()
        for port in self._compiled.inputs:
            shape = [d.get_length() if d.is_static else -1 for d in port.get_partial_shape()]
            meta.add(port.get_any_name(), dtype=port.get_element_type().to_dtype(), shape=shape)
        return meta

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        feeds = {name: np.ascontiguousarray(array) for name, array in feed_dict.items()}
        started = time.perf_counter()
        results = self._request.infer(feeds)  # copies outputs (share_outputs=False)
        self.inference_time = time.perf_counter() - started  # Polygraphy's timing contract
        return OrderedDict(
            (port.get_any_name(), np.ascontiguousarray(results[port]))
            for port in self._compiled.outputs
        )

    def deactivate_impl(self) -> None:
        self._request = None
        self._compiled = None


def openvino_runner(
    onnx_model: str | Path | onnx.ModelProto,
    precision: str = "fp32",
    threads: int | None = None,
    name: str = "openvino",
) -> OpenVinoRunner:
    return OpenVinoRunner(onnx_model, precision=precision, threads=threads, name=name)
