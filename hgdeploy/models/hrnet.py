"""HRNet (Sun et al.) top-down pose estimator, eager reference.

State-dict compatible with leoxiaobin/deep-high-resolution-net.pytorch (``pose_hrnet``): module
names, registration order and parameter shapes follow upstream exactly, because released
checkpoints are keyed by them. Upstream's structural quirks are kept for that reason:

* ``fuse_layers[i][i]`` and channel-preserving ``transition*[i]`` entries are ``None`` (no keys);
* a downsampling fuse path ``fuse_layers[i][j]`` (j < i) is a Sequential of ``i - j`` stride-2
  Sequential(conv, BN[, ReLU]) steps; an upsampling one (j > i) is Sequential(conv1x1, BN,
  nearest Upsample);
* the last module of the last stage keeps only the highest-resolution output
  (``multi_scale_output=False``: only ``fuse_layers[0]`` exists);
* ``final_layer`` is the only convolution with a bias.

The configuration is a small frozen dataclass instead of upstream's yacs tree; only BASIC-block
stages are described because that is what every released pose_hrnet uses (``layer1`` is fixed
to four Bottleneck blocks, as upstream hard-codes it). Ops are out-of-place for clean export.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

STEM_WIDTH = 64
LAYER1_BLOCKS = 4


def _conv3x3(inp: int, out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(inp, out, kernel_size=3, stride=stride, padding=1, bias=False)


def _conv_bn(inp: int, out: int, kernel_size: int, stride: int, relu: bool) -> nn.Sequential:
    """Sequential(conv, BN[, ReLU]); the indices 0/1 are checkpoint keys."""
    layers: list[nn.Module] = [
        nn.Conv2d(inp, out, kernel_size, stride, (kernel_size - 1) // 2, bias=False),
        nn.BatchNorm2d(out),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with an identity (or projected) shortcut."""

    expansion = 1

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = _conv3x3(inplanes, planes, stride)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 (x4 widening) conv-BN bottleneck, used by the stem's ``layer1``."""

    expansion = 4

    def __init__(
        self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, kernel_size=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


def _make_blocks(
    block: type[BasicBlock] | type[Bottleneck], inplanes: int, planes: int, count: int
) -> nn.Sequential:
    """``count`` blocks; only the first may need a 1x1 projection shortcut (width change)."""
    width = planes * block.expansion
    downsample = None
    if inplanes != width:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, width, kernel_size=1, bias=False), nn.BatchNorm2d(width)
        )
    blocks = [block(inplanes, planes, 1, downsample)]
    blocks += [block(width, planes) for _ in range(1, count)]
    return nn.Sequential(*blocks)


@dataclass(frozen=True)
class StageConfig:
    """One HRNet stage of BASIC-block modules (upstream's ``EXTRA.STAGE<n>``, fuse = SUM)."""

    num_modules: int
    num_blocks: tuple[int, ...]
    num_channels: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.num_blocks) != len(self.num_channels):
            raise ValueError(
                f"num_blocks {self.num_blocks} and num_channels {self.num_channels} "
                "must list one entry per branch"
            )

    @property
    def num_branches(self) -> int:
        return len(self.num_channels)


W32_STAGES: tuple[StageConfig, ...] = (
    StageConfig(num_modules=1, num_blocks=(4, 4), num_channels=(32, 64)),
    StageConfig(num_modules=4, num_blocks=(4, 4, 4), num_channels=(32, 64, 128)),
    StageConfig(num_modules=3, num_blocks=(4, 4, 4, 4), num_channels=(32, 64, 128, 256)),
)


class HighResolutionModule(nn.Module):
    """Parallel per-resolution branches followed by all-to-all fusion (sum, then ReLU).

    Output ``i`` sums every branch resampled to branch ``i``'s resolution and width: coarser
    branches via 1x1 conv + BN + nearest upsampling, finer ones via a chain of stride-2 3x3
    convs. With ``multi_scale_output=False`` only the finest output is produced.
    """

    def __init__(
        self,
        in_channels: tuple[int, ...],
        num_blocks: tuple[int, ...],
        num_channels: tuple[int, ...],
        multi_scale_output: bool = True,
    ) -> None:
        super().__init__()
        self.num_branches = len(num_channels)
        self.branches = nn.ModuleList(
            _make_blocks(BasicBlock, in_channels[b], num_channels[b], num_blocks[b])
            for b in range(self.num_branches)
        )
        self.out_channels = tuple(c * BasicBlock.expansion for c in num_channels)
        num_outputs = self.num_branches if multi_scale_output else 1
        self.fuse_layers = (
            None
            if self.num_branches == 1
            else nn.ModuleList(
                nn.ModuleList(self._fuse_path(j, i) for j in range(self.num_branches))
                for i in range(num_outputs)
            )
        )

    def _fuse_path(self, src: int, dst: int) -> nn.Module | None:
        """Resampler from branch ``src`` to branch ``dst``; None on the diagonal (identity)."""
        widths = self.out_channels
        if src == dst:
            return None
        if src > dst:
            return nn.Sequential(
                nn.Conv2d(widths[src], widths[dst], 1, 1, 0, bias=False),
                nn.BatchNorm2d(widths[dst]),
                nn.Upsample(scale_factor=2 ** (src - dst), mode="nearest"),
            )
        steps = dst - src
        # Intermediate steps keep the source width and end in ReLU; the last one switches to
        # the destination width and leaves the ReLU to the post-sum activation.
        return nn.Sequential(
            *(
                _conv_bn(widths[src], widths[src], 3, 2, relu=True)
                if k < steps - 1
                else _conv_bn(widths[src], widths[dst], 3, 2, relu=False)
                for k in range(steps)
            )
        )

    def forward(self, xs: list[Tensor]) -> list[Tensor]:
        xs = [branch(x) for branch, x in zip(self.branches, xs)]
        if self.fuse_layers is None:
            return xs
        fused: list[Tensor] = []
        for i, paths in enumerate(self.fuse_layers):
            # Accumulate in branch order 0..n-1, as upstream does (float sums are order-sensitive).
            y = xs[0] if i == 0 else paths[0](xs[0])
            for j in range(1, self.num_branches):
                y = y + (xs[j] if i == j else paths[j](xs[j]))
            fused.append(F.relu(y))
        return fused


