"""The model registry: one `ModelSpec` per supported upstream system.

Everything downstream (export, parity, bench, engines) reads shapes, names, preprocessing and
tolerances from here, so adding a model is one entry in `ZOO` plus its eager module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Literal

from torch import nn

from hgdeploy.errors import HgDeployError

Layout = Literal["NCHW", "NHWC"]

COCO_MEAN_BGR = (0.40789654, 0.44719302, 0.47026115)
COCO_STD_BGR = (0.28863828, 0.27408164, 0.27809835)
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STD_RGB = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How upstream turns an 8-bit image into the network input (after resizing)."""

    channel_order: Literal["RGB", "BGR"]
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)  # in channel_order, on the 0..1 scale
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    resize: Literal["letterbox", "stretch"] = "letterbox"


@dataclass(frozen=True)
class OutputSpec:
    """One named network output; `shape` excludes the batch axis."""

    name: str
    shape: tuple[int, ...]
    description: str = ""


@dataclass(frozen=True)
class DecodeSettings:
    """Upstream test-mode decoding settings of a CornerNet-family model."""

    K: int
    ae_threshold: float
    num_dets: int
    kernel: int = 3
    no_border: bool = False


@dataclass(frozen=True)
class Tolerance:
    """Per-output comparison tolerance, Polygraphy's elementwise rule: an element passes when its
    absolute error <= the effective atol or its relative error <= rtol.

    Rounding error scales with the magnitude of the activations, and that magnitude depends on
    the weights (a trained pose net emits heatmaps in [0, 1]; synthetic weights reach 40), so the
    absolute tolerance is `atol` or `range_fraction` of the reference output's max |value|,
    whichever is larger.
    """

    atol: float
    rtol: float
    range_fraction: float = 0.0
    # Polygraphy's check_error_stat: "elemwise" bounds every element; "mean" bounds the mean
    # error, for precisions whose individual elements may legitimately stray (int8).
    stat: str = "elemwise"

    def effective_atol(self, scale: float) -> float:
        return max(self.atol, self.range_fraction * scale)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    title: str
    upstream: str  # repository and file that define the interface
    builder: str  # "module:callable" returning the eager nn.Module
    layout: Layout
    input_hw: tuple[int, int]
    batches: dict[str, int]  # documented batch sizes, e.g. {"train": 4, "test": 2}
    outputs: tuple[OutputSpec, ...]
    preprocessing: Preprocessing
    num_parameters: int
    num_state_dict_keys: int
    decode: DecodeSettings | None = None
    tolerances: dict[str, dict[str, Tolerance]] = field(default_factory=dict)  # precision -> output

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(o.name for o in self.outputs)

    @property
    def default_batch(self) -> int:
        """The first documented batch size (the one benchmarks and engine profiles use)."""
        return next(iter(self.batches.values()))

    def input_shape(self, batch: int = 1) -> tuple[int, int, int, int]:
        h, w = self.input_hw
        return (batch, h, w, 3) if self.layout == "NHWC" else (batch, 3, h, w)

    def documented_shapes(self) -> dict[str, tuple[int, int, int, int]]:
        return {label: self.input_shape(b) for label, b in self.batches.items()}

    def build(self) -> nn.Module:
        """A fresh eager model in eval mode with the upstream default initialisation."""
        module_name, attr = self.builder.split(":")
        model = getattr(importlib.import_module(module_name), attr)()
        return model.eval()


def _cornernet_heads(hw: int) -> tuple[OutputSpec, ...]:
    return (
        OutputSpec("tl_heat", (80, hw, hw), "top-left corner heatmap logits, 80 COCO classes"),
        OutputSpec("br_heat", (80, hw, hw), "bottom-right corner heatmap logits"),
        OutputSpec("tl_tag", (1, hw, hw), "top-left associative embedding"),
        OutputSpec("br_tag", (1, hw, hw), "bottom-right associative embedding"),
        OutputSpec("tl_off", (2, hw, hw), "top-left sub-pixel offsets (x, y)"),
        OutputSpec("br_off", (2, hw, hw), "bottom-right sub-pixel offsets (x, y)"),
    )


_CORNERNET_PRE = Preprocessing("BGR", COCO_MEAN_BGR, COCO_STD_BGR, resize="letterbox")

# fp32 parity tolerances. The eager and exported graphs run the same fp32 operations in a
# different order (fused BN, other conv algorithms), so the difference is accumulated rounding
# over 50-200 layers: measured 4e-6 (Squeeze) to 3e-5 (8-stack Hourglass) of the output range.
# 3e-4 of the range leaves 10x headroom; any real defect (a wrong op, layout or weight) moves
# outputs by 1e-2 of the range or more (a 5% change of one conv weight fails by 100x).
_FP32 = Tolerance(atol=1e-4, rtol=1e-3, range_fraction=3e-4)


# fp16 (FP16 weights and activations, FP32 I/O), judged on real images. Measured max |error| /
# range vs eager fp32 with ONNX Runtime CPU (fp16 storage, fp32 arithmetic): 0.0025 (Hourglass),
# 0.007 (Squeeze), 0.023 (Saccade), 0.036 (HRNet). TensorRT may also accumulate in fp16, so
# 0.1 of the range leaves ~3x headroom; a broken conversion (e.g. fp16 overflow) gives O(1).
_FP16 = Tolerance(atol=1e-3, rtol=1e-2, range_fraction=0.1)
# bf16 (OpenVINO CPU: the fp32 ONNX compiled with the bf16 inference-precision hint), judged on
# real images. bf16 keeps an 8-bit mantissa (0.4% per rounding), and synthetic-weight networks
# amplify it over their depth: measured max |error| / range vs eager fp32, OpenVINO 2026.4 on an
# AVX512_BF16 CPU, 0.049 (HRNet) and 0.033-0.059 (Squeeze, worst tl_tag). 0.2 of the range
# leaves >3x headroom; a broken conversion or a wrong op gives O(1).
_BF16 = Tolerance(atol=1e-3, rtol=1e-2, range_fraction=0.2)
# int8 (explicit symmetric Q/DQ, per-channel weights), judged by the mean error on real images:
# 5% of the range is what a usable int8 deployment of a trained model keeps (PTQ of trained
# CNNs typically stays within a few percent). NOT met by hgdeploy's synthetic random weights,
# whose int8 error is 0.9% (Hourglass) to 11% (HRNet, Saccade) of the range: random networks
# amplify rounding noise far more than trained ones, so int8 parity needs real checkpoints.
_INT8 = Tolerance(atol=1e-3, rtol=0.0, range_fraction=0.05, stat="mean")


