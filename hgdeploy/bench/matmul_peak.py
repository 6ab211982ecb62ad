"""The CPU's measured matrix-multiply peak per precision: the roof a model's GFLOP/s meets.

A model's convolutions cannot beat the best GEMM the same library runs on the same cores, so
"fraction of the roofline" = (model GFLOP per image / latency) / (this peak at the model's
precision). Measured, not quoted: a datasheet peak assumes every vector unit busy at full
clock, which two shared cloud cores never see.

Each probe is one ONNX MatMul ``[M, K] x [K, N]`` with a constant weight, timed like a bench cell
(same threads, warm-up, median):

* OpenVINO fp32 / bf16: the fp32 graph with that inference-precision hint;
* OpenVINO int8 and ONNX Runtime int8: Q/DQ on both operands (uint8 activations, int8
  weights, the U8S8 form), which both runtimes fuse into an integer GEMM (VNNI where present);
* ONNX Runtime fp32: the fp32 graph.

FLOP = 2 M N K (one multiply-add is 2 FLOP, as in the model counts).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from polygraphy.backend.base import BaseRunner

from hgdeploy.base.artifacts import tool_versions, write_text_atomic
from hgdeploy.bench.timing import HostClock, TimingPlan, time_callable

PROBES: tuple[tuple[str, str], ...] = (
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
    ("onnxruntime", "fp32"),
    ("onnxruntime", "int8"),
)
DEFAULT_SHAPE = (2048, 2048, 2048)  # M, K, N: 17 GFLOP; smaller or skinnier shapes measured lower


@dataclass(frozen=True)
class PeakResult:
    backend: str
    precision: str
    m: int
    k: int
    n: int
    median_ms: float
    gflops: float  # GFLOP/s at the median
    note: str | None = None


def matmul_onnx(m: int, k: int, n: int, quantized: bool, seed: int = 0) -> onnx.ModelProto:
    """``y = x @ w`` (fp32 I/O), with U8S8 Q/DQ on both operands when ``quantized``."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    if quantized:
        # 7-bit weights: x86 CPUs without VNNI multiply u8 x s8 with vpmaddubsw, whose int16
        # pair sums saturate for full-range weights (255 * 127 * 2 > 32767); at |w| <= 64 the
        # int32 result is exact on every CPU, so the probe computes the same matmul everywhere.
        weight = rng.integers(-64, 64, size=(k, n), dtype=np.int8)
        inits += [
            numpy_helper.from_array(weight, "w_q"),
            numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
            numpy_helper.from_array(np.array(0.02, np.float32), "x_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "x_zero"),
        ]
        nodes += [
            helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["x_q"]),
            helper.make_node("DequantizeLinear", ["x_q", "x_scale", "x_zero"], ["x_dq"]),
            helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"]),
            helper.make_node("MatMul", ["x_dq", "w"], ["y"]),
        ]
    else:
        inits.append(numpy_helper.from_array(rng.standard_normal((k, n)).astype(np.float32), "w"))
        nodes.append(helper.make_node("MatMul", ["x", "w"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "matmul_peak",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _runner(backend: str, precision: str, model: onnx.ModelProto, threads: int) -> BaseRunner:
    """The bench's own runner for the probe (same sessions, threads and hints as a cell)."""
    if backend == "openvino":
        from hgdeploy.runners.openvino_runner import openvino_runner

        hint = "bf16" if precision == "bf16" else "fp32"
        return openvino_runner(model, precision=hint, threads=threads, name="peak")
    from hgdeploy.runners.onnxrt_runner import onnxruntime_runner

    return onnxruntime_runner(model, threads=threads, name="peak")


def measure_peak(
    backend: str,
    precision: str,
    plan: TimingPlan,
    threads: int,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
) -> PeakResult:
    m, k, n = shape
    model = matmul_onnx(m, k, n, quantized=precision == "int8")
    x = np.random.default_rng(1).standard_normal((m, k)).astype(np.float32)
    with _runner(backend, precision, model, threads) as runner:
        note = None
        compiled = getattr(runner, "compiled_precision", None)
        if compiled is not None:
            note = f"OpenVINO inference precision {compiled}"
        stats = time_callable(lambda: runner.infer({"x": x}, check_inputs=False), plan, HostClock())
    gflops = 2 * m * n * k / (stats.median_ms / 1000) / 1e9
    return PeakResult(backend, precision, m, k, n, stats.median_ms, gflops, note)


def measure_all(plan: TimingPlan, threads: int) -> list[PeakResult]:
    """Every probe this CPU can run (OpenVINO bf16 needs native bf16; without it, no row)."""
    from hgdeploy.runners.openvino_runner import cpu_supports_bf16

    runnable = [p for p in PROBES if p != ("openvino", "bf16") or cpu_supports_bf16()]
    return [measure_peak(backend, precision, plan, threads) for backend, precision in runnable]


def write_peaks(results: list[PeakResult], output: Path, host: dict) -> list[Path]:
    """matmul_peak.json and matmul_peak.md under ``output``."""
    record = {"host": host, "versions": tool_versions(), "probes": [asdict(r) for r in results]}
    lines = [
        "# Matrix-multiply peak (`hgdeploy bench --op matmul-peak`)",
        "",
        f"Host: {host.get('cpu')}, {host.get('threads')} threads. One MatMul "
        "[M, K] x [K, N] with a constant weight; FLOP = 2MNK; median of the timed runs.",
        "",
        "| backend | precision | M x K x N | median ms | GFLOP/s | note |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.backend} | {r.precision} | {r.m} x {r.k} x {r.n} | {r.median_ms:.2f} | "
            f"{r.gflops:.0f} | {r.note or ''} |"
        )
    json_path = write_text_atomic(output / "matmul_peak.json", json.dumps(record, indent=2) + "\n")
    md_path = write_text_atomic(output / "matmul_peak.md", "\n".join(lines) + "\n")
    return [json_path, md_path]
