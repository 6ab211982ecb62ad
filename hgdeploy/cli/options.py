"""Options shared by the `hgdeploy` commands, as reusable groups (in the spirit of Polygraphy's
CLI argument groups), and the group that turns errors into one line.

Choices are read from the registries (zoo, backends, precisions) when click asks for them, not
when this module is imported, so a backend registered at run time (a plugin, a test's fake) is a
valid `--backend` everywhere at once. Nothing here imports torch, onnx or a runtime.
"""

from __future__ import annotations

import difflib
import os
import signal
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from hgdeploy.base.errors import HgDeployError, first_line
from hgdeploy.base.precisions import CALIBRATION_METHOD_NAMES
from hgdeploy.base.zoo import ZOO
from hgdeploy.serving.model_config import PIPELINE_FORMS

F = TypeVar("F", bound=Callable[..., Any])


TRACEBACK_ENV = "HGDEPLOY_TRACEBACK"


def _terminate(signum: int, _: Any) -> None:
    """SIGTERM as an exception, so every `finally` runs and no temporary file is left behind
    (Python's default for SIGTERM ends the process without unwinding)."""
    raise SystemExit(128 + signum)


class CliGroup(click.Group):
    """The one place exceptions become one line: `HgDeployError` is printed as it is; anything
    else as `error: unexpected <Type>: <first line>` (HGDEPLOY_TRACEBACK=1 shows the traceback).
    Exit code 1 either way; click's own usage errors keep their exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except HgDeployError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get(TRACEBACK_ENV) == "1":
                raise
            click.echo(
                f"error: unexpected {type(exc).__name__}: {first_line(exc)} "
                f"({TRACEBACK_ENV}=1 shows the traceback)",
                err=True,
            )
            sys.exit(1)


class RegistryChoice(click.Choice):
    """A click choice whose values come from a registry each time they are asked for."""

    def __init__(self, values: Callable[[], Sequence[str]]) -> None:
        self._values = values
        super().__init__([], case_sensitive=True)

    @property  # type: ignore[override]
    def choices(self) -> Sequence[str]:
        return list(self._values())

    @choices.setter
    def choices(self, _: Iterable[str]) -> None:  # click's __init__ assigns it; ignore
        pass

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in self.choices:
            return value
        close = difflib.get_close_matches(str(value).lower(), self.choices, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        self.fail(
            f"{value!r} is not one of {', '.join(map(repr, self.choices))}.{hint}", param, ctx
        )


def backend_values(**kwargs: Any) -> Callable[[], list[str]]:
    def values() -> list[str]:
        from hgdeploy.backends.registry import backend_choices

        return backend_choices(**kwargs)

    return values


def _benchmarked_precisions() -> list[str]:
    from hgdeploy.backends.registry import benchmarked_precisions

    return benchmarked_precisions()


def _judged_precisions() -> list[str]:
    from hgdeploy.base.precisions import JUDGED_PRECISIONS

    return list(JUDGED_PRECISIONS)


def compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """One decorator from several click options, applied in the order listed."""

    def apply(function: F) -> F:
        for decorator in reversed(decorators):
            function = decorator(function)
        return function

    return apply


def path_or_none(value: str | None, option: str = "a path option") -> Path | None:
    """The option's path (None if not given); an empty string is refused, not read as '.'."""
    if value is not None and not value.strip():
        raise HgDeployError(f"{option} is empty; give a path")
    return Path(value) if value is not None else None


# --- the model and its weights --------------------------------------------------------------

model_option = click.option(
    "--model",
    "model_name",
    required=True,
    type=RegistryChoice(lambda: list(ZOO)),
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
weights_options = compose(checkpoint_option, seed_option)


# --- where it runs ----------------------------------------------------------------------------


def backend_option(
    default: str | None, help: str, *, builds: bool = False, reference: bool = True
) -> Callable[[F], F]:
    """`--backend`, its choices from the backend registry."""
    return click.option(
        "--backend",
        type=RegistryChoice(backend_values(builds=builds, reference=reference)),
        default=default,
        show_default=default is not None,
        help=help,
    )


def backends_option(help: str) -> Callable[[F], F]:
    """A repeatable `--backend` (bench), its choices from the backend registry."""
    return click.option(
        "--backend", "backends", multiple=True, type=RegistryChoice(backend_values()), help=help
    )


def judged_precision_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--precision", type=RegistryChoice(_judged_precisions), default=None, help=help
    )


