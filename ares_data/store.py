"""The versioned dataset store.

Layout: ``<root>/<name>/v<N>/`` holds the Arrow data in the Hugging Face ``datasets`` on-disk format
(``datasets.load_from_disk(path)`` works without this package) plus ``manifest.json``.

Publishing is atomic: rows stream into ``<root>/.tmp/<host>-<pid>-*`` and the finished folder is renamed to
``<root>/<name>/v<N>`` under an exclusive lock, so a crash leaves no visible partial version, a failed or
refused command leaves no ``<root>/<name>/`` folder, and two writers get two distinct versions. An identical
rebuild (same kind, parents, parameters and content) reuses the version.

Reading checks what is cheap on every `resolve` (manifest fields, file sizes recorded in `files`) and every
load (row count, schema); the fingerprint is recomputed before a version becomes a parent (see
`ares_data.integrity`).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import os
import re
import shutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import __version__
from .errors import NotFoundError, StoreError, UsageError
from .integrity import (
    DATA_FILE,
    MANIFEST,
    IntegrityError,
    column_types,
    data_fingerprint,
    deep_problems,
    file_sizes,
    fingerprint_problems,
    manifest_problems,
    read_data_shape,
    size_problems,
    table_problems,
)
from .redact import redact_argv
from .store_gc import drop_if_empty, locked, remove_abandoned, tmp_folder
from .store_writer import Writer

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
        """The data as a `datasets.Dataset` (memory-mapped), checked against the manifest's row count and
        the kind's schema."""
        from datasets import load_from_disk

        try:
            ds = load_from_disk(str(self.path))
        except Exception as exc:  # noqa: BLE001 - `datasets` refuses a data file that does not fit its info
            problems = _shape_problems(self) or [f"cannot be loaded ({str(exc).splitlines()[0][:200]})"]
            _raise_damaged(self, problems)
        self.check_table(ds.num_rows, ds.data.schema)
        return ds

    def problems(self) -> list[str]:
        """What the cheap checks find wrong (manifest fields, file sizes); [] when nothing."""
        return manifest_problems(self.manifest) or size_problems(self.path, self.manifest)

    def check(self) -> Version:
        _raise_damaged(self, self.problems())
        return self

    def check_table(self, rows: int, schema: Any) -> None:
        """Raise IntegrityError when data read from this version has another row count or schema."""
        _raise_damaged(self, table_problems(self.kind, self.manifest, rows, schema))

    def verify_fingerprint(self) -> None:
        """Recompute the content fingerprint (sha256 of the data file) and compare it with the manifest's."""
        _raise_damaged(self, self.problems() or fingerprint_problems(self.kind, self.path, self.manifest))

    def deep_problems(self) -> list[str]:
        """Everything `ares-data verify` checks on the version's own files."""
        kind = self.manifest.get("kind") if isinstance(self.manifest, dict) else None
        return deep_problems(str(kind), self.path, self.manifest)


def _shape_problems(version: Version) -> list[str]:
    try:
        rows, schema = read_data_shape(version.path)
    except (OSError, ValueError) as exc:
        return [f"{DATA_FILE} cannot be read ({exc})"]
    return table_problems(version.kind, version.manifest, rows, schema)


def _raise_damaged(version: Version, problems: list[str]) -> None:
    if problems:
        raise IntegrityError(f"{version.ref} is damaged: {'; '.join(problems)}",
                             hint=f"`ares-data verify {version.ref}` lists what differs; rebuild or pull the "
                                  "version again (stored versions are never repaired in place)")


