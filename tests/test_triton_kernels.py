"""Triton corner-pool kernels: exact against the torch reference, and AOT-compilable without a GPU.

The kernels run on Triton's CPU interpreter through ``kernels_module(interpret=True)``, which
works whatever ``TRITON_INTERPRET`` was when Triton or the kernels were first imported in this
pytest process (``@triton.jit`` reads it at decoration time), so this module sets no environment.
The interpreter scans each tile element by element in Python: tensors stay small, and the long
scan axis uses narrow tiles.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import torch

from hgdeploy.models.corner_pool import DIRECTIONS, corner_pool_reference
from hgdeploy.plugins import triton_kernels
from hgdeploy.plugins.aot import DTYPES, assemble_cubin, compile_ptx, entry_params
from hgdeploy.plugins.triton_kernels import Blocks, launch_grid, scalar_args

NAMES = sorted(DIRECTIONS)
TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16}
SMALL_SHAPES = [(1, 1, 1, 1), (2, 3, 1, 7), (1, 2, 7, 5), (1, 1, 128, 128)]
NARROW = Blocks(scan=64, across=4)  # 1031 = 16 * 64 + 7: 17 steps, the last one partial


@pytest.fixture(scope="module")
def interpreted():
    return triton_kernels.kernels_module(interpret=True)


def _check(kernels, x: torch.Tensor, name: str, blocks: Blocks | None = None) -> None:
    got = kernels.corner_pool_triton(x, name, blocks=blocks)
    want = corner_pool_reference(x, DIRECTIONS[name])
    assert got.dtype == x.dtype and torch.equal(got, want), f"{name} {tuple(x.shape)} {x.dtype}"


def _randn(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matches_reference_exactly(interpreted, shape, name, dtype) -> None:
    _check(interpreted, _randn(shape, TORCH_DTYPES[dtype]), name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_long_scan_axis_is_chunked(interpreted, name, dtype) -> None:
    axis = DIRECTIONS[name].axis
    shape = (1, 1, 1031, 3) if axis == 2 else (1, 3, 1, 1031)
    _check(interpreted, _randn(shape, TORCH_DTYPES[dtype], seed=1), name, NARROW)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_ties_infinities_and_extremes(interpreted, name, dtype) -> None:
    torch_dtype = TORCH_DTYPES[dtype]
    big = torch.finfo(torch_dtype).max
    pool = torch.tensor([-float("inf"), -big, -1.0, 0.0, 1.0, 1.0, big, float("inf")])
    index = torch.randint(len(pool), (2, 2, 37, 21), generator=torch.Generator().manual_seed(2))
    x = pool[index].to(torch_dtype)
    x[0, 0] = -float("inf")  # a whole plane of -inf stays -inf
    _check(interpreted, x, name, Blocks(scan=16, across=8))


@pytest.mark.parametrize("name", NAMES)
def test_nan_propagates_like_torch_cummax(interpreted, name) -> None:
    x = _randn((1, 2, 19, 23), torch.float32, seed=3)
    x[0, 0, 5, 7] = float("nan")
    x[0, 1, 17, 2] = float("nan")
    got = interpreted.corner_pool_triton(x, name, blocks=Blocks(scan=4, across=4))
    want = corner_pool_reference(x, DIRECTIONS[name])
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)


def test_out_argument_and_non_contiguous_input(interpreted) -> None:
    x = _randn((1, 2, 6, 9), torch.float32).transpose(2, 3)  # (1, 2, 9, 6), not contiguous
    out = torch.empty(x.shape)
    got = interpreted.corner_pool_triton(x, "TopPool", out=out)
    assert got is out
    assert torch.equal(out, corner_pool_reference(x, DIRECTIONS["TopPool"]))


def test_rejects_unsupported_inputs(interpreted) -> None:
    with pytest.raises(ValueError, match="unknown corner-pool direction"):
        interpreted.corner_pool_triton(torch.zeros(1, 1, 2, 2), "UpPool")
    with pytest.raises(ValueError, match="NCHW"):
        interpreted.corner_pool_triton(torch.zeros(2, 2, 2), "TopPool")
    with pytest.raises(ValueError, match="float32 or float16"):
        interpreted.corner_pool_triton(torch.zeros(1, 1, 2, 2, dtype=torch.float64), "TopPool")
    with pytest.raises(ValueError, match="out must be"):
        interpreted.corner_pool_triton(torch.zeros(1, 1, 2, 2), "TopPool", torch.empty(1, 1, 2, 3))
    with pytest.raises(ValueError, match="power of two"):
        Blocks(scan=24, across=4)
    empty = torch.zeros(0, 3, 4, 5)
    assert interpreted.corner_pool_triton(empty, "LeftPool").shape == empty.shape


class _LeftOnly:
    """An integer that supports only ``self <op> int|_LeftOnly``, like tensorrt.plugin.ShapeExpr."""

    def __init__(self, value: int) -> None:
        self.value = value

    def _wrap(self, other: _LeftOnly | int, op) -> _LeftOnly:
        return _LeftOnly(op(self.value, other.value if isinstance(other, _LeftOnly) else other))

    def __add__(self, other):
        return self._wrap(other, int.__add__)

    def __mul__(self, other):
        return self._wrap(other, int.__mul__)

    def __floordiv__(self, other):
        return self._wrap(other, int.__floordiv__)


@pytest.mark.parametrize("name", NAMES)
def test_launch_grid_covers_the_tensor_and_works_on_shape_expressions(name) -> None:
    shape = (2, 3, 45, 70)
    blocks = triton_kernels.kernel_spec(name).blocks
    (grid,) = launch_grid(name, shape)
    n, c, h, w = shape
    if DIRECTIONS[name].axis == 2:
        assert grid == n * c * -(-w // blocks.across)
    else:
        assert grid == -(-n * c * h // blocks.across)
    (symbolic,) = launch_grid(name, tuple(_LeftOnly(d) for d in shape))
    assert symbolic.value == grid
    assert [e.value for e in scalar_args(tuple(_LeftOnly(d) for d in shape))] == [n * c, h, w]


@pytest.mark.parametrize("arch", [90, 80])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_aot_ptx_without_gpu(name, dtype, arch) -> None:
    compiled = compile_ptx(name, dtype, arch=arch)
    axis_kernel = "corner_pool_h_kernel" if DIRECTIONS[name].axis == 2 else "corner_pool_w_kernel"
    assert compiled.kernel_name == axis_kernel
    assert re.search(rf"^\.target sm_{arch}a?$", compiled.ptx, re.MULTILINE)
    entry, params = entry_params(compiled.ptx)
    assert entry == compiled.kernel_name
    # TensorRT launches (input, extra int32 args, output): no hidden scratch pointers.
    assert len(params) == len(compiled.signature) == 5
    assert [".u64" in p for p in params] == [True, False, False, False, True]
    assert compiled.scalar_arg_names == ("nc", "h", "w")
    assert compiled.block_x == 32 * compiled.num_warps
    assert f".reqntid {compiled.block_x}" in compiled.ptx
    assert compiled.shared_mem >= 0
    assert compiled.constexprs["REVERSE"] is DIRECTIONS[name].reverse
    assert assemble_cubin(compiled)[:4] == b"\x7fELF"  # the edited PTX still assembles


def test_aot_compiles_inside_an_interpreting_process() -> None:
    """Triton's own @jit helpers are interpreted under TRITON_INTERPRET=1; kernels avoid them."""
    code = (
        "from hgdeploy.plugins.aot import compile_ptx, entry_params;"
        "k = compile_ptx('LeftPool', 'fp16', 90);"
        "print(len(entry_params(k.ptx)[1]))"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "5"


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", NAMES)
def test_gpu_launch_matches_reference(name, dtype) -> None:
    kernels = triton_kernels.kernels_module(interpret=False)
    for shape in [(4, 256, 128, 128), (1, 2, 1031, 517), (13, 3, 1, 1)]:
        _check(kernels, _randn(shape, TORCH_DTYPES[dtype]).cuda(), name)
