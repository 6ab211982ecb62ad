"""Stacked Hourglass pose network (Newell et al.), eager reference.

State-dict compatible with princeton-vl/pytorch_stacked_hourglass checkpoints: module names,
registration order and parameter shapes follow upstream exactly, including its quirks, because
the released weights are keyed by them:

* every :class:`Residual` owns a ``skip_layer`` even when input and output widths match; it is
  then unused in ``forward`` but its weights are still in the checkpoints;
* all convolutions carry a bias, even those followed by batch norm;
* :class:`Merge` wraps a :class:`Conv` as ``.conv`` (keys ``merge_preds.0.conv.conv.weight``);
* the ``increase`` widening applies to the outermost hourglass level only (upstream does not
  pass it down the recursion).

The computation order matches upstream so outputs agree to float rounding. Ops are written
out-of-place (no ``+=``, no in-place ReLU) so the module traces cleanly for export.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

HOURGLASS_DEPTH = 4  # recursion levels per hourglass: 64x64 features down to 4x4


class Conv(nn.Module):
    """``same``-padded conv (with bias) optionally followed by BN, then optionally ReLU."""

    def __init__(
        self,
        inp_dim: int,
        out_dim: int,
        kernel_size: int = 3,
        stride: int = 1,
        bn: bool = False,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.inp_dim = inp_dim
        # Attribute names `conv` / `bn` are checkpoint keys; `bn` must be absent, not Identity,
        # when unused so no extra keys appear.
        self.conv = nn.Conv2d(
            inp_dim, out_dim, kernel_size, stride, padding=(kernel_size - 1) // 2, bias=True
        )
        self.bn = nn.BatchNorm2d(out_dim) if bn else None
        self.use_relu = relu

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        if self.use_relu:
            x = F.relu(x)
        return x


class Residual(nn.Module):
    """Pre-activation bottleneck: (BN -> ReLU -> conv) x3 (1x1, 3x3, 1x1) plus a shortcut.

    The shortcut is a 1x1 conv only when the width changes; ``skip_layer`` is built regardless
    because upstream checkpoints contain it.
    """

    def __init__(self, inp_dim: int, out_dim: int) -> None:
        super().__init__()
        mid = out_dim // 2
        self.bn1 = nn.BatchNorm2d(inp_dim)
        self.conv1 = Conv(inp_dim, mid, 1, relu=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv2 = Conv(mid, mid, 3, relu=False)
        self.bn3 = nn.BatchNorm2d(mid)
        self.conv3 = Conv(mid, out_dim, 1, relu=False)
        self.skip_layer = Conv(inp_dim, out_dim, 1, relu=False)
        self.need_skip = inp_dim != out_dim

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.skip_layer(x) if self.need_skip else x
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        out = self.conv3(F.relu(self.bn3(out)))
        return out + shortcut


class Hourglass(nn.Module):
    """One recursive hourglass: a full-resolution branch plus a pooled branch that recurses
    ``depth - 1`` more times, upsampled (nearest, x2) and summed back."""

    def __init__(self, depth: int, width: int, increase: int = 0) -> None:
        super().__init__()
        inner = width + increase
        # Registration order (up1, low1, low2, low3) fixes the state_dict key order.
        self.up1 = Residual(width, width)
        self.low1 = Residual(width, inner)
        self.low2: nn.Module = Hourglass(depth - 1, inner) if depth > 1 else Residual(inner, inner)
        self.low3 = Residual(inner, width)

    def forward(self, x: Tensor) -> Tensor:
        up1 = self.up1(x)
        low = self.low1(F.max_pool2d(x, kernel_size=2, stride=2))
        low = self.low3(self.low2(low))
        return up1 + F.interpolate(low, scale_factor=2.0, mode="nearest")


class Merge(nn.Module):
    """1x1 projection that feeds a stack's heatmaps or features into the next stack's input."""

    def __init__(self, x_dim: int, y_dim: int) -> None:
        super().__init__()
        self.conv = Conv(x_dim, y_dim, 1, relu=False, bn=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)


class PoseNet(nn.Module):
    """Stacked hourglass with intermediate supervision.

    ``forward`` takes NHWC images (B, 256, 256, 3), as upstream's data pipeline produces them,
    and returns every stack's heatmaps stacked on dim 1: (B, nstack, oup_dim, 64, 64).
    """

    def __init__(
        self, nstack: int = 8, inp_dim: int = 256, oup_dim: int = 16, increase: int = 0
    ) -> None:
        super().__init__()
        self.nstack = nstack
        # Stem: 256x256 -> 64x64 (stride-2 7x7 conv, then a 2x2 max pool).
        self.pre = nn.Sequential(
            Conv(3, 64, 7, 2, bn=True, relu=True),
            Residual(64, 128),
            nn.MaxPool2d(2, 2),
            Residual(128, 128),
            Residual(128, inp_dim),
        )
        # Upstream wraps each hourglass in a 1-element Sequential (keys `hgs.<i>.0.`).
        self.hgs = nn.ModuleList(
            nn.Sequential(Hourglass(HOURGLASS_DEPTH, inp_dim, increase)) for _ in range(nstack)
        )
        self.features = nn.ModuleList(
            nn.Sequential(Residual(inp_dim, inp_dim), Conv(inp_dim, inp_dim, 1, bn=True, relu=True))
            for _ in range(nstack)
        )
        self.outs = nn.ModuleList(
            Conv(inp_dim, oup_dim, 1, relu=False, bn=False) for _ in range(nstack)
        )
        self.merge_features = nn.ModuleList(Merge(inp_dim, inp_dim) for _ in range(nstack - 1))
        self.merge_preds = nn.ModuleList(Merge(oup_dim, inp_dim) for _ in range(nstack - 1))

    def forward(self, imgs: Tensor) -> Tensor:
        x = self.pre(imgs.permute(0, 3, 1, 2))
        preds_per_stack: list[Tensor] = []
        for i in range(self.nstack):
            feature = self.features[i](self.hgs[i](x))
            preds = self.outs[i](feature)
            preds_per_stack.append(preds)
            if i < self.nstack - 1:
                # Same association as upstream: (x + merged preds) + merged features.
                x = x + self.merge_preds[i](preds) + self.merge_features[i](feature)
        return torch.stack(preds_per_stack, 1)
