"""The eager PyTorch model as a Polygraphy runner: the reference every backend is checked
against."""

from __future__ import annotations

import time
from collections import OrderedDict

import numpy as np
import torch
from polygraphy.backend.base import BaseRunner
from polygraphy.common import TensorMetadata
from torch import nn


class TorchRunner(BaseRunner):
    """Runs an eval-mode `nn.Module` whose outputs (tuple or tensor) map to `output_names`.

    Polygraphy ships a `PytRunner`, but it predates tuple outputs and device handling; this one
    is small enough to own.
    """

    def __init__(
        self,
        model: nn.Module,
        input_name: str,
        input_shape: tuple[int | str, ...],
        output_names: tuple[str, ...],
        device: str = "cpu",
        name: str | None = None,
    ):
        super().__init__(name=name, prefix="torch-runner")
        self._model = model
        self._input_name = input_name
        self._input_shape = input_shape
        self._output_names = output_names
        self._device = torch.device(device)

    def activate_impl(self) -> None:
        self._model.to(self._device).eval()

    def get_input_metadata_impl(self) -> TensorMetadata:
        return TensorMetadata().add(self._input_name, dtype=np.float32, shape=self._input_shape)

    def infer_impl(self, feed_dict: dict[str, np.ndarray]) -> OrderedDict[str, np.ndarray]:
        x = torch.from_numpy(np.ascontiguousarray(feed_dict[self._input_name])).to(self._device)
        started = time.perf_counter()
        with torch.no_grad():
            raw = self._model(x)
            if self._device.type == "cuda":
                torch.cuda.synchronize(self._device)
        self.inference_time = time.perf_counter() - started  # Polygraphy's timing contract
        outputs = raw if isinstance(raw, tuple) else (raw,)
        return OrderedDict(
            (name, np.ascontiguousarray(out.detach().cpu().numpy()))
            for name, out in zip(self._output_names, outputs)
        )

    def deactivate_impl(self) -> None:
        pass
