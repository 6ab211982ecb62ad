"""The eager PyTorch model: the reference every other backend is judged by, and a bench cell."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hgdeploy.backends.base import Backend, RunContext, RunRequest

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner
    from torch import nn

    from hgdeploy.base.zoo import ModelSpec


class TorchBackend(Backend):
    name = "torch"
    summary = "eager PyTorch (the reference)"
    runs = ("fp32",)
    asynchronous = True  # CUDA kernels return before the GPU is done: CUDA events time it
    artifact_suffixes = (".pkl", ".pt", ".pth")
    is_reference = True

    def runner(self, request: RunRequest) -> BaseRunner:
        """The eager model with the checkpoint `artifact` (None: synthetic weights of `seed`)."""
        from hgdeploy.models.loader import load_model

        model = load_model(request.spec.name, request.artifact, seed=request.seed)
        return self._eager(model, request.spec, request.batch, "cpu")

    def bench_runner(self, context: RunContext, batch: int, precision: str) -> BaseRunner:
        return self._eager(context.model, context.spec, batch, context.device)

    def _eager(self, model: nn.Module, spec: ModelSpec, batch: int, device: str) -> BaseRunner:
        from hgdeploy.base.export_settings import INPUT_NAME
        from hgdeploy.runners.torch_runner import TorchRunner

        shape = spec.input_shape(batch)
        return TorchRunner(
            model, INPUT_NAME, shape, spec.output_names, device=device, name=self.name
        )
