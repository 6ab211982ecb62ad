"""Progress of a benchmark run: a rich bar over the whole matrix, or nothing (library use)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from hgdeploy.bench.results import BenchRun, CellResult


class ProgressSink(Protocol):
    def start(self, total: int) -> None: ...
    def phase(self, text: str) -> None: ...
    def advance(self, cell: CellResult) -> None: ...


class NullProgress:
    def start(self, total: int) -> None:
        pass

    def phase(self, text: str) -> None:
        pass

    def advance(self, cell: CellResult) -> None:
        pass


class RichProgress:
    """A rich progress bar over the whole matrix; the description names the current step."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from hgdeploy.base.console import console

        self._progress = Progress(
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self._task: Any = None

    def __enter__(self) -> RichProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.__exit__(*exc)  # type: ignore[arg-type]

    def start(self, total: int) -> None:
        self._task = self._progress.add_task("benchmark", total=total)

    def phase(self, text: str) -> None:
        if self._task is not None:
            from rich.markup import escape

            self._progress.update(self._task, description=escape(text))

    def advance(self, cell: CellResult) -> None:
        if self._task is not None:
            self._progress.advance(self._task)
            if cell.status in ("failed", "parity_failed"):
                from rich.markup import escape

                self._progress.console.print(
                    f"[red]{escape(cell.label())}: {cell.status}[/] {escape(cell.reason or '')}"
                )


class AfterCell:
    """Forwards progress and calls `after_cell(run)` once a cell is finished."""

    def __init__(
        self, inner: ProgressSink, run: BenchRun, after_cell: Callable[[BenchRun], None] | None
    ) -> None:
        self._inner = inner
        self._run = run
        self._after_cell = after_cell

    def start(self, total: int) -> None:
        self._inner.start(total)

    def phase(self, text: str) -> None:
        self._inner.phase(text)

    def advance(self, cell: CellResult) -> None:
        self._inner.advance(cell)
        if self._after_cell is not None:
            from hgdeploy.bench.speedups import compute_speedups

            compute_speedups(self._run.cells)
            self._after_cell(self._run)
