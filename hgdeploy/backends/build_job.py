"""`hgdeploy build`: check a `BuildRequest` against its backend, then let the backend build.

Every refusal that needs no file happens here, before any export or calibration: an unknown
backend, a precision it does not build, a flag only another backend takes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from hgdeploy.backends.base import Backend, BuildRequest, BuildResult, StepCallback, quiet
from hgdeploy.backends.registry import get_backend, registered_backends
from hgdeploy.base.errors import HgDeployError
from hgdeploy.base.outputs import check_output, files_under


def check_build_options(backend: Backend, request: BuildRequest) -> None:
    """Refuse flags only other backends take, naming the backends that do."""
    given = [
        flag
        for flag, value in request.option_values().items()
        if value is not None and flag not in backend.build_options
    ]
    if not given:
        return
    owners = sorted({b.name for b in registered_backends() for f in given if f in b.build_options})
    raise HgDeployError(
        f"{', '.join(given)}: only for --backend {' / '.join(owners)} (CPU artifacts keep the "
        "export's dynamic batch)"
    )


def check_build_outputs(request: BuildRequest) -> None:
    """Refuse an --output (its sidecar and companions included) that would replace any file the
    build reads: its options' files, the files in --calib-dir and in a --calib-cache directory,
    and `request.extra_inputs` (an accuracy target's held-out set)."""
    if request.output is None:
        return
    backend = get_backend(request.backend)
    inputs: dict[str, Any] = {
        "--onnx": request.onnx,
        "--checkpoint": request.checkpoint,
        "--calib-cache": request.calib_cache,
        "--calib-cache file": files_under(request.calib_cache),
        "--calib-dir": request.calib_dir,
        "--calib-dir file": files_under(request.calib_dir),
        "--timing-cache": request.timing_cache,
    }
    for label, path in request.extra_inputs:
        inputs[label] = [*inputs.get(label, []), path]
    check_output(
        request.output,
        inputs=inputs,
        force=request.force,
        companions=backend.companions(request),
    )


def run_build(request: BuildRequest, on_step: StepCallback = quiet) -> BuildResult:
    """Build `request`'s artifact with its backend (the precision defaults to the backend's)."""
    backend = get_backend(request.backend)
    precision = backend.check_precision(request.precision)
    check_build_options(backend, request)
    request = dataclasses.replace(request, precision=precision)
    check_build_outputs(request)
    return backend.build(request, on_step)
