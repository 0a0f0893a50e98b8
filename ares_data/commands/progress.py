"""A transient rich progress bar on stderr for long library calls (silent for --json output)."""

from __future__ import annotations

from typing import Any


class ProgressBar:
    """`with ProgressBar("judging") as update: work(on_progress=update)`; `update(done, total)`.

    Yields None when `quiet` or stderr is not a terminal, so the library call draws nothing."""

    def __init__(self, label: str, *, quiet: bool = False) -> None:
        self.label, self.quiet = label, quiet
        self.progress: Any = None
        self.task: Any = None

    def __enter__(self) -> Any:
        from .common import err_console

        console = err_console()
        if self.quiet or not console.is_terminal:  # logs and pipes get no bar
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.progress.start()
        self.task = self.progress.add_task(self.label, total=None)
        return self.update

    def update(self, done: int, total: int | None = None, label: str | None = None) -> None:
        if self.progress is not None:
            kw = {"description": label} if label else {}
            self.progress.update(self.task, completed=done, total=total, **kw)

    def __exit__(self, *exc: object) -> None:
        if self.progress is not None:
            self.progress.stop()
