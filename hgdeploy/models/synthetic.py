"""Deterministic synthetic weights: reproducible stand-ins for upstream checkpoints.

Tests and random-init exports need weights that (a) anyone can regenerate from a seed without
downloading a checkpoint and (b) give realistic activations: PyTorch's default init leaves every
BatchNorm at mean 0 / var 1, which hides bugs in BN folding and running-stat handling.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import Tensor, nn


def synthetic_state_dict(reference: Mapping[str, Tensor], seed: int = 0) -> dict[str, Tensor]:
    """Random tensors shaped like `reference`, drawn in key order from one seeded generator.

    Conv/linear weights ~ N(0, 1/fan_in); BN gamma ~ U(0.5, 1), beta and biases ~ N(0, 0.05),
    running_mean ~ N(0, 0.1), running_var ~ U(0.5, 1.5); integer buffers are zero.
    """
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, Tensor] = {}
    for key, ref in reference.items():
        stem = key.rsplit(".", 1)[0]
        is_bn = f"{stem}.running_var" in reference
        shape = tuple(ref.shape)
        if not ref.is_floating_point():
            value = torch.zeros(shape, dtype=ref.dtype)
        elif key.endswith("running_var"):
            value = torch.rand(shape, generator=gen) + 0.5
        elif key.endswith("running_mean"):
            value = torch.randn(shape, generator=gen) * 0.1
        elif is_bn and key.endswith(".weight"):
            value = torch.rand(shape, generator=gen) * 0.5 + 0.5
        elif ref.dim() <= 1:
            value = torch.randn(shape, generator=gen) * 0.05
        else:
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        out[key] = value.to(ref.dtype)
    return out


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, inputs: Tensor) -> nn.Module:
    """Set every BatchNorm's running stats to the batch statistics of `inputs`, as training would.

    Random weights alone make activations grow stack after stack (1e5 at the output of an
    8-stack hourglass); with calibrated BN statistics every normalised activation is O(1), like a
    trained network, so tolerances and int8 calibration behave as they would on real weights.
    BN layers that `forward` does not reach keep the identity statistics (mean 0, var 1).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: after one batch, exactly that batch's stats
    model.train()
    model(inputs)
    model.eval()
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    return model


def synthesize_weights(model: nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """Give `model` reproducible, realistically scaled weights: random tensors + BN calibration."""
    model.load_state_dict(synthetic_state_dict(model.state_dict(), seed))
    generator = torch.Generator().manual_seed(seed + 1)
    return calibrate_batchnorm(model, torch.randn(input_shape, generator=generator))
