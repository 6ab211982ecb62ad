"""The corner-pool TensorRT plugins, tested up to the TensorRT boundary on the CPU.

``FakeTrtp`` stands in for ``tensorrt.plugin``: it records the decorated functions and enforces
the signature rules the real module checks (names, live annotation classes), so the plugin
bodies run here with stand-in shape expressions. The ``gpu``/``tensorrt`` tests build real
engines through TensorRT's ONNX parser and Polygraphy; they skip where CUDA or TensorRT is
missing.
"""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper

from hgdeploy.base.errors import HgDeployError
from hgdeploy.cli.plugins import plugins_command
from hgdeploy.exporters.corner_pool_ops import (
    OP_TYPES,
    PLUGIN_NAMESPACE,
    PLUGIN_VERSION,
    corner_pool_opset_import,
    make_corner_pool_node,
)
from hgdeploy.models.corner_pool import DIRECTIONS, corner_pool_reference
from hgdeploy.plugins import tensorrt_plugins as tp

SHAPES = [(1, 256, 128, 128), (2, 3, 7, 5)]
#: TensorRT DataType name -> (kernel dtype, torch dtype, ONNX element type)
DTYPES = {
    "FLOAT": ("fp32", torch.float32, TensorProto.FLOAT),
    "HALF": ("fp16", torch.float16, TensorProto.FLOAT16),
}


class DType:
    """A ``trt.DataType`` stand-in: an enum member with a name."""

    def __init__(self, name: str) -> None:
        self.name = name


class SymDim:
    """A ``trtp.ShapeExpr`` stand-in: only ``self <+|*|//> int|SymDim``, never a bool or an int.

    TensorRT's shape expressions have no reflected operators and refuse ``bool()`` on symbols,
    so an expression that works on these works on TensorRT's; ``value`` evaluates it.
    """

    def __init__(self, value: int, text: str) -> None:
        self.value = value
        self.text = text

    def _op(self, other: SymDim | int, symbol: str, fn: Callable[[int, int], int]) -> SymDim:
        if isinstance(other, SymDim):
            return SymDim(fn(self.value, other.value), f"({self.text} {symbol} {other.text})")
        if not isinstance(other, int):
            return NotImplemented
        return SymDim(fn(self.value, other), f"({self.text} {symbol} {other})")

    def __add__(self, other: SymDim | int) -> SymDim:
        return self._op(other, "+", int.__add__)

    def __mul__(self, other: SymDim | int) -> SymDim:
        return self._op(other, "*", int.__mul__)

    def __floordiv__(self, other: SymDim | int) -> SymDim:
        return self._op(other, "//", int.__floordiv__)

    def __bool__(self) -> bool:
        raise TypeError("symbolic dimension used as a bool")

    def __index__(self) -> int:
        raise TypeError("symbolic dimension used as an int")


def sym_shape(shape: tuple[int, ...]) -> tuple[SymDim, ...]:
    return tuple(SymDim(d, name) for d, name in zip(shape, "NCHW"))


