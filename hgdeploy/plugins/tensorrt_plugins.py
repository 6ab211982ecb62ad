"""TensorRT 11 plugins for the four corner pools, through the ``tensorrt.plugin`` Python API.

Each pool becomes the plugin ``hgdeploy::<op_type>`` (version "1"), which is what TensorRT's ONNX
parser looks up for the exporter's nodes (op_type + ``plugin_namespace``/``plugin_version``; see
``hgdeploy.exporters.corner_pool_ops``). A plugin has four parts:

* ``@trtp.register``: the output has the input's shape and type (``x.like()``); rank 4, FP32/FP16.
* ``@trtp.autotune``: the supported I/O combinations, FP32->FP32 or FP16->FP16, LINEAR (NCHW).
* ``@trtp.aot_impl``: the Triton kernel compiled to PTX (``aot.compile_ptx``) for the GPU the
  engine is built on, with a launch grid and int32 arguments written as shape expressions, so
  one engine serves every shape its profile allows. TensorRT embeds the PTX in the engine, which
  then runs without Python (trtexec, C++).
* ``@trtp.impl``: the JIT fallback, a Python callback that launches the same kernel with
  ``corner_pool_triton`` on TensorRT's buffers and stream; it needs Python, torch and Triton
  wherever the engine runs.

Which one TensorRT's ONNX parser instantiates (``parser_implementation``): an INT attribute
``aot`` on the node (1: AOT, 0: JIT) decides; without it the network flags
``PREFER_AOT_PYTHON_PLUGINS``/``PREFER_JIT_PYTHON_PLUGINS`` do, and with neither the parse fails,
since both implementations are defined.

Everything TensorRT-specific is in ``_define_plugin``, which takes the ``tensorrt.plugin``
module as an argument; the rest is plain functions of plain values (tested on the CPU). TensorRT
and Triton are imported inside functions, so this module imports without either.

No ``from __future__ import annotations`` here, on purpose: ``tensorrt.plugin`` validates the
decorated functions' annotations as live classes (``issubclass(annotation, TensorDesc)``), and
postponed annotations would hand it strings.
"""

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import onnx

from hgdeploy.base.errors import HgDeployError
from hgdeploy.exporters.corner_pool_ops import (
    AOT_ATTRIBUTE,
    OP_TYPES,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
)

#: TensorRT ``DataType`` names the kernels take, and the kernel dtype each compiles as.
KERNEL_DTYPES: dict[str, str] = {"FLOAT": "fp32", "HALF": "fp16"}
#: The same types in ``trtp.AutoTuneCombination``'s grammar, in KERNEL_DTYPES order.
AUTOTUNE_DTYPES: tuple[str, ...] = ("FP32", "FP16")
FORMATS: tuple[str, ...] = ("LINEAR",)
#: Input and output share one type ("|" pairs them up) and the LINEAR (NCHW) format.
AUTOTUNE_COMBINATION: tuple[str, str] = (
    f"{'|'.join(AUTOTUNE_DTYPES)}, {'|'.join(AUTOTUNE_DTYPES)}",
    ", ".join([FORMATS[0]] * 2),
)
RANK = 4

#: GPU architectures (compute capability x 10) the AOT kernels compile for, each with the oldest
#: PTX ISA that knows its target (Triton 3.9's LLVM aborts the whole process, not raising, when
#: the ISA is too old; sm_101a fails in LLVM). All checked with Triton 3.9 without a GPU.
AOT_ARCHS: dict[int, int] = {
    75: 80,
    80: 80,
    86: 80,
    87: 80,
    89: 80,
    90: 80,
    100: 86,
    103: 88,
    110: 90,
    120: 87,
    121: 88,
}
DEFAULT_ARCH = 90

#: What ``parser_implementation`` returns; the node's INT attribute AOT_ATTRIBUTE picks it (1/0).
IMPLEMENTATIONS: tuple[str, ...] = ("aot", "jit")


def qualified_name(op_type: str) -> str:
    """``namespace::name`` of a pool's plugin; the name is the ONNX op_type, as the parser needs."""
    if op_type not in OP_TYPES:
        raise ValueError(f"unknown corner pool {op_type!r}; expected one of {OP_TYPES}")
    return f"{PLUGIN_NAMESPACE}::{op_type}"


