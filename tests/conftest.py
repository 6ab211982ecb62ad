"""Shared fixtures: models with deterministic synthetic weights, built once per test session."""

from __future__ import annotations

import functools
import importlib.util

import pytest
import torch
from torch import nn

from hgdeploy.loader import load_model

GOLDEN_INPUT_SEED = 7  # the input seed used when tests/data/golden was recorded upstream


@functools.cache
def synthetic_model(name: str, seed: int = 0) -> nn.Module:
    """`load_model(name)` with synthetic weights; cached because CornerNet alone takes ~10 s."""
    torch.set_num_threads(max(1, torch.get_num_threads()))
    return load_model(name, seed=seed)


def golden_input(shape: tuple[int, ...]) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(GOLDEN_INPUT_SEED))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests where there is no CUDA device or no TensorRT, saying which is missing."""
    has_cuda = torch.cuda.is_available()
    has_trt = importlib.util.find_spec("tensorrt") is not None
    missing = [what for what, ok in (("a CUDA GPU", has_cuda), ("TensorRT", has_trt)) if not ok]
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"needs {' and '.join(missing)}, not present on this machine")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
