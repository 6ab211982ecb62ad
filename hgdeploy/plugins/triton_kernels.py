"""Triton kernels for CornerNet's corner pools: a max-scan along H or W of an NCHW tensor.

Two kernels cover the four directions; ``REVERSE`` picks the scan's end (see ``DIRECTIONS``):

* ``corner_pool_h_kernel`` (TopPool, BottomPool) scans rows. A program owns ``BLOCK_ACROSS``
  adjacent columns of one (n, c) plane (contiguous in memory, so loads are coalesced) and walks
  the plane ``BLOCK_SCAN`` rows at a time.
* ``corner_pool_w_kernel`` (LeftPool, RightPool) scans columns. A program owns ``BLOCK_ACROSS``
  rows of the (N*C*H, W) matrix and walks them ``BLOCK_SCAN`` columns at a time.

Each step loads one ``[BLOCK_SCAN, BLOCK_ACROSS]`` tile (masked, padded with -inf), scans it
with ``tl.associative_scan(..., reverse=REVERSE)`` and folds in the running max carried from the
previous steps, so registers stay bounded for any H or W and one launch handles every size.

Both kernels take the same arguments, in the order a TensorRT ``aot_impl`` launches them
(input pointers, then the int32 "extra args", then output pointers)::

    kernel[grid](x_ptr, nc, h, w, y_ptr, REVERSE=..., BLOCK_SCAN=..., BLOCK_ACROSS=...)

with ``nc = N*C`` and a 1-D grid from ``launch_grid`` (a function of N, C, H, W only).

Exactness and special values: max never rounds, so results equal ``corner_pool_reference``
(``torch.equal``); -inf and +-inf behave as in ``torch.cummax``. NaN propagates
(``PropagateNan.ALL``, ``max.NaN`` in PTX): every output at or after a NaN in scan order is NaN,
as with ``torch.cummax``. The one bit-level freedom: where +0.0 and -0.0 tie, either sign may
come out (they compare equal).

Constraints kept on purpose: the kernels call no Triton standard-library ``@jit`` helper (e.g.
``tl.cdiv``), because under ``TRITON_INTERPRET=1`` those are built as interpreted functions and
AOT compilation in such a process would fail; and they avoid ``bool_tensor & bool_scalar``,
which the Triton 3.9 interpreter turns into an int32 mask that ``tl.load`` rejects.
``kernels_module(interpret=...)`` gives the kernels in either mode whatever the environment
was at import (CPU tensors run under the interpreter).
"""

from __future__ import annotations

import functools
import importlib.util
import sys
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

import torch
import triton
import triton.language as tl

from hgdeploy.models.corner_pool import DIRECTIONS, PoolDirection

#: The kernels' runtime arguments, in launch order (pointers and int32 scalars).
ARG_NAMES: tuple[str, ...] = ("x_ptr", "nc", "h", "w", "y_ptr")
#: The int32 scalars between the input and the output pointer (TensorRT's "extra args").
SCALAR_ARG_NAMES: tuple[str, ...] = ("nc", "h", "w")
#: The kernels' compile-time arguments.
CONSTEXPR_NAMES: tuple[str, ...] = ("REVERSE", "BLOCK_SCAN", "BLOCK_ACROSS")
#: Largest element count the int32 scalar arguments and offsets are written for.
MAX_NUMEL = 2**31 - 1

#: A dimension: int, or anything with ``dim + int``, ``dim * dim``, ``dim // int`` (trtp.ShapeExpr).
Dim = TypeVar("Dim")