def build_key(kind: str, parents: list[dict[str, str]], params: dict[str, Any]) -> str:
    blob = json.dumps({"kind": kind, "parents": parents, "params": params}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


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

    def resolve(self, ref: str, *, check: bool = True) -> Version:
        """The version `ref` names; with `check`, IntegrityError when the cheap checks find it damaged."""
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
        except (OSError, ValueError) as exc:
            raise IntegrityError(f"{name}@v{version} is damaged: unreadable manifest {path / MANIFEST} "
                                 f"({exc})") from exc
        found = Version(name, version, path, manifest)
        return found.check() if check else found

    def resolve_kind(self, ref: str, kind: str) -> Version:
        v = self.resolve(ref)
        if v.kind != kind:
            raise UsageError(f"'{v.ref}' is {_article(v.kind)} {v.kind} dataset, but {_article(kind)} {kind} "
                             "dataset is needed here")
        return v

    def load(self, ref: str) -> Any:
        return self.resolve(ref).load()

    def find_build(self, name: str, key: str) -> Version | None:
        """The newest undamaged version of `name` made by an identical build, if any."""
        for v in reversed(self.versions(name)):
            try:
                found = self.resolve(f"{name}@v{v}", check=False)
            except StoreError:
                continue
            if isinstance(found.manifest, dict) and found.manifest.get("build_key") == key \
                    and not found.problems():
                return found
        return None

    def ancestors(self, version: Version, *, skip_unreadable: bool = False) -> Iterator[Version]:
        """The parents of `version`, their parents, ... breadth-first, each once: a cycle of parents in
        damaged manifests ends the walk instead of looping. A parent that cannot be read raises, or is left
        out with `skip_unreadable`."""
        queue, seen = list(version.manifest.get("parents", [])), {version.ref}
        while queue:
            ref = queue.pop(0)["ref"]
            if ref in seen:
                continue
            seen.add(ref)
            try:
                parent = self.resolve(ref)
            except StoreError:
                if skip_unreadable:
                    continue
                raise
            yield parent
            queue.extend(parent.manifest.get("parents", []))

    def parent_chain(self, version: Version, kind: str) -> Version:
        """`version` itself or its nearest ancestor of `kind`."""
        if version.kind == kind:
            return version
        for parent in self.ancestors(version):
            if parent.kind == kind:
                return parent
        raise StoreError(f"'{version.ref}' has no {kind} dataset among its parents")

    # ---- writing -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def staging(self, kind: str) -> Iterator[Writer]:
        """A writer whose rows stay in a hidden temporary folder (removed on exit) until `commit`."""
        remove_abandoned(self.root)
        tmp = tmp_folder(self.root)
        try:
            yield Writer(kind, tmp)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

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
        """Stream rows, then publish atomically. The yielded writer's `.result` is the Version. Each parent's
        fingerprint is checked first: a damaged version never becomes a parent."""
        check_name(name)
        for parent in parents or []:
            parent.verify_fingerprint()
        with self.staging(kind) as w:
            yield w
            w.result = self.commit(w, name, parents=parents, params=params, extra=extra, command=command)

    def publish(self, name: str, kind: str, rows: Iterable[dict[str, Any]], **kwargs: Any) -> Version:
        with self.writer(name, kind, **kwargs) as w:
            w.write_all(rows)
        return w.result

    def commit(self, w: Writer, name: str, *, parents: list[Version] | None = None,
               params: dict[str, Any] | None = None, extra: dict[str, Any] | None = None,
               command: list[str] | None = None) -> Version:
        """Publish a staged writer's rows as the next version of `name`, or reuse an identical version."""
        check_name(name)
        w._finalize()
        parent_refs = [p.as_parent() for p in parents or []]
        key = build_key(w.kind, parent_refs, params or {})
        manifest: dict[str, Any] = {
            "name": name,
            "kind": w.kind,
            "version": None,
            "fingerprint": data_fingerprint(w.kind, w.tmp),
            "build_key": key,
            "parents": parent_refs,
            "command": redact_argv(command if command is not None else sys.argv),
            "params": params or {},
            "rows": w.rows,
            "counts": dict(w.counts),
            "files": file_sizes(w.tmp),
            "columns": column_types(w.features.arrow_schema),
            "tool_version": __version__,
            "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            **(extra or {}),
        }
        folder = self.root / name
        with locked(folder):
            reused = self._identical(name, manifest)
            if reused is not None:
                return reused
            version = (self.versions(name) or [0])[-1] + 1
            manifest["version"] = f"v{version}"
            (w.tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str))
            _fsync_tree(w.tmp)
            final = folder / f"v{version}"
            os.rename(w.tmp, final)
            _fsync_dir(folder)
        return Version(name, version, final, manifest)

    def _identical(self, name: str, manifest: dict[str, Any]) -> Version | None:
        """An undamaged version of `name` with the same content and build key (the lock is held)."""
        for existing in reversed(self.versions(name)):
            try:
                old = self.resolve(f"{name}@v{existing}", check=False)
            except StoreError:
                continue
            if manifest_problems(old.manifest) or old.fingerprint != manifest["fingerprint"] \
                    or old.manifest.get("build_key") != manifest["build_key"]:
                continue
            if not old.problems() and not fingerprint_problems(old.kind, old.path, old.manifest):
                old.reused = True
                return old
        return None

    def retract(self, version: Version) -> None:
        """Remove a version this process just published (a multi-version publish that failed part way)."""
        gone = tmp_folder(self.root)
        with locked(self.root / version.name):
            os.replace(version.path, gone / version.path.name)
            drop_if_empty(self.root / version.name)
        shutil.rmtree(gone, ignore_errors=True)


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
