"""The corner pools' backward (training stand-ins) against upstream's C++ backward, re-run as a
plain loop: scan from the pool's far end, move the arg-max only on a strictly greater input,
and add each row's (column's) gradient onto the current arg-max."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hgdeploy.models.corner_pool import CUSTOM_OPS, DIRECTIONS, running_argmax


def upstream_backward(x: np.ndarray, grad: np.ndarray, direction_name: str) -> np.ndarray:
    direction = DIRECTIONS[direction_name]
    axis, length = direction.axis, x.shape[direction.axis]
    order = range(length - 1, -1, -1) if direction.reverse else range(length)
    xs, gs = np.moveaxis(x, axis, -1), np.moveaxis(grad, axis, -1)
    out = np.zeros_like(gs)
    for index in np.ndindex(xs.shape[:-1]):
        best, where = -np.inf, -1
        for position in order:
            if where < 0 or xs[index][position] > best:
                best, where = xs[index][position], position
            out[index][where] += gs[index][position]
    return np.moveaxis(out, -1, axis)


@pytest.mark.parametrize("direction_name", list(DIRECTIONS))
def test_backward_equals_upstream_with_ties(direction_name: str) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 4, size=(2, 3, 7, 9)).astype(np.float32)  # many ties
    grad = rng.normal(size=x.shape).astype(np.float32)
    leaf = torch.from_numpy(x).requires_grad_()
    CUSTOM_OPS[direction_name](leaf).backward(torch.from_numpy(grad))
    expected = upstream_backward(x.astype(np.float64), grad.astype(np.float64), direction_name)
    np.testing.assert_allclose(leaf.grad.numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("direction_name", list(DIRECTIONS))
def test_backward_passes_gradcheck(direction_name: str) -> None:
    x = torch.randn(2, 2, 5, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert torch.autograd.gradcheck(CUSTOM_OPS[direction_name], (x.requires_grad_(),))


def test_running_argmax_picks_the_first_of_a_tie_in_scan_order() -> None:
    x = torch.tensor([1.0, 5.0, 2.0, 5.0, 0.0]).view(1, 1, 1, 5)
    right = running_argmax(x, DIRECTIONS["RightPool"]).flatten().tolist()  # left-to-right scan
    left = running_argmax(x, DIRECTIONS["LeftPool"]).flatten().tolist()  # right-to-left scan
    assert right == [0, 1, 1, 1, 1]
    assert left == [3, 3, 3, 3, 4]
