"""The network stage of a pipeline: any backend's runner behind one call, at the artifact's batch.

A deployed artifact has a fixed input (batch, H, W), or a dynamic batch; the eager model takes
any size. `Network` splits a stack of inputs into calls of at most `batch` (padding the last call
by repeating its final item when the artifact's batch is static) and returns the outputs by
name, so a pipeline never knows which backend runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.export_settings import INPUT_NAME
from hgdeploy.pipelines.timing import StageTimes

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner


@dataclass
class Network:
    runner: BaseRunner  # activated by the caller (a `with` block) or here on first call
    batch: int  # the most inputs per call
    static_batch: bool  # the artifact only runs exactly `batch`
    input_hw: tuple[int, int] | None  # None: any size (the eager model)
    layout: str  # "NCHW" or "NHWC"
    backend: str = "torch"

    def __call__(
        self, inputs: np.ndarray, times: StageTimes | None = None
    ) -> dict[str, np.ndarray]:
        """Outputs for every item of `inputs` (N, ...), concatenated in order."""
        self._check_size(inputs)
        if not self.runner.is_active:
            self.runner.activate()
        chunks: list[dict[str, np.ndarray]] = []
        for start in range(0, len(inputs), self.batch):
            part = inputs[start : start + self.batch]
            count = len(part)
            if self.static_batch and count < self.batch:
                part = np.concatenate([part, np.repeat(part[-1:], self.batch - count, axis=0)])
            feed = {INPUT_NAME: np.ascontiguousarray(part, dtype=np.float32)}
            if times is None:
                outputs = self.runner.infer(feed, check_inputs=False)
            else:
                with times.stage("network"):
                    outputs = self.runner.infer(feed, check_inputs=False)
            chunks.append({name: np.asarray(value)[:count] for name, value in outputs.items()})
        return {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}

    def _check_size(self, inputs: np.ndarray) -> None:
        if self.input_hw is None:
            return
        hw = inputs.shape[2:4] if self.layout == "NCHW" else inputs.shape[1:3]
        if tuple(hw) != tuple(self.input_hw):
            raise HgDeployError(
                f"the artifact takes {self.input_hw[0]}x{self.input_hw[1]} inputs, got "
                f"{hw[0]}x{hw[1]}"
            )

    def close(self) -> None:
        if self.runner.is_active:
            self.runner.deactivate()
