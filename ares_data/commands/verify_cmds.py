"""`ares-data verify / gc`: check stored versions against their manifests; remove what killed writers left."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from .common import JsonOpt, StoreOpt, console, emit_json, get_store

app = typer.Typer()


@app.command("verify")
def verify_cmd(
    ref: Annotated[Optional[str], typer.Argument(help="NAME@vN, or NAME for its latest version.")] = None,
    every: Annotated[bool, typer.Option("--all", help="Verify every version of every dataset.")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check versions against their manifests: files and sizes, row count, schema, the content fingerprint
    (re-hashed), and that each parent still has the fingerprint recorded. Exit 1 when any is damaged.

    Example: ares-data verify scores@v3 (or: ares-data verify --all --json)"""
    from ..verify import selected_refs, verify_version

    s = get_store(store)
    reports = [verify_version(s, ref) for ref in selected_refs(s, ref, every)]
    if as_json:
        emit_json([{**r.__dict__, "ok": r.ok} for r in reports])
    else:
        c = console()
        for r in reports:
            c.print(f"{r.ref}: ok ({r.kind}, {r.rows} rows)" if r.ok else f"{r.ref}: [red]DAMAGED[/red]",
                    highlight=False, soft_wrap=True)
            for problem in r.problems:
                c.print(f"  - {problem}", highlight=False, markup=False, soft_wrap=True)
        bad = sum(not r.ok for r in reports)
        c.print(f"{len(reports)} version(s) checked, {bad} damaged" if reports else
                f"store {s.root} is empty")
    damaged = [r.ref for r in reports if not r.ok]
    if damaged:
        from ..integrity import IntegrityError

        raise IntegrityError(f"{len(damaged)} of {len(reports)} version(s) damaged: {', '.join(damaged)}",
                             hint="rebuild or pull them again; stored versions are never repaired in place")


@app.command("gc")
def gc_cmd(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be removed.")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove what killed writers and failed commands left in the store: temporary folders of writers that
    are no longer running (anywhere in the store) and dataset folders without any version. Published
    versions are never touched.

    Example: ares-data gc --dry-run"""
    from ..store_gc import collect_garbage

    s = get_store(store)
    found = collect_garbage(s.root, dry_run=dry_run)
    if as_json:
        emit_json([{"path": str(f.path), "reason": f.reason, "removed": f.removed} for f in found])
        return
    c = console()
    for f in found:
        c.print(f"{'removed' if f.removed else 'kept'} {f.path}: {f.reason}", highlight=False, markup=False,
                soft_wrap=True)
    removed = sum(f.removed for f in found)
    c.print(f"{removed} removed, {len(found) - removed} kept" if found else f"nothing to collect in {s.root}")
