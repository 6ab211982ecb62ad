"""`hgdeploy repository`: write a Triton model repository for a model's artifacts."""

from __future__ import annotations

import click

from hgdeploy.base.console import console
from hgdeploy.cli.options import (
    force_option,
    model_option,
    path_or_none,
    pipeline_form_option,
)


@click.command("repository")
@model_option
@click.option(
    "--artifact", "artifacts", multiple=True, required=True, type=click.Path(dir_okay=False),
    help="A built network (.onnx ONNX Runtime, .xml OpenVINO IR, .engine/.plan TensorRT); "
    "repeat for several. The pipeline model calls the first.",
)  # fmt: skip
@click.option(
    "--output", required=True, type=click.Path(file_okay=False),
    help="The repository directory (written whole, a sidecar REPO.json beside it).",
)  # fmt: skip
@click.option(
    "--python-network", is_flag=True,
    help="Run each network in Triton's python backend with hgdeploy's runner instead of its "
    "native backend (for servers without them, like the bundled one `hgdeploy serve` uses).",
)  # fmt: skip
@click.option(
    "--max-batch", type=click.IntRange(min=1), default=None,
    help="Largest batch the server forms for a dynamic-batch artifact (default: an engine's "
    "profile max, else the zoo's documented batch).",
)  # fmt: skip
@click.option(
    "--pipeline-instances", type=click.IntRange(min=1), default=2, show_default=True,
    help="Pipeline model instances (processes): requests pre- and post-processed at once; "
    "each waits on its network call, so this bounds the network's batch from the pipeline.",
)  # fmt: skip
@click.option(
    "--max-queue-delay-us", "queue_delay_us", type=click.IntRange(min=0), default=None,
    help="How long the network's batcher holds a request for others to join it "
    "(microseconds; default 2000).",
)  # fmt: skip
@pipeline_form_option(
    "bls: one python model calls the network (any pipeline, Saccade included); ensemble: "
    "Triton's ensemble of pre-processing, the network and post-processing (single-pass "
    "pipelines, dynamic-batch network).",
)  # fmt: skip
@force_option
def repository_command(
    model_name: str,
    artifacts: tuple[str, ...],
    output: str,
    python_network: bool,
    max_batch: int | None,
    pipeline_instances: int,
    queue_delay_us: int | None,
    pipeline_form: str,
    force: bool,
) -> None:
    """Write a Triton Inference Server model repository: each artifact's network (batched by
    Triton's dynamic batcher) and the upstream pipeline model (encoded image in; boxes or
    keypoints and COCO results out)."""
    from hgdeploy.serving.repository import write_repository

    paths = [path_or_none(a, "--artifact") for a in artifacts]
    repo = write_repository(
        model_name,
        [p for p in paths if p is not None],
        path_or_none(output, "--output"),  # type: ignore[arg-type]
        python_network=python_network,
        max_batch=max_batch,
        pipeline_instances=pipeline_instances,
        **({} if queue_delay_us is None else {"queue_delay_us": queue_delay_us}),
        pipeline_form=pipeline_form,
        force=force,
    )
    console.print(f"Triton model repository: {repo.path}")
    for name in repo.models:
        console.print(f"  {name}")
    console.print(f"serve it: hgdeploy serve --repository {repo.path}")
