"""Writing artifacts safely: temp file + rename, and a JSON sidecar describing each artifact.

A crash, Ctrl-C, SIGTERM or a full disk must never leave a half-written model where a user (or
the next pipeline step) would pick it up, so every artifact is written next to its destination
under a temporary name and renamed into place only when complete. An artifact and its sidecar
change together (`artifact_files`): both are written aside, then renamed in; if any rename fails
the previous pair is put back, so a model never sits beside another model's sidecar.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hgdeploy.base.errors import HgDeployError, first_line

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


def prepare_output_dir(path: Path) -> list[Path]:
    """Create the parent directory or fail with one line naming the unwritable place; returns
    the directories it created (deepest last), so a failed write can remove them again."""
    created = []
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        created.append(parent)
        parent = parent.parent
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise HgDeployError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    if not os.access(path.parent, os.W_OK):
        raise HgDeployError(f"cannot write to {path.parent}: permission denied")
    return created[::-1]


def remove_empty_dirs(created: list[Path]) -> None:
    """Remove directories a failed write created (deepest first), if they are still empty."""
    for directory in reversed(created):
        with contextlib.suppress(OSError):
            directory.rmdir()


def _temp_beside(path: Path, directory: bool = False) -> Path:
    prefix, suffix = f".{path.name}.", ".tmp"
    try:
        if directory:
            return Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=path.parent))
        fd, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    except OSError as exc:
        raise HgDeployError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    return Path(name)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    created = prepare_output_dir(path)
    tmp = _temp_beside(path)
    done = False
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600; give the usual file mode
        os.replace(tmp, path)
        done = True
    except OSError as exc:
        raise HgDeployError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)
        if not done:
            remove_empty_dirs(created)


def write_text_atomic(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def read_json(path: str | Path, what: str) -> Any:
    """The JSON in `path`, or one line: "<what> not found: ..." / "corrupt <what> ...: ..."."""
    path = Path(path)
    if not path.is_file():
        raise HgDeployError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HgDeployError(f"corrupt {what} {path}: {first_line(exc)}") from None


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


def sidecar_text(artifact: str | Path, fields: dict[str, Any]) -> str:
    """The artifact's JSON description (plus creation time and tool versions)."""
    record = {
        "artifact": Path(artifact).name,
        **fields,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": tool_versions(),
    }
    return json.dumps(record, indent=2) + "\n"


def write_sidecar(artifact: str | Path, fields: dict[str, Any]) -> Path:
    """Write (replace) only the sidecar of a file that already exists (to describe a file made
    elsewhere). Artifacts hgdeploy writes go through `artifact_files`, file and sidecar together."""
    return write_text_atomic(sidecar_path(artifact), sidecar_text(artifact, fields))


def read_sidecar(artifact: str | Path) -> dict[str, Any] | None:
    """The artifact's sidecar, or None when it has none (e.g. an ONNX made elsewhere)."""
    path = sidecar_path(artifact)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise HgDeployError(f"cannot read sidecar {path}: {first_line(exc)}") from None
    if not isinstance(record, dict):
        raise HgDeployError(
            f"sidecar {path} is not a JSON object (found {type(record).__name__}); "
            "rebuild the artifact"
        )
    return record


def verify_sidecar(artifact: str | Path) -> dict[str, Any] | None:
    """The sidecar, after checking it describes *this* file (its recorded sha256): a re-export
    whose sidecar write failed, or a file replaced by hand, is refused instead of being judged
    with another model's record."""
    record = read_sidecar(artifact)
    if record is None:
        return None
    artifact = Path(artifact)
    checks = [(artifact, record.get("sha256"))]
    if isinstance(record.get("weights_file"), str):  # an OpenVINO IR's .bin
        checks.append((artifact.with_name(record["weights_file"]), record.get("weights_sha256")))
    for path, recorded in checks:
        if isinstance(recorded, str) and path.is_file() and sha256_file(path) != recorded:
            raise HgDeployError(
                f"{path} does not match its sidecar {sidecar_path(artifact).name} "
                "(sha256 differs: the file was changed or the sidecar is stale); rebuild it"
            )
    return record


