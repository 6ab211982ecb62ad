"""One benchmark cell: make the backend's runner, check it against the eager model on the
parity feeds, then warm up and time it (memory measured over warm-up and timing).

Policy on a parity mismatch: *flag, don't refuse*. The cell is still timed (how fast a broken
build runs is useful when chasing the bug), but its status is "parity_failed", it is marked
untrusted, and it is left out of every headline ratio. Reduced precisions are judged on the
photographs only, like `hgdeploy parity`.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from polygraphy.backend.base import BaseRunner

from hgdeploy.backends.base import Backend, RunContext, SkipCell
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.precisions import get_precision
from hgdeploy.base.zoo import ModelSpec
from hgdeploy.bench.progress import ProgressSink
from hgdeploy.bench.results import CellResult, ParityOutcome, Status
from hgdeploy.bench.timing import (
    MemoryUsage,
    PeakRss,
    TimingPlan,
    clock_for,
    device_peak_mib,
    release_free_memory,
    reset_device_peak,
    time_callable,
)
from hgdeploy.parity.compare import Feed, compare_runners, describe_failure

_MAX_REASON = 300


@dataclass(frozen=True)
class CellInputs:
    """What every cell of one (model, batch) shares: the reference, the feeds, the plan."""

    spec: ModelSpec
    context: RunContext
    reference: BaseRunner
    feeds: list[Feed]
    plan: TimingPlan
    progress: ProgressSink


def run_cell(cell: CellResult, backend: Backend, inputs: CellInputs) -> None:
    """Make the cell's runner, check and time it; every outcome ends in `finish`."""
    context, progress = inputs.context, inputs.progress
    started = time.perf_counter()
    progress.phase(f"{cell.label()}: preparing")
    try:
        runner = backend.bench_runner(context, cell.batch, cell.precision)
    except SkipCell as exc:
        finish(cell, "skipped", one_line(exc), progress, started)
        return
    except Exception as exc:
        finish(cell, "failed", one_line(exc), progress, started)
        return
    used = context.used.get((cell.backend, cell.precision))
    cell.artifact = None if used is None else str(used)
    try:
        _measure(cell, backend, runner, inputs)
    except Exception as exc:
        finish(cell, "failed", one_line(exc), progress, started)
        return
    if cell.parity is not None and cell.parity.checked and not cell.parity.passed:
        finish(cell, "parity_failed", f"parity FAILED: {cell.parity.note}", progress, started)
    else:
        note = cell.parity.note if cell.parity and not cell.parity.checked else None
        finish(cell, "ok", note, progress, started)


def _measure(cell: CellResult, backend: Backend, runner: BaseRunner, inputs: CellInputs) -> None:
    """Activate, check parity (non-torch), then warm up and time; memory over warm-up + timing.

    The RSS baseline is taken before activation, so a backend's own copy of the weights (an
    ONNX Runtime session, a TensorRT engine) counts in its delta; activation's transient
    garbage (the parsed ONNX, serialized bytes) is freed before the measured phase and does not.
    The eager model's weights are loaded once per model (they are also the parity reference),
    so they sit in torch's baseline: torch's delta is activations and workspace only.
    """
    meter = PeakRss()
    reset_device_peak(cell.device)
    inputs.progress.phase(f"{cell.label()}: activating")
    strict = not get_precision(cell.precision).photos_only  # fp32: IEEE, no TF32
    fp32_math = _strict_fp32(cell.device) if strict else contextlib.nullcontext()
    with fp32_math:
        _activate_check_time(cell, backend, runner, inputs, meter)


