"""ONNX Runtime int8 for x86 CPUs: a Q/DQ model with uint8 activations and int8 weights (U8S8).

This is not the TensorRT int8 ONNX (`precision/int8.py`): TensorRT wants symmetric int8
activations (zero point 0) on convolution inputs only, while ONNX Runtime's x86 int8 kernels
(VNNI u8 x s8 dot products) want uint8 activations with a zero point, and run fastest when
every op between convolutions (Add, MaxPool, Resize, ...) stays quantized too. Measured on the
2-core CI CPU, HRNet batch 1: the TensorRT Q/DQ model on ONNX Runtime 182 ms (slower than the
fp32 model's 75 ms: ORT runs it as DequantizeLinear + fp32 Conv), the U8S8 model 25.9 ms. So
the CPU model is made by ONNX Runtime's own quantizer, the one its kernels are tuned for:

1. ``quant_pre_process``: ONNX Runtime's graph optimizations (Conv+BatchNorm folding, ...), so
   the quantizer sees the graph the kernels will run.
2. ``quantize_static`` (QDQ format, per-channel symmetric int8 weights, asymmetric uint8
   activations, MinMax ranges) with its calibration cache: tensor -> (min, max) as JSON, written
   after calibrating and read instead of calibrating when given. Same cache + same source ONNX
   = the same bytes.

The input is the plugin-free (lowered) graph: ONNX Runtime has no corner-pool kernels, and the
lowering keeps every tensor name.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from hgdeploy.base.artifacts import read_json
from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.precision.calibration_methods import CalibrationChoice

SCHEME = (
    "onnxruntime U8S8 Q/DQ: activations uint8, asymmetric, per tensor (MinMax calibration); "
    "weights int8, symmetric, per output channel; every op ONNX Runtime's QDQ quantizer supports"
)
CACHE_FORMAT = "onnxruntime TensorsData JSON (quantize_static calibration_cache_path)"
METHOD = "onnxruntime MinMax"
# hgdeploy's --calib-method -> ONNX Runtime's own calibrator; its percentile runs on ORT's
# signed histograms, not hgdeploy's |x| ones. No MSE method exists there, and its Entropy is
# not offered: through quantize_static it gets 128 histogram bins and 128 quantized bins, which
# leaves its KL search one candidate, the whole histogram (measured: the squeeze stand-in's 468
# Entropy ranges were exactly its MinMax ones), and run directly with TensorRT's 2048 bins its
# Python search took over 15 minutes on the hourglass stand-in without finishing (~700
# tensors, bins growing to ~2800 as histograms merge). TensorRT's Q/DQ path has entropy.
ORT_METHODS: dict[str, CalibrationMethod] = {
    "max": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
}


def method_label(choice: CalibrationChoice) -> str:
    """What caches and sidecars record: ONNX Runtime's calibrator by its own name."""
    name = ORT_METHODS[choice.method].name
    if choice.method == "percentile":
        return f"onnxruntime {name} {choice.percentile:g}"
    return f"onnxruntime {name}"


_QUANT_LOGGER = logging.getLogger()  # onnxruntime.quantization logs through the root logger


class _Feeds(CalibrationDataReader):
    """ONNX Runtime's calibration reader over already-preprocessed feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._feeds = list(feeds)
        self._iter: Iterator[dict[str, np.ndarray]] = iter(self._feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def __len__(self) -> int:
        return len(self._feeds)

    def set_range(self, start_index: int, end_index: int) -> None:
        self._iter = iter(self._feeds[start_index:end_index])


def quantize_u8s8(
    lowered: onnx.ModelProto,
    *,
    feeds: Sequence[dict[str, np.ndarray]] | None,
    cache: Path,
    write_cache: bool,
    choice: CalibrationChoice | None = None,
    keep: Collection[str] = (),
) -> onnx.ModelProto:
    """The U8S8 Q/DQ model of a plugin-free fp32 graph.

    With ``write_cache`` the ranges are calibrated on ``feeds`` and the cache is written to
    ``cache`` (atomically); otherwise they are read from ``cache`` and ``feeds`` is unused.
    ``keep`` names nodes left in float (the quantizer's ``nodes_to_exclude``: no Q/DQ on their
    inputs); a name the graph lacks is refused, since the quantizer would silently ignore it.
    """
    choice = choice or CalibrationChoice()
    choice.check_supported("ONNX Runtime", ORT_METHODS)
    if write_cache and not feeds:
        raise HgDeployError("no calibration images")
    if not write_cache and not cache.is_file():
        raise HgDeployError(f"calibration cache not found: {cache}")
    with tempfile.TemporaryDirectory(prefix="hgdeploy-ort-int8-") as tmp:
        work = Path(tmp)
        source, optimized, quantized = work / "fp32.onnx", work / "pre.onnx", work / "int8.onnx"
        work_cache = work / "calibration.json"
        onnx.save_model(lowered, str(source))
        if not write_cache:
            shutil.copyfile(cache, work_cache)
        level = _QUANT_LOGGER.level
        _QUANT_LOGGER.setLevel(logging.ERROR)  # its "consider pre-processing" advice is followed
        try:
            quant_pre_process(str(source), str(optimized), skip_symbolic_shape=True)
            pre_processed = onnx.load_model(str(optimized))
            _check_kept(pre_processed, keep)
            padded = infinity_padded_nodes(pre_processed)
            op_types = op_types_to_quantize(pre_processed, padded)
            quantize_static(
                str(optimized),
                str(quantized),
                _Feeds(feeds) if write_cache and feeds else None,
                nodes_to_exclude=padded + list(keep),
                op_types_to_quantize=op_types,
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                reduce_range=False,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=ORT_METHODS[choice.method],
                calibration_cache_path=str(work_cache),
                extra_options=_calibration_options(choice),
            )
        except (ValueError, KeyError, RuntimeError, onnx.checker.ValidationError) as exc:
            where = f"the calibration cache {cache}" if not write_cache else "the model"
            first = first_line(exc)
            raise HgDeployError(f"ONNX Runtime cannot quantize {where}: {first}") from None
        finally:
            _QUANT_LOGGER.setLevel(level)
        if write_cache:  # the caller commits it with its record (calibration_source)
            shutil.copyfile(work_cache, cache)
        return onnx.load_model(str(quantized))


def _calibration_options(choice: CalibrationChoice) -> dict[str, float | int]:
    """quantize_static's extra options. Its histogram calibrators keep every tensor of every
    image of one `collect_data` call in memory before histogramming: 32 hourglass images were
    killed for memory on a 24 GiB machine. Feeding one image per call (its "strided" loop,
    which merges the histograms) bounds that to one image's tensors."""
    if choice.method == "max":
        return {}
    return {"CalibStridedMinMax": 1, "CalibPercentile": choice.percentile}


