"""The one guard every command runs on each path it will write, before any slow work.

A mistyped path must never destroy what a user owns. Nothing a command writes (the output, its
sidecar, the companions beside it: a calibration cache, OpenVINO's ``.bin``) may be one of its
inputs or an input's sidecar, nor a directory replaced whole (an NNCF statistics cache) that
holds an input; ``--force`` never changes that. An existing file that hgdeploy did not write is
not replaced without ``--force``. The place must also be writable *now*: the check creates (and
removes) a probe file in the nearest existing directory, so `/proc/x.onnx` or a read-only mount
fails in one line before minutes of export, not after. No directory is created here; writers
create them when they write (`artifacts.prepare_output_dir`)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from hgdeploy.base.artifacts import sidecar_path
from hgdeploy.base.errors import HgDeployError

# label -> the path (or paths: the image files of a labeled set) the command reads under it.
InputPaths = "str | Path | Sequence[str | Path] | None"
Inputs = Mapping[str, InputPaths]


def check_output(
    path: str | Path,
    *,
    inputs: Inputs | None = None,
    force: bool = False,
    option: str = "--output",
    directory: bool = False,
    companions: Sequence[Path] = (),
) -> Path:
    """`path`, after refusing an empty path, a clash of it or its `companions` with an input, a
    foreign file (unless `force`) and an unwritable place, each with one line naming the fix."""
    if str(path).strip() == "":
        raise HgDeployError(f"{option} is empty; give a path")
    path = Path(path)
    if directory:
        if path.exists() and not path.is_dir():
            raise HgDeployError(f"{option} {path} is a file, not a directory")
    elif path.is_dir():
        raise HgDeployError(f"{option} {path} is a directory; give a file name")
    written = [path] if directory else [path, sidecar_path(path)]
    written += [Path(c) for c in companions]
    for label, given in _input_paths(inputs):
        for candidate in written:
            if _clash(candidate, given, replaced_whole=candidate is not path or not directory):
                if candidate is path and _same_place(path, given):
                    what = f"{option} {path} is also the {label} input"
                elif _same_place(candidate, given):
                    what = f"{option} {path} would replace {candidate}, the {label} input"
                else:
                    what = (
                        f"{option} {path} would replace {candidate}, holding the {label} input "
                        f"{given}"
                    )
                raise HgDeployError(f"{what}; choose another output path")
    if not force:
        # A companion of an artifact hgdeploy wrote is its own (a `.bin` has no sidecar).
        owned = path.exists() and is_ours(path)
        for candidate in [path, *([] if owned else (Path(c) for c in companions))]:
            foreign = _foreign_file(candidate, directory and candidate is path)
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


def files_under(directory: str | Path | None) -> list[Path]:
    """Every file below `directory` (none if it is not one): the inputs a cache directory holds."""
    if directory is None or not Path(directory).is_dir():
        return []
    return sorted(p for p in Path(directory).rglob("*") if p.is_file())


def _input_paths(inputs: Inputs | None) -> Iterable[tuple[str, Path]]:
    """(label, path) for every input path and every input file's sidecar."""
    for label, given in (inputs or {}).items():
        if given is None:
            continue
        paths = [given] if isinstance(given, (str, Path)) else list(given)
        for one in paths:
            yield label, Path(one)
            if not Path(one).is_dir():  # a directory (an image folder) has no sidecar
                yield f"{label} sidecar", sidecar_path(one)


def _clash(candidate: Path, given: Path, *, replaced_whole: bool) -> bool:
    """Whether writing `candidate` would replace `given`: the same place, or `given` inside a
    directory that is replaced as a whole (an NNCF statistics cache; not a command's --output
    directory, whose files are checked one by one)."""
    if _same_place(candidate, given):
        return True
    if replaced_whole and (candidate.is_dir() or not candidate.exists()):
        return candidate.resolve() in given.resolve().parents
    return False


def _same_place(candidate: Path, given: Path) -> bool:
    if candidate.exists() and given.exists():
        return os.path.samefile(candidate, given)
    return candidate.resolve() == given.resolve()


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