def _activate_check_time(
    cell: CellResult, backend: Backend, runner: BaseRunner, inputs: CellInputs, meter: PeakRss
) -> None:
    spec, feeds, plan, progress = inputs.spec, inputs.feeds, inputs.plan, inputs.progress
    runner.activate()
    try:
        cell.providers = _providers(runner)
        if not backend.is_reference:
            progress.phase(f"{cell.label()}: parity on {len(feeds)} feeds")
            precision = backend.judged_precision(runner, cell.precision)
            cell.parity = check_parity(
                spec, inputs.reference, runner, feeds, precision, cell.device
            )
        release_free_memory()
        feed = feeds[0].arrays
        clock = clock_for(cell.device, backend.asynchronous)
        progress.phase(f"{cell.label()}: timing ({plan.describe()})")
        with meter.measure():
            stats = time_callable(lambda: runner.infer(feed, check_inputs=False), plan, clock)
        device_peak = device_peak_mib(cell.device) if backend.is_reference else None
    finally:
        if runner.is_active:
            runner.deactivate()
    cell.latency = stats
    cell.throughput_ips = stats.throughput(cell.batch)
    device_method = "torch.cuda.max_memory_allocated" if device_peak is not None else None
    cell.memory = MemoryUsage.from_meter(meter, device_peak, device_method)


def check_parity(
    spec: ModelSpec,
    reference: BaseRunner,
    candidate: BaseRunner,
    feeds: list[Feed],
    precision: str,
    device: str,
) -> ParityOutcome:
    """`compare_runners` with the zoo's tolerances; the candidate stays active afterwards.

    As in `hgdeploy parity`, reduced precisions are judged on the real images only: their
    tolerances were set on them, and noise far outside the data says nothing about deployment
    (bf16 HRNet: 5% of the range on photos, 21% on noise)."""
    if get_precision(precision).photos_only:
        feeds = [f for f in feeds if not f.noise]
    tolerances = spec.tolerances.get(precision)
    labels = [f.label for f in feeds]
    if tolerances is None:
        return ParityOutcome(
            False, None, labels, note=f"not checked: there are no {precision} tolerances"
        )
    with _strict_fp32(device):
        rows = compare_runners(spec, reference, _Borrowed(candidate), feeds, tolerances)
    note = describe_failure(rows)
    return ParityOutcome(True, note is None, labels, [asdict(r) for r in rows], note)


class _Borrowed(BaseRunner):
    """An already-active runner lent to Polygraphy's Comparator, which deactivates what it ran;
    lending it keeps the candidate's session alive for timing (one activation per cell)."""

    def __init__(self, inner: BaseRunner) -> None:
        super().__init__(name=inner.name)
        self._inner = inner

    def activate_impl(self) -> None:
        pass

    def deactivate_impl(self) -> None:
        pass

    def get_input_metadata_impl(self) -> Any:
        return self._inner.get_input_metadata(use_numpy_dtypes=False)

    def infer_impl(self, feed_dict: dict[str, Any]) -> Any:
        outputs = self._inner.infer(feed_dict, check_inputs=False)
        self.inference_time = self._inner.last_inference_time()
        return outputs


@contextlib.contextmanager
def _strict_fp32(device: str) -> Iterator[None]:
    """IEEE fp32 convolutions and matmuls in torch on a GPU (no TF32): fp32 cells are true fp32
    (the torch baseline included), and the parity reference is the exact fp32 model that the
    zoo's tolerances were set against. A no-op on the CPU."""
    if not device.startswith("cuda"):
        yield
        return
    import torch

    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        saved = (conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision)
        conv.fp32_precision = "ieee"
        torch.backends.cuda.matmul.fp32_precision = "ieee"
        try:
            yield
        finally:
            conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved
        return
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def _providers(runner: BaseRunner) -> list[str] | None:
    """The execution providers an ONNX Runtime session really got; for OpenVINO, the device and
    the inference precision it compiled with (None for other runners)."""
    compiled = getattr(runner, "compiled_precision", None)
    if compiled is not None:
        return [f"CPU (inference precision {compiled})"]
    session = getattr(runner, "sess", None)
    get = getattr(session, "get_providers", None)
    return list(get()) if callable(get) else None


def finish(
    cell: CellResult,
    status: Status,
    reason: str | None,
    progress: ProgressSink,
    started: float | None = None,
) -> None:
    cell.status = status
    cell.reason = reason
    if started is not None:
        cell.seconds = time.perf_counter() - started
    progress.advance(cell)


def one_line(exc: BaseException) -> str:
    """An exception as one short line: the message for our errors, `Type: first line` else."""
    text = " ".join(str(exc).split()) if isinstance(exc, (HgDeployError, SkipCell)) else ""
    if not text:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return text if len(text) <= _MAX_REASON else text[: _MAX_REASON - 3] + "..."
