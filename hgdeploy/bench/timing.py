"""Timing one callable (one runner's inference) and measuring the memory it used.

Latency: `warmup` calls are run and discarded (first calls pay for lazy initialisation, memory
arena growth, cuDNN/oneDNN algorithm selection), then either a fixed number of iterations or as
many as fit in a time budget are timed one by one. Each sample is one synchronous inference:

* host clock (CPU backends, and GPU backends whose call already waits for the result, such as
  ONNX Runtime's `run` or Polygraphy runners that copy outputs back): `time.perf_counter_ns`,
  monotonic and nanosecond-resolution;
* CUDA clock (torch on a GPU): a pair of `torch.cuda.Event`s recorded around the call and a
  synchronisation on the end event, so queued kernels are counted and host jitter is not.

Memory, per cell and honestly: `ru_maxrss` is the peak over the process's whole life, so it
cannot attribute memory to one cell of a matrix. On Linux the kernel keeps a resettable peak:
writing "5" to /proc/self/clear_refs resets VmHWM (the peak resident set) to the current RSS.
`PeakRss` resets it when a measured phase starts and reads it when it ends: the exact kernel
peak for that phase, with no sampling gaps. Where clear_refs is not writable, a background
thread samples VmRSS every few milliseconds instead (a peak shorter than the interval can be
missed). Freed memory is handed back to the OS (`malloc_trim`) before each baseline, so one
cell's leftovers do not hide the next cell's growth. Device memory on a GPU is torch's own
allocator peak (`torch.cuda.max_memory_allocated`), which sees torch tensors only.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hgdeploy.base.errors import HgDeployError

MIB = 2**20
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")
_SAMPLE_INTERVAL_S = 0.002


# --- latency ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimingPlan:
    """How long to time: `warmup` discarded calls, then `iterations` calls or `seconds` of them."""

    warmup: int = 3
    iterations: int | None = 10
    seconds: float | None = None

    def __post_init__(self) -> None:
        if self.warmup < 0:
            raise HgDeployError(f"--warmup must be >= 0, got {self.warmup}")
        if (self.iterations is None) == (self.seconds is None):
            raise HgDeployError("give either --iterations or --seconds, not both")
        if self.iterations is not None and self.iterations < 1:
            raise HgDeployError(f"--iterations must be >= 1, got {self.iterations}")
        if self.seconds is not None and not self.seconds > 0:
            raise HgDeployError(f"--seconds must be > 0, got {self.seconds}")

    def describe(self) -> str:
        budget = f"{self.iterations} iterations" if self.iterations else f"{self.seconds:g} s"
        return f"{self.warmup} warm-up + {budget}"


@dataclass(frozen=True)
class LatencyStats:
    """Per-call latency of one timed loop, in milliseconds (percentiles linearly interpolated).

    With few iterations the tail percentiles collapse onto the maximum; `iterations` is kept
    so a reader can judge how much p99 means.
    """

    clock: str
    iterations: int
    min_ms: float
    median_ms: float
    mean_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    std_ms: float
    cv: float  # std / mean: above ~0.1 the machine was probably busy
    samples_ms: list[float] = field(repr=False)

    @classmethod
    def from_samples(cls, clock: str, samples_ms: list[float]) -> LatencyStats:
        if not samples_ms:
            raise ValueError("no latency samples")
        data = np.asarray(samples_ms, dtype=np.float64)
        std = statistics.pstdev(samples_ms) if len(samples_ms) > 1 else 0.0
        return cls(
            clock=clock,
            iterations=len(samples_ms),
            min_ms=float(data.min()),
            median_ms=float(np.median(data)),
            mean_ms=float(data.mean()),
            p90_ms=float(np.percentile(data, 90)),
            p99_ms=float(np.percentile(data, 99)),
            max_ms=float(data.max()),
            std_ms=std,
            cv=std / float(data.mean()) if data.mean() > 0 else 0.0,
            samples_ms=[round(float(s), 4) for s in samples_ms],
        )

    def throughput(self, batch: int) -> float:
        """Images per second at the median latency: batch / median."""
        return batch / (self.median_ms / 1000.0) if self.median_ms > 0 else math.inf

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Clock(Protocol):
    """Times one call of `fn` in milliseconds, waiting for whatever work it queued."""

    name: str

    def time_ms(self, fn: Callable[[], object]) -> float: ...


class HostClock:
    """`time.perf_counter_ns` around a call that returns only when its result is ready."""

    name = "perf_counter_ns"

    def time_ms(self, fn: Callable[[], object]) -> float:
        started = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - started) / 1e6


class CudaEventClock:
    """CUDA events around the call on the current stream, then a wait on the end event."""

    name = "cuda_event"

    def __init__(self, device: Any = None) -> None:
        import torch

        self._torch = torch
        self._device = device
        self._start = torch.cuda.Event(enable_timing=True)
        self._end = torch.cuda.Event(enable_timing=True)

    def time_ms(self, fn: Callable[[], object]) -> float:
        self._torch.cuda.synchronize(self._device)  # nothing earlier may leak into the sample
        self._start.record()
        fn()
        self._end.record()
        self._end.synchronize()
        return float(self._start.elapsed_time(self._end))


def clock_for(device: str, use_cuda_events: bool) -> Clock:
    """CUDA events for torch work on a GPU, the host monotonic clock for everything else."""
    if use_cuda_events and device.startswith("cuda"):
        return CudaEventClock(device)
    return HostClock()


def time_callable(fn: Callable[[], object], plan: TimingPlan, clock: Clock) -> LatencyStats:
    """Run `fn` `plan.warmup` times untimed, then time it per `plan`. Never asserts a time."""
    for _ in range(plan.warmup):
        fn()
    samples: list[float] = []
    if plan.iterations is not None:
        for _ in range(plan.iterations):
            samples.append(clock.time_ms(fn))
    else:
        assert plan.seconds is not None
        deadline = time.perf_counter() + plan.seconds
        while not samples or time.perf_counter() < deadline:
            samples.append(clock.time_ms(fn))
    return LatencyStats.from_samples(clock.name, samples)


# --- threads ------------------------------------------------------------------------------------


def available_cores() -> int:
    """CPU cores this process may run on (the affinity mask, where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with torch's intra-op pool at `threads`, restoring the previous count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# --- host memory --------------------------------------------------------------------------------


def _status_kib(key: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def current_rss_mib() -> float | None:
    """The resident set size now (VmRSS), or None where /proc is not available."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib / 1024


_LIBC: Any = None


def release_free_memory() -> None:
    """Collect garbage and return freed heap pages to the OS (glibc `malloc_trim`, if present).

    Without this, memory a finished cell freed stays resident in the allocator and the next
    cell's growth partly reuses it, so its measured delta would read too small.
    """
    global _LIBC
    gc.collect()
    if _LIBC is None:
        name = ctypes.util.find_library("c")
        try:
            _LIBC = ctypes.CDLL(name) if name else False
        except OSError:
            _LIBC = False
    trim = getattr(_LIBC, "malloc_trim", None) if _LIBC else None
    if trim is not None:
        trim(0)


def _can_reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


class PeakRss:
    """Peak resident memory over the phases run under `measure()`, and the baseline before them.

    `method` says how the peak was obtained: "vmhwm-reset" (kernel peak counter, reset per
    phase), "vmrss-sampled" (a thread polling VmRSS every 2 ms) or "unavailable".
    """

    def __init__(self) -> None:
        release_free_memory()
        self.baseline_mib = current_rss_mib()
        self.peak_mib: float | None = None
        if self.baseline_mib is None:
            self.method = "unavailable"
        elif _can_reset_peak():
            self.method = "vmhwm-reset"
        else:
            self.method = "vmrss-sampled"

    @contextlib.contextmanager
    def measure(self) -> Iterator[None]:
        """Fold the peak RSS reached inside the block into `peak_mib`."""
        if self.method == "unavailable":
            yield
            return
        if self.method == "vmhwm-reset":
            _can_reset_peak()
            try:
                yield
            finally:
                kib = _status_kib("VmHWM")
                if kib is not None:
                    self._fold(kib / 1024)
            return
        sampler = _RssSampler()
        sampler.start()
        try:
            yield
        finally:
            self._fold(sampler.stop())

    def _fold(self, value: float | None) -> None:
        if value is not None:
            self.peak_mib = value if self.peak_mib is None else max(self.peak_mib, value)

    @property
    def delta_mib(self) -> float | None:
        """How far the measured phases raised the resident set above the baseline."""
        if self.peak_mib is None or self.baseline_mib is None:
            return None
        return max(0.0, self.peak_mib - self.baseline_mib)


class _RssSampler(threading.Thread):
    """Polls VmRSS until stopped; the fallback where the kernel peak cannot be reset."""

    def __init__(self) -> None:
        super().__init__(name="hgdeploy-rss-sampler", daemon=True)
        self._stop_event = threading.Event()
        self.peak_mib = current_rss_mib() or 0.0

    def run(self) -> None:
        while not self._stop_event.wait(_SAMPLE_INTERVAL_S):
            self.peak_mib = max(self.peak_mib, current_rss_mib() or 0.0)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return max(self.peak_mib, current_rss_mib() or 0.0)


# --- device memory ------------------------------------------------------------------------------


def reset_device_peak(device: str) -> None:
    """Start a fresh torch CUDA allocator peak (a no-op on the CPU)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def device_peak_mib(device: str) -> float | None:
    """torch's CUDA allocator peak since the last reset; None on the CPU."""
    if not device.startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated(device) / MIB


@dataclass(frozen=True)
class MemoryUsage:
    """What one cell used. `rss_delta_mib` is the growth over the pre-cell baseline."""

    rss_peak_mib: float | None
    rss_delta_mib: float | None
    rss_method: str
    device_peak_mib: float | None = None
    device_method: str | None = None

    @classmethod
    def from_meter(
        cls, meter: PeakRss, device_peak: float | None = None, device_method: str | None = None
    ) -> MemoryUsage:
        def rounded(value: float | None) -> float | None:
            return None if value is None else round(value, 1)

        return cls(
            rss_peak_mib=rounded(meter.peak_mib),
            rss_delta_mib=rounded(meter.delta_mib),
            rss_method=meter.method,
            device_peak_mib=rounded(device_peak),
            device_method=device_method,
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
