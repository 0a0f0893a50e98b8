"""`ares-data ls / show / head`: look inside the store."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .common import JsonOpt, StoreOpt, console, emit_json, err_console, get_store, tidy_float32

app = typer.Typer()


@app.command("ls")
def ls_cmd(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """List datasets in the store with their versions, kinds and row counts; damaged versions are marked
    (and listed on stderr with what is wrong), the others listed as usual.

    Example: ares-data ls --json (or: ares-data --store ares-demo/store ls)"""
    from ..verify import survey

    s = get_store(store)
    rows = survey(s)
    if as_json:
        emit_json(rows)
        return
    from rich.table import Table

    table = Table(title=f"store {s.root}")
    for col in ("name", "kind", "latest", "versions", "rows", "created_at"):
        table.add_column(col)
    for r in rows:
        versions = " ".join(f"{v} (damaged)" if v in r["damaged"] else v for v in r["versions"])
        table.add_row(r["name"], str(r["kind"] or "?"), r["latest"], versions, str(r["rows"]),
                      str(r["created_at"]))
    console().print(table if rows else f"store {s.root} is empty")
    for r in rows:
        for v, why in r["damaged"].items():
            err_console().print(f"damaged: {r['name']}@{v}: {why}", highlight=False, markup=False)


@app.command("show")
def show_cmd(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@vN")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a version's manifest, schema and counts.

    Example: ares-data show rats@v1 --json"""
    v = get_store(store).resolve(ref)
    info = json.loads((v.path / "dataset_info.json").read_text())
    out = {"ref": v.ref, "path": str(v.path), "manifest": v.manifest, "features": info["features"]}
    if as_json:
        emit_json(out)
        return
    c = console()
    c.print(f"[bold]{v.ref}[/bold]  kind={v.kind}  rows={v.manifest.get('rows')}  path={v.path}")
    c.print_json(json.dumps(v.manifest, default=str))
    c.print("[bold]schema[/bold]")
    for col, feat in info["features"].items():
        c.print(f"  {col}: {_describe(feat)}")


def _describe(feat: object) -> str:
    if isinstance(feat, dict):
        if "dtype" in feat:
            return str(feat["dtype"])
        if feat.get("_type") in ("Sequence", "List"):
            return f"list<{_describe(feat.get('feature'))}>"
        if "_type" in feat:
            return str(feat["_type"])
        return "{" + ", ".join(f"{k}: {_describe(x)}" for k, x in feat.items()) + "}"
    if isinstance(feat, list):
        return f"list<{_describe(feat[0])}>"
    return str(feat)


@app.command("head")
def head_cmd(
    ref: Annotated[str, typer.Argument(help="NAME or NAME@vN")],
    n: Annotated[int, typer.Option("-n", help="Number of rows to print.", min=1)] = 5,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Print the first rows of a dataset version (images shown as their size).

    Example: ares-data head sqa@v1 -n 3"""
    ds = get_store(store).load(ref)
    rows = [_printable(ds[i], ds.features) for i in range(min(n, len(ds)))]
    if as_json:
        emit_json(rows)
        return
    c = console()
    for r in rows:
        c.print_json(json.dumps(r, default=str))


def _printable(row: dict, features: dict) -> dict:
    return {k: _printable_value(tidy_float32(val, features.get(k))) for k, val in row.items()}


def _printable_value(val: object) -> object:
    if hasattr(val, "size") and hasattr(val, "mode"):  # PIL image
        return f"<image {val.size[0]}x{val.size[1]} {val.mode}>"
    if isinstance(val, list):  # e.g. the `images` column of exports
        return [_printable_value(v) for v in val]
    return val