@triton.jit
def _max_nan(a, b):
    """Max that propagates NaN, like torch.cummax (plain tl.maximum would drop it on the GPU)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def corner_pool_h_kernel(
    x_ptr,
    nc,
    h,
    w,
    y_ptr,
    REVERSE: tl.constexpr,
    BLOCK_SCAN: tl.constexpr,
    BLOCK_ACROSS: tl.constexpr,
):
    """Max-scan along H; program ``pid`` owns one column tile of plane ``pid // col_tiles``."""
    pid = tl.program_id(0)
    col_tiles = (w + BLOCK_ACROSS - 1) // BLOCK_ACROSS
    plane = pid // col_tiles
    cols = (pid % col_tiles) * BLOCK_ACROSS + tl.arange(0, BLOCK_ACROSS)
    col_ok = cols < tl.where(plane < nc, w, 0)  # no `& scalar`: see the module docstring
    base = plane.to(tl.int64) * h * w
    steps = tl.arange(0, BLOCK_SCAN)
    carry = tl.full([BLOCK_ACROSS], float("-inf"), x_ptr.dtype.element_ty)
    n_chunks = (h + BLOCK_SCAN - 1) // BLOCK_SCAN
    for k in range(n_chunks):
        if REVERSE:
            chunk = n_chunks - 1 - k
        else:
            chunk = k
        rows = chunk * BLOCK_SCAN + steps
        offs = base + rows[:, None] * w + cols[None, :]
        mask = (rows[:, None] < h) & col_ok[None, :]
        tile = tl.load(x_ptr + offs, mask=mask, other=float("-inf"))
        out = _max_nan(tl.associative_scan(tile, 0, _max_nan, reverse=REVERSE), carry[None, :])
        tl.store(y_ptr + offs, out, mask=mask)
        carry = tl.reduce(out, 0, _max_nan)


@triton.jit
def corner_pool_w_kernel(
    x_ptr,
    nc,
    h,
    w,
    y_ptr,
    REVERSE: tl.constexpr,
    BLOCK_SCAN: tl.constexpr,
    BLOCK_ACROSS: tl.constexpr,
):
    """Max-scan along W; program ``pid`` owns BLOCK_ACROSS rows of the (nc*h, w) matrix."""
    pid = tl.program_id(0)
    rows = pid * BLOCK_ACROSS + tl.arange(0, BLOCK_ACROSS)
    row_ok = rows < nc * h
    row_base = rows.to(tl.int64) * w
    steps = tl.arange(0, BLOCK_SCAN)
    carry = tl.full([BLOCK_ACROSS], float("-inf"), x_ptr.dtype.element_ty)
    n_chunks = (w + BLOCK_SCAN - 1) // BLOCK_SCAN
    for k in range(n_chunks):
        if REVERSE:
            chunk = n_chunks - 1 - k
        else:
            chunk = k
        cols = chunk * BLOCK_SCAN + steps
        offs = row_base[:, None] + cols[None, :]
        mask = row_ok[:, None] & (cols[None, :] < w)
        tile = tl.load(x_ptr + offs, mask=mask, other=float("-inf"))
        out = _max_nan(tl.associative_scan(tile, 1, _max_nan, reverse=REVERSE), carry[:, None])
        tl.store(y_ptr + offs, out, mask=mask)
        carry = tl.reduce(out, 1, _max_nan)


@dataclass(frozen=True)
class Blocks:
    """Tile of one scan step: ``scan`` elements along the pooled axis x ``across`` beside it."""

    scan: int
    across: int
    num_warps: int = 4

    def __post_init__(self) -> None:
        for name in ("scan", "across", "num_warps"):
            value = getattr(self, name)
            if value < 1 or value & (value - 1):
                raise ValueError(f"Blocks.{name} must be a power of two, got {value}")


#: Default tiles (1024 elements, 8 per thread at 4 warps). H: 64 contiguous columns x 16 rows;
#: W: 16 rows x 64 contiguous columns, so CornerNet-family widths (64, 128) take 1-2 steps.
DEFAULT_BLOCKS: dict[int, Blocks] = {2: Blocks(scan=16, across=64), 3: Blocks(scan=64, across=16)}


@dataclass(frozen=True)
class KernelSpec:
    """Everything needed to compile or launch one direction's kernel, besides the dtype."""

    direction: PoolDirection
    fn: Any  # the @triton.jit function (an InterpretedFunction under TRITON_INTERPRET=1)
    blocks: Blocks

    @property
    def constexprs(self) -> dict[str, int | bool]:
        """Compile-time arguments by name, as ``triton.compiler.ASTSource(constexprs=)`` takes."""
        return {
            "REVERSE": self.direction.reverse,
            "BLOCK_SCAN": self.blocks.scan,
            "BLOCK_ACROSS": self.blocks.across,
        }


def kernel_spec(direction_name: str, blocks: Blocks | None = None) -> KernelSpec:
    """The kernel, constexprs and tile for a direction name such as ``"TopPool"``."""
    direction = _direction(direction_name)
    fn = corner_pool_h_kernel if direction.axis == 2 else corner_pool_w_kernel
    return KernelSpec(direction, fn, blocks or DEFAULT_BLOCKS[direction.axis])


