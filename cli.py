"""The umbrella `ares` command: `ares data ...`, `ares train ...`, `ares demo`, `ares version`."""

from __future__ import annotations

import sys

import typer

from ares_data import __version__
from ares_data.cli import app as data_app
from ares_data.cli import run_app
from ares_train.cli import app as train_app
from ares_train.commands.demo_cmd import demo_cmd

app = typer.Typer(
    name="ares",
    help="ARES toolkit: teacher feedback datasets (ares data) and the trainer (ares train).",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
app.add_typer(data_app, name="data", help="Build, inspect and share ARES datasets (same as ares-data).")
app.add_typer(train_app, name="train", help="Rollout, PPO, SFT and the ARES loop (same as ares-train).")


app.command("demo")(demo_cmd)


@app.command("version")
def version_cmd() -> None:
    """Print the toolkit version."""
    typer.echo(f"ares-toolkit {__version__}")


def main() -> None:
    sys.exit(run_app(app, prog="ares"))


if __name__ == "__main__":
    main()
