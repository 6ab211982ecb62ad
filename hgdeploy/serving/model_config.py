"""Triton model configurations (`config.pbtxt`) as data, written as protobuf text.

Only the fields hgdeploy sets are modelled; Triton's own validation (run by the server at load
time) is the judge of the result, and the serving tests load every kind of config on a real
server. Text format rather than `model_config.proto` because Triton ships no Python package for
its protos and the text format is what users read and edit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

# How a repository's `<model>_pipeline` reaches its network (see serving/repository.py).
PIPELINE_FORMS = ("bls", "ensemble")

# numpy dtype name -> Triton data type
TRITON_TYPES = {"float32": "TYPE_FP32", "float16": "TYPE_FP16", "int32": "TYPE_INT32",
                "int64": "TYPE_INT64", "bytes": "TYPE_STRING"}  # fmt: skip


@dataclass(frozen=True)
class TensorConfig:
    name: str
    data_type: str  # TYPE_FP32, TYPE_STRING, ...
    dims: tuple[int, ...]  # without the batch axis when the model batches; -1: any size
    optional: bool = False

    def text(self) -> str:
        optional = " optional: true" if self.optional else ""
        return f'{{ name: "{self.name}" data_type: {self.data_type} dims: {_dims(self.dims)}{optional} }}'


@dataclass(frozen=True)
class DynamicBatching:
    max_queue_delay_us: int  # how long the batcher waits for more requests to join a batch

    def text(self) -> str:
        return f"dynamic_batching {{ max_queue_delay_microseconds: {self.max_queue_delay_us} }}"


@dataclass(frozen=True)
class EnsembleStep:
    """One model of an ensemble: its tensors (keys) <- / -> the ensemble's (values)."""

    model: str
    inputs: dict[str, str]
    outputs: dict[str, str]

    def text(self) -> str:
        def maps(kind: str, pairs: dict[str, str]) -> str:
            return " ".join(f'{kind} {{ key: "{k}" value: "{v}" }}' for k, v in pairs.items())

        return (f'{{ model_name: "{self.model}" model_version: -1 '
                f'{maps("input_map", self.inputs)} {maps("output_map", self.outputs)} }}')  # fmt: skip


@dataclass
class ModelConfig:
    name: str
    inputs: list[TensorConfig]
    outputs: list[TensorConfig]
    max_batch_size: int = 0  # 0: the model does not batch (dims are full shapes)
    backend: str | None = None  # "python", "onnxruntime", "openvino"
    platform: str | None = None  # "tensorrt_plan"
    default_model_filename: str | None = None
    dynamic_batching: DynamicBatching | None = None
    instance_count: int = 1
    instance_kind: str = "KIND_CPU"
    parameters: dict[str, str] = field(default_factory=dict)
    ensemble_steps: list[EnsembleStep] = field(default_factory=list)  # platform "ensemble"
    warmup_batches: tuple[int, ...] = ()  # zero-filled requests of these batches at load time

    def text(self) -> str:
        lines = [f'name: "{self.name}"']
        if self.platform is not None:
            lines.append(f'platform: "{self.platform}"')
        if self.backend is not None:
            lines.append(f'backend: "{self.backend}"')
        lines.append(f"max_batch_size: {self.max_batch_size}")
        if self.default_model_filename is not None:
            lines.append(f'default_model_filename: "{self.default_model_filename}"')
        lines += _tensor_list("input", self.inputs) + _tensor_list("output", self.outputs)
        if self.dynamic_batching is not None:
            lines.append(self.dynamic_batching.text())
        if self.ensemble_steps:  # an ensemble runs no instances of its own
            lines.append("ensemble_scheduling { step [")
            lines += [f"  {s.text()}," for s in self.ensemble_steps[:-1]]
            lines += [f"  {self.ensemble_steps[-1].text()}", "] }"]
        else:
            lines.append(
                f"instance_group [ {{ count: {self.instance_count} kind: {self.instance_kind} }} ]"
            )
        if self.warmup_batches:
            lines += _warmup(self.inputs, self.warmup_batches)
        for key, value in self.parameters.items():
            lines.append(
                f"parameters {{ key: {json.dumps(key)} value {{ string_value: {json.dumps(value)} }} }}"
            )
        return "\n".join(lines) + "\n"


def _tensor_list(kind: str, tensors: list[TensorConfig]) -> list[str]:
    return _block(kind, [t.text() for t in tensors])


def _block(field_name: str, entries: list[str]) -> list[str]:
    """A repeated field as protobuf text: `name [`, one entry per line (comma-separated), `]`."""
    return [f"{field_name} ["] + [f"  {e}," for e in entries[:-1]] + [f"  {entries[-1]}", "]"]


def _dims(dims: tuple[int, ...]) -> str:
    return f"[ {', '.join(str(d) for d in dims)} ]"


def warmup_batches(max_batch_size: int) -> tuple[int, ...]:
    """The batches a network is warmed with: every size the batcher can form up to 8, then
    powers of two and the maximum. A runtime that compiles per input shape (OpenVINO, ONNX
    Runtime's first run, TensorRT's lazy set-up) otherwise charges its first batch of a new
    size to a client: ~300 ms on a 2-core CPU, the p99 outliers of an unwarmed load test."""
    if max_batch_size <= 0:
        return (1,)  # not batching: one request of the model's own shape
    if max_batch_size <= 8:
        return tuple(range(1, max_batch_size + 1))
    sizes = [b for b in (2**k for k in range(max_batch_size.bit_length())) if b < max_batch_size]
    return (*sizes, max_batch_size)


def _warmup(inputs: list[TensorConfig], batches: tuple[int, ...]) -> list[str]:
    """Triton's model_warmup: one zero-filled request per batch size, run before the model is
    ready (so --strict-readiness waits for it)."""

    def sample(batch: int) -> str:
        feeds = " ".join(
            f'inputs {{ key: "{t.name}" value {{ data_type: {t.data_type} '
            f"dims: {_dims(t.dims)} zero_data: true }} }}"
            for t in inputs
        )
        return f'{{ name: "batch_{batch}" batch_size: {batch} {feeds} }}'

    return _block("model_warmup", [sample(b) for b in batches])