def scalar_args(shape: tuple[Dim, Dim, Dim, Dim]) -> tuple[Dim, Dim, Dim]:
    """The int32 arguments ``(nc, h, w)`` for an NCHW shape (ints or TensorRT shape expressions)."""
    n, c, h, w = shape
    return n * c, h, w


def launch_grid(
    direction_name: str, shape: tuple[Dim, Dim, Dim, Dim], blocks: Blocks | None = None
) -> tuple[Dim]:
    """The 1-D launch grid for an NCHW shape.

    Written with ``+``, ``*`` and ``//`` only, each with the dimension on the left, so passing
    ``tensorrt.plugin`` ``ShapeExpr``s (``inp.shape_expr``) yields the symbolic grid_x.
    """
    spec = kernel_spec(direction_name, blocks)
    n, c, h, w = shape
    if spec.direction.axis == 2:
        return (n * c * ((w + (spec.blocks.across - 1)) // spec.blocks.across),)
    return ((n * c * h + (spec.blocks.across - 1)) // spec.blocks.across,)


def corner_pool_triton(
    x: torch.Tensor,
    direction_name: str,
    out: torch.Tensor | None = None,
    blocks: Blocks | None = None,
) -> torch.Tensor:
    """Corner-pool ``x`` (NCHW, fp32/fp16) with the Triton kernel on ``x``'s device.

    CPU tensors need the interpreted kernels: ``kernels_module(interpret=True).corner_pool_triton``
    (or ``TRITON_INTERPRET=1`` set before this module is first imported).
    """
    _check_input(x, direction_name)
    x = x.contiguous()
    if out is None:
        out = torch.empty_like(x, memory_format=torch.contiguous_format)
    elif out.shape != x.shape or out.dtype != x.dtype or not out.is_contiguous():
        raise ValueError("out must be a contiguous tensor with the input's shape and dtype")
    if x.numel() == 0:
        return out
    spec = kernel_spec(direction_name, blocks)
    shape = tuple(x.shape)
    spec.fn[launch_grid(direction_name, shape, spec.blocks)](
        x,
        *scalar_args(shape),
        out,
        **spec.constexprs,
        num_warps=spec.blocks.num_warps,
        enable_fp_fusion=False,  # nothing to fuse; saying so silences Triton 3.9's warning
    )
    return out


def is_interpreted(fn: Any) -> bool:
    """Whether a ``@triton.jit`` object runs on Triton's CPU interpreter."""
    return not isinstance(fn, triton.runtime.JITFunction)


def kernels_module(interpret: bool) -> ModuleType:
    """This module with kernels built for the interpreter (``True``) or for the GPU compiler.

    ``@triton.jit`` reads ``TRITON_INTERPRET`` once, when this module is imported; AOT
    compilation needs real ``JITFunction``s and CPU tests need interpreted ones, whatever the
    environment was at import. A mismatch gets a private copy of the module, loaded once.
    """
    if is_interpreted(corner_pool_h_kernel) == interpret:
        return sys.modules[__name__]
    return _module_copy(interpret)


@functools.cache
def _module_copy(interpret: bool) -> ModuleType:
    spec = importlib.util.find_spec(__name__)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot locate {__name__} to load a copy of it")
    module = importlib.util.module_from_spec(spec)
    with triton.knobs.runtime.scope():
        triton.knobs.runtime.interpret = interpret
        spec.loader.exec_module(module)
    return module


def _direction(direction_name: str) -> PoolDirection:
    try:
        return DIRECTIONS[direction_name]
    except KeyError:
        raise ValueError(
            f"unknown corner-pool direction {direction_name!r}; "
            f"expected one of {sorted(DIRECTIONS)}"
        ) from None


def _check_input(x: torch.Tensor, direction_name: str) -> None:
    _direction(direction_name)
    if x.dim() != 4:
        raise ValueError(f"{direction_name} expects an NCHW tensor, got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float16):
        raise ValueError(f"{direction_name} kernels take float32 or float16, got {x.dtype}")
    if x.numel() > MAX_NUMEL:
        raise ValueError(f"{x.numel()} elements exceed the kernels' int32 limit {MAX_NUMEL}")