def benchmarked_precisions_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--precision",
        "precisions",
        multiple=True,
        type=RegistryChoice(_benchmarked_precisions),
        help=help,
    )


def batch_option(default: int | None = 1, help: str | None = None) -> Callable[[F], F]:
    return click.option(
        "--batch",
        type=click.IntRange(min=1),
        default=default,
        show_default=default is not None,
        help=help,
    )


def pipeline_form_option(help: str) -> Callable[[F], F]:
    return click.option(
        "--pipeline-form", type=click.Choice(PIPELINE_FORMS), default=PIPELINE_FORMS[0],
        show_default=True, help=help,
    )  # fmt: skip


def output_file_option(help: str) -> Callable[[F], F]:
    return click.option("--output", type=click.Path(dir_okay=False), default=None, help=help)


force_option = click.option(
    "--force",
    is_flag=True,
    help="Replace an existing output file that hgdeploy did not write.",
)


def output_dir_option(help: str, *, required: bool = False) -> Callable[[F], F]:
    """`--output DIR` of the commands that write a set of files into one directory."""
    return click.option(
        "--output", type=click.Path(file_okay=False), default=None, required=required, help=help
    )


def annotations_option(help: str, *, required: bool = False) -> Callable[[F], F]:
    """`--annotations FILE`: a COCO-format labeled set's JSON."""
    return click.option(
        "--annotations", type=click.Path(dir_okay=False), default=None, required=required,
        help=help,
    )  # fmt: skip


def images_dir_option(help: str, *, required: bool = False) -> Callable[[F], F]:
    """`--images DIR` (the parameter `images_dir`): a directory of image files."""
    return click.option(
        "--images",
        "images_dir",
        type=click.Path(file_okay=False),
        default=None,
        required=required,
        help=help,
    )


# --- int8 calibration -------------------------------------------------------------------------

calibration_options = compose(
    click.option(
        "--calib-dir",
        type=click.Path(file_okay=False),
        default=None,
        help="INT8: directory of jpg/png calibration images (default: bundled samples).",
    ),
    click.option(
        "--calib-cache",
        type=click.Path(),
        default=None,
        help="INT8: reuse a calibration cache instead of calibrating (TensorRT: tensor -> amax "
        "JSON; onnxruntime: its ranges JSON; openvino: the NNCF statistics directory).",
    ),
    click.option(
        "--calib-batches",
        type=click.IntRange(min=1),
        default=None,
        help="INT8: at most this many calibration batches (default: 4 for TensorRT, 8 for the "
        "CPU backends, which calibrate one image per batch).",
    ),
    click.option(
        "--calib-method",
        type=click.Choice(CALIBRATION_METHOD_NAMES),
        default=None,
        help="INT8: how activation ranges are chosen (default max). TensorRT: all four; "
        "onnxruntime: max, percentile (its own calibrators); openvino: max (NNCF).",
    ),
    click.option(
        "--calib-percentile",
        type=float,
        default=None,
        help="With --calib-method percentile: the share of |x| kept (default 99.99).",
    ),
)


# --- a TensorRT optimization profile and builder --------------------------------------------

profile_options = compose(
    batch_option(None, "Fix the profile to one batch size."),
    click.option("--min-batch", type=click.IntRange(min=1), default=None, help="Profile minimum."),
    click.option(
        "--opt-batch",
        type=click.IntRange(min=1),
        default=None,
        help="Profile optimum; default: the documented batch.",
    ),
    click.option(
        "--max-batch",
        type=click.IntRange(min=1),
        default=None,
        help="Profile maximum; default: the largest documented batch.",
    ),
    click.option("--workspace", type=float, default=None, help="Builder workspace limit, GiB."),
    click.option(
        "--timing-cache",
        type=click.Path(dir_okay=False),
        default=None,
        help="TensorRT timing cache to load and update.",
    ),
)


# --- benchmark timing -------------------------------------------------------------------------

timing_options = compose(
    click.option(
        "--warmup",
        type=click.IntRange(min=0),
        default=3,
        show_default=True,
        help="Untimed warm-up iterations per cell.",
    ),
    click.option(
        "--iterations",
        type=click.IntRange(min=1),
        default=None,
        help="Timed iterations per cell [default: 10].",
    ),
    click.option(
        "--seconds",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Time each cell for this long instead of a fixed iteration count.",
    ),
    click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="CPU threads for torch and ONNX Runtime [default: every available core].",
    ),
)
