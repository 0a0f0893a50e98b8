"""What a stored version must still be: the checks behind every read and `ares-data verify`.

Cheap, on every read (no hashing):
- `manifest_problems`: the manifest has what a version needs (`kind`, `fingerprint`, `rows`, `parents`);
- `size_problems`: the data file exists and every file has the size the manifest records in `files`
  (versions published before `files` existed are checked for what they have);
- `table_problems`: the data as opened has the manifest's row count and the kind's Arrow schema (compared
  with the `columns` the manifest records, falling back to the kind's schema, which imports `datasets`).

Where it matters (before a version becomes a parent, on push, in `verify`): `fingerprint_problems`
recomputes the content fingerprint (sha256 over the kind and the data file).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any

import pyarrow as pa

from .errors import StoreError

DATA_FILE = "data-00000-of-00001.arrow"
MANIFEST = "manifest.json"
_REQUIRED = {"kind": str, "fingerprint": str, "rows": int}


class IntegrityError(StoreError):
    """A stored version no longer matches its manifest (truncated, changed, or a damaged manifest)."""


def manifest_problems(manifest: Any) -> list[str]:
    if not isinstance(manifest, dict):
        return ["the manifest is not a JSON object"]
    out = []
    for key, typ in _REQUIRED.items():
        value = manifest.get(key)
        if key not in manifest:
            out.append(f"the manifest has no '{key}'")
        elif not isinstance(value, typ) or isinstance(value, bool):
            out.append(f"the manifest's '{key}' is not a {typ.__name__} ({value!r:.40})")
    parents = manifest.get("parents", [])
    if not isinstance(parents, list) or not all(isinstance(p, dict) and isinstance(p.get("ref"), str)
                                                for p in parents):
        out.append("the manifest's 'parents' is not a list of {ref, kind, fingerprint}")
    return out


def file_sizes(folder: Path) -> dict[str, int]:
    """Sizes of a version's files (all but the manifest), recorded in the manifest as `files`."""
    return {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST}


def size_problems(folder: Path, manifest: dict[str, Any]) -> list[str]:
    if not (folder / DATA_FILE).is_file():
        return [f"{DATA_FILE} is missing"]
    out = []
    recorded = manifest.get("files") or {}
    for name, size in recorded.items() if isinstance(recorded, dict) else ():
        try:
            have = (folder / name).stat().st_size
        except OSError:
            out.append(f"{name} is missing")
            continue
        if have != size:
            out.append(f"{name} is {have} bytes, the manifest says {size}")
    return out


@cache
def expected_schema(kind: str) -> pa.Schema:
    from . import export  # noqa: F401 - registers the export kinds
    from .schema import features_for

    return features_for(kind).arrow_schema


def schema_difference(have: pa.Schema, want: pa.Schema) -> str | None:
    if have.equals(want, check_metadata=False):
        return None
    missing = [n for n in want.names if n not in have.names]
    extra = [n for n in have.names if n not in want.names]
    typed = [f"'{f.name}' is {f.type}, expected {want.field(f.name).type}" for f in have
             if f.name in want.names and not f.type.equals(want.field(f.name).type)]
    parts = ([f"missing column(s) {missing}"] if missing else []) + \
        ([f"unexpected column(s) {extra}"] if extra else []) + typed[:3]
    return "; ".join(parts) or f"columns in another order ({', '.join(have.names)})"


def table_problems(kind: str, manifest: dict[str, Any], rows: int, schema: pa.Schema) -> list[str]:
    """Row count against the manifest and schema against the kind: what reading the data gives for free."""
    out = []
    if rows != manifest.get("rows"):
        out.append(f"the data has {rows} rows, the manifest says {manifest.get('rows')}")
    if manifest.get("columns") == column_types(schema):
        return out  # as published (no `datasets` import needed to know the kind's schema)
    try:
        want = expected_schema(kind)
    except Exception:  # noqa: BLE001 - unknown kind: nothing to compare against
        return out
    diff = schema_difference(schema, want)
    if diff:
        out.append(f"schema differs from kind '{kind}': {diff}")
    return out


def column_types(schema: pa.Schema) -> dict[str, str]:
    """Column name -> Arrow type as text (the manifest records it as `columns` when publishing)."""
    return {f.name: str(f.type) for f in schema}


def read_data_shape(folder: Path) -> tuple[int, pa.Schema]:
    """Rows and schema of the Arrow stream, memory-mapped: walks the batch headers, copies no data."""
    with pa.memory_map(str(folder / DATA_FILE)) as source:
        reader = pa.ipc.open_stream(source)
        return sum(batch.num_rows for batch in reader), reader.schema


def data_fingerprint(kind: str, folder: Path) -> str:
    """The store fingerprint: sha256 over the kind and the data file's sha256 (reads the whole file)."""
    h = hashlib.sha256()
    with open(folder / DATA_FILE, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return hashlib.sha256((kind + h.hexdigest()).encode()).hexdigest()


def fingerprint_problems(kind: str, folder: Path, manifest: dict[str, Any]) -> list[str]:
    got = data_fingerprint(kind, folder)
    want = manifest.get("fingerprint")
    if got == want:
        return []
    return [f"the data no longer matches its fingerprint (manifest {str(want)[:16]}…, data {got[:16]}…)"]


def deep_problems(kind: str, folder: Path, manifest: dict[str, Any]) -> list[str]:
    """Everything `verify` checks on one version's own files (lineage aside)."""
    problems = manifest_problems(manifest)
    if problems:
        return problems
    problems = size_problems(folder, manifest)
    if f"{DATA_FILE} is missing" in problems:
        return problems
    try:
        rows, schema = read_data_shape(folder)
    except (OSError, pa.ArrowInvalid) as exc:
        return [*problems, f"{DATA_FILE} cannot be read ({exc})"]
    problems += table_problems(kind, manifest, rows, schema)
    return problems + fingerprint_problems(kind, folder, manifest)
