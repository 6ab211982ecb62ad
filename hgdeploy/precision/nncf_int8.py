"""INT8 for OpenVINO: NNCF post-training quantization of an OpenVINO model, with a reusable
statistics cache.

NNCF's default for CPUs: symmetric int8 weights per channel and activations per tensor, MinMax
ranges, fast bias correction; the lowered corner pools' Pad and Maximum ops left fp32. As ``nncf.quantize``
does for an OpenVINO model, with one difference: the statistics step and the quantization step
are run separately, so the collected statistics are saved as NNCF's statistics cache (a
directory) and a later build can quantize from that cache without images, to the same IR.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection, Sequence
from pathlib import Path

import numpy as np
import onnx
import openvino as ov

from hgdeploy.base.errors import HgDeployError, first_line

SCHEME = (
    "NNCF post-training quantization, default CPU preset: int8 symmetric weights per output "
    "channel, int8 activations per tensor (MinMax), fast bias correction; FakeQuantize in IR"
)
STATISTICS_FORMAT = "NNCF statistics cache (directory: statistics_metadata.json + tensors)"
METHOD = "NNCF MinMax + fast bias correction"


def quantize_nncf(
    model: ov.Model,
    *,
    feeds: Sequence[dict[str, np.ndarray]] | None,
    statistics: Path,
    write_statistics: bool,
    keep: Collection[str] = (),
) -> ov.Model:
    """The NNCF int8 model; statistics collected on ``feeds`` and saved to the directory
    ``statistics`` (with ``write_statistics``), or loaded from it. ``keep`` names OpenVINO ops
    left in float (NNCF's ignored scope; see `ov_ops_for_layers`)."""
    import nncf
    from nncf.common.factory import StatisticsAggregatorFactory
    from nncf.openvino.graph.model_utils import remove_friendly_name_duplicates
    from nncf.openvino.graph.nncf_graph_builder import GraphConverter
    from nncf.quantization.algorithms.post_training.algorithm import PostTrainingQuantization
    from openvino._offline_transformations import compress_quantize_weights_transformation

    nncf.set_log_level(logging.ERROR)
    if write_statistics and not feeds:
        raise HgDeployError("no calibration images")
    if not write_statistics and not (statistics / "statistics_metadata.json").is_file():
        raise HgDeployError(f"{statistics} is not an NNCF statistics cache (directory)")
    model = remove_friendly_name_duplicates(model)
    samples = list(feeds or [])
    algorithm = PostTrainingQuantization(
        subset_size=max(1, len(samples)),
        # The lowered corner pools pad with -inf; OpenVINO's low-precision transformations
        # cannot move a dequantization through such a Pad (compile fails in PadTransformation),
        # and a quantized Maximum reading it gets an infinite MinMax range that wipes out the
        # heads (trained squeeze stand-in: box AP 0.19 against 0.67). So the pools' Pad and
        # Maximum stay fp32, as they do in the TensorRT int8 graph.
        ignored_scope=nncf.IgnoredScope(names=list(keep), types=["Pad", "Maximum"], validate=False),
    )
    graph = GraphConverter.create_nncf_graph(model)
    aggregator = StatisticsAggregatorFactory.create(model, nncf.Dataset(samples))
    aggregator.register_statistic_points(algorithm.get_statistic_points(model, graph))
    try:
        if write_statistics:
            aggregator.collect_statistics(model, graph)
            # Into the (empty) directory the caller commits with its record.
            aggregator.dump_statistics(statistics)
        else:
            aggregator.load_statistics_from_dir(statistics)
    except (nncf.StatisticsCacheError, nncf.ValidationError) as exc:
        raise HgDeployError(
            f"NNCF statistics cache {statistics} does not fit: {first_line(exc)}"
        ) from None
    quantized = algorithm.apply(model, graph, aggregator.statistic_points)
    compress_quantize_weights_transformation(quantized)  # int8 weights in the IR, as nncf does
    return quantized


# An ONNX conv with a bias becomes OpenVINO's bias-free convolution + Add; NNCF quantizes the
# convolution, so a kept conv names that op (the Add carries the ONNX output's tensor name).
_BIASED = {"Conv", "ConvTranspose"}
_CONVOLUTIONS = {"Convolution", "GroupConvolution", "ConvolutionBackpropData"}


def ov_ops_for_layers(
    source: onnx.ModelProto, model: ov.Model, layers: Collection[str]
) -> list[str]:
    """The friendly names of the OpenVINO ops that ONNX nodes `layers` (hgdeploy's layer
    names, `int8.layer_names`) became, found through their output tensor's name, which the
    ONNX frontend keeps; a layer with no such op is refused (NNCF would ignore it silently)."""
    nodes = {node.name: node for node in source.graph.node}
    by_tensor = {
        name: op for op in model.get_ops() for out in op.outputs() for name in out.get_names()
    }
    names = []
    for layer in layers:
        node = nodes.get(layer)
        op = by_tensor.get(node.output[0]) if node is not None and node.output else None
        if op is not None and node is not None and node.op_type in _BIASED:
            if op.get_type_name() == "Add":
                op = op.input_value(0).get_node()
            if op.get_type_name() not in _CONVOLUTIONS:
                op = None
        if op is None:
            raise HgDeployError(f"cannot keep {layer!r} in float: no OpenVINO op came from it")
        names.append(op.get_friendly_name())
    return names


def check_cache(path: Path) -> None:
    """Refuse a path that is not an NNCF statistics cache (a directory with its metadata)."""
    if not path.exists():
        raise HgDeployError(f"calibration cache not found: {path}")
    if not (path / "statistics_metadata.json").is_file():
        raise HgDeployError(f"{path} is not an NNCF statistics cache (directory)")


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