def plugin_names() -> list[str]:
    """The four qualified plugin names, in OP_TYPES order."""
    return [qualified_name(op_type) for op_type in OP_TYPES]


def dtype_name(dtype: Any) -> str:
    """The enum name of a ``trt.DataType`` (``FLOAT``), from ``.name`` or ``str()``."""
    name = getattr(dtype, "name", None)
    return name if isinstance(name, str) else str(dtype).rsplit(".", 1)[-1]


def kernel_dtype(dtype: Any) -> str:
    """The kernel dtype ("fp32"/"fp16") for a TensorRT data type; ValueError for others."""
    name = dtype_name(dtype)
    if name not in KERNEL_DTYPES:
        raise ValueError(
            f"corner-pool plugins take {'/'.join(AUTOTUNE_DTYPES)} tensors, got {name}"
        )
    return KERNEL_DTYPES[name]


def supported_combinations() -> list[tuple[tuple[str, str], tuple[str, str]]]:
    """Every (input, output) type pair with its formats that AUTOTUNE_COMBINATION advertises."""
    return [((dtype, dtype), (FORMATS[0], FORMATS[0])) for dtype in AUTOTUNE_DTYPES]


def check_input(op_type: str, ndim: int, dtype: Any) -> None:
    """Reject what the kernels cannot run, at network construction rather than at launch."""
    if ndim != RANK:
        raise ValueError(f"{qualified_name(op_type)} expects NCHW (rank 4) input, got rank {ndim}")
    kernel_dtype(dtype)


def check_arch(arch: int) -> int:
    """``arch`` if the AOT kernels compile for it; ValueError (never an LLVM abort) otherwise."""
    if arch not in AOT_ARCHS:
        raise ValueError(
            f"no AOT corner-pool kernel for sm_{arch} (known: {sorted(AOT_ARCHS)}); "
            f"build with the JIT implementation (node attribute {AOT_ATTRIBUTE}=0)"
        )
    return arch


@dataclass(frozen=True)
class AotLaunch:
    """What ``@trtp.aot_impl`` hands TensorRT for one pool, dtype and GPU, before wrapping.

    ``grid_x`` and ``extra_args`` are built from the input's shape with ``+``, ``*``, ``//``
    only, so they are ints for int shapes and symbolic for ``trtp.ShapeExpr`` shapes. TensorRT
    launches ``kernel_name<<<(grid_x, 1, 1), (block_x, 1, 1), shared_mem>>>(x, *extra_args, y)``.
    """

    op_type: str
    dtype: str  # kernel dtype, "fp32" | "fp16"
    arch: int
    kernel_name: str
    ptx: str
    grid_x: Any
    block_x: int
    shared_mem: int
    extra_args: tuple[Any, ...]  # int32 (nc, h, w)


def aot_launch(op_type: str, dtype: Any, shape: Sequence[Any], arch: int) -> AotLaunch:
    """The compiled kernel and its launch for an NCHW ``shape`` (ints or shape expressions)."""
    from hgdeploy.plugins.aot import compile_ptx

    check_input(op_type, len(shape), dtype)
    name = kernel_dtype(dtype)
    kernel = compile_ptx(op_type, name, arch=check_arch(arch), ptx_version=AOT_ARCHS[arch])
    nchw = tuple(shape)
    (grid_x,) = kernel.launch_grid(nchw)
    return AotLaunch(
        op_type=op_type,
        dtype=name,
        arch=arch,
        kernel_name=kernel.kernel_name,
        ptx=kernel.ptx,
        grid_x=grid_x,
        block_x=kernel.block_x,
        shared_mem=kernel.shared_mem,
        extra_args=tuple(kernel.scalar_args(nchw)),
    )


def device_arch(default: int = DEFAULT_ARCH) -> int:
    """Compute capability x 10 of the current GPU, else ``default``.

    The AOT PTX is architecture-specific (``sm_90a`` runs on Hopper only), so it must match the
    GPU the engine is built on: torch sees it when it has CUDA, cuda-python otherwise.
    """
    for probe in (_torch_capability, _cuda_python_capability):
        capability = probe()
        if capability is not None:
            return capability
    return default


