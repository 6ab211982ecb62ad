"""A bounded load test against a Triton server: throughput and latency percentiles at each
concurrency, plus the server's own statistics (batch sizes the network executed, queue vs
compute time), which say *why* a figure is what it is.

Closed loop, as perf_analyzer's concurrency mode: C client threads each send a request, wait for
its answer, send the next. Bounded twice: at most `requests` answers per level and at most
`seconds` per level, so a slow or stuck server ends the run instead of hanging it. The
standard-library client is used (tritonclient's release needs protobuf < 7, onnx here needs 7);
its threads release the GIL while waiting on the socket, so 2 cores drive a few clients.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from hgdeploy.base.errors import HgDeployError
from hgdeploy.serving.client import TritonHttp

Request = tuple[dict[str, np.ndarray], list[str]]  # inputs, requested outputs


@dataclass
class LevelResult:
    concurrency: int
    answered: int
    errors: int
    seconds: float
    throughput: float  # answers per second over the level's wall time
    p50_ms: float
    p95_ms: float
    p99_ms: float
    server: dict[str, Any] = field(default_factory=dict)  # model -> its statistics' change

    @property
    def tail_ratio(self) -> float:
        return self.p99_ms / self.p50_ms if self.p50_ms > 0 else float("nan")


def model_counters(client: TritonHttp, model: str) -> dict[str, Any]:
    """The model's cumulative statistics: executions, batch sizes, queue and compute ns."""
    stats = client.stats(model)
    infer = stats.get("inference_stats", {})
    return {
        "inferences": int(stats.get("inference_count", 0)),
        "executions": int(stats.get("execution_count", 0)),
        "batches": {
            int(b["batch_size"]): int(b["compute_infer"]["count"])
            for b in stats.get("batch_stats", [])
        },
        "queue_ns": int(infer.get("queue", {}).get("ns", 0)),
        "compute_ns": sum(
            int(infer.get(k, {}).get("ns", 0))
            for k in ("compute_input", "compute_infer", "compute_output")
        ),
        "success": int(infer.get("success", {}).get("count", 0)),
    }


def settled_counters(
    client: TritonHttp, models: Sequence[str], target: str, answered: int, wait_s: float = 5.0
) -> dict[str, dict[str, Any]]:
    """Every watched model's counters once the server has counted what it answered.

    Triton records a request's statistics after its response is sent, so a snapshot taken just
    after the last answer can miss it and a later level would count it. Wait (bounded) until the
    target's successes reach `answered` and two reads 20 ms apart agree (the network behind a
    pipeline settles a moment after it)."""
    deadline = time.monotonic() + wait_s
    previous = {m: model_counters(client, m) for m in models}
    while True:
        time.sleep(0.02)
        current = {m: model_counters(client, m) for m in models}
        if current == previous and current[target]["success"] >= answered:
            return current
        if time.monotonic() >= deadline:
            raise HgDeployError(
                f"the server's statistics for {target} did not settle within {wait_s:g} s"
            )
        previous = current


