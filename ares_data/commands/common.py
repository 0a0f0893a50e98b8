"""Options and rendering shared by every command (both CLIs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..store import Store, default_root

StoreOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--store",
        envvar="ARES_STORE",
        help="Dataset store folder (default ./ares-store, or $ARES_STORE).",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON instead of tables.")]
OutputOpt = Annotated[str, typer.Option("-o", "--output", help="Name of the dataset to publish.")]


def get_store(store: Path | None) -> Store:
    ctx = click_ctx()
    if ctx is not None and ctx.obj and ctx.obj.get("store"):
        # `ares-data --store DIR cmd` wins over the command's own value when that only came from $ARES_STORE
        source = ctx.get_parameter_source("store")
        if store is None or (source is not None and source.name in ("ENVIRONMENT", "DEFAULT")):
            store = ctx.obj["store"]
    return Store(store if store is not None else default_root())


def click_ctx() -> Any:
    import click

    ctx = click.get_current_context(silent=True)
    vendored = sys.modules.get("typer._click.globals")  # typer >= 0.20 runs commands under its own click
    if ctx is None and vendored is not None:
        ctx = vendored.get_current_context(silent=True)
    return ctx


def tidy_float32(value: Any, feature: Any) -> Any:
    """`value` (one cell, as `datasets` returns it) with every float of a float32 `feature` replaced by its
    shortest decimal that reads back as the same float32: a stored 0.6 prints as 0.6, not
    0.6000000238418579 (its float64 widening). Nothing else changes."""
    dtype = getattr(feature, "dtype", None)
    if dtype == "float32" and isinstance(value, float):
        import numpy as np

        return float(str(np.float32(value)))
    inner = getattr(feature, "feature", None)
    if isinstance(value, list) and inner is not None:
        return [tidy_float32(v, inner) for v in value]
    if isinstance(value, dict) and isinstance(feature, dict):
        return {k: tidy_float32(v, feature.get(k)) for k, v in value.items()}
    return value


def emit_json(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")


def console() -> Any:
    from rich.console import Console

    return Console()


def err_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


def published_message(version: Any) -> str:
    verb = "reused identical" if version.reused else "published"
    return f"{verb} {version.ref} ({version.manifest['rows']} rows) at {version.path}"
