"""The versioned dataset store.

Layout: ``<root>/<name>/v<N>/`` holds the Arrow data in the Hugging Face ``datasets`` on-disk format
(``datasets.load_from_disk(path)`` works without this package) plus ``manifest.json``.

Publishing is atomic: rows stream into ``<root>/<name>/.tmp-*`` and the finished folder is renamed to its
version under an exclusive lock, so a crash leaves no visible partial version and two writers get two
distinct versions. An identical rebuild (same kind, parents, parameters and content) reuses the version.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import hashlib
import json
import os
import re
import shutil
import socket
import sys
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import InputError, NotFoundError, StoreError, UsageError
from .redact import redact_argv

DATA_FILE = "data-00000-of-00001.arrow"
MANIFEST = "manifest.json"
DEFAULT_STORE = "ares-store"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")
_REF_RE = re.compile(r"^(?P<name>[^@]+?)(?:@(?P<version>v?\d+|latest))?$")


def default_root() -> Path:
    return Path(os.environ.get("ARES_STORE") or DEFAULT_STORE)


def check_name(name: str) -> str:
    if not _NAME_RE.match(name) or name.startswith("."):
        raise UsageError(
            f"invalid dataset name '{name}'",
            hint="use letters, digits, '_', '-' and '.', starting with a letter or digit",
        )
    return name


def parse_ref(ref: str) -> tuple[str, int | None]:
    """`name`, `name@latest`, `name@v3` or `name@3` -> (name, 3 | None)."""
    m = _REF_RE.match(ref.strip())
    if not m:
        raise UsageError(f"invalid dataset reference '{ref}'", hint="write NAME or NAME@vN, e.g. scores@v3")
    version = m.group("version")
    if version in (None, "latest"):
        return check_name(m.group("name")), None
    return check_name(m.group("name")), int(version.lstrip("v"))


@dataclass
class Version:
    """One published dataset version."""

    name: str
    version: int
    path: Path
    manifest: dict[str, Any]
    reused: bool = False

    @property
    def ref(self) -> str:
        return f"{self.name}@v{self.version}"

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def as_parent(self) -> dict[str, str]:
        return {"ref": self.ref, "kind": self.kind, "fingerprint": self.fingerprint}

    def load(self) -> Any:
        """The data as a `datasets.Dataset` (memory-mapped)."""
        from datasets import load_from_disk

        return load_from_disk(str(self.path))


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build_key(kind: str, parents: list[dict[str, str]], params: dict[str, Any]) -> str:
    blob = json.dumps({"kind": kind, "parents": parents, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass
class Writer:
    """Streams rows of one kind into a temporary folder; `Store.writer` publishes it on success."""

    kind: str
    tmp: Path
    rows: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    _writer: Any = None

    def __post_init__(self) -> None:
        from datasets.arrow_writer import ArrowWriter

        from .schema import features_for  # imports `datasets`: kept off the CLI's start-up path

        self.features = features_for(self.kind)
        self._writer = ArrowWriter(features=self.features, path=str(self.tmp / DATA_FILE))

    @property
    def batch_size(self) -> int:
        """Rows per Arrow record batch that row-by-row writes produce (bulk writers can match it)."""
        return self._writer.writer_batch_size

    def write(self, row: dict[str, Any]) -> None:
        try:
            example = self.features.encode_example(row)
        except Exception as exc:  # noqa: BLE001 - re-raised with the row number
            raise InputError(f"cannot encode row for kind '{self.kind}': {exc}", row=self.rows) from exc
        self._writer.write(example)
        self.rows += 1

    def write_all(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def write_table(self, table: Any) -> None:
        """Bulk-write a pyarrow Table already in the kind's columns (e.g. read back from Parquet)."""
        try:
            table = table.select(list(self.features)).cast(self.features.arrow_schema)
        except Exception as exc:  # noqa: BLE001 - missing column or incompatible type
            raise InputError(f"table does not fit kind '{self.kind}': {exc}", row=self.rows) from exc
        self._writer.write_table(table)
        self.rows += table.num_rows

    def count(self, key: str, n: int = 1) -> None:
        self.counts[key] = self.counts.get(key, 0) + n

    def _finalize(self) -> None:
        self._writer.finalize()
        self._writer.close()
        state = {
            "_data_files": [{"filename": DATA_FILE}],
            "_fingerprint": uuid.uuid4().hex[:16],
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (self.tmp / "state.json").write_text(json.dumps(state, indent=2))
        info = {"citation": "", "description": "", "features": self.features.to_dict(), "homepage": "",
                "license": ""}
        (self.tmp / "dataset_info.json").write_text(json.dumps(info, indent=2))


class Store:
    """A folder of versioned datasets."""

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root) if root is not None else default_root()

    # ---- reading -------------------------------------------------------------------------------
    def names(self) -> list[str]:
        """Names with at least one published version (a failed first write leaves an empty folder)."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.is_dir() and not p.name.startswith(".") and self.versions(p.name))

    def versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        out = []
        for p in folder.iterdir():
            if re.fullmatch(r"v\d+", p.name) and (p / MANIFEST).is_file():
                out.append(int(p.name[1:]))
        return sorted(out)

    def resolve(self, ref: str) -> Version:
        name, version = parse_ref(ref)
        versions = self.versions(name)
        if not versions:
            known = ", ".join(self.names()) or "none"
            raise NotFoundError(f"no dataset named '{name}' in store {self.root} (datasets: {known})")
        if version is None:
            version = versions[-1]
        elif version not in versions:
            have = ", ".join(f"v{v}" for v in versions)
            raise NotFoundError(f"dataset '{name}' has no version v{version} (versions: {have})")
        path = self.root / name / f"v{version}"
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path / MANIFEST}: unreadable manifest ({exc})") from exc
        return Version(name, version, path, manifest)

    def resolve_kind(self, ref: str, kind: str) -> Version:
        v = self.resolve(ref)
        if v.kind != kind:
            raise UsageError(f"'{v.ref}' is {_article(v.kind)} {v.kind} dataset, but {_article(kind)} {kind} "
                             "dataset is needed here")
        return v

    def load(self, ref: str) -> Any:
        return self.resolve(ref).load()

    def find_build(self, name: str, key: str) -> Version | None:
        """The newest version of `name` made by an identical build, if any."""
        for v in reversed(self.versions(name)):
            found = self.resolve(f"{name}@v{v}")
            if found.manifest.get("build_key") == key:
                return found
        return None

    def parent_chain(self, version: Version, kind: str) -> Version:
        """Walk up the parents of `version` until a dataset of `kind` is found."""
        seen = [version]
        while seen:
            cur = seen.pop(0)
            if cur.kind == kind:
                return cur
            for parent in cur.manifest.get("parents", []):
                seen.append(self.resolve(parent["ref"]))
        raise StoreError(f"'{version.ref}' has no {kind} dataset among its parents")

    # ---- writing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def writer(
        self,
        name: str,
        kind: str,
        *,
        parents: list[Version] | None = None,
        params: dict[str, Any] | None = None,
        extra: dict[str, Any] | None = None,
        command: list[str] | None = None,
    ) -> Iterator[Writer]:
        """Stream rows, then publish atomically. The yielded writer's `.result` is the Version."""
        check_name(name)
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        _remove_abandoned(folder)
        tmp = folder / f".tmp-{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            w = Writer(kind, tmp)
            yield w
            w._finalize()
            w.result = self._publish(name, kind, w, parents or [], params or {}, extra or {}, command)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def publish(self, name: str, kind: str, rows: Iterable[dict[str, Any]], **kwargs: Any) -> Version:
        with self.writer(name, kind, **kwargs) as w:
            w.write_all(rows)
        return w.result

    def _publish(
        self,
        name: str,
        kind: str,
        w: Writer,
        parents: list[Version],
        params: dict[str, Any],
        extra: dict[str, Any],
        command: list[str] | None,
    ) -> Version:
        parent_refs = [p.as_parent() for p in parents]
        key = build_key(kind, parent_refs, params)
        fingerprint = hashlib.sha256((kind + _sha256_file(w.tmp / DATA_FILE)).encode()).hexdigest()
        manifest: dict[str, Any] = {
            "name": name,
            "kind": kind,
            "version": None,
            "fingerprint": fingerprint,
            "build_key": key,
            "parents": parent_refs,
            "command": redact_argv(command if command is not None else sys.argv),
            "params": params,
            "rows": w.rows,
            "counts": dict(w.counts),
            "tool_version": __version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **extra,
        }
        folder = self.root / name
        with open(folder / ".lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            for existing in reversed(self.versions(name)):
                old = self.resolve(f"{name}@v{existing}")
                if old.fingerprint == fingerprint and old.manifest.get("build_key") == key:
                    old.reused = True
                    return old
            version = (self.versions(name) or [0])[-1] + 1
            manifest["version"] = f"v{version}"
            manifest_path = w.tmp / MANIFEST
            manifest_path.write_text(json.dumps(manifest, indent=2, default=str))
            _fsync_tree(w.tmp)
            final = folder / f"v{version}"
            os.rename(w.tmp, final)
            _fsync_dir(folder)
        return Version(name, version, final, manifest)


_HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]  # stores may be shared between hosts


def _remove_abandoned(folder: Path) -> None:
    """Delete the temporary folders of writers on this host that died (kill -9) before publishing."""
    for tmp in folder.glob(f".tmp-{_HOST}-*"):
        try:
            os.kill(int(tmp.name.split("-")[2]), 0)
        except ProcessLookupError:  # no such process: nobody will finish it
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):  # not ours to judge / alive under another user
            continue


def _fsync_tree(folder: Path) -> None:
    for p in folder.iterdir():
        with open(p, "rb") as f:
            os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"
