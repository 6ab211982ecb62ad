"""`hgdeploy serve`: run tritonserver on a model repository until Ctrl-C or SIGTERM, or on one
written for the occasion from `--model` and `--artifact` (removed when the server stops)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

import click

from hgdeploy.base.console import console
from hgdeploy.base.errors import HgDeployError
from hgdeploy.cli.options import path_or_none, pipeline_form_option


@click.command("serve")
@click.option(
    "--repository", type=click.Path(file_okay=False), default=None,
    help="A model repository (`hgdeploy repository` writes one).",
)  # fmt: skip
@click.option(
    "--model", "model_name", default=None,
    help="Instead of --repository: the zoo model whose --artifact to serve from a repository "
    "written to a temporary directory.",
)  # fmt: skip
@click.option(
    "--artifact", "artifacts", multiple=True, type=click.Path(dir_okay=False),
    help="With --model: a built network (repeat for several; the pipeline calls the first).",
)  # fmt: skip
@click.option(
    "--network-form", type=click.Choice(["auto", "native", "python"]), default="auto",
    show_default=True,
    help="With --model: the network in its native backend, in the python backend on "
    "hgdeploy's runner, or native where this server has the backend (the bundled one has none).",
)  # fmt: skip
@pipeline_form_option(
    "With --model: see `hgdeploy repository --help`.",
)  # fmt: skip
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--http-port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--grpc-port", type=click.IntRange(1, 65535), default=8001, show_default=True)
@click.option("--metrics-port", type=click.IntRange(1, 65535), default=8002, show_default=True)
@click.option(
    "--ready-timeout", type=click.FloatRange(min=1), default=300.0, show_default=True,
    help="Seconds to wait for every model to load.",
)  # fmt: skip
def serve_command(
    repository: str | None,
    model_name: str | None,
    artifacts: tuple[str, ...],
    network_form: str,
    pipeline_form: str,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    ready_timeout: float,
) -> None:
    """Start tritonserver (the one `make install` unpacked, else PATH) on REPOSITORY, or on
    MODEL's ARTIFACTs, with every model loaded; wait until ready, print the endpoints, stop on
    Ctrl-C / SIGTERM."""
    from hgdeploy.serving.server import Ports, running_server

    if (repository is None) == (model_name is None):
        raise HgDeployError("give --repository, or --model with --artifact (not both)")
    if model_name is None:
        context = click.get_current_context()
        given = [f"--{n.replace('_', '-')}" for n in ("artifacts", "network_form", "pipeline_form")
                 if context.get_parameter_source(n) != click.core.ParameterSource.DEFAULT]  # fmt: skip
        if given:
            option = given[0].replace("--artifacts", "--artifact")
            raise HgDeployError(f"{option} goes with --model; a --repository is served as written")
    if model_name is not None and not artifacts:
        raise HgDeployError(f"--model {model_name}: name the network to serve with --artifact")
    ports = Ports(http_port, grpc_port, metrics_port)
    with _repository(repository, model_name, artifacts, network_form, pipeline_form) as path:
        try:
            with running_server(path, host=host, ports=ports, ready_timeout=ready_timeout) as srv:
                console.print(f"ready: HTTP {srv.http_url}  GRPC {host}:{grpc_port}  "
                              f"metrics http://{host}:{metrics_port}/metrics")  # fmt: skip
                console.print("Ctrl-C stops it")
                srv.process.wait()  # type: ignore[union-attr]
                code = srv.process.returncode  # type: ignore[union-attr]
                raise HgDeployError(f"tritonserver exited with status {code}")
        except KeyboardInterrupt:
            console.print("stopped")


@contextlib.contextmanager
def _repository(
    repository: str | None,
    model_name: str | None,
    artifacts: tuple[str, ...],
    network_form: str,
    pipeline_form: str,
) -> Iterator[Path]:
    """The repository to serve: the one given, or one written to a temporary directory that
    goes when the server stops (a SIGTERM unwinds through here too)."""
    if repository is not None:
        yield path_or_none(repository, "--repository")  # type: ignore[misc]
        return
    from hgdeploy.base.zoo import get_spec
    from hgdeploy.serving.network_io import read_network
    from hgdeploy.serving.repository import write_repository
    from hgdeploy.serving.server import find_tritonserver

    assert model_name is not None
    paths = [path_or_none(a, "--artifact") for a in artifacts]
    given = [p for p in paths if p is not None]
    python = network_form == "python"
    if network_form == "auto":
        install = find_tritonserver()
        spec = get_spec(model_name)
        missing = sorted({a.backend for a in (read_network(spec, p) for p in given)
                          if not install.has_backend(a.backend)})  # fmt: skip
        python = bool(missing)
        if missing:
            console.print(f"this tritonserver has no {', '.join(missing)} backend: the networks "
                          "run on hgdeploy's runner in its python backend")  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="hgdeploy-serve-") as scratch:
        repo = write_repository(model_name, given, Path(scratch) / "repository",
                                python_network=python, pipeline_form=pipeline_form)  # fmt: skip
        console.print(f"serving {', '.join(repo.models)} from {repo.path}")
        yield repo.path
