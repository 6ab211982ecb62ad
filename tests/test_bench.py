"""The benchmark tool on a tiny matrix: HRNet (no corner pools, quick to export) at batch 1.

What is checked is the record, never a time: results.json is well formed, results.md and
results.png are written, an unavailable backend is reported skipped with its reason, a backend
that raises is recorded as failed while the run goes on, a parity mismatch is flagged and kept
out of the headline, ratios are computed against eager torch, and the corner-pool
micro-benchmark runs on the CPU with the Triton row skipped.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result
from conftest import use_cached_models
from PIL import Image

from hgdeploy.backends import Backend, get_backend
from hgdeploy.backends.tensorrt import default_engine_path
from hgdeploy.bench import matrix
from hgdeploy.bench.matrix import BenchConfig, CellResult, SkipCell, run_matrix
from hgdeploy.bench.report import headline_ratios, results_markdown
from hgdeploy.bench.timing import LatencyStats, PeakRss, TimingPlan, time_callable
from hgdeploy.cli.bench import bench_command
from hgdeploy.cli.options import CliGroup
from hgdeploy.runners.torch_runner import TorchRunner

MODEL = "hrnet"
# One thread: the test times nothing that matters, and on a shared 2-core machine two OpenMP
# threads stall on every barrier whenever another process holds a core.
TINY = ["--warmup", "1", "--iterations", "2", "--threads", "1"]


def tiny_matrix_args(output: str) -> list[str]:
    """One model at batch 1 over torch, onnxruntime and tensorrt (skipped here), few iterations."""
    backends = ["--backend", "torch", "--backend", "onnxruntime", "--backend", "tensorrt"]
    return ["--model", MODEL, "--batch", "1", *backends, *TINY, "--output", output]


@click.group(cls=CliGroup)
def cli() -> None:
    """A throwaway group: the real CLI registers `bench` itself."""


cli.add_command(bench_command)


def invoke(workdir: Path, args: list[str]) -> Result:
    """Run `bench` from `workdir`, so artifacts/ (the exported ONNX) lands there."""
    with contextlib.chdir(workdir), pytest.MonkeyPatch.context() as patch:
        use_cached_models(patch)
        return CliRunner().invoke(cli, ["bench", *args], env={"COLUMNS": "220"})


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("bench")


@pytest.fixture(scope="module")
def tiny_run(workdir: Path) -> tuple[Result, Path]:
    """One CLI run over torch, onnxruntime and tensorrt (exports the dynamic-batch ONNX)."""
    result = invoke(
        workdir,
        tiny_matrix_args("results"),
    )
    return result, workdir / "results"


def _cells(output: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((output / "results.json").read_text())
    return {cell["backend"]: cell for cell in data["cells"]}


# --- the JSON schema ----------------------------------------------------------------------------

CELL_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "backend": (str,),
    "precision": (str,),
    "batch": (int,),
    "status": (str,),
    "reason": (str, type(None)),
    "trusted": (bool,),
    "device": (str,),
    "threads": (int,),
    "providers": (list, type(None)),
    "latency_ms": (dict, type(None)),
    "throughput_ips": (float, type(None)),
    "speedup_vs_torch": (float, type(None)),
    "speedup_vs_openvino_default": (float, type(None)),  # no OpenVINO default cell: None
    "parity": (dict, type(None)),
    "memory": (dict, type(None)),
    "weights_mib": (float, type(None)),
    "artifact": (str, type(None)),
    "seconds": (float, int),
    "versions": (dict,),
}
LATENCY_FIELDS = ("min_ms", "median_ms", "mean_ms", "p90_ms", "p99_ms", "max_ms", "std_ms", "cv")
MEMORY_FIELDS = ("rss_peak_mib", "rss_delta_mib", "rss_method", "device_peak_mib")


def check_cell_schema(cell: dict[str, Any]) -> None:
    assert set(cell) == set(CELL_FIELDS), set(cell) ^ set(CELL_FIELDS)
    for key, types in CELL_FIELDS.items():
        assert isinstance(cell[key], types), (key, cell[key])
    assert cell["status"] in ("ok", "parity_failed", "skipped", "failed")
    timed = cell["status"] in ("ok", "parity_failed")
    assert (cell["latency_ms"] is not None) == timed
    if cell["status"] in ("skipped", "failed"):
        assert cell["reason"], "a cell that did not run must say why"
    if timed:
        latency = cell["latency_ms"]
        assert latency["clock"] in ("perf_counter_ns", "cuda_event")
        assert latency["iterations"] == len(latency["samples_ms"]) == 2
        values = [latency[k] for k in ("min_ms", "median_ms", "p90_ms", "p99_ms", "max_ms")]
        assert values == sorted(values) and values[0] > 0
        assert all(isinstance(latency[k], float) for k in LATENCY_FIELDS)
        assert cell["throughput_ips"] == pytest.approx(cell["batch"] / latency["median_ms"] * 1e3)
        assert set(MEMORY_FIELDS) <= set(cell["memory"])


def test_results_json_is_well_formed(tiny_run: tuple[Result, Path]) -> None:
    result, output = tiny_run
    assert result.exit_code == 0, result.output
    data = json.loads((output / "results.json").read_text())
    assert data["schema"] == "hgdeploy.bench/1"
    assert {"created", "host", "settings", "versions", "headline", "cells"} <= set(data)
    assert data["complete"] is True and data["settings"]["batches"] == {MODEL: [1]}
    assert data["host"]["threads"] == 1 and data["host"]["device"] in ("cpu", "cuda")
    assert data["settings"]["warmup"] == 1 and data["settings"]["iterations"] == 2
    assert [(c["backend"], c["batch"]) for c in data["cells"]] == [
        ("torch", 1),
        ("onnxruntime", 1),
        ("tensorrt", 1),
    ]
    for cell in data["cells"]:
        check_cell_schema(cell)
        assert cell["model"] == MODEL and cell["precision"] == "fp32"


def test_backends_are_checked_timed_and_compared_with_torch(tiny_run: tuple[Result, Path]) -> None:
    _, output = tiny_run
    cells = _cells(output)
    torch_cell, ort = cells["torch"], cells["onnxruntime"]
    assert torch_cell["status"] == "ok" and torch_cell["trusted"]
    assert torch_cell["speedup_vs_torch"] == pytest.approx(1.0)
    assert ort["status"] == "ok", ort["reason"]
    assert ort["parity"]["checked"] and ort["parity"]["passed"] and ort["trusted"]
    assert len(ort["parity"]["feeds"]) == 3 and ort["parity"]["feeds"][0].startswith("images:")
    assert {o["name"] for o in ort["parity"]["outputs"]} == {"heatmaps"}
    expected = torch_cell["latency_ms"]["median_ms"] / ort["latency_ms"]["median_ms"]
    assert ort["speedup_vs_torch"] == pytest.approx(expected)
    assert ort["artifact"].endswith("hrnet_dyn_plugin.onnx")
    assert ort["providers"] and ort["providers"][-1] == "CPUExecutionProvider"


def test_tensorrt_is_reported_skipped_with_its_reason(tiny_run: tuple[Result, Path]) -> None:
    result, output = tiny_run
    trt = _cells(output)["tensorrt"]
    assert trt["status"] == "skipped" and trt["latency_ms"] is None
    unavailable = get_backend("tensorrt").unavailable_reason()
    if unavailable is not None:
        assert trt["reason"] == unavailable
    else:  # a GPU machine with TensorRT, but this test built no engine
        assert trt["reason"].startswith("no engine: run hgdeploy build-engine")
    assert "skipped" in result.output


def test_results_markdown_has_a_table_and_the_headline(tiny_run: tuple[Result, Path]) -> None:
    result, output = tiny_run
    text = (output / "results.md").read_text()
    assert f"## {MODEL}" in text and "| backend | precision | batch | status |" in text
    assert "## Headline" in text
    speedup = _cells(output)["onnxruntime"]["speedup_vs_torch"]
    assert "onnxruntime " in text and "x eager (hrnet, batch 1, fp32)" in text
    assert f"{speedup:.2f}x" in text or f"{speedup:.1f}x" in text
    assert "x eager (hrnet, batch 1, fp32)" in result.output  # the headline is printed too


def test_results_png_is_a_valid_image(tiny_run: tuple[Result, Path]) -> None:
    _, output = tiny_run
    png = output / "results.png"
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 0
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.size[0] > 400 and image.size[1] > 200


def test_existing_onnx_is_reused(tiny_run: tuple[Result, Path], workdir: Path) -> None:
    onnx_path = workdir / "artifacts" / MODEL / f"{MODEL}_dyn_plugin.onnx"
    stamp = onnx_path.stat().st_mtime_ns
    with contextlib.chdir(workdir):
        assert matrix.ensure_onnx(MODEL, None, 0) == Path(onnx_path.relative_to(workdir))
    assert onnx_path.stat().st_mtime_ns == stamp


# --- failures, parity flags -------------------------------------------------------------------


def test_a_raising_backend_is_recorded_failed_and_the_run_continues(
    tiny_run: tuple[Result, Path], workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(*_: Any) -> Any:
        raise MemoryError("cannot allocate 48 GiB for the activations\nsecond line")

    monkeypatch.setattr(get_backend("onnxruntime"), "bench_runner", out_of_memory)
    result = invoke(
        workdir,
        tiny_matrix_args("failing"),
    )
    assert result.exit_code == 0, result.output
    cells = _cells(workdir / "failing")
    assert cells["onnxruntime"]["status"] == "failed"
    assert cells["onnxruntime"]["reason"] == (
        "MemoryError: cannot allocate 48 GiB for the activations"
    )
    assert cells["onnxruntime"]["speedup_vs_torch"] is None
    assert cells["torch"]["status"] == "ok"
    assert cells["tensorrt"]["status"] == "skipped"  # the cell after the failure still ran
    for cell in cells.values():
        check_cell_schema(cell)
    assert "failed" in result.output
    assert (workdir / "failing" / "results.md").is_file()


class _OffByOne(TorchRunner):
    """The eager model with every output shifted: a backend with a real numerical bug."""

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        return OrderedDict((k, v + 1.0) for k, v in super().infer_impl(feed_dict).items())


def test_parity_failure_is_flagged_untrusted_and_out_of_the_headline(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class Broken(Backend):
        name = "onnxruntime"
        summary = "the eager model with every output shifted"

        def bench_runner(self, context: matrix.RunContext, batch: int, precision: str) -> Any:
            spec = context.spec
            return _OffByOne(
                context.model, "image", spec.input_shape(batch), spec.output_names, name=self.name
            )

    use_cached_models(monkeypatch)
    backends = {"torch": get_backend("torch"), "onnxruntime": Broken()}
    config = BenchConfig(
        models=(MODEL,),
        backends=("onnxruntime", "torch"),
        batches=(1,),
        plan=TimingPlan(warmup=0, iterations=2),
        threads=1,
    )
    run = run_matrix(config, backends=backends)
    by_backend = {c.backend: c for c in run.cells}
    assert [c.backend for c in run.cells] == ["torch", "onnxruntime"]  # the baseline runs first
    bad = by_backend["onnxruntime"]
    assert bad.status == "parity_failed" and not bad.trusted
    assert bad.parity is not None and bad.parity.checked and bad.parity.passed is False
    assert bad.reason and bad.reason.startswith("parity FAILED: 1/1 outputs differ")
    assert bad.latency is not None and bad.speedup_vs_torch is not None  # flagged, not refused
    assert headline_ratios(run.cells) == []
    assert "**parity FAILED** (untrusted)" in results_markdown(run)


def test_tensorrt_cells_without_a_usable_engine_are_skipped_with_the_fix(tmp_path: Path) -> None:
    from hgdeploy.base.artifacts import write_sidecar
    from hgdeploy.base.zoo import get_spec

    spec = get_spec(MODEL)
    engine = tmp_path / "hrnet_fp16.engine"

    def skip_reason(batch: int, precision: str) -> str:
        context = matrix.RunContext(
            spec,
            torch.nn.Identity(),
            "cuda",
            1,
            engine,
            matrix.OnnxSource(MODEL, None, 0, lambda _: None),
        )
        with pytest.raises(SkipCell) as caught:
            get_backend("tensorrt").bench_runner(context, batch, precision)
        return str(caught.value)

    assert skip_reason(1, "fp16").startswith(
        "no engine: run hgdeploy build-engine --model hrnet --fp16 (nothing at --engine"
    )
    engine.write_bytes(b"engine")
    write_sidecar(
        engine,
        {
            "kind": "tensorrt-engine",
            "model": MODEL,
            "precision": "fp16",
            "profile": {"min": 1, "opt": 4, "max": 4},
        },
    )
    assert skip_reason(1, "fp32") == f"{engine} is a fp16 engine, not fp32"
    assert skip_reason(32, "fp16").endswith(
        "profile (1..4): run hgdeploy build-engine --model hrnet --fp16 --max-batch 32"
    )
    assert default_engine_path(MODEL, "fp16") == Path("artifacts/hrnet/hrnet_fp16.engine")


# --- the corner-pool micro-benchmark ------------------------------------------------------------


def test_corner_pool_micro_benchmark_on_cpu(workdir: Path) -> None:
    result = invoke(
        workdir,
        [
            "--op",
            "corner-pool",
            "--model",
            "squeeze",
            "--warmup",
            "0",
            "--iterations",
            "1",
            "--threads",
            "1",
            "--device",
            "cpu",
            "--output",
            "pools",
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads((workdir / "pools" / "corner_pool.json").read_text())
    assert data["schema"] == "hgdeploy.bench.corner_pool/1"
    assert data["bandwidth"][0]["device"] == "cpu" and data["bandwidth"][0]["gbps"] > 0
    rows = data["rows"]
    assert {r["direction"] for r in rows} == {"TopPool", "BottomPool", "LeftPool", "RightPool"}
    assert {tuple(r["shape"]) for r in rows} == {(1, 128, 64, 64)}
    for row in rows:
        assert row["bytes_moved"] == 2 * 128 * 64 * 64 * 4
        if row["implementation"] == "triton":
            assert row["status"] == "skipped" and "CUDA GPU" in row["reason"]
        else:
            assert row["status"] == "ok", row["reason"]
            assert row["exact"] is True
            assert row["achieved_gbps"] > 0 and row["floor_ms"] > 0 and row["pct_of_floor"] > 0
    assert {r["implementation"] for r in rows} == {
        "torch-cummax",
        "torch-doubling",
        "onnxruntime-lowered",
        "triton",
    }
    assert "| triton |" in (workdir / "pools" / "corner_pool.md").read_text()


def test_corner_pool_needs_a_model_with_corner_pools(workdir: Path) -> None:
    result = invoke(workdir, ["--op", "corner-pool", "--model", "hrnet"])
    assert result.exit_code == 1
    assert result.output.startswith("error: hrnet has no corner pools")


# --- timing and memory units ------------------------------------------------------------------


class _StepClock:
    """A fake clock: the n-th timed call takes n ms."""

    name = "fake"

    def __init__(self) -> None:
        self.calls = 0

    def time_ms(self, fn: Any) -> float:
        fn()
        self.calls += 1
        return float(self.calls)


def test_time_callable_excludes_warmup_and_summarises() -> None:
    calls: list[int] = []
    stats = time_callable(lambda: calls.append(1), TimingPlan(warmup=3, iterations=5), _StepClock())
    assert len(calls) == 8 and stats.iterations == 5
    assert stats.samples_ms == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert (stats.min_ms, stats.median_ms, stats.max_ms) == (1.0, 3.0, 5.0)
    assert stats.p90_ms == pytest.approx(4.6) and stats.p99_ms == pytest.approx(4.96)
    assert stats.throughput(batch=6) == pytest.approx(2000.0)


def test_time_callable_by_seconds_takes_at_least_one_sample() -> None:
    stats = time_callable(
        lambda: None, TimingPlan(warmup=0, iterations=None, seconds=1e-9), _StepClock()
    )
    assert stats.iterations >= 1 and math.isfinite(stats.median_ms)
    assert isinstance(LatencyStats.from_samples("x", [2.0]).std_ms, float)


def test_peak_rss_sees_memory_used_inside_the_phase() -> None:
    meter = PeakRss()
    if meter.method == "unavailable":
        pytest.skip("no /proc/self/status on this platform")
    with meter.measure():
        block = np.ones(96 * 2**20 // 8)  # 96 MiB, every page touched
        time.sleep(0.02)  # long enough for the sampling fallback to see it
        del block
    assert meter.delta_mib is not None and meter.delta_mib >= 80


@pytest.mark.parametrize(
    "args, message",
    [
        (["--iterations", "3", "--seconds", "1"], "error: give either --iterations or --seconds"),
        (
            ["--model", "hrnet", "--model", "squeeze", "--engine", "x.engine"],
            "error: --engine belongs to one model",
        ),
    ],
)
def test_bad_option_combinations_are_one_line_errors(
    workdir: Path, args: list[str], message: str
) -> None:
    result = invoke(workdir, args)
    assert result.exit_code == 1 and result.output.startswith(message), result.output


def test_batches_default_to_one_and_the_documented_size() -> None:
    from hgdeploy.base.zoo import get_spec

    assert BenchConfig().batches_for(get_spec("squeeze")) == [1, 13]
    assert BenchConfig(batches=(1, "documented")).batches_for(get_spec("saccade")) == [1, 2, 4]
    assert isinstance(CellResult("m", "b", "fp32", 1).to_json()["trusted"], bool)