def _tolerances(outputs: tuple[OutputSpec, ...]) -> dict[str, dict[str, Tolerance]]:
    return {
        precision: {o.name: tolerance for o in outputs}
        for precision, tolerance in (
            ("fp32", _FP32),
            ("fp16", _FP16),
            ("bf16", _BF16),
            ("int8", _INT8),
        )
    }


_CORNERNET_OUTPUTS = _cornernet_heads(128)
_SQUEEZE_OUTPUTS = _cornernet_heads(64)
_SACCADE_OUTPUTS = _cornernet_heads(64) + (
    OutputSpec("att_16", (1, 16, 16), "sigmoid attention map for large objects"),
    OutputSpec("att_32", (1, 32, 32), "sigmoid attention map for medium objects"),
    OutputSpec("att_64", (1, 64, 64), "sigmoid attention map for small objects"),
)
_HOURGLASS_OUTPUTS = (OutputSpec("heatmaps", (8, 16, 64, 64), "per-stack MPII joint heatmaps"),)
_HRNET_OUTPUTS = (OutputSpec("heatmaps", (17, 64, 48), "COCO keypoint heatmaps"),)

ZOO: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="cornernet",
            title="CornerNet (Hourglass-104, 2 stacks)",
            upstream="princeton-vl/CornerNet-Lite core/models/CornerNet.py",
            builder="hgdeploy.models.cornernet:CornerNet",
            layout="NCHW",
            input_hw=(511, 511),
            batches={"train": 4},
            outputs=_CORNERNET_OUTPUTS,
            preprocessing=_CORNERNET_PRE,
            num_parameters=201_035_212,
            num_state_dict_keys=1128,
            decode=DecodeSettings(K=100, ae_threshold=0.5, num_dets=1000),
            tolerances=_tolerances(_CORNERNET_OUTPUTS),
        ),
        ModelSpec(
            name="squeeze",
            title="CornerNet-Squeeze (fire modules, 2 stacks)",
            upstream="princeton-vl/CornerNet-Lite core/models/CornerNet_Squeeze.py",
            builder="hgdeploy.models.cornernet:CornerNetSqueeze",
            layout="NCHW",
            input_hw=(511, 511),
            batches={"train": 13},
            outputs=_SQUEEZE_OUTPUTS,
            preprocessing=_CORNERNET_PRE,
            num_parameters=31_771_852,
            num_state_dict_keys=990,
            decode=DecodeSettings(K=20, ae_threshold=0.5, num_dets=100),
            tolerances=_tolerances(_SQUEEZE_OUTPUTS),
        ),
        ModelSpec(
            name="saccade",
            title="CornerNet-Saccade (3 stacks, attention maps)",
            upstream="princeton-vl/CornerNet-Lite core/models/CornerNet_Saccade.py",
            builder="hgdeploy.models.cornernet:CornerNetSaccade",
            layout="NCHW",
            input_hw=(255, 255),
            batches={"train": 4, "test": 2},
            outputs=_SACCADE_OUTPUTS,
            preprocessing=_CORNERNET_PRE,
            num_parameters=116_969_339,
            num_state_dict_keys=828,
            decode=DecodeSettings(K=12, ae_threshold=0.3, num_dets=12, no_border=True),
            tolerances=_tolerances(_SACCADE_OUTPUTS),
        ),
        ModelSpec(
            name="hourglass",
            title="Stacked Hourglass PoseNet (8 stacks, 16 MPII joints)",
            upstream="princeton-vl/pytorch_stacked_hourglass models/posenet.py",
            builder="hgdeploy.models.stacked_hourglass:PoseNet",
            layout="NHWC",
            input_hw=(256, 256),
            batches={"train": 16},
            outputs=_HOURGLASS_OUTPUTS,
            preprocessing=Preprocessing("RGB", resize="letterbox"),
            num_parameters=32_819_328,
            num_state_dict_keys=2752,
            tolerances=_tolerances(_HOURGLASS_OUTPUTS),
        ),
        ModelSpec(
            name="hrnet",
            title="HRNet-W32 pose, 256x192 (17 COCO joints)",
            upstream="leoxiaobin/deep-high-resolution-net.pytorch lib/models/pose_hrnet.py",
            builder="hgdeploy.models.hrnet:pose_hrnet_w32",
            layout="NCHW",
            input_hw=(256, 192),
            batches={"test": 32},
            outputs=_HRNET_OUTPUTS,
            preprocessing=Preprocessing(
                "RGB", IMAGENET_MEAN_RGB, IMAGENET_STD_RGB, resize="letterbox"
            ),
            num_parameters=28_536_113,
            num_state_dict_keys=1754,
            tolerances=_tolerances(_HRNET_OUTPUTS),
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The spec for `name`, or a one-line error listing the known names."""
    try:
        return ZOO[name]
    except KeyError:
        raise HgDeployError(f"unknown model {name!r}; known models: {', '.join(ZOO)}") from None
