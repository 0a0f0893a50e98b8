"""`pull`: bring a dataset pushed by `ares_data.hub.push` back into a store, all of it or nothing.

1. The manifests (`ares/<config>/manifest.json`) come first: the local names are planned (`--prefix`,
   `-o`) and a name that already holds unrelated local data is refused before any data is downloaded.
2. The Parquet files' footers are checked against the manifests (row counts, declared sizes) before any
   row is read; rows are then read in bounded batches, checked against the kind's schema and invariants
   (`ares_data.invariants`) and streamed into staged (hidden) versions. Counts are recomputed from the rows.
3. The content fingerprint recorded at push time is checked on each staged version; only when every
   config passed are they published, parents first (a failure part way retracts what this pull published).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .errors import AresError, InputError, UsageError
from .hub import _RESERVED, HubError, _api, content_fingerprint, endpoint, hub_errors, parse_repo
from .integrity import DATA_FILE, expected_schema, manifest_problems, schema_difference
from .invariants import check_batch, derived_counts
from .store import Store, Version, check_name
from .store_writer import Writer

BATCH_BYTES = 32 * 1024**2  # rows are decoded and written in slices of at most this many bytes
MAX_ROW_BYTES = 64 * 1024**2  # one row that declares or decodes to more is refused
MAX_BATCH_ROWS = 4096
_COUNT_KEYS = ("ok", "failed", "cached", "attempts", "sentences", "dropped_sentences")
_USAGE_KEYS = ("input_tokens", "output_tokens", "cost_usd")


@dataclass
class Planned:
    """One config of the repo: its remote manifest, local name, Parquet files and (once staged) writer."""

    config: str
    manifest: dict[str, Any]
    target: str
    files: list[Path] = field(default_factory=list)
    writer: Writer | None = None
    counts: dict[str, float] = field(default_factory=dict)
    reuse: Version | None = None

    @property
    def ref(self) -> str:
        return f"{self.manifest['name']}@{self.manifest['version']}"


def _order(manifests: dict[str, dict[str, Any]]) -> list[str]:
    """Config names, parents before children."""
    by_ref = {m["name"] + "@" + str(m["version"]): c for c, m in manifests.items()}
    done: list[str] = []

    def visit(cfg: str, stack: tuple[str, ...]) -> None:
        if cfg in done or cfg in stack:
            return
        for p in manifests[cfg].get("parents", []):
            if p["ref"] in by_ref:
                visit(by_ref[p["ref"]], (*stack, cfg))
        done.append(cfg)

    for cfg in sorted(manifests, key=lambda c: not manifests[c].get("hub", {}).get("default")):
        visit(cfg, ())
    return done


def pull(store: Store, spec: str, name: str | None = None, prefix: str = "") -> list[Version]:
    """Download OWNER/NAME[@REV] and publish every ARES config in it (parents first, the default last), all
    or none. `name` renames the default config; `prefix` goes in front of every other local name."""
    from huggingface_hub import snapshot_download

    repo, rev = parse_repo(spec)
    token = os.environ.get("HF_TOKEN") or None
    api = _api(token)  # refuses offline mode
    with tempfile.TemporaryDirectory(prefix="ares-pull-") as tmp, hub_errors("pull", repo):
        commit = api.repo_info(repo, repo_type="dataset", revision=rev or "main").sha or rev or "main"

        def download(pattern: str) -> Path:
            return Path(snapshot_download(repo, repo_type="dataset", revision=commit, token=token,
                                          endpoint=endpoint(), local_dir=tmp, allow_patterns=[pattern]))

        local = download("ares/*/manifest.json")
        plan = _plan(store, repo, rev, _read_manifests(repo, rev, local), name, prefix)
        local = download("data/*/*.parquet")
        for p in plan:
            p.files = _checked_files(repo, local, p)
        with contextlib.ExitStack() as stack:
            for p in plan:
                if p.reuse is None:
                    p.writer = stack.enter_context(store.staging(p.manifest["kind"]))
                    _stage(repo, p)
            return _publish_all(store, repo, rev, plan, commit)


def _read_manifests(repo: str, rev: str | None, local: Path) -> dict[str, dict[str, Any]]:
    manifests = {}
    for path in sorted(local.glob("ares/*/manifest.json")):
        where = f"{repo}: ares/{path.parent.name}/manifest.json"
        try:
            m = json.loads(path.read_text())
        except ValueError as exc:
            raise HubError(f"{where} is not JSON ({exc})") from None
        problems = manifest_problems(m) or [f"the manifest has no '{k}'" for k in
                                            ("name", "version", "content_fingerprint") if k not in m]
        if problems or m["rows"] < 0:
            raise HubError(f"{where} is damaged: {'; '.join(problems) or 'a negative row count'}; "
                           "nothing was published")
        check_name(m["name"])
        manifests[path.parent.name] = m
    if not manifests:
        raise HubError(f"{repo}@{rev or 'main'} has no ares/<config>/manifest.json (not pushed by ares-data)")
    return manifests


def _plan(store: Store, repo: str, rev: str | None, manifests: dict[str, dict[str, Any]], name: str | None,
          prefix: str) -> list[Planned]:
    plan = []
    for cfg in _order(manifests):
        m = manifests[cfg]
        default = bool(m.get("hub", {}).get("default"))
        target = check_name(name if (name and default) else f"{prefix}{m['name']}")
        p = Planned(cfg, m, target)
        if target == m["name"]:
            p.reuse = _local_original(store, m)
        if p.reuse is None and not (name and default):
            _refuse_unrelated(store, repo, p, prefix)
        plan.append(p)
    return plan


def _refuse_unrelated(store: Store, repo: str, p: Planned, prefix: str) -> None:
    """A local name with versions that were not pulled from this repo is someone else's dataset."""
    for v in store.versions(p.target):
        try:
            found = store.resolve(f"{p.target}@v{v}", check=False)
            source = (found.manifest.get("pulled_from") or {}).get("repo")
        except AresError:
            source = None
        if source != repo:
            hint = f"pass --prefix (e.g. --prefix {prefix or 'hub-'}) to publish the pulled datasets under " \
                   "other names" + (", or -o NAME for the default config" if p.manifest.get("hub", {})
                                    .get("default") else "")
            raise UsageError(f"pulling {repo} would add a version to your local dataset '{p.target}' "
                             f"({p.target}@v{v} was not pulled from {repo}); nothing was published",
                             hint=hint)


