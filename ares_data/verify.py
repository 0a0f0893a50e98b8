"""`ares-data verify` and the damaged-version view of `ls`, over a whole store.

`verify_version` runs every check on a version (manifest fields, file sizes, row count, schema, the content
fingerprint recomputed, every row against its kind's invariants) and on its lineage (each parent is present
and still has the fingerprint this version recorded). `survey` lists every dataset with its damaged
versions, using the cheap checks only, so one bad manifest does not hide the other datasets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .errors import InputError, StoreError, UsageError
from .integrity import DATA_FILE
from .store import Store, Version


@dataclass
class Report:
    ref: str
    kind: str | None
    rows: int | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _open(store: Store, ref: str) -> tuple[Version | None, list[str]]:
    try:
        return store.resolve(ref, check=False), []
    except StoreError as exc:
        return None, [str(exc)]


def lineage_problems(store: Store, version: Version) -> list[str]:
    out = []
    for parent in version.manifest.get("parents") or []:
        if not isinstance(parent, dict) or not isinstance(parent.get("ref"), str):
            continue  # reported by the manifest check
        found, errors = _open(store, parent["ref"])
        if found is None:
            out.append(f"parent {parent['ref']} cannot be read ({errors[0]})")
        elif found.manifest.get("fingerprint") != parent.get("fingerprint"):
            have = str(found.manifest.get("fingerprint"))[:16]
            out.append(f"parent {parent['ref']} has fingerprint {have}…, but this version was made from "
                       f"{str(parent.get('fingerprint'))[:16]}…")
    return out


def row_problems(version: Version, batch_rows: int = 10_000) -> list[str]:
    """The first row that breaks its kind's invariants (`ares_data.invariants`), read memory-mapped in
    batches; [] when every row holds."""
    import pyarrow as pa

    from .invariants import check_batch

    with pa.memory_map(str(version.path / DATA_FILE)) as source:
        table = pa.ipc.open_stream(source).read_all()
    done = 0
    try:
        for batch in table.to_batches(max_chunksize=batch_rows):
            check_batch(version.kind, batch, done, DATA_FILE)
            done += batch.num_rows
    except InputError as exc:
        return [str(exc)]
    return []


def verify_version(store: Store, ref: str) -> Report:
    version, errors = _open(store, ref)
    if version is None:
        return Report(ref, None, None, errors)
    m = version.manifest if isinstance(version.manifest, dict) else {}
    problems = version.deep_problems()
    if not problems:
        problems = row_problems(version)
    if isinstance(version.manifest, dict):
        problems += lineage_problems(store, version)
    return Report(version.ref, m.get("kind"), m.get("rows"), problems)


def selected_refs(store: Store, ref: str | None, every: bool) -> list[str]:
    if every:
        return [f"{name}@v{v}" for name in store.names() for v in store.versions(name)]
    if ref is None:
        raise UsageError("name a version to verify, or pass --all", hint="ares-data verify scores@v3")
    version = store.resolve(ref, check=False)
    return [version.ref]


def survey(store: Store) -> list[dict[str, Any]]:
    """One entry per dataset name: versions, the latest's kind/rows, and the damaged versions with why."""
    out = []
    for name in store.names():
        versions = store.versions(name)
        damaged: dict[str, str] = {}
        latest: Version | None = None
        for v in versions:
            found, errors = _open(store, f"{name}@v{v}")
            problems = errors or found.problems()  # type: ignore[union-attr]
            if problems:
                damaged[f"v{v}"] = "; ".join(problems)
            if v == versions[-1]:
                latest = found
        m = latest.manifest if latest is not None and isinstance(latest.manifest, dict) else {}
        out.append({"name": name, "versions": [f"v{v}" for v in versions],
                    "latest": f"{name}@v{versions[-1]}", "kind": m.get("kind"), "rows": m.get("rows"),
                    "created_at": m.get("created_at"),
                    "damaged": damaged})
    return out