def counters_change(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What one level did on the server: batch sizes executed, mean queue / compute ms per
    request, mean batch."""
    batches = {
        size: after["batches"].get(size, 0) - before["batches"].get(size, 0)
        for size in after["batches"]
    }
    batches = {size: n for size, n in sorted(batches.items()) if n > 0}
    requests = after["success"] - before["success"]
    executions = sum(batches.values())
    items = sum(size * n for size, n in batches.items())
    per_request = max(requests, 1)
    return {
        "batches": batches,
        "mean_batch": items / executions if executions else 0.0,
        "queue_ms_per_request": (after["queue_ns"] - before["queue_ns"]) / per_request / 1e6,
        "compute_ms_per_request": (after["compute_ns"] - before["compute_ns"]) / per_request / 1e6,
        "requests": requests,
    }


def run_level(
    client_for: Callable[[], TritonHttp],
    model: str,
    requests: Sequence[Request],
    concurrency: int,
    max_requests: int,
    max_seconds: float,
    watched: Sequence[str] = (),
    answered_before: int = 0,
) -> LevelResult:
    """One concurrency level; `watched` models' server statistics are read before and after
    (settled: see `settled_counters`; `answered_before` is the target's success count the
    server must have reached first). `watched`, when given, starts with `model`."""
    if concurrency < 1 or max_requests < 1 or max_seconds <= 0:
        raise HgDeployError("concurrency, requests and seconds must be positive")
    if watched and watched[0] != model:
        raise HgDeployError(f"the watched models must start with the target {model}")
    probe = client_for()
    before = settled_counters(probe, watched, model, answered_before) if watched else {}
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    issued = 0
    deadline = time.monotonic() + max_seconds

    def next_index() -> int | None:
        nonlocal issued
        with lock:
            if issued >= max_requests or time.monotonic() >= deadline:
                return None
            issued += 1
            return issued - 1

    def client_loop() -> None:
        client = client_for()
        while (index := next_index()) is not None:
            inputs, outputs = requests[index % len(requests)]
            started = time.perf_counter()
            try:
                client.infer(model, inputs, outputs)
            except HgDeployError as exc:
                with lock:
                    errors.append(str(exc))
                continue
            with lock:
                latencies.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:  # each client's last request may start just before the deadline
        thread.join(timeout=max_seconds + probe.timeout + 5)
    seconds = time.perf_counter() - started
    if any(t.is_alive() for t in threads):
        raise HgDeployError(f"a client of {model} got no answer within its timeout; stopped")
    if errors and not latencies:
        raise HgDeployError(f"every request to {model} failed: {errors[0]}")
    ms = np.array(latencies) * 1e3
    after = (
        settled_counters(probe, watched, model, before[model]["success"] + len(latencies))
        if watched
        else {}
    )
    return LevelResult(
        concurrency,
        len(latencies),
        len(errors),
        seconds,
        len(latencies) / seconds,
        float(np.percentile(ms, 50)),
        float(np.percentile(ms, 95)),
        float(np.percentile(ms, 99)),
        {m: counters_change(before[m], after[m]) for m in watched},
    )


def level_record(level: LevelResult) -> dict[str, Any]:
    return {**asdict(level), "p99_over_p50": level.tail_ratio}


@dataclass
class LoadTestRun:
    model: str
    target: str  # the served model the clients call
    network: str
    levels: list[LevelResult]
    warmup: int
    server: str  # how the server ran (form of the network, instances)

    def record(self) -> dict[str, Any]:
        return {
            "kind": "serving-load-test",
            "model": self.model,
            "target": self.target,
            "network": self.network,
            "server": self.server,
            "warmup_requests": self.warmup,
            "levels": [level_record(level) for level in self.levels],
        }


def pipeline_requests(photos: Sequence[bytes]) -> list[Request]:
    """One request per photo: its encoded bytes, every detection / keypoint output."""
    return [({"image_bytes": np.array([p], dtype=object)}, ["coco_json"]) for p in photos]


def network_requests(client: TritonHttp, network: str, count: int = 4) -> list[Request]:
    """`count` single-item requests of the network's own input shape (random values: the
    network's time does not depend on them)."""
    import json

    status, body = client.get(f"/v2/models/{network}/config")
    if status != 200:
        raise HgDeployError(f"no config for {network}: HTTP {status}")
    config = json.loads(body)
    (tensor,) = config["input"]
    dims = [int(d) for d in tensor["dims"]]
    outputs = [o["name"] for o in config["output"]]
    shape = [1, *dims] if int(config.get("max_batch_size", 0)) > 0 else dims
    rng = np.random.default_rng(0)
    return [
        ({tensor["name"]: rng.standard_normal(shape).astype(np.float32)}, outputs)
        for _ in range(count)
    ]


def load_test(
    client: TritonHttp,
    model: str,
    target: str,
    network: str,
    requests: Sequence[Request],
    levels: Sequence[int],
    max_requests: int,
    max_seconds: float,
    warmup: int,
    server: str,
    on_level: Callable[[LevelResult], None] | None = None,
) -> LoadTestRun:
    """Warm up (sequential requests, not recorded), then each concurrency level in turn."""
    watched = [target] if target == network else [target, network]
    answered = settled_counters(client, watched, target, 0)[target]["success"] + warmup
    for index in range(warmup):
        inputs, outputs = requests[index % len(requests)]
        client.infer(target, inputs, outputs)
    results = []
    for concurrency in levels:
        level = run_level(
            lambda: TritonHttp(client.url, client.timeout),
            target,
            requests,
            concurrency,
            max_requests,
            max_seconds,
            watched,
            answered,
        )
        answered += level.answered
        results.append(level)
        if on_level is not None:
            on_level(level)
    return LoadTestRun(model, target, network, results, warmup, server)
