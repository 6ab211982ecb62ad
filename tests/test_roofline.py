"""The matmul-peak probes compute what they claim, and the roofline summary reads results right."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import numpy_helper

from hgdeploy.base.errors import HgDeployError
from hgdeploy.bench.matmul_peak import PROBES, matmul_onnx, measure_peak
from hgdeploy.bench.roofline import model_gflop, summary_markdown, summary_rows
from hgdeploy.bench.timing import TimingPlan
from hgdeploy.runners.onnxrt_runner import onnxruntime_runner
from hgdeploy.runners.openvino_runner import openvino_runner


def _fake_quant_reference(x: np.ndarray, model: object) -> np.ndarray:
    """x through uint8 Q/DQ (scale 0.02, zero 128) times the dequantized int8 weight, with the
    products summed in exact integer arithmetic (numpy's integer matmul uses no BLAS) and
    rescaled once in float64: what an int32-accumulating u8s8 kernel computes."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}  # type: ignore[attr-defined]
    x_q = np.clip(np.round(x / inits["x_scale"]) + 128, 0, 255).astype(np.int64)
    accumulated = (x_q - 128) @ inits["w_q"].astype(np.int64)
    return accumulated * (np.float64(inits["x_scale"]) * np.float64(inits["w_scale"]))


@pytest.mark.parametrize("make_runner", [onnxruntime_runner, openvino_runner])
def test_int8_probe_is_the_u8s8_matmul(make_runner: object) -> None:
    model = matmul_onnx(8, 64, 16, quantized=True)
    x = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    with make_runner(model) as runner:  # type: ignore[operator]
        got = runner.infer({"x": x})["y"]
    expected = _fake_quant_reference(x, model)
    # int32 accumulation is exact (7-bit weights: no int16 saturation on CPUs without VNNI);
    # only the final fp32 rescale rounds
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(("backend", "precision"), PROBES)
def test_every_probe_runs_and_reports_a_rate(backend: str, precision: str) -> None:
    from hgdeploy.runners.openvino_runner import cpu_supports_bf16

    if precision == "bf16" and not cpu_supports_bf16():
        with pytest.raises(HgDeployError, match="^OpenVINO bf16 needs a CPU with native bf16"):
            measure_peak(backend, precision, TimingPlan(1, 2, None), 1, shape=(32, 64, 32))
        return
    result = measure_peak(backend, precision, TimingPlan(1, 2, None), 1, shape=(32, 64, 32))
    assert result.median_ms > 0 and result.gflops > 0  # measured, never asserted against a time
    if backend == "openvino":
        assert (
            result.note
            == f"OpenVINO inference precision {'bf16' if precision == 'bf16' else 'f32'}"
        )


def test_hrnet_flop_count_matches_the_recorded_figure() -> None:
    assert model_gflop("hrnet") == pytest.approx(15.3, rel=0.01)


def _cell(backend: str, precision: str, ms: float, trusted: bool = True, **extra: object) -> dict:
    return {
        "model": "hrnet",
        "backend": backend,
        "precision": precision,
        "latency_ms": {"median_ms": ms},
        "trusted": trusted,
        **extra,
    }


def test_summary_picks_the_fastest_trusted_cell_and_its_peak() -> None:
    parity = {"outputs": [{"peak_agreement": 0.5}]}
    results = {
        "cells": [
            _cell("torch", "fp32", 150.0),
            _cell("openvino", "int8", 10.0, trusted=False),  # failed parity: never "best"
            _cell("onnxruntime", "int8", 30.0, parity=parity),
            _cell("openvino", "default", 40.0, providers=["CPU (inference precision bf16)"]),
        ]
    }
    peaks = {"probes": [{"backend": "onnxruntime", "precision": "int8", "gflops": 1000.0}]}
    (row,) = summary_rows(results, peaks)
    assert row["best"] == "onnxruntime int8" and row["vs_eager"] == pytest.approx(5.0)
    assert row["peak_agreement"] == 0.5
    assert row["roofline_fraction"] == pytest.approx(model_gflop("hrnet") / 0.030 / 1000.0)
    assert "| hrnet |" in summary_markdown([row])
