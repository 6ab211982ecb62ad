"""`hgdeploy serve`: run tritonserver on a model repository until Ctrl-C or SIGTERM."""

from __future__ import annotations

import click

from hgdeploy.base.console import console
from hgdeploy.base.errors import HgDeployError
from hgdeploy.cli.options import path_or_none


@click.command("serve")
@click.option(
    "--repository", required=True, type=click.Path(file_okay=False),
    help="A model repository (`hgdeploy repository` writes one).",
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
    repository: str,
    host: str,
    http_port: int,
    grpc_port: int,
    metrics_port: int,
    ready_timeout: float,
) -> None:
    """Start tritonserver (the one `make install` unpacked, else PATH) on REPOSITORY with
    every model loaded; wait until ready, print the endpoints, stop on Ctrl-C / SIGTERM."""
    from hgdeploy.serving.server import Ports, running_server

    path = path_or_none(repository, "--repository")
    ports = Ports(http_port, grpc_port, metrics_port)
    try:
        with running_server(path, host=host, ports=ports, ready_timeout=ready_timeout) as server:
            console.print(f"ready: HTTP {server.http_url}  GRPC {host}:{grpc_port}  "
                          f"metrics http://{host}:{metrics_port}/metrics")  # fmt: skip
            console.print("Ctrl-C stops it")
            server.process.wait()  # type: ignore[union-attr]
            code = server.process.returncode  # type: ignore[union-attr]
            raise HgDeployError(f"tritonserver exited with status {code}")
    except KeyboardInterrupt:
        console.print("stopped")
