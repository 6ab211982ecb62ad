"""The two python-backend models a repository holds, as Triton's python backend runs them (each
`<model>/1/model.py` imports one of these as `TritonPythonModel`; the stub runs it in the server
environment, `.venv-triton`, where `triton_python_backend_utils` exists).

- `NetworkModel`: a network artifact on hgdeploy's own runner (the one parity checks), for
  servers without the native backend. Triton's dynamic batcher hands `execute` several requests;
  they run as one batch and the outputs are split back.
- `PipelineModel`: upstream's pre-processing, the network through BLS (a request to the
  network model, which batches requests from every pipeline instance), upstream's
  post-processing (`pipeline_request.answer`). A bad request gets an error response; the model
  keeps serving.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.export_settings import INPUT_NAME
from hgdeploy.base.zoo import get_spec
from hgdeploy.serving.pipeline_request import BOX_INPUT, IMAGE_INPUT, answer


def _utils() -> Any:
    import triton_python_backend_utils as pb_utils  # only inside Triton's python stub

    return pb_utils


def _parameters(config: dict) -> dict[str, str]:
    return {k: v["string_value"] for k, v in config.get("parameters", {}).items()}


def _error(exc: BaseException) -> Any:
    """An error response: INVALID_ARG (HTTP 400) for a request hgdeploy refuses, INTERNAL
    (HTTP 500) for anything unexpected."""
    pb_utils = _utils()
    code = pb_utils.TritonError.INVALID_ARG
    if not isinstance(exc, HgDeployError):
        code = pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(
        output_tensors=[], error=pb_utils.TritonError(_message(exc), code)
    )


def _message(exc: BaseException) -> str:
    if isinstance(exc, HgDeployError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


class NetworkModel:
    def initialize(self, args: dict) -> None:
        from hgdeploy.pipelines.factory import make_network

        config = json.loads(args["model_config"])
        params = _parameters(config)
        spec = get_spec(params["hgdeploy_model"])
        artifact = Path(args["model_repository"]) / args["model_version"] / params["artifact"]
        self.network = make_network(spec, params["backend"], artifact)
        if int(config["max_batch_size"]) > 0:
            self.network.batch = int(config["max_batch_size"])
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests: list) -> list:
        pb_utils = _utils()
        try:
            items = [pb_utils.get_input_tensor_by_name(r, INPUT_NAME).as_numpy() for r in requests]
            outputs = self.network(np.concatenate(items))
        except Exception as exc:  # noqa: BLE001 - every request of the batch gets the reason
            return [_error(exc) for _ in requests]
        responses, start = [], 0
        for item in items:
            stop = start + len(item)
            tensors = [pb_utils.Tensor(n, np.ascontiguousarray(outputs[n][start:stop]))
                       for n in self.outputs]  # fmt: skip
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
            start = stop
        return responses

    def finalize(self) -> None:
        self.network.close()


class BlsRunner:
    """The network stage of a served pipeline: each call is a BLS request to the network model
    (the `Network` interface a pipeline calls, as with a local runner)."""

    is_active = True

    def __init__(self, model: str, outputs: list[str]) -> None:
        self.model = model
        self.outputs = outputs

    def activate(self) -> None:
        pass

    def deactivate(self) -> None:
        pass

    def infer(self, feed: dict[str, np.ndarray], check_inputs: bool = False) -> dict:
        pb_utils = _utils()
        request = pb_utils.InferenceRequest(
            model_name=self.model,
            requested_output_names=self.outputs,
            inputs=[pb_utils.Tensor(name, value) for name, value in feed.items()],
        )
        response = request.exec()
        if response.has_error():
            raise HgDeployError(f"network model {self.model}: {response.error().message()}")
        return {t.name(): t.as_numpy() for t in response.output_tensors()}


class PipelineModel:
    def initialize(self, args: dict) -> None:
        from hgdeploy.pipelines.factory import pipeline_for
        from hgdeploy.pipelines.network import Network

        params = _parameters(json.loads(args["model_config"]))
        self.spec = get_spec(params["hgdeploy_model"])
        height, width = (int(v) for v in params["network_input_hw"].split(","))
        runner = BlsRunner(params["network"], params["network_outputs"].split(","))
        network = Network(runner, int(params["network_batch"]), params["static_batch"] == "1",
                          (height, width), self.spec.layout, f"triton:{params['network']}")  # fmt: skip
        self.pipeline = pipeline_for(self.spec, network)
        self.max_pixels = int(params["max_image_pixels"])
        self.outputs = params["outputs"].split(",")

    def execute(self, requests: list) -> list:
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        pb_utils = _utils()
        try:
            image = pb_utils.get_input_tensor_by_name(request, IMAGE_INPUT)
            if image is None:
                raise HgDeployError(f"the request has no '{IMAGE_INPUT}' input")
            items = image.as_numpy().reshape(-1)
            if len(items) != 1:
                raise HgDeployError(f"send one encoded image per request, not {len(items)}")
            box = pb_utils.get_input_tensor_by_name(request, BOX_INPUT)
            tensors = answer(self.pipeline, self.spec, bytes(items[0]),
                             None if box is None else box.as_numpy(),
                             request.request_id(), self.max_pixels)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a bad request must not stop the model
            return _error(exc)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(n, tensors[n]) for n in self.outputs]
        )
