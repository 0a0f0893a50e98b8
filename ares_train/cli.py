"""The `ares-train` command. Heavy imports (torch, transformers, trl) happen inside commands only,
so `--help` is fast and a missing [train] extra gives a clear error instead of an ImportError."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ares_data.cli import run_app

# Command modules under ares_train/commands/, in --help order. Add a module here to add commands.
COMMAND_MODULES: list[str] = [
    "rollout_cmd",
    "sft_cmd",
    "ppo_cmd",
    "eval_cmd",
    "loop_cmds",
]

app = typer.Typer(
    name="ares-train",
    help="Train with ARES: sample rationales (rollout), PPO with sentence-level teacher rewards, SFT on "
    "teacher corrections, and the alternating loop. Needs: pip install 'ares-toolkit[train]'.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)


@app.callback()
def _root(
    ctx: typer.Context,
    store: Annotated[
        Optional[Path],
        typer.Option("--store", envvar="ARES_STORE", help="Dataset store folder (default ./ares-store).",
                     show_default=False),
    ] = None,
) -> None:
    ctx.obj = {"store": store}


for _mod in COMMAND_MODULES:
    app.add_typer(importlib.import_module(f".commands.{_mod}", __package__).app)


def main() -> None:
    sys.exit(run_app(app, prog="ares-train"))


if __name__ == "__main__":
    main()
