"""The eager PyTorch model: the reference every other backend is judged by, and a bench cell."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hgdeploy.backends.base import Backend, RunContext, RunRequest

if TYPE_CHECKING:
    from polygraphy.backend.base import BaseRunner


class TorchBackend(Backend):
    name = "torch"
    summary = "eager PyTorch (the reference)"
    device = "any"
    runs = ("fp32",)
    asynchronous = True  # CUDA kernels return before the GPU is done: CUDA events time it
    artifact_suffixes = (".pkl", ".pt", ".pth")
    is_reference = True

    def runner(self, request: RunRequest) -> BaseRunner:
        """The eager model with the checkpoint `artifact` (None: synthetic weights of `seed`)."""
        from hgdeploy.base.export_settings import INPUT_NAME
        from hgdeploy.models.loader import load_model
        from hgdeploy.runners.torch_runner import TorchRunner

        spec = request.spec
        model = load_model(spec.name, request.artifact, seed=request.seed)
        shape = spec.input_shape(request.batch)
        return TorchRunner(model, INPUT_NAME, shape, spec.output_names, name=self.name)

    def bench_runner(self, context: RunContext, batch: int, precision: str) -> BaseRunner:
        from hgdeploy.base.export_settings import INPUT_NAME
        from hgdeploy.runners.torch_runner import TorchRunner

        spec = context.spec
        return TorchRunner(
            context.model,
            INPUT_NAME,
            spec.input_shape(batch),
            spec.output_names,
            device=context.device,
            name="torch",
        )
