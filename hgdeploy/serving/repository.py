"""`hgdeploy repository`: a Triton model repository for a model's built artifacts.

Per artifact, one network model: in its native form (TensorRT `tensorrt_plan`, `onnxruntime`,
`openvino` backends) or, with `python_network`, on hgdeploy's own runner in the python backend
(for servers without those backends, like the one `make install` unpacks). Plus the pipeline
model `<model>_pipeline`, which takes encoded image bytes and runs the first network, in one of
two forms: `bls` (default), one python model calling the network through BLS (any pipeline,
Saccade's dependent stages included), or `ensemble`, Triton's ensemble of a pre-processing
python model, the network and a post-processing python model (single-pass pipelines only; a
pipeline instance is not held while its network call waits, so the network can batch requests
from more clients than there are pipeline instances).
A dynamic-batch artifact gets Triton's dynamic batcher up to `max_batch`; a fixed-batch one
runs natively only at its batch (no batcher), or padded to it in the python form.

The repository is written whole beside its destination and renamed into place with its
sidecar `<REPO>.json`, like every other artifact.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from hgdeploy.base.artifacts import artifact_files, sidecar_path
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.export_settings import INPUT_NAME
from hgdeploy.base.outputs import check_output, is_ours
from hgdeploy.base.zoo import ModelSpec, get_spec
from hgdeploy.serving.model_config import (
    PIPELINE_FORMS,
    DynamicBatching,
    EnsembleStep,
    ModelConfig,
    TensorConfig,
    warmup_batches,
)
from hgdeploy.serving.network_io import NetworkArtifact, read_network
from hgdeploy.serving.pipeline_request import (
    BOX_INPUT,
    DEFAULT_MAX_IMAGE_PIXELS,
    IMAGE_INPUT,
    NETWORK_INPUT,
    STATE_TENSOR,
    output_names,
)

QUEUE_DELAY_US = 2000  # a request waits at most 2 ms for others to join its batch
PIPELINE_INSTANCES = 2  # concurrent pipelines: each BLS call is synchronous, so this many
# pipeline requests can be in the network's batch at once
NATIVE = {  # backend -> (config key, value, file name in the version directory, instance kind)
    "onnxruntime": ("backend", "onnxruntime", "model.onnx", "KIND_CPU"),
    "openvino": ("backend", "openvino", "model.xml", "KIND_CPU"),
    "tensorrt": ("platform", "tensorrt_plan", "model.plan", "KIND_GPU"),
}
PYTHON_MODEL = (
    "from hgdeploy.serving.python_models import {cls} as TritonPythonModel  # noqa: F401\n"
)


@dataclass
class Repository:
    path: Path
    models: list[str]
    notes: list[str]


@dataclass
class _Network:
    name: str
    artifact: NetworkArtifact
    config: ModelConfig


def write_repository(
    model_name: str,
    artifacts: list[Path],
    output: Path,
    *,
    python_network: bool = False,
    max_batch: int | None = None,
    pipeline_instances: int = PIPELINE_INSTANCES,
    queue_delay_us: int = QUEUE_DELAY_US,
    pipeline_form: str = "bls",
    force: bool = False,
) -> Repository:
    """Write the repository; refuse (one line, nothing written) an artifact of another model,
    an output that holds an input, or a foreign directory without `force`."""
    spec = get_spec(model_name)
    found = [read_network(spec, Path(p)) for p in artifacts]
    read = [f for a in found for f in (a.path, sidecar_path(a.path), *a.companions)]
    check_output(output, inputs={"--artifact": read}, force=force, directory=True)
    for given in read:  # the repository is replaced whole: it must not hold an input
        if output.resolve() in given.resolve().parents:
            raise HgDeployError(
                f"--output {output} holds the --artifact input {given}; choose another output path"
            )
    if not force and output.is_dir() and any(output.iterdir()) and not is_ours(output):
        raise HgDeployError(
            f"{output} exists and was not written by hgdeploy; pass --force to replace it whole"
        )
    if pipeline_form not in PIPELINE_FORMS:
        raise HgDeployError(f"pipeline form {pipeline_form!r}: choose one of {PIPELINE_FORMS}")
    networks = _networks(spec, found, python_network, max_batch, queue_delay_us)
    if pipeline_form == "ensemble":
        pipeline_models = _ensemble_configs(spec, networks[0], pipeline_instances)
    else:
        pipeline_models = [(_pipeline_config(spec, networks[0], pipeline_instances),
                            "PipelineModel")]  # fmt: skip
    pipeline = pipeline_models[-1][0]
    notes = [n for net in networks for n in (*net.artifact.notes, *_plugin_notes(net))]
    with artifact_files(output, directories=(output,)) as pending:
        root = pending.tmp()
        for net in networks:
            _write_network(root, net, python_network)
        for config, cls in pipeline_models:
            if cls is None:  # the ensemble: a configuration only
                (root / config.name / "1").mkdir(parents=True)
                (root / config.name / "config.pbtxt").write_text(config.text())
            else:
                _write_model(root, config, cls)
        pending.describe(
            {
                "kind": "triton-repository",
                "model": spec.name,
                "network_form": "python" if python_network else "native",
                "networks": [
                    {
                        "name": n.name,
                        "artifact": str(n.artifact.path),
                        "backend": n.artifact.backend,
                        "precision": n.artifact.precision,
                        "max_batch_size": n.config.max_batch_size,
                    }
                    for n in networks
                ],
                "pipeline": pipeline.name,
                "pipeline_form": pipeline_form,
                "notes": notes,
            }
        )
    return Repository(output, [n.name for n in networks] + [c.name for c, _ in pipeline_models],
                      notes)  # fmt: skip


def _networks(
    spec: ModelSpec,
    found: list[NetworkArtifact],
    python: bool,
    max_batch: int | None,
    queue_delay_us: int,
) -> list[_Network]:
    networks: list[_Network] = []
    taken: set[str] = set()
    for artifact in found:
        base = f"{spec.name}_{artifact.backend}_{artifact.precision}"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        networks.append(
            _Network(
                name,
                artifact,
                _network_config(name, spec, artifact, python, max_batch, queue_delay_us),
            )
        )
    return networks


def _network_config(
    name: str,
    spec: ModelSpec,
    artifact: NetworkArtifact,
    python: bool,
    max_batch: int | None,
    queue_delay_us: int,
) -> ModelConfig:
    """Batch range: a dynamic artifact batches up to `max_batch` (default: an engine's profile
    max, else the zoo's documented batch); a fixed one natively only runs its own batch."""
    static = artifact.static_batch
    if static is None:
        limit = max_batch or artifact.max_batch or spec.default_batch
        if artifact.max_batch is not None and limit > artifact.max_batch:
            raise HgDeployError(
                f"--max-batch {limit} is above {artifact.path}'s profile max {artifact.max_batch}"
            )
    else:
        if max_batch is not None and max_batch != static:
            raise HgDeployError(
                f"{artifact.path} runs only batch {static}; export with --dynamic-batch to serve "
                f"batches up to {max_batch}"
            )
        limit = static if python else 0

    def tensors(dims: dict[str, tuple[int, ...]]) -> list[TensorConfig]:
        cut = 1 if limit > 0 else 0
        return [TensorConfig(n, "TYPE_FP32", tuple(d[cut:]) if cut else tuple(d))
                for n, d in dims.items()]  # fmt: skip

    config = ModelConfig(
        name,
        tensors(artifact.inputs),
        tensors(artifact.outputs),
        max_batch_size=limit,
        dynamic_batching=DynamicBatching(queue_delay_us) if limit > 0 else None,
        warmup_batches=warmup_batches(limit),
    )
    if python:
        config.backend = "python"
        config.parameters = {"hgdeploy_model": spec.name, "backend": artifact.backend,
                             "artifact": artifact.path.name}  # fmt: skip
        return config
    key, value, filename, kind = NATIVE[artifact.backend]
    setattr(config, key, value)
    config.default_model_filename = filename
    config.instance_kind = kind
    return config


def _pipeline_parameters(spec: ModelSpec, network: _Network) -> dict[str, str]:
    """What a pipeline model (or an ensemble's half) needs to rebuild the pipeline around the
    network model."""
    net = network.config
    static = net.max_batch_size == 0  # natively fixed; the python form pads itself
    batch = net.max_batch_size or network.artifact.inputs[INPUT_NAME][0]
    return {
        "hgdeploy_model": spec.name,
        "network": network.name,
        "network_batch": str(batch),
        "static_batch": "1" if static else "0",
        "network_input_hw": ",".join(str(v) for v in network.artifact.input_hw),
        "network_outputs": ",".join(network.artifact.outputs),
        "max_image_pixels": str(DEFAULT_MAX_IMAGE_PIXELS),
        "outputs": ",".join(output_names(spec)),
    }


def _request_inputs(spec: ModelSpec) -> list[TensorConfig]:
    inputs = [TensorConfig(IMAGE_INPUT, "TYPE_STRING", (1,))]
    if spec.decode is None:
        inputs.append(TensorConfig(BOX_INPUT, "TYPE_FP32", (4,), optional=True))
    return inputs


def _answer_outputs(spec: ModelSpec) -> list[TensorConfig]:
    dims = {"boxes": (-1, 4), "scores": (-1,), "category_ids": (-1,), "count": (1,),
            "coco_json": (1,), "keypoints": (-1, 3), "score": (1,)}  # fmt: skip
    types = {"category_ids": "TYPE_INT32", "count": "TYPE_INT32", "coco_json": "TYPE_STRING"}
    return [TensorConfig(n, types.get(n, "TYPE_FP32"), dims[n]) for n in output_names(spec)]


def _pipeline_config(spec: ModelSpec, network: _Network, instances: int) -> ModelConfig:
    return ModelConfig(
        f"{spec.name}_pipeline",
        _request_inputs(spec),
        _answer_outputs(spec),
        backend="python",
        instance_count=instances,
        parameters=_pipeline_parameters(spec, network),
    )


def _ensemble_configs(
    spec: ModelSpec, network: _Network, instances: int
) -> list[tuple[ModelConfig, str | None]]:
    """Pre-processing (python) -> network -> post-processing (python), as Triton's ensemble
    `<model>_pipeline`; refused for a pipeline whose network calls depend on each other or a
    network that cannot take one request's inputs (the image and its flipped copy) at once."""
    from hgdeploy.pipelines.factory import pipeline_class, upstream_flip

    if not hasattr(pipeline_class(spec), "prepare"):  # what pipeline_request.prepare needs
        raise HgDeployError(
            f"{spec.name}'s pipeline calls its network several times, each call depending on "
            "the last: serve it with --pipeline-form bls"
        )
    per_request = 2 if upstream_flip(spec) else 1  # the image and its flipped copy
    if network.config.max_batch_size < per_request or network.artifact.static_batch is not None:
        raise HgDeployError(
            f"the ensemble sends {network.name} {per_request} input(s) per request as one "
            "batch: export the network with --dynamic-batch (or use --pipeline-form bls)"
        )
    params = _pipeline_parameters(spec, network)
    item_dims = tuple(network.artifact.inputs[INPUT_NAME][1:])
    heads = {name: (-1, *dims[1:]) for name, dims in network.artifact.outputs.items()}
    state = TensorConfig(STATE_TENSOR, "TYPE_STRING", (1,))
    pre = ModelConfig(
        f"{spec.name}_preprocess",
        _request_inputs(spec),
        [TensorConfig(NETWORK_INPUT, "TYPE_FP32", (-1, *item_dims)), state],
        backend="python",
        instance_count=instances,
        parameters=params,
    )
    post = ModelConfig(
        f"{spec.name}_postprocess",
        [*(TensorConfig(n, "TYPE_FP32", d) for n, d in heads.items()), state],
        _answer_outputs(spec),
        backend="python",
        instance_count=instances,
        parameters=params,
    )
    request = {t.name: t.name for t in _request_inputs(spec)}
    answers = {n: n for n in output_names(spec)}
    steps = [
        EnsembleStep(pre.name, request, {NETWORK_INPUT: "_batch", STATE_TENSOR: "_state"}),
        EnsembleStep(network.name, {INPUT_NAME: "_batch"}, {n: f"_{n}" for n in heads}),
        EnsembleStep(post.name, {**{n: f"_{n}" for n in heads}, STATE_TENSOR: "_state"}, answers),
    ]
    ensemble = ModelConfig(
        f"{spec.name}_pipeline",
        _request_inputs(spec),
        _answer_outputs(spec),
        platform="ensemble",
        ensemble_steps=steps,
    )
    return [(pre, "PreprocessModel"), (post, "PostprocessModel"), (ensemble, None)]


def _write_network(root: Path, net: _Network, python: bool) -> None:
    version = root / net.name / "1"
    version.mkdir(parents=True)
    artifact = net.artifact
    if python:  # the runner reads the artifact as built, sidecar included
        for source in (artifact.path, sidecar_path(artifact.path), *artifact.companions):
            _place(source, version / source.name)
        _write_model(root, net.config, "NetworkModel", version_written=True)
        return
    filename = NATIVE[artifact.backend][2]
    _place(artifact.path, version / filename)
    for companion in artifact.companions:  # an IR's .bin follows its .xml's new name
        target = (
            companion.name
            if companion.suffix != ".bin"
            else Path(filename).with_suffix(".bin").name
        )
        _place(companion, version / target)
    (root / net.name / "config.pbtxt").write_text(net.config.text())


def _write_model(root: Path, config: ModelConfig, cls: str, version_written: bool = False) -> None:
    version = root / config.name / "1"
    version.mkdir(parents=True, exist_ok=version_written)
    (version / "model.py").write_text(PYTHON_MODEL.format(cls=cls))
    (root / config.name / "config.pbtxt").write_text(config.text())


def _place(source: Path, target: Path) -> None:
    """A hard link where the file system allows (an engine can be gigabytes), else a copy; a
    later rebuild of the artifact replaces its path, not this file."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _plugin_notes(net: _Network) -> list[str]:
    if net.artifact.backend != "tensorrt" or net.config.backend == "python":
        return []
    form = net.artifact.plugins
    if form == "aot":
        return [
            (
                f"{net.name}: the corner-pool kernels are compiled into the plan (AOT plugins): "
                "it needs no plugin library on the server"
            )
        ]
    if form == "jit":
        return [
            (
                f"{net.name}: built with the JIT corner-pool plugins, Python callbacks that "
                "Triton's tensorrt backend cannot load (there is no plugin library to pass as "
                "--backend-config=tensorrt,plugins=...): rebuild with the AOT plugins (the "
                "default) or serve it with --python-network"
            )
        ]
    return []
