"""The `ares-data` command: thin commands that call the library.

Each command group lives in its own module under `ares_data/commands/` and owns a `typer.Typer()`;
this file only composes them and turns errors into `Error: ...` lines with exit codes.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .errors import AresError

# Command modules, in the order they appear in --help. Add a module here to add commands.
COMMAND_MODULES = [
    "store_cmds",
    "segment_cmd",
    "teacher_cmds",
    "ingest_cmds",
    "import_scores_cmd",
    "export_cmds",
    "stats_cmd",
    "hub_cmds",
    "judge_cmd",
    "verify_cmds",
]

def compose_app(name: str, help: str, package: str, modules: list[str]) -> typer.Typer:
    """A root Typer app with the global --store option and the commands of `package.commands.<module>`."""
    root = typer.Typer(name=name, help=help, no_args_is_help=True, pretty_exceptions_show_locals=False,
                       add_completion=False)

    @root.callback()
    def _root(
        ctx: typer.Context,
        store: Annotated[
            Optional[Path],
            typer.Option("--store", envvar="ARES_STORE", help="Dataset store folder (default ./ares-store).",
                         show_default=False),
        ] = None,
    ) -> None:
        ctx.obj = {"store": store}

    for mod in modules:
        sub = importlib.import_module(f"{package}.commands.{mod}").app
        for command in sub.registered_commands:
            if command.short_help is None and command.callback is not None:
                command.short_help = short_help(command.callback.__doc__ or "")
        root.add_typer(sub)
    return root


def short_help(doc: str) -> str:
    """The first sentence of a command's docstring as one line (its line breaks would otherwise break the
    command list mid-sentence in a narrow terminal)."""
    text = " ".join(doc.strip().split("\n\n")[0].split())
    match = re.match(r"(.+?[.!?])(?=\s+[A-Z(`]|$)", text)
    return match.group(1) if match else text


app = compose_app(
    "ares-data",
    "Build versioned ARES datasets: problems, sentence-segmented rationales, teacher scores and "
    "corrections, exports, and Hub sharing.",
    __package__,
    COMMAND_MODULES,
)


def run_app(typer_app: typer.Typer, argv: list[str] | None = None, prog: str | None = None) -> int:
    """Run a Typer app, mapping AresError to `Error: ...` + exit code (traceback with ARES_DEBUG=1)."""
    try:
        typer_app(args=argv, prog_name=prog, standalone_mode=False)
    except AresError as exc:
        if os.environ.get("ARES_DEBUG"):
            raise
        from .redact import redact_text

        sys.stderr.write(f"Error: {redact_text(exc.render())}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("Interrupted; nothing half-written was published.\n")
        return 130
    except SystemExit as exc:  # raised by typer/click for --help, usage errors, typer.Exit
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # click's own usage errors come through here in non-standalone mode
        import click

        # typer >= 0.20 vendors its own click (typer._click): catch usage errors from both
        vendored = sys.modules.get("typer._click.exceptions")
        usage_errors = (click.exceptions.ClickException, *((vendored.ClickException,) if vendored else ()))
        if isinstance(exc, usage_errors):
            exc.show()
            return exc.exit_code
        if isinstance(exc, (click.exceptions.Abort, typer.Abort)):
            sys.stderr.write("Aborted.\n")
            return 1
        if os.environ.get("ARES_DEBUG"):
            raise
        from .redact import redact_text

        sys.stderr.write(f"Error: unexpected {type(exc).__name__}: {redact_text(str(exc))}\n"
                         "  hint: set ARES_DEBUG=1 to see the traceback\n")
        return 1
    return 0


def main() -> None:
    sys.exit(run_app(app, prog="ares-data"))


if __name__ == "__main__":
    main()