def _check_kept(model: onnx.ModelProto, keep: Collection[str]) -> None:
    unknown = sorted(set(keep) - {node.name for node in model.graph.node})
    if unknown:
        raise HgDeployError(
            f"cannot keep {unknown[0]!r} in float: the graph ONNX Runtime quantizes has no such "
            f"node ({len(unknown)} unknown)"
        )


def infinity_padded_nodes(model: onnx.ModelProto) -> list[str]:
    """The lowered corner pools' shift chains: each ``Pad`` that fills with -inf, the ``Slice``
    feeding it and the ``Max`` reading it. Their tensors hold -inf by design (a max never picks
    it), so MinMax calibration gives them an infinite range, and quantized they wipe out every
    corner heatmap, tag and offset: on the trained squeeze stand-in, box AP 0.19 against 0.67
    (heatmap relative L2 0.32, tags 0.97); left in float, 0.011 / 0.037. Max, Pad and Slice
    move data only, so keeping them in float costs no int8 compute."""
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    padded: set[str] = set()
    excluded: list[str] = []
    for node in model.graph.node:
        if node.op_type != "Pad" or len(node.input) < 3 or node.input[2] not in constants:
            continue
        fill = constants[node.input[2]]
        if fill.size == 1 and np.isneginf(fill).all():
            padded.add(node.output[0])
            excluded.append(node.name)
            feeder = producers.get(node.input[0])
            if feeder is not None and feeder.op_type == "Slice":
                excluded.append(feeder.name)
    excluded += [n.name for n in model.graph.node if n.op_type == "Max" and padded & set(n.input)]
    return excluded


def op_types_to_quantize(model: onnx.ModelProto, padded: Sequence[str]) -> list[str] | None:
    """ONNX Runtime's default op types (None) or, where the graph has -inf chains, those less
    the chains' op types (Pad, Slice): its calibrators choose tensors by op type, not by node,
    so an excluded Pad still has its -inf output calibrated. MinMax then records an unused
    infinite range; Percentile and Entropy fail on it (numpy: "autodetected range of [0.0, inf]
    is not finite", seen on the squeeze stand-in). Pad and Slice move data only."""
    if not padded:
        return None
    chain_types = {node.op_type for node in model.graph.node if node.name in set(padded)}
    return sorted(set(_default_op_types()) - chain_types)


def _default_op_types() -> list[str]:
    """What quantize_static quantizes (and calibrates) when given no op types."""
    from onnxruntime.quantization.registry import QDQRegistry, QLinearOpsRegistry

    return sorted(set(QDQRegistry) | set(QLinearOpsRegistry))


def check_cache(path: Path) -> None:
    """Refuse a file that is not ONNX Runtime's calibration cache (a JSON object of ranges)."""
    record = read_json(path, "calibration cache")
    if not isinstance(record, dict) or not record:
        raise HgDeployError(f"corrupt calibration cache {path}: no tensor ranges")


def qdq_summary(model: onnx.ModelProto) -> dict[str, int]:
    """How many Q/DQ nodes and int8 weights the model has (for the sidecar)."""
    ops = [node.op_type for node in model.graph.node]
    int8_weights = sum(
        1 for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8 and t.dims
    )
    return {
        "quantize_linear_nodes": ops.count("QuantizeLinear"),
        "dequantize_linear_nodes": ops.count("DequantizeLinear"),
        "conv_nodes": ops.count("Conv"),
        "int8_weight_tensors": int8_weights,
    }
