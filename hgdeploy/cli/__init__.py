"""The `hgdeploy` command line: one module per command; each parses options, builds the
library's request, calls the library and prints. Validation lives in the request objects and the
registries, never in a click function.

Importing this package loads click, rich and the registries only (no torch, onnx or runtime), so
`hgdeploy --help` starts fast.
"""

from __future__ import annotations

import copy

import click

from hgdeploy.cli.bench import bench_command
from hgdeploy.cli.build import build_command
from hgdeploy.cli.evaluate import evaluate_command
from hgdeploy.cli.export import export_command
from hgdeploy.cli.loadtest import loadtest_command
from hgdeploy.cli.models import models_command
from hgdeploy.cli.options import CliGroup
from hgdeploy.cli.parity import parity_command
from hgdeploy.cli.plugins import plugins_command
from hgdeploy.cli.predict import predict_command
from hgdeploy.cli.repository import repository_command
from hgdeploy.cli.sensitivity import sensitivity_command
from hgdeploy.cli.serve import serve_command
from hgdeploy.cli.standin import standin_command


@click.group(cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hgdeploy")
def main() -> None:
    """Deploy hourglass-family vision models: eager PyTorch -> ONNX -> ONNX Runtime / OpenVINO /
    TensorRT."""


def _alias(command: click.Command, name: str) -> click.Command:
    """The same command under another name, left out of the command list."""
    alias = copy.copy(command)
    alias.name = name
    alias.hidden = True
    return alias


for _command in (
    models_command,
    predict_command,
    evaluate_command,
    standin_command,
    export_command,
    parity_command,
    build_command,
    sensitivity_command,
    plugins_command,
    bench_command,
    repository_command,
    serve_command,
    loadtest_command,
):
    main.add_command(_command)
# The command was called build-engine before it built CPU artifacts too; the README's users
# and scripts still type that.
main.add_command(_alias(build_command, "build-engine"))
