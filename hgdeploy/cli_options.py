"""Options and helpers shared by every `hgdeploy` command (kept apart so command modules can
import them without importing the whole CLI)."""

from __future__ import annotations

import sys
from typing import Any

import click
from rich.console import Console

from hgdeploy.errors import HgDeployError
from hgdeploy.zoo import ZOO

console = Console()


class CliGroup(click.Group):
    """Turns `HgDeployError` into a one-line message on stderr and exit code 1, no traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HgDeployError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)


model_option = click.option(
    "--model",
    "model_name",
    required=True,
    type=click.Choice(list(ZOO)),
    help="Zoo model name (see `hgdeploy models`).",
)
checkpoint_option = click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False),
    default=None,
    help="Upstream checkpoint (.pkl/.pt/.pth) as released; default: synthetic weights.",
)
seed_option = click.option(
    "--seed", type=int, default=0, show_default=True, help="Seed of the synthetic weights."
)
