"""Writing artifacts safely: temp file + rename, and a JSON sidecar describing each artifact.

A crash, Ctrl-C or a full disk must never leave a half-written model where a user (or the next
pipeline step) would pick it up, so every artifact is written next to its destination under a
temporary name and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hgdeploy.base.errors import HgDeployError

_TOOLS = (
    "hgdeploy",
    "torch",
    "onnx",
    "onnxscript",
    "onnxruntime",
    "onnxruntime-gpu",
    "openvino",
    "nncf",
    "polygraphy",
    "tensorrt",
    "triton",
    "numpy",
)


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def tool_versions() -> dict[str, str]:
    """Installed versions of the packages that shape an artifact (absent ones omitted)."""
    versions = {"python": platform.python_version()}
    for name in _TOOLS:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def prepare_output_dir(path: Path) -> None:
    """Create the parent directory or fail with one line naming the unwritable place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HgDeployError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK):
        raise HgDeployError(f"cannot write to {path.parent}: permission denied")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    prepare_output_dir(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
    except OSError as exc:
        raise HgDeployError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def sha256_file(path: str | Path) -> str:
    """The file's sha256 (hex), read in 1 MiB blocks: what sidecars record to tie to a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_path(artifact: str | Path) -> Path:
    """`model.onnx` -> `model.onnx.json`."""
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + ".json")


def write_sidecar(artifact: str | Path, fields: dict[str, Any]) -> Path:
    """Write the artifact's JSON description (plus creation time and tool versions)."""
    record = {
        "artifact": Path(artifact).name,
        **fields,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": tool_versions(),
    }
    return write_text_atomic(sidecar_path(artifact), json.dumps(record, indent=2) + "\n")


def read_sidecar(artifact: str | Path) -> dict[str, Any] | None:
    """The artifact's sidecar, or None when it has none (e.g. an ONNX made elsewhere)."""
    path = sidecar_path(artifact)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise HgDeployError(f"cannot read sidecar {path}: {exc}") from None
