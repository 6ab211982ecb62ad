"""The one guard every command runs on each path it will write, before any slow work.

A mistyped path must never destroy what a user owns: an output may not be one of the command's
inputs (or an input's sidecar), and an existing file that hgdeploy did not write is not replaced
without ``--force``. The place must also be writable *now*: the check creates (and removes) a
probe file in the nearest existing directory, so `/proc/x.onnx` or a read-only mount fails in
one line before minutes of export, not after. No directory is created here; writers create
them when they write (`artifacts.prepare_output_dir`).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from hgdeploy.base.artifacts import sidecar_path
from hgdeploy.base.errors import HgDeployError

Inputs = Mapping[str, "str | Path | None"]


def check_output(
    path: str | Path,
    *,
    inputs: Inputs | None = None,
    force: bool = False,
    option: str = "--output",
    directory: bool = False,
) -> Path:
    """`path`, after refusing an empty path, a clash with an input, a foreign file (unless
    `force`) and an unwritable place, each with one line naming the fix."""
    if str(path).strip() == "":
        raise HgDeployError(f"{option} is empty; give a path")
    path = Path(path)
    if directory:
        if path.exists() and not path.is_dir():
            raise HgDeployError(f"{option} {path} is a file, not a directory")
    elif path.is_dir():
        raise HgDeployError(f"{option} {path} is a directory; give a file name")
    for label, given in (inputs or {}).items():
        if given is not None and _same_place(path, Path(given), directory):
            raise HgDeployError(
                f"{option} {path} is also the {label} input; choose another output path"
            )
    if not force:
        foreign = _foreign_file(path, directory)
        if foreign is not None:
            raise HgDeployError(
                f"{foreign} exists and was not written by hgdeploy; pass --force to replace it"
            )
    _probe_writable(path if directory else path.parent)
    return path


def is_ours(path: Path) -> bool:
    """Whether hgdeploy wrote `path`: an artifact with a sidecar, or a JSON record of ours
    (a sidecar, a report, a calibration cache: they carry hgdeploy's version or format)."""
    if sidecar_path(path).is_file():
        return True
    if path.is_dir():
        return (path / "statistics_metadata.json").is_file()  # an NNCF cache we wrote
    try:
        with path.open("rb") as handle:
            head = handle.read(1)
            if head != b"{":
                return False
            record = json.loads(head + handle.read())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict):
        return False
    versions = record.get("versions")
    tagged = isinstance(versions, dict) and "hgdeploy" in versions
    return tagged or str(record.get("format", "")).startswith("hgdeploy")


def _same_place(output: Path, given: Path, directory: bool) -> bool:
    candidates = [output] if directory else [output, sidecar_path(output)]
    for candidate in candidates:
        if candidate.exists() and given.exists():
            if os.path.samefile(candidate, given):
                return True
        elif candidate.resolve() == given.resolve():
            return True
    return False


def _foreign_file(path: Path, directory: bool) -> Path | None:
    """The first existing file at `path` that hgdeploy would replace but did not write."""
    if directory:
        results = path / "results.json"  # what a benchmark writes into its directory
        return results if results.exists() and not is_ours(results) else None
    return path if path.exists() and not is_ours(path) else None


def _probe_writable(directory: Path) -> None:
    """Create and remove a probe file in the nearest existing ancestor of `directory`."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise HgDeployError(f"cannot create {directory}: {existing} is not a directory")
    try:
        fd, probe = tempfile.mkstemp(prefix=".hgdeploy-probe.", dir=existing)
    except OSError as exc:
        raise HgDeployError(f"cannot write to {existing}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)
