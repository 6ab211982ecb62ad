"""Ahead-of-time compilation of the corner-pool kernels to PTX, with no GPU present.

A TensorRT ``@trtp.aot_impl`` returns ``(kernel_name, ptx, KernelLaunchParams, SymIntExprs)``
(its documentation: "Presently, only PTX is supported"); TensorRT embeds the kernel in the
engine and launches it with the arguments *input pointers, then the extra int32 args, then output
pointers* - here ``(x, nc, h, w, y)``.
``compile_ptx`` returns everything that needs, e.g. inside the plugin (``inp`` its TensorDesc)::

    k = compile_ptx("TopPool", "fp16" if inp.dtype == trt.float16 else "fp32")
    params = trtp.KernelLaunchParams()
    params.grid_x = k.launch_grid(inp.shape_expr)[0]  # symbolic: ShapeExpr arithmetic
    params.block_x = k.block_x
    params.shared_mem = k.shared_mem
    extra = trtp.SymIntExprs.from_tuple([trtp.SymInt32(e) for e in k.scalar_args(inp.shape_expr)])
    return k.kernel_name.encode(), k.ptx.encode(), params, extra

Two things differ from what ``triton.compile`` hands back, both so that TensorRT can launch it:

* Triton (>= 3.3) appends hidden ``global_scratch`` / ``profile_scratch`` pointer parameters
  to every kernel. TensorRT passes only inputs, extra args and outputs, so the PTX entry would
  declare more parameters than the launch supplies. Our kernels never use scratch memory
  (checked: sizes 0, parameters unreferenced), so the declarations are removed.
* The PTX ISA version defaults to ``DEFAULT_PTX_VERSION`` (8.0, CUDA 12.0), not the newest the
  bundled ptxas knows (9.4 for sm_90 in Triton 3.9), so drivers older than that ptxas can still
  JIT the PTX. Pass ``ptx_version=None`` for Triton's choice.

Triton names sm_90 and newer with the arch-specific suffix (``.target sm_90a``): such PTX runs
on that architecture only, as TensorRT engines do anyway.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget

from hgdeploy.plugins import triton_kernels
from hgdeploy.plugins.triton_kernels import ARG_NAMES, Blocks, Dim

#: PTX ISA 8.0 (CUDA 12.0): the oldest that knows sm_90a; everything the kernels use is older.
DEFAULT_PTX_VERSION = 80
DTYPES: tuple[str, ...] = ("fp32", "fp16")
_ENTRY = re.compile(r"\.visible\s+\.entry\s+(\w+)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class CompiledCornerPool:
    """One direction's kernel compiled for one dtype and GPU architecture."""

    direction_name: str
    dtype: str  # "fp32" | "fp16"
    arch: int  # compute capability, e.g. 90
    kernel_name: str  # the PTX .entry name
    ptx: str
    num_warps: int
    shared_mem: int  # dynamic shared memory bytes the launch must provide
    signature: dict[str, str]  # runtime parameters in launch order -> Triton type
    constexprs: dict[str, int | bool]
    blocks: Blocks
    triton_version: str

    @property
    def block_x(self) -> int:
        """Threads per block (Triton launches ``num_warps * 32`` threads, 1-D)."""
        return self.num_warps * 32

    @property
    def scalar_arg_names(self) -> tuple[str, ...]:
        """The int32 parameters between the pointers (TensorRT's extra args), in order."""
        return tuple(name for name, kind in self.signature.items() if kind == "i32")

    def launch_grid(self, shape: tuple[Dim, Dim, Dim, Dim]) -> tuple[Dim]:
        """1-D grid for an NCHW shape; ints, or ``trtp`` ShapeExprs for a symbolic grid."""
        return triton_kernels.launch_grid(self.direction_name, shape, self.blocks)

    def scalar_args(self, shape: tuple[Dim, Dim, Dim, Dim]) -> tuple[Dim, Dim, Dim]:
        """Values of ``scalar_arg_names`` for an NCHW shape (ints or ShapeExprs)."""
        return triton_kernels.scalar_args(shape)


