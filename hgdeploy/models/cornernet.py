"""CornerNet, CornerNet-Squeeze and CornerNet-Saccade eager reference models.

In deployment mode `forward(image)` returns the *last* stack's raw heads (tl_heat, br_heat,
tl_tag, br_tag, tl_off, br_off) and, for Saccade, the last stack's three sigmoid attention maps:
exactly the tensors upstream's test mode feeds into its decoder. `detect` adds that decoder.
Earlier stacks only matter for training losses, so their heads are evaluated only by
`every_stack` (upstream's `_train`), which training stand-ins use.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from hgdeploy.base.zoo import DecodeSettings
from hgdeploy.models.corner_pool import BottomPool, LeftPool, RightPool, TopPool
from hgdeploy.models.cornernet_blocks import (
    Convolution,
    CornerPoolModule,
    FireModule,
    HourglassLayers,
    HourglassModule,
    NearestUpsample,
    Residual,
    SaccadeModule,
    StackedHourglass,
)

HEAT_BIAS_INIT = -2.19  # upstream's focal-loss prior: sigmoid(-2.19) ~= 0.1


def _prediction_head(out_dim: int, k: int = 3, inp_dim: int = 256) -> nn.Sequential:
    """conv(k) to 256 channels + ReLU, then a 1x1 projection (upstream `_pred_mod`)."""
    return nn.Sequential(
        Convolution(k, inp_dim, 256, with_bn=False), nn.Conv2d(256, out_dim, (1, 1))
    )


class CornerNetHeads(nn.Module):
    """A stacked-hourglass backbone followed by per-stack corner pooling and prediction heads."""

    def __init__(self, hg: StackedHourglass, stacks: int, head_kernel: int, classes: int = 80):
        super().__init__()
        self.hg = hg
        self.tl_modules = nn.ModuleList(
            [CornerPoolModule(256, TopPool, LeftPool) for _ in range(stacks)]
        )
        self.br_modules = nn.ModuleList(
            [CornerPoolModule(256, BottomPool, RightPool) for _ in range(stacks)]
        )
        self.tl_heats = nn.ModuleList(
            [_prediction_head(classes, head_kernel) for _ in range(stacks)]
        )
        self.br_heats = nn.ModuleList(
            [_prediction_head(classes, head_kernel) for _ in range(stacks)]
        )
        for heat in (*self.tl_heats, *self.br_heats):
            nn.init.constant_(heat[-1].bias, HEAT_BIAS_INIT)
        self.tl_tags = nn.ModuleList([_prediction_head(1, head_kernel) for _ in range(stacks)])
        self.br_tags = nn.ModuleList([_prediction_head(1, head_kernel) for _ in range(stacks)])
        self.tl_offs = nn.ModuleList([_prediction_head(2, head_kernel) for _ in range(stacks)])
        self.br_offs = nn.ModuleList([_prediction_head(2, head_kernel) for _ in range(stacks)])

    def focal_heads(self) -> list[nn.Sequential]:
        """The heads trained with the focal loss, whose last bias carries its prior."""
        return [*self.tl_heats, *self.br_heats]

    def restore_focal_prior(self) -> None:
        """Upstream's bias prior (sigmoid = 0.1) on every focal-loss head, for weights that
        replaced it (the synthetic initialisation) before training starts."""
        for head in self.focal_heads():
            nn.init.constant_(head[-1].bias, HEAT_BIAS_INIT)

    def _stack_heads(self, stack: int, feature: Tensor) -> tuple[Tensor, ...]:
        tl = self.tl_modules[stack](feature)
        br = self.br_modules[stack](feature)
        return (
            self.tl_heats[stack](tl),
            self.br_heats[stack](br),
            self.tl_tags[stack](tl),
            self.br_tags[stack](br),
            self.tl_offs[stack](tl),
            self.br_offs[stack](br),
        )

    def _last_stack_heads(self, feature: Tensor) -> tuple[Tensor, ...]:
        return self._stack_heads(-1, feature)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        features, _ = self.hg(image)
        return self._last_stack_heads(features[-1])

    def every_stack(self, image: Tensor) -> list[tuple[Tensor, ...]]:
        """Each stack's six raw heads, first stack first (upstream `_train`): the training
        losses supervise every stack, deployment only reads the last."""
        features, _ = self.hg(image)
        return [self._stack_heads(stack, feature) for stack, feature in enumerate(features)]

    @torch.no_grad()
    def detect(self, image: Tensor, settings: DecodeSettings) -> Tensor:
        """Upstream test mode: heads -> (B, num_dets, 8) detections in heatmap coordinates."""
        from hgdeploy.models.decode import decode_with

        heads = self.forward(image)
        return decode_with(settings, heads[:6])


def _cornernet_pre() -> nn.Sequential:
    return nn.Sequential(Convolution(7, 3, 128, stride=2), Residual(128, 256, stride=2))


class CornerNet(CornerNetHeads):
    """CornerNet with the Hourglass-104 backbone: 2 stacks, 5 levels, heads at 1/4 resolution."""

    def __init__(self) -> None:
        layers = HourglassLayers(Residual, unpool=lambda dim: NearestUpsample())
        hgs = nn.ModuleList(
            [
                HourglassModule(5, [256, 256, 384, 384, 384, 512], [2, 2, 2, 2, 2, 4], layers)
                for _ in range(2)
            ]
        )
        super().__init__(StackedHourglass(_cornernet_pre(), hgs), stacks=2, head_kernel=3)


class CornerNetSqueeze(CornerNetHeads):
    """CornerNet-Squeeze: fire modules, transposed-conv upsampling, heads at 1/8 resolution."""

    def __init__(self) -> None:
        layers = HourglassLayers(
            FireModule,
            unpool=lambda dim: nn.ConvTranspose2d(dim, dim, kernel_size=4, stride=2, padding=1),
        )
        pre = nn.Sequential(
            Convolution(7, 3, 128, stride=2),
            Residual(128, 256, stride=2),
            Residual(256, 256, stride=2),
        )
        hgs = nn.ModuleList(
            [
                HourglassModule(4, [256, 256, 384, 384, 512], [2, 2, 2, 2, 4], layers)
                for _ in range(2)
            ]
        )
        super().__init__(StackedHourglass(pre, hgs), stacks=2, head_kernel=1)


class CornerNetSaccade(CornerNetHeads):
    """CornerNet-Saccade: 3 shallow stacks plus attention maps at 1/16, 1/8 and 1/4 resolution."""

    def __init__(self) -> None:
        stacks = 3
        layers = HourglassLayers(Residual, unpool=lambda dim: NearestUpsample())
        hgs = nn.ModuleList(
            [SaccadeModule(3, [256, 384, 384, 512], [1, 1, 1, 1], layers) for _ in range(stacks)]
        )
        super().__init__(StackedHourglass(_cornernet_pre(), hgs), stacks=stacks, head_kernel=3)
        self.att_modules = nn.ModuleList(
            [
                nn.ModuleList([_prediction_head(1, inp_dim=d) for d in (384, 384, 256)])
                for _ in range(stacks)
            ]
        )
        self.restore_focal_prior()

    def focal_heads(self) -> list[nn.Sequential]:
        return super().focal_heads() + [att for stack in self.att_modules for att in stack]

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        features, levels = self.hg(image)
        atts = tuple(
            torch.sigmoid(att(level)) for att, level in zip(self.att_modules[-1], levels[-1])
        )
        return self._last_stack_heads(features[-1]) + atts

    def every_stack(self, image: Tensor) -> list[tuple[Tensor, ...]]:
        """Each stack's six raw heads and its three raw attention logits (coarsest first),
        as upstream's `_train`: every stack's attention maps are supervised."""
        features, levels = self.hg(image)
        return [
            self._stack_heads(stack, feature)
            + tuple(att(level) for att, level in zip(self.att_modules[stack], levels[stack]))
            for stack, feature in enumerate(features)
        ]