def _checked_files(repo: str, local: Path, p: Planned) -> list[Path]:
    """The config's Parquet files, after their footers agree with the manifest (nothing read yet)."""
    files = sorted((local / "data" / p.config).glob("*.parquet"))
    if not files:
        raise HubError(f"{repo}: config {p.config} has no Parquet files")
    want = expected_schema(p.manifest["kind"])
    rows = 0
    for f in files:
        where = f"{repo}: data/{p.config}/{f.name}"
        try:
            meta = pq.ParquetFile(f).metadata
            schema = pq.read_schema(f)
        except (OSError, pa.ArrowInvalid) as exc:
            raise InputError(f"not a readable Parquet file ({exc})", file=where) from None
        diff = schema_difference(schema, want)
        if diff:
            raise InputError(f"does not fit kind '{p.manifest['kind']}': {diff}", file=where)
        for i in range(meta.num_row_groups):
            rg = meta.row_group(i)
            if rg.num_rows and rg.total_byte_size / rg.num_rows > MAX_ROW_BYTES:
                raise InputError(f"row group {i} declares {rg.total_byte_size} bytes for {rg.num_rows} rows "
                                 f"(more than {MAX_ROW_BYTES:,} bytes a row)", file=where)
        rows += meta.num_rows
    if rows != p.manifest["rows"]:
        raise HubError(f"{repo}: config {p.config} holds {rows} rows, its manifest says "
                       f"{p.manifest['rows']}; nothing was published")
    return files