def _make_transition(prev: tuple[int, ...], cur: tuple[int, ...]) -> nn.ModuleList:
    """Adapters from the previous stage's branches to the next stage's.

    Existing branches get a 3x3 conv only if their width changes (else None: pass through).
    Each new branch is derived from the coarsest previous branch by a chain of stride-2 convs.
    """
    layers: list[nn.Module | None] = []
    for i, width in enumerate(cur):
        if i < len(prev):
            layers.append(None if prev[i] == width else _conv_bn(prev[i], width, 3, 1, relu=True))
            continue
        steps = i + 1 - len(prev)
        layers.append(
            nn.Sequential(
                *(
                    _conv_bn(prev[-1], width if k == steps - 1 else prev[-1], 3, 2, relu=True)
                    for k in range(steps)
                )
            )
        )
    return nn.ModuleList(layers)


def _apply_transition(transition: nn.ModuleList, ys: list[Tensor]) -> list[Tensor]:
    """New branches (and any re-widened ones) are fed as upstream feeds them.

    Upstream feeds every non-None adapter from the coarsest input ``ys[-1]``; for an existing
    branch that only runs without a shape error when it *is* the coarsest, so indexing
    ``ys[i]`` there is the same computation.
    """
    out: list[Tensor] = []
    for i, layer in enumerate(transition):
        if layer is None:
            out.append(ys[i])
        else:
            out.append(layer(ys[i] if i < len(ys) else ys[-1]))
    return out


class PoseHighResolutionNet(nn.Module):
    """Stem (two stride-2 convs + 4 Bottlenecks) -> three multi-branch stages -> 1x1 head.

    Input NCHW images; output heatmaps at 1/4 resolution from the finest branch.
    """

    def __init__(
        self,
        stages: tuple[StageConfig, ...] = W32_STAGES,
        num_joints: int = 17,
        final_conv_kernel: int = 1,
    ) -> None:
        super().__init__()
        if len(stages) != 3:
            raise ValueError(f"pose_hrnet has exactly 3 multi-branch stages, got {len(stages)}")
        self.conv1 = nn.Conv2d(3, STEM_WIDTH, kernel_size=3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(STEM_WIDTH)
        self.conv2 = nn.Conv2d(
            STEM_WIDTH, STEM_WIDTH, kernel_size=3, stride=2, padding=1, bias=False
        )
        self.bn2 = nn.BatchNorm2d(STEM_WIDTH)
        self.layer1 = _make_blocks(Bottleneck, STEM_WIDTH, STEM_WIDTH, LAYER1_BLOCKS)

        # Attribute names transition1..3 / stage2..4 are checkpoint keys.
        prev: tuple[int, ...] = (STEM_WIDTH * Bottleneck.expansion,)
        for n, cfg in enumerate(stages, start=1):
            cur = tuple(c * BasicBlock.expansion for c in cfg.num_channels)
            setattr(self, f"transition{n}", _make_transition(prev, cur))
            stage, prev = self._make_stage(cfg, cur, last=n == len(stages))
            setattr(self, f"stage{n + 1}", stage)

        self.final_layer = nn.Conv2d(
            prev[0],
            num_joints,
            kernel_size=final_conv_kernel,
            stride=1,
            padding=1 if final_conv_kernel == 3 else 0,
        )
        self._init_weights()

    @staticmethod
    def _make_stage(
        cfg: StageConfig, in_channels: tuple[int, ...], last: bool
    ) -> tuple[nn.Sequential, tuple[int, ...]]:
        modules: list[HighResolutionModule] = []
        for m in range(cfg.num_modules):
            module = HighResolutionModule(
                in_channels,
                cfg.num_blocks,
                cfg.num_channels,
                multi_scale_output=not (last and m == cfg.num_modules - 1),
            )
            modules.append(module)
            in_channels = module.out_channels
        return nn.Sequential(*modules), in_channels

    def _init_weights(self) -> None:
        """Upstream's training init (conv ~ N(0, 0.001), zero bias, BN identity); checkpoints
        overwrite it, but it keeps freshly built models numerically tame."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.001)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        ys = [self.layer1(x)]
        ys = self.stage2(_apply_transition(self.transition1, ys))
        ys = self.stage3(_apply_transition(self.transition2, ys))
        ys = self.stage4(_apply_transition(self.transition3, ys))
        return self.final_layer(ys[0])


def pose_hrnet_w32(num_joints: int = 17) -> nn.Module:
    """HRNet-W32 as in upstream's ``w32_256x192`` / ``w32_384x288`` COCO configs."""
    return PoseHighResolutionNet(W32_STAGES, num_joints=num_joints, final_conv_kernel=1)
