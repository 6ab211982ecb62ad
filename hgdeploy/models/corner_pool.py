"""Corner pooling (CornerNet's Top/Left/Bottom/Right pools) as torch custom ops.

Upstream (`_cpools`) semantics, for NCHW input:

* TopPool:    out[..., i, :] = max(x[..., j, :] for j >= i)   (scan rows bottom-up)
* BottomPool: out[..., i, :] = max(x[..., j, :] for j <= i)   (scan rows top-down)
* LeftPool:   out[..., :, i] = max(x[..., :, j] for j >= i)   (scan columns right-to-left)
* RightPool:  out[..., :, i] = max(x[..., :, j] for j <= i)   (scan columns left-to-right)

Each pool is registered as a ``torch.library`` custom op (``hgdeploy::top_pool`` ...) so that
the exporter sees one opaque node per pool and can map it to a TensorRT plugin op. The eager
implementation is a cumulative max, which is exact (max never rounds).

The backward (for training stand-ins) is upstream's: each output's gradient goes to the one
input element its running max came from; on ties that is the element met first in scan order
(upstream's C++ backward updates the arg-max only on a strict `>`), not torch.cummax's latest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def running_argmax(x: Tensor, direction: PoolDirection) -> Tensor:
    """For every output element, the index along the pool's axis of the input element its max
    came from: the first one in scan order that reached the running max (upstream's tie rule)."""
    axis, length = direction.axis, x.shape[direction.axis]
    scan = x.flip(axis) if direction.reverse else x
    running = scan.cummax(axis).values
    rises = torch.ones_like(scan, dtype=torch.bool)  # where the running max grows (strictly)
    rises.narrow(axis, 1, length - 1).copy_(
        running.narrow(axis, 1, length - 1) > running.narrow(axis, 0, length - 1)
    )
    shape = [length if dim == axis else 1 for dim in range(x.dim())]
    positions = torch.arange(length, device=x.device).view(shape)
    source = torch.where(rises, positions, 0).cummax(axis).values  # scan positions
    if direction.reverse:
        return (length - 1 - source).flip(axis)
    return source


def corner_pool_backward(x: Tensor, grad_output: Tensor, direction: PoolDirection) -> Tensor:
    """d(loss)/dx: each output's gradient added onto its running arg-max element."""
    return torch.zeros_like(grad_output).scatter_add_(
        direction.axis, running_argmax(x, direction), grad_output
    )


def _register(direction: PoolDirection) -> Callable[[Tensor], Tensor]:
    qualified = f"{OP_NAMESPACE}::{direction.op_name}"

    def impl(x: Tensor) -> Tensor:
        return corner_pool_reference(x, direction)

    impl.__name__ = direction.op_name
    op = torch.library.custom_op(qualified, mutates_args=())(impl)

    @op.register_fake
    def _fake(x: Tensor) -> Tensor:
        return torch.empty_like(x)

    def _save_input(ctx: Any, inputs: tuple[Tensor], output: Tensor) -> None:
        ctx.save_for_backward(inputs[0])

    def _backward(ctx: Any, grad_output: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return corner_pool_backward(x, grad_output, direction)

    op.register_autograd(_backward, setup_context=_save_input)
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
