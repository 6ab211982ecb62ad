"""The model registry: one `ModelSpec` per supported upstream system.

Everything downstream (export, parity, bench, engines) reads shapes, names, preprocessing and
decode settings from here (tolerances: `hgdeploy.base.precisions`), so adding a model is one entry in `ZOO` plus its eager module.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.precisions import PRECISIONS, Tolerance

if TYPE_CHECKING:  # torch is imported by the models, not by the registry (fast CLI start-up)
    from torch import nn

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

    @property
    def tolerances(self) -> dict[str, dict[str, Tolerance]]:
        """precision -> output name -> tolerance, from the precision registry (every output of
        a model is judged alike at one precision)."""
        return {
            name: {output: precision.tolerance for output in self.output_names}
            for name, precision in PRECISIONS.items()
            if precision.tolerance is not None
        }

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
        ),
    )
}


def get_spec(name: str) -> ModelSpec:
    """The spec for `name`, or a one-line error listing the known names."""
    try:
        return ZOO[name]
    except KeyError:
        raise HgDeployError(f"unknown model {name!r}; known models: {', '.join(ZOO)}") from None