def _batches(f: Path) -> Iterator[pa.RecordBatch]:
    """The file's rows, one row group at a time, in batches whose string and binary values are still
    dictionary-encoded (so a value repeated a million times is held once), sized from the footer's declared
    bytes and value counts (numbers inside lists count by their number of values, however encoded)."""
    meta = pq.ParquetFile(f).metadata
    per_row = 1.0
    for i in range(meta.num_row_groups):
        rg = meta.row_group(i)
        fixed = sum(rg.column(j).num_values * _WIDTH.get(rg.column(j).physical_type, 0)
                    for j in range(rg.num_columns))
        per_row = max(per_row, (rg.total_byte_size + fixed) / max(1, rg.num_rows))
    size = int(max(1, min(MAX_BATCH_ROWS, BATCH_BYTES // per_row)))
    leaves = [meta.schema.column(j).path for j in range(len(meta.schema))
              if meta.schema.column(j).physical_type == "BYTE_ARRAY"]
    top = [p for p in leaves if "." not in p]
    for i in range(meta.num_row_groups):
        yield from _row_group(f, i, size, leaves, top)


def _row_group(f: Path, i: int, size: int, leaves: list[str], top: list[str]) -> Iterator[pa.RecordBatch]:
    """Row group `i`; nested strings as dictionaries too, unless Arrow cannot (a column whose pages fall back
    from dictionary to plain encoding): then the rest of the group is read with top-level ones only."""
    done = 0
    try:
        for batch in pq.ParquetFile(f, read_dictionary=leaves).iter_batches(batch_size=size, row_groups=[i]):
            yield batch
            done += batch.num_rows
    except pa.ArrowNotImplementedError:
        for batch in pq.ParquetFile(f, read_dictionary=top).iter_batches(batch_size=size, row_groups=[i]):
            skip = min(done, batch.num_rows)
            done -= skip
            if skip < batch.num_rows:
                yield batch.slice(skip)


_WIDTH = {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4, "INT64": 8, "DOUBLE": 8, "INT96": 12}


def decoded_bytes(array: pa.Array) -> int:
    """What `array` takes once its dictionary-encoded values are decoded (computed without decoding)."""
    if isinstance(array, pa.ChunkedArray):
        return sum(decoded_bytes(c) for c in array.chunks)
    if pa.types.is_dictionary(array.type):
        lengths = pc.take(pc.binary_length(array.dictionary), array.indices)
        return int(pc.sum(lengths).as_py() or 0) + 8 * len(array)
    if pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        return decoded_bytes(array.flatten()) + 8 * len(array)
    if pa.types.is_struct(array.type):
        return sum(decoded_bytes(child) for child in array.flatten())
    return array.nbytes


def _bounded(batch: pa.RecordBatch, where: str, first_row: int) -> Iterator[pa.Table]:
    """`batch` decoded in slices of at most BATCH_BYTES (one row may be up to MAX_ROW_BYTES)."""
    size = sum(decoded_bytes(c) for c in batch.columns)
    if size <= BATCH_BYTES or batch.num_rows == 1:
        if size > MAX_ROW_BYTES:
            raise InputError(f"decodes to {size} bytes (more than {MAX_ROW_BYTES:,} bytes a row); "
                             "nothing was published", file=where, row=first_row + 1)
        yield pa.Table.from_batches([batch]).cast(pa.schema([pa.field(f.name, _plain(f.type))
                                                             for f in batch.schema]))
        return
    half = batch.num_rows // 2
    yield from _bounded(batch.slice(0, half), where, first_row)
    yield from _bounded(batch.slice(half), where, first_row + half)


def _plain(t: pa.DataType) -> pa.DataType:
    """`t` with every dictionary type inside it replaced by its value type."""
    if pa.types.is_dictionary(t):
        return t.value_type
    if pa.types.is_list(t):
        return pa.list_(pa.field(t.value_field.name, _plain(t.value_type)))
    if pa.types.is_large_list(t):
        return pa.large_list(pa.field(t.value_field.name, _plain(t.value_type)))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(t.field(i).name, _plain(t.field(i).type)) for i in range(t.num_fields)])
    return t


def _stage(repo: str, p: Planned) -> None:
    """Stream the config's rows into its staged writer in bounded slices, checking each slice."""
    assert p.writer is not None
    kind, done = p.manifest["kind"], 0
    for f in p.files:
        where = f"{repo}: data/{p.config}/{f.name}"
        for batch in _batches(f):
            for table in _bounded(batch, where, done):
                check_batch(kind, table, done, where)
                for key, n in derived_counts(kind, table).items():
                    p.counts[key] = p.counts.get(key, 0) + n
                p.writer.write_table(table)
                done += table.num_rows
    p.writer._finalize()
    with pa.memory_map(str(p.writer.tmp / DATA_FILE)) as source:
        got = content_fingerprint(kind, pa.ipc.open_stream(source).read_all())
    if got != p.manifest["content_fingerprint"]:
        raise HubError(f"{repo}: config {p.config}: content fingerprint mismatch (manifest "
                       f"{str(p.manifest['content_fingerprint'])[:16]}…, downloaded {got[:16]}…); "
                       "nothing was published")


def _publish_all(store: Store, repo: str, rev: str | None, plan: list[Planned], commit: str) -> list[Version]:
    published: dict[str, Version] = {}
    fresh: list[Version] = []
    try:
        for p in plan:
            if p.reuse is not None:
                published[p.ref] = p.reuse
                continue
            m, w = p.manifest, p.writer
            assert w is not None
            parents = [published[x["ref"]] for x in m.get("parents", []) if x["ref"] in published]
            w.counts = {k: int(p.counts[k]) for k in _COUNT_KEYS if k in p.counts}  # from the rows
            version = store.commit(w, p.target, parents=parents, params=m.get("params") or {},
                                   extra=_extra(repo, rev, commit, p))
            published[p.ref] = version
            if not version.reused:
                fresh.append(version)
    except BaseException:
        for version in reversed(fresh):
            store.retract(version)
        raise
    return list(published.values())


def _extra(repo: str, rev: str | None, commit: str, p: Planned) -> dict[str, Any]:
    m = p.manifest
    extra = {k: v for k, v in m.items() if k not in _RESERVED | {"content_fingerprint", "hub", "usage"}}
    if "usage" in m or "cost_usd" in m:  # recomputed from the rows, the remote's claim kept below
        extra["usage"] = {k: round(p.counts.get(k, 0), 8) for k in _USAGE_KEYS}
        extra["cost_usd"] = extra["usage"]["cost_usd"]
    extra["pulled_from"] = {"repo": repo, "revision": rev or "main", "commit": commit, "config": p.config,
                            "ref": p.ref,
                            "fingerprint": m.get("fingerprint"),
                            "content_fingerprint": m["content_fingerprint"],
                            "command": m.get("command"), "parents": m.get("parents", []),
                            "counts": m.get("counts"), "usage": m.get("usage")}
    return extra


def _local_original(store: Store, m: dict[str, Any]) -> Version | None:
    """The store's own `name@version` when it is byte-identical to the pushed one (same store fingerprint)."""
    try:
        v = store.resolve(f"{m['name']}@{m['version']}")
    except AresError:
        return None
    if v.fingerprint != m.get("fingerprint"):
        return None
    v.reused = True
    return v