class PendingArtifact:
    """The files of one artifact being written (the artifact first, then e.g. an IR's .bin or
    a cache), each at a temporary path beside its destination, plus its sidecar fields."""

    def __init__(self, paths: list[Path], directories: frozenset[Path]) -> None:
        self.paths = paths
        self._created: list[Path] = []
        for path in paths:
            self._created += prepare_output_dir(path)
        self._temps = {p: _temp_beside(p, p in directories) for p in paths}
        self.fields: dict[str, Any] | None = None

    def tmp(self, path: str | Path | None = None) -> Path:
        """Where to write `path` (default: the artifact) until the commit."""
        return self._temps[Path(path) if path is not None else self.paths[0]]

    def sha256(self, path: str | Path | None = None) -> str:
        """The sha256 the file will have in place (it is renamed, not rewritten)."""
        return sha256_file(self.tmp(path))

    def describe(self, fields: dict[str, Any]) -> None:
        """The artifact's sidecar fields; without them nothing is committed."""
        self.fields = fields

    def commit(self) -> None:
        """Rename every file and the sidecar into place; on a failure, put the previous ones
        back (no mismatched pair is ever left)."""
        if self.fields is None:
            raise HgDeployError(f"internal error: {self.paths[0]} has no sidecar fields")
        sidecar = sidecar_path(self.paths[0])
        sidecar_tmp = _temp_beside(sidecar)
        self._temps[sidecar] = sidecar_tmp
        # The artifact's companions first, the artifact, then its sidecar: whatever is in place
        # is always complete (an IR's .xml never sits without its .bin).
        order = [*self.paths[1:], self.paths[0]]
        moves = [(self._temps[p], p) for p in order] + [(sidecar_tmp, sidecar)]
        backups: list[tuple[Path, Path]] = []
        placed: list[Path] = []
        try:
            sidecar_tmp.write_text(sidecar_text(self.paths[0], self.fields))
            for temp, _ in moves:
                os.chmod(temp, (0o777 if temp.is_dir() else 0o666) & ~current_umask())
            for _, final in moves:
                if final.exists() or final.is_symlink():
                    backup = _temp_beside(final, directory=False)
                    backup.unlink()
                    os.replace(final, backup)
                    backups.append((backup, final))
            for temp, final in moves:
                os.replace(temp, final)
                placed.append(final)
        except OSError as exc:
            for final in placed:
                _remove(final)
            for backup, final in backups:
                with contextlib.suppress(OSError):
                    os.replace(backup, final)
            raise HgDeployError(
                f"cannot write {self.paths[0]}: {exc.strerror or exc}; the previous files are "
                "unchanged"
            ) from None
        for backup, _ in backups:
            _remove(backup)

    def discard(self) -> None:
        for temp in self._temps.values():
            _remove(temp)
        remove_empty_dirs(self._created)


@contextlib.contextmanager
def artifact_files(
    *paths: str | Path, directories: tuple[str | Path, ...] = ()
) -> Iterator[PendingArtifact]:
    """Write an artifact and its sidecar as one unit.

    Inside the block, write each file to ``pending.tmp(path)`` and give the sidecar fields with
    ``pending.describe(...)``; on a clean exit everything is renamed into place together. On an
    error (or SIGTERM/Ctrl-C, which the CLI turns into exceptions) the temporaries and any
    directory created for them are removed, and the previous files are untouched.
    ``directories`` names members that are directories (an NNCF statistics cache)."""
    members = [Path(p) for p in paths]
    pending = PendingArtifact(members, frozenset(Path(d) for d in directories))
    committed = False
    try:
        yield pending
        pending.commit()
        committed = True
    finally:
        if not committed:
            pending.discard()
