"""The backend registry: name -> `Backend`, the one table every command's choices come from.

`parity --backend`, `bench --backend`, `hgdeploy build --backend` and their precision checks all
read it, so adding a backend is one module plus one `register_backend` line below (or a call
from outside, as a test's fake backend does); no command restates the list.
"""

from __future__ import annotations

from hgdeploy.backends.base import Backend
from hgdeploy.backends.onnxruntime import OnnxRuntimeBackend
from hgdeploy.backends.openvino import OpenVinoBackend
from hgdeploy.backends.pytorch import TorchBackend
from hgdeploy.backends.tensorrt import TensorRtBackend
from hgdeploy.base.errors import HgDeployError

_REGISTRY: dict[str, Backend] = {}


def register_backend(backend: Backend) -> Backend:
    """Add `backend` (replacing one of the same name) and return it."""
    _REGISTRY[backend.name] = backend
    return backend


def unregister_backend(name: str) -> None:
    _REGISTRY.pop(name, None)


def backend_names() -> tuple[str, ...]:
    """Every registered backend, in registration order (the reference first)."""
    return tuple(_REGISTRY)


def registered_backends() -> tuple[Backend, ...]:
    return tuple(_REGISTRY.values())


def get_backend(name: str) -> Backend:
    """The backend called `name`, or a one-line error listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise HgDeployError(
            f"unknown backend {name!r}; choose from {', '.join(_REGISTRY)}"
        ) from None


def backend_choices(*, builds: bool = False, reference: bool = True) -> list[str]:
    """Names for a click choice: every backend, or only those with a build step, with or
    without the eager reference (parity compares *against* it)."""
    return [
        name
        for name, backend in _REGISTRY.items()
        if (backend.builds or not builds) and (reference or not backend.is_reference)
    ]


def backends_building(precision: str) -> list[str]:
    return [name for name, backend in _REGISTRY.items() if precision in backend.builds]


def backends_running(precision: str) -> list[str]:
    return [name for name, backend in _REGISTRY.items() if precision in backend.runs]


def benchmarked_precisions() -> list[str]:
    """Every precision some backend runs, in the precision registry's order."""
    from hgdeploy.base.precisions import PRECISIONS

    return [p for p in PRECISIONS if backends_running(p)]


def reference_backend() -> Backend:
    return next(b for b in _REGISTRY.values() if b.is_reference)


def cpu_peer() -> tuple[str, str]:
    """(backend, precision) every CPU cell is also compared with: the backend that declares a
    peer precision (OpenVINO compiled with no hint, its own choice for this CPU)."""
    for name, backend in _REGISTRY.items():
        if backend.peer_precision is not None:
            return name, backend.peer_precision
    return "", ""


def backend_for_suffix(suffix: str) -> str | None:
    """The backend whose own artifact has this suffix (``.xml`` -> openvino), if any."""
    owners = [n for n, b in _REGISTRY.items() if b.artifact_suffixes == (suffix,)]
    owners = owners or [n for n, b in _REGISTRY.items() if suffix in b.artifact_suffixes]
    return owners[0] if owners else None


register_backend(TorchBackend())
register_backend(OnnxRuntimeBackend())
register_backend(OpenVinoBackend())
register_backend(TensorRtBackend())
