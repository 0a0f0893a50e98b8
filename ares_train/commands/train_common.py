"""Options and rendering shared by the `ares-train` commands (rollout, sft, ppo, loop)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

ConfigOpt = Annotated[
    Optional[Path],
    typer.Option("--config", help="TOML or YAML file of settings (flags given on the command line win).",
                 show_default=False),
]


def config_option(cls: type, name: str, *decls: str) -> Any:
    """A `typer.Option` for config field `name`: its help text and dataclass default, value None when the
    flag is not given (so `--config` file settings and the dataclass default apply)."""
    import dataclasses

    from ..config import field_help

    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    text = field_help(cls, name)
    shown = f.default not in ("", None, dataclasses.MISSING) and "(default" not in text
    return typer.Option(*decls, help=text + (f" (default: {f.default})" if shown else ""), show_default=False)


def print_warnings(warnings: list[str]) -> None:
    """Config warnings ('probably a mistake') on stderr."""
    from ares_data.commands.common import err_console

    for w in warnings:
        err_console().print(f"[yellow]Warning:[/yellow] {w}", highlight=False)


@contextlib.contextmanager
def progress_bar(label: str, *, enabled: bool = True) -> Iterator[Callable[[int, int], None]]:
    """A `progress(done, total)` callback drawing a transient rich bar on stderr (nothing when disabled)."""
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if not enabled:
            return
        if "bar" not in state:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            from ares_data.commands.common import err_console

            bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                           console=err_console(), transient=True)
            bar.start()
            state["bar"] = (bar, bar.add_task(label, total=total))
        state["bar"][0].update(state["bar"][1], completed=done, total=total)

    try:
        yield update
    finally:
        if "bar" in state:
            state["bar"][0].stop()
