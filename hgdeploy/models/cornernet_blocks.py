"""Building blocks shared by CornerNet, CornerNet-Squeeze and CornerNet-Saccade.

Attribute names and registration order mirror princeton-vl/CornerNet-Lite
(`core/models/py_utils/{utils,modules}.py`, `core/models/CornerNet_Squeeze.py`) because they are
the checkpoint interface: `hg.pre.0.conv.weight`, `tl_modules.0.p1_conv1.bn.running_mean`, ...
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

LayerFactory = Callable[[int, int, int], nn.Module]  # (inp_dim, out_dim, modules) -> layer


class Convolution(nn.Module):
    """k x k conv -> BN (or conv bias when with_bn=False) -> ReLU (upstream `convolution`)."""

    def __init__(self, k: int, inp_dim: int, out_dim: int, stride: int = 1, with_bn: bool = True):
        super().__init__()
        pad = (k - 1) // 2
        self.conv = nn.Conv2d(
            inp_dim, out_dim, (k, k), padding=(pad, pad), stride=(stride, stride), bias=not with_bn
        )
        self.bn = nn.BatchNorm2d(out_dim) if with_bn else nn.Sequential()
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.bn(self.conv(x)))


class Residual(nn.Module):
    """Two 3x3 conv-BN layers plus a (projected when shapes differ) skip (upstream `residual`)."""

    def __init__(self, inp_dim: int, out_dim: int, k: int = 3, stride: int = 1):
        super().__init__()
        p = (k - 1) // 2
        self.conv1 = nn.Conv2d(
            inp_dim, out_dim, (k, k), padding=(p, p), stride=(stride, stride), bias=False
        )
        self.bn1 = nn.BatchNorm2d(out_dim)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_dim, out_dim, (k, k), padding=(p, p), bias=False)
        self.bn2 = nn.BatchNorm2d(out_dim)
        projects = stride != 1 or inp_dim != out_dim
        self.skip = (
            nn.Sequential(
                nn.Conv2d(inp_dim, out_dim, (1, 1), stride=(stride, stride), bias=False),
                nn.BatchNorm2d(out_dim),
            )
            if projects
            else nn.Sequential()
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.skip(x))


class FireModule(nn.Module):
    """SqueezeNet-style fire block of CornerNet-Squeeze: 1x1 squeeze, then 1x1 and depthwise 3x3."""

    def __init__(self, inp_dim: int, out_dim: int, sr: int = 2, stride: int = 1):
        super().__init__()
        squeezed = out_dim // sr
        self.conv1 = nn.Conv2d(inp_dim, squeezed, kernel_size=1, stride=1, bias=False)
        self.bn1 = nn.BatchNorm2d(squeezed)
        self.conv_1x1 = nn.Conv2d(squeezed, out_dim // 2, kernel_size=1, stride=stride, bias=False)
        self.conv_3x3 = nn.Conv2d(
            squeezed,
            out_dim // 2,
            kernel_size=3,
            padding=1,
            stride=stride,
            groups=squeezed,
            bias=False,
        )
        self.bn2 = nn.BatchNorm2d(out_dim)
        self.skip = stride == 1 and inp_dim == out_dim
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        squeezed = self.bn1(self.conv1(x))
        expanded = torch.cat((self.conv_1x1(squeezed), self.conv_3x3(squeezed)), 1)
        out = self.bn2(expanded)
        return self.relu(out + x) if self.skip else self.relu(out)


class NearestUpsample(nn.Module):
    """x2 nearest-neighbour upsampling (upstream `upsample`, no parameters)."""

    def forward(self, x: Tensor) -> Tensor:
        return nn.functional.interpolate(x, scale_factor=2)


class Merge(nn.Module):
    """Elementwise sum of the skip and upsampled branches (upstream `merge`)."""

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        return x + y


def stack_layers(block: type[nn.Module], **kwargs: int) -> LayerFactory:
    """Factory for `modules` blocks; the first maps inp_dim -> out_dim (upstream `make_layer`)."""

    def make(inp_dim: int, out_dim: int, modules: int) -> nn.Module:
        layers = [block(inp_dim, out_dim, **kwargs)]
        layers += [block(out_dim, out_dim) for _ in range(1, modules)]
        return nn.Sequential(*layers)

    return make


def stack_layers_reversed(block: type[nn.Module]) -> LayerFactory:
    """Like `stack_layers` but the *last* block changes the width (upstream `make_layer_revr`)."""

    def make(inp_dim: int, out_dim: int, modules: int) -> nn.Module:
        layers = [block(inp_dim, inp_dim) for _ in range(modules - 1)]
        layers += [block(inp_dim, out_dim)]
        return nn.Sequential(*layers)

    return make


class HourglassLayers:
    """The layer factories that distinguish one hourglass variant from another."""

    def __init__(
        self,
        block: type[nn.Module],
        unpool: Callable[[int], nn.Module],
    ):
        self.up = stack_layers(block)
        self.low = stack_layers(block)
        self.down = stack_layers(block, stride=2)  # all CornerNet variants downsample by stride
        self.up_reversed = stack_layers_reversed(block)
        self.unpool = unpool


class HourglassModule(nn.Module):
    """One recursive hourglass (upstream `hg_module`); `max1` is an identity in every variant."""

    def __init__(self, n: int, dims: list[int], modules: list[int], layers: HourglassLayers):
        super().__init__()
        curr_dim, next_dim = dims[0], dims[1]
        curr_mod, next_mod = modules[0], modules[1]
        self.n = n
        self.up1 = layers.up(curr_dim, curr_dim, curr_mod)
        self.max1 = nn.Sequential()
        self.low1 = layers.down(curr_dim, next_dim, curr_mod)
        self.low2 = (
            type(self)(n - 1, dims[1:], modules[1:], layers)
            if n > 1
            else layers.low(next_dim, next_dim, next_mod)
        )
        self.low3 = layers.up_reversed(next_dim, curr_dim, curr_mod)
        self.up2 = layers.unpool(curr_dim)
        self.merg = Merge()

    def forward(self, x: Tensor) -> Tensor:
        low = self.low3(self.low2(self.low1(self.max1(x))))
        return self.merg(self.up1(x), self.up2(low))


class SaccadeModule(HourglassModule):
    """Hourglass that also returns every merged level (coarsest first) for the attention heads."""

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:  # type: ignore[override]
        low1 = self.low1(self.max1(x))
        if self.n > 1:
            low2, merges = self.low2(low1)
        else:
            low2, merges = self.low2(low1), []
        merged = self.merg(self.up1(x), self.up2(self.low3(low2)))
        return merged, [*merges, merged]


def merge_layer(dim: int = 256) -> nn.Module:
    """1x1 conv + BN used to merge features between stacks (upstream `_merge_mod`)."""
    return nn.Sequential(nn.Conv2d(dim, dim, (1, 1), bias=False), nn.BatchNorm2d(dim))


class StackedHourglass(nn.Module):
    """Stem + stacked hourglasses with intermediate merges (upstream `hg` / `saccade`).

    Returns the per-stack features (and, for saccade modules, the per-stack merged levels).
    """

    def __init__(self, pre: nn.Module, hg_modules: nn.ModuleList, dim: int = 256):
        super().__init__()
        stacks = len(hg_modules)
        self.pre = pre
        self.hgs = hg_modules
        self.cnvs = nn.ModuleList([Convolution(3, dim, dim) for _ in range(stacks)])
        self.inters = nn.ModuleList([Residual(dim, dim) for _ in range(stacks - 1)])
        self.inters_ = nn.ModuleList([merge_layer(dim) for _ in range(stacks - 1)])
        self.cnvs_ = nn.ModuleList([merge_layer(dim) for _ in range(stacks - 1)])

    def forward(self, x: Tensor) -> tuple[list[Tensor], list[list[Tensor]]]:
        inter = self.pre(x)
        features: list[Tensor] = []
        levels: list[list[Tensor]] = []
        for ind, (hg, cnv) in enumerate(zip(self.hgs, self.cnvs)):
            out = hg(inter)
            hg_out, ups = out if isinstance(out, tuple) else (out, [])
            feature = cnv(hg_out)
            features.append(feature)
            levels.append(ups)
            if ind < len(self.hgs) - 1:
                inter = self.inters_[ind](inter) + self.cnvs_[ind](feature)
                inter = nn.functional.relu_(inter)
                inter = self.inters[ind](inter)
        return features, levels


class CornerPoolModule(nn.Module):
    """Two directional pools summed, then conv/BN with a 1x1 shortcut (upstream `corner_pool`)."""

    def __init__(self, dim: int, pool1: type[nn.Module], pool2: type[nn.Module]):
        super().__init__()
        self.p1_conv1 = Convolution(3, dim, 128)
        self.p2_conv1 = Convolution(3, dim, 128)
        self.p_conv1 = nn.Conv2d(128, dim, (3, 3), padding=(1, 1), bias=False)
        self.p_bn1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, (1, 1), bias=False)
        self.bn1 = nn.BatchNorm2d(dim)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = Convolution(3, dim, dim)
        self.pool1 = pool1()
        self.pool2 = pool2()

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.pool1(self.p1_conv1(x)) + self.pool2(self.p2_conv1(x))
        p_bn1 = self.p_bn1(self.p_conv1(pooled))
        bn1 = self.bn1(self.conv1(x))
        return self.conv2(self.relu1(p_bn1 + bn1))
