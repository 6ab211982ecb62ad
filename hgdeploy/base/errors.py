"""The one exception type users see: a message that fits on one line and names the fix."""

from __future__ import annotations


class HgDeployError(Exception):
    """A user-facing failure (bad input, missing dependency); the CLI prints it and exits 1."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none: how a
    library's multi-line error becomes part of a one-line HgDeployError."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
