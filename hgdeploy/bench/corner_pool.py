"""The corner-pooling micro-benchmark: each implementation of one pool against the memory floor.

A corner pool is a cumulative max along H or W: it reads its input once and writes its output
once, so its speed limit is memory bandwidth, not arithmetic. Each row times one pool direction
on one shape with one implementation and reports the achieved bandwidth (bytes moved = read +
write of the tensor, 2 x numel x itemsize, over the median latency) and the floor (bytes moved
over the measured bandwidth of that device: on the CPU a single-threaded numpy copy of a 256 MiB
array, on a GPU a torch device-to-device copy of one), so "% of floor" = floor / median says how
close to memory-bound an implementation is.

Implementations:

* torch-cummax: `corner_pool_reference` (what the eager models run: flip + cummax + flip for the
  suffix directions);
* torch-doubling: log-step doubling in torch, ceil(log2 L) steps of `max(x, shifted x)`, the
  same algorithm as the ONNX lowering;
* onnxruntime-lowered: a one-node plugin-form graph lowered by `lower_corner_pools`, on ONNX
  Runtime's CPU provider (what ONNX Runtime runs for the models);
* triton: `corner_pool_triton`, the TensorRT plugin's kernel, on a CUDA GPU only (skipped with
  the reason elsewhere; the Triton CPU interpreter is for tests, not timing).

Every output is compared with the reference (`exact`): max never rounds, so all must be equal.
Shapes: a generic 1x256x128x128 and the p1_conv1 outputs the models pool (128 channels; 128x128
for CornerNet, 64x64 for CornerNet-Squeeze and -Saccade).
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from hgdeploy.base.artifacts import tool_versions
from hgdeploy.base.errors import HgDeployError
from hgdeploy.bench.cell import one_line
from hgdeploy.bench.timing import (
    Clock,
    CudaEventClock,
    HostClock,
    LatencyStats,
    TimingPlan,
    available_cores,
    release_free_memory,
    time_callable,
    torch_threads,
)
from hgdeploy.models.corner_pool import DIRECTIONS, PoolDirection, corner_pool_reference

IMPLEMENTATIONS: tuple[str, ...] = (
    "torch-cummax",
    "torch-doubling",
    "onnxruntime-lowered",
    "triton",
)
BANDWIDTH_ARRAY_MIB = 256
_SEED = 0


@dataclass(frozen=True)
class PoolShape:
    shape: tuple[int, int, int, int]  # NCHW
    source: str
    models: tuple[str, ...] = ()  # zoo models that pool tensors of this shape


SHAPES: tuple[PoolShape, ...] = (
    PoolShape((1, 256, 128, 128), "generic: 256 channels, 128x128"),
    PoolShape((1, 128, 128, 128), "CornerNet p1_conv1 output (128 ch, 128x128)", ("cornernet",)),
    PoolShape(
        (1, 128, 64, 64),
        "CornerNet-Squeeze/Saccade p1_conv1 output (128 ch, 64x64)",
        ("squeeze", "saccade"),
    ),
)


def shapes_for(models: tuple[str, ...]) -> tuple[PoolShape, ...]:
    """Every shape when no model is named, else the shapes those models pool."""
    if not models:
        return SHAPES
    chosen = tuple(s for s in SHAPES if set(s.models) & set(models))
    if not chosen:
        raise HgDeployError(
            f"{', '.join(models)} has no corner pools; corner-pool models: "
            + ", ".join(m for s in SHAPES for m in s.models)
        )
    return chosen


@dataclass(frozen=True)
class Bandwidth:
    device: str
    gbps: float
    method: str


@dataclass
class PoolRow:
    shape: tuple[int, int, int, int]
    source: str
    direction: str
    implementation: str
    device: str
    status: str = "skipped"  # ok, skipped, failed
    reason: str | None = None
    latency: LatencyStats | None = None
    bytes_moved: int = 0
    achieved_gbps: float | None = None
    floor_ms: float | None = None
    pct_of_floor: float | None = None
    exact: bool | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["shape"] = list(self.shape)
        data["latency_ms"] = None if self.latency is None else self.latency.to_json()
        del data["latency"]
        return data


@dataclass
class CornerPoolReport:
    started: str
    timing: str
    threads: int
    device: str
    bandwidth: list[Bandwidth]
    rows: list[PoolRow] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "corner_pool",
            "created": self.started,
            "timing": self.timing,
            "threads": self.threads,
            "device": self.device,
            "bytes_moved": "read + write of the tensor: 2 x numel x itemsize",
            "bandwidth": [asdict(b) for b in self.bandwidth],
            "rows": [row.to_json() for row in self.rows],
            "versions": self.versions,
        }


# --- implementations ----------------------------------------------------------------------------


def corner_pool_doubling(x: torch.Tensor, direction: PoolDirection) -> torch.Tensor:
    """Cumulative max by log-step doubling (Hillis-Steele): after the step with shift s, each
    element holds the max of the 2s elements ending (or, reversed, starting) at it. Two
    ping-pong buffers, so a step is one fused max into the other buffer plus a copy of the s
    elements it leaves unchanged."""
    axis, length = direction.axis, x.shape[direction.axis]
    src, dst = x.clone(), torch.empty_like(x)
    step = 1
    while step < length:
        keep = length - step
        if direction.reverse:  # y[i] = max(y[i], y[i + step]); the last `step` stay
            torch.maximum(
                src.narrow(axis, 0, keep),
                src.narrow(axis, step, keep),
                out=dst.narrow(axis, 0, keep),
            )
            dst.narrow(axis, keep, step).copy_(src.narrow(axis, keep, step))
        else:  # y[i] = max(y[i], y[i - step]); the first `step` stay
            torch.maximum(
                src.narrow(axis, step, keep),
                src.narrow(axis, 0, keep),
                out=dst.narrow(axis, step, keep),
            )
            dst.narrow(axis, 0, step).copy_(src.narrow(axis, 0, step))
        src, dst = dst, src
        step *= 2
    return src


def lowered_session(direction_name: str, shape: tuple[int, ...], threads: int) -> Any:
    """An ONNX Runtime CPU session for one lowered pool: plugin node -> `lower_corner_pools`."""
    import onnxruntime as ort
    from onnx import TensorProto, helper

    from hgdeploy.exporters.corner_pool_ops import corner_pool_opset_import, make_corner_pool_node
    from hgdeploy.exporters.lowering import lower_corner_pools

    dims = list(shape)
    graph = helper.make_graph(
        [make_corner_pool_node(direction_name, "x", "y", name="pool")],
        f"single_{direction_name}",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 20), corner_pool_opset_import()],
        ir_version=10,
    )
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(
        lower_corner_pools(model).SerializeToString(),
        sess_options=options,
        providers=["CPUExecutionProvider"],
    )


def triton_unavailable_reason(device: str) -> str | None:
    if device != "cuda":
        return "needs a CUDA GPU (the Triton kernel is timed on the GPU only)"
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install -e '.[gpu]')"
    return None


# --- bandwidth ----------------------------------------------------------------------------------


def measure_cpu_bandwidth(mib: int = BANDWIDTH_ARRAY_MIB, repeats: int = 5) -> Bandwidth:
    """Achievable host memory bandwidth: best of `repeats` numpy copies of a `mib` MiB array
    (read + write counted; one thread, as numpy copies on one core)."""
    src = np.ones(mib * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    best = min(_timed(lambda: np.copyto(dst, src)) for _ in range(repeats))
    gbps = 2 * src.nbytes / best / 1e9
    return Bandwidth(
        "cpu",
        gbps,
        f"numpy copy of a {mib} MiB float32 array, best of {repeats}, read + write, single thread",
    )


def measure_cuda_bandwidth(mib: int = BANDWIDTH_ARRAY_MIB, repeats: int = 10) -> Bandwidth:
    """Device memory bandwidth: best of `repeats` torch device-to-device copies (CUDA events)."""
    src = torch.ones(mib * 2**20 // 4, device="cuda")
    dst = torch.empty_like(src)
    dst.copy_(src)
    clock = CudaEventClock()
    best_ms = min(clock.time_ms(lambda: dst.copy_(src)) for _ in range(repeats))
    gbps = 2 * src.numel() * 4 / (best_ms / 1e3) / 1e9
    return Bandwidth(
        "cuda",
        gbps,
        f"torch device copy of a {mib} MiB float32 tensor, best of "
        f"{repeats}, read + write, CUDA events",
    )


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - started) / 1e9


# --- the benchmark ------------------------------------------------------------------------------


def run_corner_pool_bench(
    plan: TimingPlan,
    *,
    threads: int | None = None,
    device: str = "cpu",
    batch: int = 1,
    shapes: tuple[PoolShape, ...] = SHAPES,
    directions: tuple[str, ...] = tuple(DIRECTIONS),
    implementations: tuple[str, ...] = IMPLEMENTATIONS,
    on_step: Callable[[str], None] | None = None,
) -> CornerPoolReport:
    """Time every (shape, direction, implementation); torch rows run on `device`."""
    step = on_step or (lambda _: None)
    threads = threads or available_cores()
    step("measuring memory bandwidth")
    bandwidth = {"cpu": measure_cpu_bandwidth()}
    if device == "cuda":
        bandwidth["cuda"] = measure_cuda_bandwidth()
        torch.cuda.empty_cache()
    release_free_memory()  # the copy buffers
    report = CornerPoolReport(
        started=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        timing=f"{plan.describe()} per row, {threads} threads (torch and ONNX Runtime)",
        threads=threads,
        device=device,
        bandwidth=list(bandwidth.values()),
        versions=tool_versions(),
    )
    with torch_threads(threads), torch.no_grad():
        for pool_shape in shapes:
            shape = (batch, *pool_shape.shape[1:])
            x = torch.randn(shape, generator=torch.Generator().manual_seed(_SEED))
            for name in directions:
                expected = corner_pool_reference(x, DIRECTIONS[name])
                for impl in implementations:
                    step(f"{'x'.join(map(str, shape))} {name} {impl}")
                    row = PoolRow(
                        shape,
                        pool_shape.source,
                        name,
                        impl,
                        _row_device(impl, device),
                        bytes_moved=2 * x.numel() * 4,
                    )
                    _run_row(row, x, expected, plan, threads, bandwidth, device)
                    report.rows.append(row)
            release_free_memory()
    return report


def _row_device(implementation: str, device: str) -> str:
    if implementation == "onnxruntime-lowered":
        return "cpu"
    if implementation == "triton":
        return "cuda"
    return device


def _run_row(
    row: PoolRow,
    x: torch.Tensor,
    expected: torch.Tensor,
    plan: TimingPlan,
    threads: int,
    bandwidth: dict[str, Bandwidth],
    device: str,
) -> None:
    if row.implementation == "triton":
        reason = triton_unavailable_reason(device)
        if reason:
            row.status, row.reason = "skipped", reason
            return
    try:
        fn, fetch = _callable_for(row, x, threads)
        clock: Clock = CudaEventClock() if row.device == "cuda" else HostClock()
        row.exact = bool(np.array_equal(fetch(fn()), expected.numpy()))
        row.latency = time_callable(fn, plan, clock)
    except Exception as exc:
        row.status, row.reason = "failed", one_line(exc)
        return
    row.status = "ok"
    seconds = row.latency.median_ms / 1e3
    row.achieved_gbps = row.bytes_moved / seconds / 1e9 if seconds > 0 else None
    floor = bandwidth[row.device]
    row.floor_ms = row.bytes_moved / (floor.gbps * 1e9) * 1e3
    row.pct_of_floor = 100 * row.floor_ms / row.latency.median_ms if seconds > 0 else None
    if not row.exact:
        row.reason = "output differs from corner_pool_reference"


def _callable_for(
    row: PoolRow, x: torch.Tensor, threads: int
) -> tuple[Callable[[], Any], Callable[[Any], np.ndarray]]:
    """The timed call for one row and how to turn its result into a host array."""
    direction = DIRECTIONS[row.direction]

    def to_host(out: Any) -> np.ndarray:
        return out.cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out)

    if row.implementation == "torch-cummax":
        xd = x.to(row.device)
        return (lambda: corner_pool_reference(xd, direction)), to_host
    if row.implementation == "torch-doubling":
        xd = x.to(row.device)
        return (lambda: corner_pool_doubling(xd, direction)), to_host
    if row.implementation == "onnxruntime-lowered":
        session = lowered_session(row.direction, tuple(x.shape), threads)
        feed = {"x": x.numpy()}
        return (lambda: session.run(None, feed)[0]), to_host
    if row.implementation == "triton":
        from hgdeploy.plugins.triton_kernels import kernels_module

        kernel = kernels_module(interpret=False).corner_pool_triton
        xd = x.to("cuda")
        out = torch.empty_like(xd)
        return (lambda: kernel(xd, row.direction, out=out)), to_host
    raise ValueError(f"unknown corner-pool implementation {row.implementation!r}")