def _torch_capability() -> int | None:
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return 10 * major + minor


def _cuda_python_capability() -> int | None:
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # the older cuda-python layout
        except ImportError:
            return None
    try:
        _, device = cudart.cudaGetDevice()
        attrs = cudart.cudaDeviceAttr
        err_major, major = cudart.cudaDeviceGetAttribute(
            attrs.cudaDevAttrComputeCapabilityMajor, device
        )
        err_minor, minor = cudart.cudaDeviceGetAttribute(
            attrs.cudaDevAttrComputeCapabilityMinor, device
        )
    except Exception:  # no driver or device: fall back to the default, as without cuda-python
        return None
    ok = cudart.cudaError_t.cudaSuccess
    return 10 * major + minor if err_major == ok and err_minor == ok else None


def jit_launch(op_type: str, x: Any, out: Any, kernels: Any = None) -> None:
    """Run ``op_type``'s kernel from ``x`` into ``out`` (torch tensors on one device).

    ``kernels`` defaults to the compiled (non-interpreted) kernels whatever TRITON_INTERPRET
    said at import; tests pass the interpreted module to run on the CPU.
    """
    if kernels is None:
        from hgdeploy.plugins import triton_kernels

        kernels = triton_kernels.kernels_module(interpret=False)
    kernels.corner_pool_triton(x, op_type, out=out)


def parser_implementation(aot_attribute: int | None, network_prefers: str | None = None) -> str:
    """ "aot" or "jit": what TensorRT's ONNX parser instantiates for one of these nodes.

    Mirrors onnx-tensorrt's plugin import (``createPlugin`` for V3 "quick" creators): the node's
    INT ``aot`` attribute wins (STRICT_AOT/STRICT_JIT); else the network's
    ``PREFER_AOT_PYTHON_PLUGINS``/``PREFER_JIT_PYTHON_PLUGINS`` flag (``network_prefers``); with
    neither, ``tensorrt.plugin`` refuses a plugin that defines both, as these do.
    """
    if aot_attribute is not None:
        return "aot" if aot_attribute else "jit"
    if network_prefers in IMPLEMENTATIONS:
        return network_prefers
    if network_prefers is not None:
        raise ValueError(f"network_prefers must be one of {IMPLEMENTATIONS} or None")
    raise ValueError(
        f"corner-pool nodes without an INT '{AOT_ATTRIBUTE}' attribute need the network flag "
        "PREFER_AOT_PYTHON_PLUGINS or PREFER_JIT_PYTHON_PLUGINS: the plugins define both"
    )


def node_aot_attribute(node: onnx.NodeProto) -> int | None:
    """The node's ``aot`` attribute as the parser reads it (an INT), or None if absent."""
    for attribute in node.attribute:
        if attribute.name == AOT_ATTRIBUTE:
            if attribute.type != onnx.AttributeProto.INT:
                raise ValueError(
                    f"node {node.name!r}: attribute '{AOT_ATTRIBUTE}' must be an INT (0/1), "
                    f"got {onnx.AttributeProto.AttributeType.Name(attribute.type)}"
                )
            return int(attribute.i)
    return None


def tensorrt_version() -> str | None:
    """TensorRT's version if ``import tensorrt`` works here, else None."""
    try:
        import tensorrt
    except Exception:  # ImportError, or OSError/RuntimeError when its CUDA libraries are missing
        return None
    return str(getattr(tensorrt, "__version__", "unknown"))


def describe_plugins() -> list[dict[str, Any]]:
    """One entry per plugin: names, types, implementations and what each needs, for the CLI."""
    trt_version = tensorrt_version()
    triton_here = importlib.util.find_spec("triton") is not None
    return [
        {
            "name": qualified_name(op_type),
            "namespace": PLUGIN_NAMESPACE,
            "version": PLUGIN_VERSION,
            "op_type": op_type,
            "dtypes": list(AUTOTUNE_DTYPES),
            "formats": list(FORMATS),
            "implementations": {
                "aot": {
                    "archs": sorted(AOT_ARCHS),
                    "needs": "Triton when the engine is built, nothing when it runs",
                },
                "jit": {"needs": "Python, torch (CUDA) and Triton when the engine runs"},
            },
            "tensorrt_importable": trt_version is not None,
            "tensorrt_version": trt_version,
            "triton_installed": triton_here,
        }
        for op_type in OP_TYPES
    ]


