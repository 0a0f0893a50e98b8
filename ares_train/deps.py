"""Clear errors when the [train] extra is missing."""

from __future__ import annotations

import importlib.util

from ares_data.errors import DependencyError

INSTALL = "pip install 'ares-toolkit[train]'"
CPU_NOTE = "CPU: pip install torch==2.13.0 first"


def install_help() -> str:
    """The install line for --help texts: Typer renders help as rich markup, where an unescaped `[train]`
    is a style tag and disappears."""
    from rich.markup import escape

    return f"Needs: {escape(INSTALL)}."


def require_train_extra() -> None:
    missing = [m for m in ("torch", "transformers", "trl", "peft") if importlib.util.find_spec(m) is None]
    if missing:
        raise DependencyError(
            f"the trainer needs {', '.join(missing)}, which are not installed",
            hint=f"{INSTALL} ({CPU_NOTE})",
        )