class FakeTrtp:
    """Records ``tensorrt.plugin`` definitions and checks them as ``tensorrt.plugin._validate``.

    Checked: register's inputs are annotated with the TensorDesc class itself (not a string) and
    it returns a TensorDesc; impl/aot_impl/autotune take exactly (x, outputs[, stream|tactic]);
    aot_impl's return annotation is a 4-tuple ending with KernelLaunchParams and SymIntExprs.
    """

    class TensorDesc:
        def __init__(self, dtype: Any, shape_expr: tuple[Any, ...]) -> None:
            self.dtype = dtype
            self.shape_expr = shape_expr

        @property
        def ndim(self) -> int:
            return len(self.shape_expr)

        def like(self) -> FakeTrtp.TensorDesc:
            return FakeTrtp.TensorDesc(self.dtype, self.shape_expr)

    class Tensor:
        pass

    class AutoTuneCombination:
        def __init__(self, io_types: str, layouts: str | None = None, tactics: Any = None):
            self.io_types = io_types
            self.layouts = layouts

    class KernelLaunchParams:
        def __init__(self) -> None:
            self.grid_x = self.grid_y = self.grid_z = 1
            self.block_x = self.block_y = self.block_z = 1
            self.shared_mem = 0

    class SymInt32:
        def __init__(self, value: Any) -> None:
            self.value = value

    class SymIntExprs:
        def __init__(self, exprs: list[Any]) -> None:
            self.exprs = list(exprs)

        @classmethod
        def from_tuple(cls, exprs: Any) -> FakeTrtp.SymIntExprs:
            return cls(list(exprs))

    def __init__(self) -> None:
        self.op = SimpleNamespace()
        self.defs: dict[str, dict[str, Callable[..., Any]]] = {}

    def register(self, plugin_id: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            namespace, name = plugin_id.split("::")
            if not hasattr(self.op, namespace):
                setattr(self.op, namespace, SimpleNamespace())
            if hasattr(getattr(self.op, namespace), name):
                raise ValueError(f"already has a definition for '{name}'")
            signature = inspect.signature(fn)
            assert list(signature.parameters) == ["x"]
            assert signature.parameters["x"].annotation is self.TensorDesc
            assert signature.return_annotation is self.TensorDesc
            setattr(getattr(self.op, namespace), name, fn)
            self.defs[plugin_id] = {"register": fn}
            return fn

        return decorate

    def _part(self, kind: str, plugin_id: str, params: list[str]) -> Callable[..., Any]:
        def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
            assert plugin_id in self.defs, f"{kind} before register"
            signature = inspect.signature(fn)
            assert list(signature.parameters) == params, f"{kind}: {signature}"
            for param in signature.parameters.values():
                assert not isinstance(param.annotation, str), "annotations must be live classes"
            assert not isinstance(signature.return_annotation, str)
            self.defs[plugin_id][kind] = fn
            return fn

        return decorate

    def impl(self, plugin_id: str) -> Callable[..., Any]:
        return self._part("impl", plugin_id, ["x", "outputs", "stream"])

    def aot_impl(self, plugin_id: str) -> Callable[..., Any]:
        return self._part("aot_impl", plugin_id, ["x", "outputs", "tactic"])

    def autotune(self, plugin_id: str) -> Callable[..., Any]:
        return self._part("autotune", plugin_id, ["x", "outputs"])


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make ``import tensorrt`` fail here, whatever is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", None)


def test_importing_needs_neither_tensorrt_nor_triton() -> None:
    code = (
        "import sys\n"
        "import hgdeploy.cli.plugins, hgdeploy.plugins.tensorrt_plugins\n"
        "print(sorted({'tensorrt', 'triton'} & set(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_names_match_the_exporter_contract() -> None:
    names = tp.plugin_names()
    assert names == [f"{PLUGIN_NAMESPACE}::{op}" for op in OP_TYPES]
    assert [name.split("::")[1] for name in names] == list(DIRECTIONS)
    assert {entry["version"] for entry in tp.describe_plugins()} == {PLUGIN_VERSION}
    node = make_corner_pool_node("TopPool", "X", "Y")
    attrs = {a.name: a.s.decode() for a in node.attribute}
    assert f"{attrs['plugin_namespace']}::{node.op_type}" == tp.qualified_name("TopPool")
    assert attrs["plugin_version"] == PLUGIN_VERSION
    with pytest.raises(ValueError, match="unknown corner pool"):
        tp.qualified_name("UpPool")


def test_types_and_formats() -> None:
    assert tp.supported_combinations() == [
        (("FP32", "FP32"), ("LINEAR", "LINEAR")),
        (("FP16", "FP16"), ("LINEAR", "LINEAR")),
    ]
    assert tp.AUTOTUNE_COMBINATION == ("FP32|FP16, FP32|FP16", "LINEAR, LINEAR")
    assert tp.kernel_dtype(DType("FLOAT")) == "fp32"
    assert tp.kernel_dtype(DType("HALF")) == "fp16"
    assert tp.kernel_dtype("DataType.HALF") == "fp16"  # str() of an enum without .name
    with pytest.raises(ValueError, match="FP32/FP16 tensors, got BF16"):
        tp.kernel_dtype(DType("BF16"))
    with pytest.raises(ValueError, match="rank 4"):
        tp.check_input("TopPool", 3, DType("FLOAT"))


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("trt_dtype", sorted(DTYPES))
@pytest.mark.parametrize("op_type", OP_TYPES)
def test_aot_launch_evaluates_to_the_integer_launch(op_type, trt_dtype, shape) -> None:
    from hgdeploy.plugins.aot import compile_ptx, entry_params
    from hgdeploy.plugins.triton_kernels import launch_grid, scalar_args

    dtype = DTYPES[trt_dtype][0]
    symbolic = tp.aot_launch(op_type, DType(trt_dtype), sym_shape(shape), arch=90)
    kernel = compile_ptx(op_type, dtype, arch=90, ptx_version=tp.AOT_ARCHS[90])
    assert (symbolic.op_type, symbolic.dtype, symbolic.arch) == (op_type, dtype, 90)
    assert symbolic.kernel_name == kernel.kernel_name
    assert symbolic.ptx == kernel.ptx
    assert re.search(r"^\.target sm_90a$", symbolic.ptx, re.MULTILINE)
    assert (symbolic.block_x, symbolic.shared_mem) == (kernel.block_x, kernel.shared_mem)
    assert isinstance(symbolic.grid_x, SymDim)
    assert (symbolic.grid_x.value,) == launch_grid(op_type, shape)
    assert tuple(e.value for e in symbolic.extra_args) == scalar_args(shape)
    # TensorRT passes input pointer, extra int32 args, output pointer: the PTX entry agrees.
    entry, params = entry_params(symbolic.ptx)
    assert entry == symbolic.kernel_name
    assert len(params) == 1 + len(symbolic.extra_args) + 1
    assert all(".u32" in p or ".s32" in p for p in params[1:-1])
    concrete = tp.aot_launch(op_type, DType(trt_dtype), shape, arch=90)
    assert concrete.grid_x == symbolic.grid_x.value
    assert concrete.extra_args == tuple(e.value for e in symbolic.extra_args)


def test_aot_launch_rejects_what_the_kernels_cannot_run() -> None:
    with pytest.raises(ValueError, match="no AOT corner-pool kernel for sm_101"):
        tp.aot_launch("TopPool", DType("FLOAT"), (1, 1, 2, 2), arch=101)
    with pytest.raises(ValueError, match="got BF16"):
        tp.aot_launch("TopPool", DType("BF16"), (1, 1, 2, 2), arch=90)
    with pytest.raises(ValueError, match="rank 4"):
        tp.aot_launch("LeftPool", DType("HALF"), (1, 2, 2), arch=90)


def test_every_listed_arch_compiles() -> None:
    """In a child process: Triton's LLVM aborts the process when an arch/PTX pair is wrong."""
    code = (
        "import re\n"
        "from hgdeploy.plugins.aot import compile_ptx\n"
        "from hgdeploy.plugins.tensorrt_plugins import AOT_ARCHS\n"
        "for arch, ptx_version in AOT_ARCHS.items():\n"
        "    k = compile_ptx('TopPool', 'fp16', arch=arch, ptx_version=ptx_version)\n"
        "    target = re.search(r'\\.target (sm_\\w+)', k.ptx).group(1)\n"
        "    version = re.search(r'\\.version (\\d+\\.\\d+)', k.ptx).group(1)\n"
        "    print(arch, target, version)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split() for line in done.stdout.splitlines()]
    assert [int(arch) for arch, _, _ in rows] == list(tp.AOT_ARCHS)
    for arch, target, version in rows:
        suffix = "a" if int(arch) >= 90 else ""
        assert target == f"sm_{arch}{suffix}"
        major, minor = version.split(".")
        assert int(major) * 10 + int(minor) == tp.AOT_ARCHS[int(arch)]


def test_define_plugins_against_the_plugin_api(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tp, "device_arch", lambda: 90)
    fake = FakeTrtp()
    assert tp.define_plugins(fake) == tp.plugin_names()
    assert tp.define_plugins(fake) == tp.plugin_names()  # idempotent: no second register
    for op_type in OP_TYPES:
        parts = fake.defs[tp.qualified_name(op_type)]
        assert set(parts) == {"register", "autotune", "aot_impl", "impl"}
        _check_aot_signature(fake, parts["aot_impl"])
        desc = fake.TensorDesc(DType("HALF"), sym_shape((2, 3, 7, 5)))
        out = parts["register"](desc)
        assert (out.dtype.name, out.shape_expr) == ("HALF", desc.shape_expr)
        with pytest.raises(ValueError, match="got BF16"):
            parts["register"](fake.TensorDesc(DType("BF16"), desc.shape_expr))
        (combo,) = parts["autotune"](desc, (out,))
        assert (combo.io_types, combo.layouts) == tp.AUTOTUNE_COMBINATION
        name, ptx, params, extra = parts["aot_impl"](desc, (out,), 0)
        want = tp.aot_launch(op_type, DType("HALF"), (2, 3, 7, 5), arch=90)
        assert (name.decode(), ptx.decode()) == (want.kernel_name, want.ptx)
        assert params.grid_x.value == want.grid_x
        assert (params.grid_y, params.grid_z, params.block_y, params.block_z) == (1, 1, 1, 1)
        assert (params.block_x, params.shared_mem) == (want.block_x, want.shared_mem)
        assert all(isinstance(e, fake.SymInt32) for e in extra.exprs)
        assert tuple(e.value.value for e in extra.exprs) == want.extra_args


def _check_aot_signature(fake: FakeTrtp, fn: Callable[..., Any]) -> None:
    returns = inspect.signature(fn).return_annotation
    assert typing.get_origin(returns) is tuple
    name, code, params, extra = typing.get_args(returns)
    assert set(typing.get_args(name)) == set(typing.get_args(code)) == {str, bytes}
    assert (params, extra) == (fake.KernelLaunchParams, fake.SymIntExprs)


def test_register_without_tensorrt_raises_one_line(no_tensorrt) -> None:
    with pytest.raises(HgDeployError) as info:
        tp.register_corner_pool_plugins()
    message = str(info.value)
    assert message.startswith("TensorRT is not installed")
    assert "\n" not in message


def test_register_refuses_tensorrt_plugin_without_aot(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tensorrt.plugin`` defines ``aot_impl`` even where its bindings lack AOT support (then it
    has no KernelLaunchParams): that must be a one-line refusal, not an AttributeError."""
    trt = SimpleNamespace(__version__="10.0.0")
    trtp = SimpleNamespace(aot_impl=lambda plugin_id: None)
    trt.plugin = trtp
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "tensorrt.plugin", trtp)
    with pytest.raises(HgDeployError, match="TensorRT 10.0.0 has no AOT Python plugins"):
        tp.register_corner_pool_plugins()


def test_describe_plugins_without_tensorrt(no_tensorrt) -> None:
    described = tp.describe_plugins()
    assert [d["name"] for d in described] == tp.plugin_names()
    for entry in described:
        assert entry["tensorrt_importable"] is False and entry["tensorrt_version"] is None
        assert entry["dtypes"] == ["FP32", "FP16"] and entry["formats"] == ["LINEAR"]
        assert entry["implementations"]["aot"]["archs"] == sorted(tp.AOT_ARCHS)
        assert "Python" in entry["implementations"]["jit"]["needs"]


def test_cli_lists_the_plugins(no_tensorrt) -> None:
    result = CliRunner().invoke(plugins_command, [], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in tp.plugin_names():
        assert name in result.output
    assert "TensorRT is not installed here" in result.output
    assert "aot=1" in result.output


def test_parser_picks_the_implementation() -> None:
    assert tp.parser_implementation(1) == "aot"
    assert tp.parser_implementation(0, network_prefers="aot") == "jit"  # the node wins
    assert tp.parser_implementation(None, network_prefers="jit") == "jit"
    with pytest.raises(ValueError, match="PREFER_AOT_PYTHON_PLUGINS"):
        tp.parser_implementation(None)
    assert tp.node_aot_attribute(make_corner_pool_node("LeftPool", "X", "Y")) == 1  # as exported
    assert tp.node_aot_attribute(make_corner_pool_node("LeftPool", "X", "Y", aot=False)) == 0
    node = helper.make_node("LeftPool", ["X"], ["Y"])
    assert tp.node_aot_attribute(node) is None
    node.attribute.append(helper.make_attribute("aot", True))  # onnx writes a bool as INT
    assert tp.node_aot_attribute(node) == 1
    wrong = helper.make_node("LeftPool", ["X"], ["Y"])
    wrong.attribute.append(helper.make_attribute("aot", "1"))
    with pytest.raises(ValueError, match="must be an INT"):
        tp.node_aot_attribute(wrong)


def test_jit_launch_writes_into_the_given_buffer() -> None:
    from hgdeploy.plugins import triton_kernels

    interpreted = triton_kernels.kernels_module(interpret=True)
    x = torch.randn((1, 2, 9, 6), generator=torch.Generator().manual_seed(0))
    out = torch.empty_like(x)
    tp.jit_launch("BottomPool", x, out, kernels=interpreted)
    assert torch.equal(out, corner_pool_reference(x, DIRECTIONS["BottomPool"]))


def test_device_arch_probes_then_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tp, "_torch_capability", lambda: None)
    monkeypatch.setattr(tp, "_cuda_python_capability", lambda: None)
    assert tp.device_arch() == tp.DEFAULT_ARCH == 90
    monkeypatch.setattr(tp, "_cuda_python_capability", lambda: 89)
    assert tp.device_arch() == 89
    monkeypatch.setattr(tp, "_torch_capability", lambda: 120)
    assert tp.device_arch() == 120


# --- GPU + TensorRT 11: real engines from ONNX through the parser --------------------------------


def _plugin_onnx(op_type: str, onnx_dtype: int, shape: list[Any], aot: bool) -> bytes:
    """One plugin node as the exporter writes it (INT ``aot`` attribute: AOT or JIT)."""
    node = make_corner_pool_node(op_type, "X", "Y", name=f"{op_type}_0", aot=aot)
    graph = helper.make_graph(
        [node],
        f"{op_type}_plugin",
        [helper.make_tensor_value_info("X", onnx_dtype, shape)],
        [helper.make_tensor_value_info("Y", onnx_dtype, shape)],
    )
    opsets = [helper.make_opsetid("", 17), corner_pool_opset_import()]
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return model.SerializeToString()


def _engine(model: bytes, profiles: list[Any] | None = None) -> Any:
    from polygraphy.backend.trt import CreateConfig, EngineFromNetwork, NetworkFromOnnxBytes

    network = NetworkFromOnnxBytes(model, strongly_typed=True)
    return EngineFromNetwork(network, config=CreateConfig(profiles=profiles))


def _infer(runner: Any, x: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.array(runner.infer({"X": x.numpy()})["Y"], copy=True))


def _randn(shape: tuple[int, ...], dtype: torch.dtype, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


@pytest.fixture
def jit_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Registers the plugins and records every JIT (Python) launch."""
    tp.register_corner_pool_plugins()
    calls: list[str] = []
    real = tp.jit_launch

    def counting(op_type: str, *args: Any, **kwargs: Any) -> None:
        calls.append(op_type)
        real(op_type, *args, **kwargs)

    monkeypatch.setattr(tp, "jit_launch", counting)
    return calls


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_gpu_registration_is_idempotent() -> None:
    import tensorrt as trt

    assert tp.register_corner_pool_plugins() == tp.plugin_names()
    assert tp.register_corner_pool_plugins() == tp.plugin_names()
    registry = trt.get_plugin_registry()
    for op_type in OP_TYPES:
        assert registry.get_creator(op_type, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("aot", [True, False], ids=["aot", "jit"])
@pytest.mark.parametrize("trt_dtype", sorted(DTYPES))
@pytest.mark.parametrize("op_type", OP_TYPES)
def test_gpu_engine_matches_reference(jit_calls, op_type, trt_dtype, aot) -> None:
    from polygraphy.backend.trt import TrtRunner

    _, torch_dtype, onnx_dtype = DTYPES[trt_dtype]
    shape = (2, 16, 45, 70)
    engine = _engine(_plugin_onnx(op_type, onnx_dtype, list(shape), aot))
    x = _randn(shape, torch_dtype)
    with TrtRunner(engine) as runner:
        got = _infer(runner, x)
    assert got.dtype == torch_dtype
    assert torch.equal(got, corner_pool_reference(x, DIRECTIONS[op_type]))
    if aot:
        assert jit_calls == []  # the compiled kernel ran, not Python
    else:
        assert jit_calls and set(jit_calls) == {op_type}


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.parametrize("aot", [True, False], ids=["aot", "jit"])
@pytest.mark.parametrize("op_type", OP_TYPES)
def test_gpu_dynamic_shapes_use_the_symbolic_launch(jit_calls, op_type, aot) -> None:
    """One engine, several shapes: grid and int32 args follow the runtime shape."""
    from polygraphy.backend.trt import Profile, TrtRunner

    profile = Profile().add("X", min=(1, 1, 1, 1), opt=(2, 8, 64, 64), max=(4, 16, 160, 160))
    model = _plugin_onnx(op_type, TensorProto.FLOAT16, ["N", "C", "H", "W"], aot)
    with TrtRunner(_engine(model, profiles=[profile])) as runner:
        shapes = [(1, 1, 1, 1), (2, 3, 7, 5), (4, 16, 160, 97), (3, 5, 130, 1)]
        for seed, shape in enumerate(shapes):
            x = _randn(shape, torch.float16, seed)
            assert torch.equal(_infer(runner, x), corner_pool_reference(x, DIRECTIONS[op_type]))
    assert (jit_calls == []) is aot


_STANDALONE = """
import sys
import numpy as np
from polygraphy.backend.common import BytesFromPath
from polygraphy.backend.trt import EngineFromBytes, TrtRunner
with TrtRunner(EngineFromBytes(BytesFromPath(sys.argv[1]))) as runner:
    np.save(sys.argv[3], runner.infer({"X": np.load(sys.argv[2])})["Y"])
"""


@pytest.mark.gpu
@pytest.mark.tensorrt
def test_gpu_aot_engine_runs_without_the_plugins_registered(tmp_path: Path) -> None:
    """The AOT engine carries its kernel: a process that never registers the plugins runs it."""
    from polygraphy.backend.trt import EngineBytesFromNetwork, NetworkFromOnnxBytes

    tp.register_corner_pool_plugins()
    shape = (2, 4, 33, 65)
    model = _plugin_onnx("TopPool", TensorProto.FLOAT, list(shape), aot=True)
    network = NetworkFromOnnxBytes(model, strongly_typed=True)
    (tmp_path / "pool.engine").write_bytes(bytes(EngineBytesFromNetwork(network)()))
    x = _randn(shape, torch.float32)
    np.save(tmp_path / "x.npy", x.numpy())
    args = [str(tmp_path / name) for name in ("pool.engine", "x.npy", "y.npy")]
    done = subprocess.run(
        [sys.executable, "-c", _STANDALONE, *args], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = torch.from_numpy(np.load(tmp_path / "y.npy"))
    assert torch.equal(got, corner_pool_reference(x, DIRECTIONS["TopPool"]))
