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
- `PreprocessModel` / `PostprocessModel`: the same pipeline cut in two for the ensemble form
  (`pipeline_request.prepare` / `finish`); Triton's ensemble scheduler carries the network
  input, the network's outputs and a JSON state tensor between them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.export_settings import INPUT_NAME
from hgdeploy.base.zoo import get_spec
from hgdeploy.serving.pipeline_request import (
    BOX_INPUT,
    IMAGE_INPUT,
    NETWORK_INPUT,
    STATE_TENSOR,
    answer,
    finish,
    prepare,
)


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


class _NoRunner:
    """The halves of an ensemble never call the network themselves: the ensemble does."""

    is_active = True

    def infer(self, feed: dict, check_inputs: bool = False) -> dict:
        raise HgDeployError("an ensemble's pre/post-processing model called the network")


def _pipeline(params: dict[str, str], runner: Any) -> Any:
    from hgdeploy.pipelines.factory import pipeline_for
    from hgdeploy.pipelines.network import Network

    spec = get_spec(params["hgdeploy_model"])
    height, width = (int(v) for v in params["network_input_hw"].split(","))
    network = Network(runner, int(params["network_batch"]), params["static_batch"] == "1",
                      (height, width), spec.layout, f"triton:{params['network']}")  # fmt: skip
    return pipeline_for(spec, network)


def _request_image(request: Any) -> tuple[bytes, np.ndarray | None]:
    """The one encoded image of a request and its optional person box; refused in one line."""
    pb_utils = _utils()
    image = pb_utils.get_input_tensor_by_name(request, IMAGE_INPUT)
    if image is None:
        raise HgDeployError(f"the request has no '{IMAGE_INPUT}' input")
    items = image.as_numpy().reshape(-1)
    if len(items) != 1:
        raise HgDeployError(f"send one encoded image per request, not {len(items)}")
    box = pb_utils.get_input_tensor_by_name(request, BOX_INPUT)
    return bytes(items[0]), None if box is None else box.as_numpy()


class PipelineModel:
    def initialize(self, args: dict) -> None:
        params = _parameters(json.loads(args["model_config"]))
        self.spec = get_spec(params["hgdeploy_model"])
        runner = BlsRunner(params["network"], params["network_outputs"].split(","))
        self.pipeline = _pipeline(params, runner)
        self.max_pixels = int(params["max_image_pixels"])
        self.outputs = params["outputs"].split(",")

    def execute(self, requests: list) -> list:
        return [self._one(request) for request in requests]

    def _one(self, request: Any) -> Any:
        pb_utils = _utils()
        try:
            image, box = _request_image(request)
            tensors = answer(self.pipeline, self.spec, image, box, request.request_id(),
                             self.max_pixels)  # fmt: skip
        except Exception as exc:  # noqa: BLE001 - a bad request must not stop the model
            return _error(exc)
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(n, tensors[n]) for n in self.outputs]
        )


class PreprocessModel:
    def initialize(self, args: dict) -> None:
        params = _parameters(json.loads(args["model_config"]))
        self.spec = get_spec(params["hgdeploy_model"])
        self.pipeline = _pipeline(params, _NoRunner())
        self.max_pixels = int(params["max_image_pixels"])

    def execute(self, requests: list) -> list:
        pb_utils = _utils()
        responses = []
        for request in requests:
            try:
                image, box = _request_image(request)
                inputs, state = prepare(self.pipeline, self.spec, image, box,
                                        request.request_id(), self.max_pixels)  # fmt: skip
            except Exception as exc:  # noqa: BLE001 - a bad request must not stop the model
                responses.append(_error(exc))
                continue
            tensors = [pb_utils.Tensor(NETWORK_INPUT, np.ascontiguousarray(inputs, np.float32)),
                       pb_utils.Tensor(STATE_TENSOR, np.array([state], dtype=object))]  # fmt: skip
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses


class PostprocessModel:
    def initialize(self, args: dict) -> None:
        params = _parameters(json.loads(args["model_config"]))
        self.spec = get_spec(params["hgdeploy_model"])
        self.pipeline = _pipeline(params, _NoRunner())
        self.network_outputs = params["network_outputs"].split(",")
        self.outputs = params["outputs"].split(",")

    def execute(self, requests: list) -> list:
        pb_utils = _utils()
        responses = []
        for request in requests:
            try:
                heads = {n: pb_utils.get_input_tensor_by_name(request, n).as_numpy()
                         for n in self.network_outputs}  # fmt: skip
                state = pb_utils.get_input_tensor_by_name(request, STATE_TENSOR).as_numpy()
                tensors = finish(self.pipeline, self.spec, heads, bytes(state.reshape(-1)[0]))
            except Exception as exc:  # noqa: BLE001 - one bad request must not stop the model
                responses.append(_error(exc))
                continue
            responses.append(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.Tensor(n, tensors[n]) for n in self.outputs]))  # fmt: skip
        return responses
