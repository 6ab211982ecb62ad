"""Corner pooling (CornerNet's Top/Left/Bottom/Right pools) as torch custom ops.

Upstream (`_cpools`) semantics, for NCHW input:

* TopPool:    out[..., i, :] = max(x[..., j, :] for j >= i)   (scan rows bottom-up)
* BottomPool: out[..., i, :] = max(x[..., j, :] for j <= i)   (scan rows top-down)
* LeftPool:   out[..., :, i] = max(x[..., :, j] for j >= i)   (scan columns right-to-left)
* RightPool:  out[..., :, i] = max(x[..., :, j] for j <= i)   (scan columns left-to-right)

Each pool is registered as a ``torch.library`` custom op (``hgdeploy::top_pool`` ...) so that
the exporter sees one opaque node per pool and can map it to a TensorRT plugin op. The eager
implementation is a cumulative max, which is exact (max never rounds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

OP_NAMESPACE = "hgdeploy"


@dataclass(frozen=True)
class PoolDirection:
    """One corner-pool direction: which axis it scans and from which end."""

    name: str  # ONNX op_type and TensorRT plugin name, e.g. "TopPool"
    op_name: str  # torch custom-op name inside OP_NAMESPACE, e.g. "top_pool"
    axis: int  # 2 = H (rows), 3 = W (columns) of an NCHW tensor
    reverse: bool  # True: out[i] = max over j >= i (a suffix max)


DIRECTIONS: dict[str, PoolDirection] = {
    d.name: d
    for d in (
        PoolDirection("TopPool", "top_pool", axis=2, reverse=True),
        PoolDirection("BottomPool", "bottom_pool", axis=2, reverse=False),
        PoolDirection("LeftPool", "left_pool", axis=3, reverse=True),
        PoolDirection("RightPool", "right_pool", axis=3, reverse=False),
    )
}


def corner_pool_reference(x: Tensor, direction: PoolDirection) -> Tensor:
    """Cumulative max along the direction's axis; the eager implementation of every pool."""
    if x.dim() != 4:
        raise ValueError(f"{direction.name} expects an NCHW tensor, got shape {tuple(x.shape)}")
    if direction.reverse:
        return x.flip(direction.axis).cummax(direction.axis).values.flip(direction.axis)
    return x.cummax(direction.axis).values


def _register(direction: PoolDirection) -> Callable[[Tensor], Tensor]:
    qualified = f"{OP_NAMESPACE}::{direction.op_name}"

    def impl(x: Tensor) -> Tensor:
        return corner_pool_reference(x, direction)

    impl.__name__ = direction.op_name
    op = torch.library.custom_op(qualified, mutates_args=())(impl)

    @op.register_fake
    def _fake(x: Tensor) -> Tensor:
        return torch.empty_like(x)

    return op


CUSTOM_OPS: dict[str, Callable[[Tensor], Tensor]] = {
    name: _register(direction) for name, direction in DIRECTIONS.items()
}


def torch_op(direction_name: str) -> torch._ops.OpOverload:
    """The registered ``torch.ops.hgdeploy.<op>.default`` overload (what export graphs contain)."""
    return getattr(getattr(torch.ops, OP_NAMESPACE), DIRECTIONS[direction_name].op_name).default


class _CornerPool(nn.Module):
    direction: PoolDirection

    def forward(self, x: Tensor) -> Tensor:
        return CUSTOM_OPS[self.direction.name](x)


class TopPool(_CornerPool):
    direction = DIRECTIONS["TopPool"]


class BottomPool(_CornerPool):
    direction = DIRECTIONS["BottomPool"]


class LeftPool(_CornerPool):
    direction = DIRECTIONS["LeftPool"]


class RightPool(_CornerPool):
    direction = DIRECTIONS["RightPool"]