@functools.lru_cache(maxsize=None)
def compile_ptx(
    direction_name: str,
    dtype: str = "fp32",
    arch: int = 90,
    blocks: Blocks | None = None,
    ptx_version: int | None = DEFAULT_PTX_VERSION,
) -> CompiledCornerPool:
    """Compile ``direction_name``'s kernel for ``dtype`` on ``sm_<arch>``; needs no GPU."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    spec = triton_kernels.kernels_module(interpret=False).kernel_spec(direction_name, blocks)
    signature = _signature(dtype)
    source = triton.compiler.ASTSource(
        fn=spec.fn,
        signature={**signature, **{name: "constexpr" for name in spec.constexprs}},
        constexprs=spec.constexprs,
    )
    options = {"num_warps": spec.blocks.num_warps, "enable_fp_fusion": False}
    if ptx_version is not None:
        options["ptx_version"] = ptx_version
    with triton.knobs.compilation.scope():
        # No .loc/.file lines: the PTX (and the engine) then doesn't depend on the checkout path.
        triton.knobs.compilation.disable_line_info = True
        kernel = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    meta = kernel.metadata
    return CompiledCornerPool(
        direction_name=direction_name,
        dtype=dtype,
        arch=arch,
        kernel_name=meta.name,
        ptx=_drop_scratch_params(kernel.asm["ptx"], meta, len(signature)),
        num_warps=meta.num_warps,
        shared_mem=meta.shared,
        signature=signature,
        constexprs=spec.constexprs,
        blocks=spec.blocks,
        triton_version=triton.__version__,
    )


def entry_params(ptx: str) -> tuple[str, list[str]]:
    """The ``.entry`` name and its parameter declarations (one string each) of a PTX module."""
    match = _ENTRY.search(ptx)
    if match is None:
        raise ValueError("no .visible .entry in the PTX")
    params = [p.strip() for p in match.group(2).split(",") if p.strip()]
    return match.group(1), params


def assemble_cubin(compiled: CompiledCornerPool) -> bytes:
    """Assemble the (scratch-free) PTX with Triton's bundled ptxas: proof that the edited PTX is
    valid. Not for ``aot_impl``, which is documented to take PTX only."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    ptxas = get_ptxas(compiled.arch).path
    with tempfile.TemporaryDirectory() as tmp:
        src, out = Path(tmp, "kernel.ptx"), Path(tmp, "kernel.cubin")
        src.write_text(compiled.ptx)
        gpu = f"--gpu-name={sm_arch_from_capability(compiled.arch)}"
        result = subprocess.run(
            [ptxas, gpu, str(src), "-o", str(out)], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RuntimeError(f"ptxas failed ({result.returncode}):\n{result.stderr}")
        return out.read_bytes()


def _signature(dtype: str) -> dict[str, str]:
    kinds = {"x_ptr": f"*{dtype}", "y_ptr": f"*{dtype}"}
    return {name: kinds.get(name, "i32") for name in ARG_NAMES}


def _drop_scratch_params(ptx: str, meta: object, n_params: int) -> str:
    """Drop Triton's hidden trailing scratch pointers from the entry, once shown to be unused."""
    name, params = entry_params(ptx)
    extra = range(n_params, len(params))
    if not extra:
        return ptx
    scratch = getattr(meta, "global_scratch_size", 0) + getattr(meta, "profile_scratch_size", 0)
    used = [i for i in extra if ptx.count(f"{name}_param_{i}") > 1]
    if scratch or used or len(extra) > 2:
        raise RuntimeError(
            f"{name}: {len(extra)} hidden parameters are in use (scratch {scratch} bytes); "
            "a TensorRT launch could not supply them"
        )
    kept = ",\n\t".join(params[:n_params])
    match = _ENTRY.search(ptx)
    assert match is not None
    return f"{ptx[: match.start(2)]}\n\t{kept}\n{ptx[match.end(2) :]}"