def register_corner_pool_plugins() -> list[str]:
    """Register the four plugins with TensorRT (idempotent); returns their qualified names.

    Needed in the process that builds an engine, and in one that runs a JIT engine; an AOT
    engine runs without it.
    """
    return define_plugins(_import_tensorrt_plugin())


def define_plugins(trtp: Any) -> list[str]:
    """Define every plugin not yet known to ``trtp`` (the ``tensorrt.plugin`` module)."""
    for op_type in OP_TYPES:
        if not _is_defined(trtp, op_type):
            _define_plugin(trtp, op_type)
    return plugin_names()


def _import_tensorrt_plugin() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise HgDeployError(
            "TensorRT is not installed (no 'tensorrt' module); the corner-pool plugins need "
            "TensorRT 11 on a GPU machine (pip install 'hgdeploy[gpu]')"
        ) from exc
    version = getattr(tensorrt, "__version__", "unknown")
    try:
        import tensorrt.plugin as trtp
    except ImportError as exc:
        raise HgDeployError(f"TensorRT {version} has no tensorrt.plugin; use TensorRT 11") from exc
    # ``aot_impl`` is defined whatever the bindings support; KernelLaunchParams (and the AOT plugin
    # class) only where they have QuickPluginCreationRequest (tensorrt.plugin's IS_AOT_ENABLED).
    if not (hasattr(trtp, "aot_impl") and hasattr(trtp, "KernelLaunchParams")):
        raise HgDeployError(f"TensorRT {version} has no AOT Python plugins; use TensorRT 11")
    return trtp


def _is_defined(trtp: Any, op_type: str) -> bool:
    """Whether ``trtp.op.<namespace>.<op_type>`` exists (``trtp.register`` refuses repeats)."""
    try:
        getattr(getattr(trtp.op, PLUGIN_NAMESPACE), op_type)
    except AttributeError:
        return False
    return True


def _define_plugin(trtp: Any, op_type: str) -> None:
    """The TensorRT boundary: the four decorated functions for one pool.

    ``tensorrt.plugin`` checks these signatures by name: the input is ``x`` everywhere, then
    ``outputs``, then ``tactic`` (aot_impl, always passed) or ``stream`` (impl).
    """
    plugin_id = qualified_name(op_type)

    @trtp.register(plugin_id)
    def shape_and_type(x: trtp.TensorDesc) -> trtp.TensorDesc:
        check_input(op_type, x.ndim, x.dtype)
        return x.like()

    @trtp.autotune(plugin_id)
    def combinations(
        x: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc]
    ) -> list[trtp.AutoTuneCombination]:
        return [trtp.AutoTuneCombination(*AUTOTUNE_COMBINATION)]

    @trtp.aot_impl(plugin_id)
    def compiled_kernel(
        x: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc], tactic: int
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        return _to_trtp(trtp, aot_launch(op_type, x.dtype, tuple(x.shape_expr), device_arch()))

    @trtp.impl(plugin_id)
    def python_kernel(x: trtp.Tensor, outputs: tuple[trtp.Tensor], stream: int) -> None:
        import torch

        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            # Zero-copy views through __cuda_array_interface__, as NVIDIA's samples do.
            x_t = torch.as_tensor(x, device="cuda")
            out_t = torch.as_tensor(outputs[0], device="cuda")
            jit_launch(op_type, x_t, out_t)


def _to_trtp(trtp: Any, launch: AotLaunch) -> tuple[bytes, bytes, Any, Any]:
    """``aot_impl``'s return value: kernel name, PTX, launch parameters, int32 extra args."""
    params = trtp.KernelLaunchParams()
    params.grid_x = launch.grid_x
    params.block_x = launch.block_x
    params.shared_mem = launch.shared_mem
    extra_args = trtp.SymIntExprs.from_tuple([trtp.SymInt32(arg) for arg in launch.extra_args])
    return launch.kernel_name.encode(), launch.ptx.encode(), params, extra_args
