"""The store's temporary folders and locks, and `gc`: what killed writers and failed commands left behind.

A writer streams into ``<root>/.tmp/<host>-<pid>-<random>`` (same file system as the versions, so publishing
is one rename); ``<root>/<name>/`` and its ``.lock`` are created only when a version is published. Older
writers used ``<root>/<name>/.tmp-<host>-<pid>-<random>``; both kinds are collected.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]  # stores may be shared between hosts
TMP_DIR = ".tmp"
LOCK = ".lock"
_TMP_RE = re.compile(r"^(?:\.tmp-)?(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[0-9a-f]+$")
_VERSION_RE = re.compile(r"^v\d+$")


def tmp_folder(root: Path) -> Path:
    """A fresh temporary folder for one writer of this process."""
    parent = root / TMP_DIR
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    return tmp


@contextlib.contextmanager
def locked(folder: Path, *, blocking: bool = True) -> Iterator[bool]:
    """Hold `<folder>/.lock` exclusively (creating the folder). Yields False when not blocking and busy.
    A lock file that `gc` removed meanwhile is not trusted: the lock is taken again on the new file."""
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / LOCK, "a+") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                same = os.stat(folder / LOCK).st_ino == os.fstat(lock.fileno()).st_ino
            except FileNotFoundError:
                same = False
            if same:
                yield True
                return


@dataclass
class Leftover:
    path: Path
    reason: str
    removed: bool = False


def _writer_state(tmp: Path) -> str | None:
    """Why a temporary folder is left alone (its writer runs, or is on another host); None: it is dead."""
    m = _TMP_RE.match(tmp.name)
    if not m:
        return "not a writer's folder"
    if m.group("host") != HOST:
        return "written from another host: remove it by hand once nothing writes there"
    try:
        os.kill(int(m.group("pid")), 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return f"writer pid {m.group('pid')} is running under another user"
    return f"writer pid {m.group('pid')} is still running"


def _temporaries(root: Path) -> Iterator[Path]:
    if (root / TMP_DIR).is_dir():
        yield from sorted((root / TMP_DIR).iterdir())
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        yield from sorted(folder.glob(".tmp-*"))


def remove_abandoned(root: Path) -> None:
    """Delete the temporary folders of writers on this host that died before publishing."""
    for tmp in (root / TMP_DIR).glob(f"{HOST}-*") if (root / TMP_DIR).is_dir() else ():
        if _writer_state(tmp) is None:
            shutil.rmtree(tmp, ignore_errors=True)


def _empty_name_folder(folder: Path) -> bool:
    return all(p.name == LOCK for p in folder.iterdir())


def drop_if_empty(folder: Path) -> bool:
    """Remove a dataset folder that holds nothing but its lock file (the caller holds the lock)."""
    if not _empty_name_folder(folder):
        return False
    (folder / LOCK).unlink(missing_ok=True)
    folder.rmdir()
    return True


def collect_garbage(root: Path, *, dry_run: bool = False) -> list[Leftover]:
    """Temporary folders of dead writers (anywhere in the store) and dataset folders with nothing in them.
    Running writers' folders and other hosts' are listed with the reason they stay."""
    if not root.is_dir():
        return []
    found = []
    for tmp in _temporaries(root):
        reason = _writer_state(tmp)
        item = Leftover(tmp, reason or "temporary folder of a writer that died before publishing")
        if reason is None and not dry_run:
            shutil.rmtree(tmp, ignore_errors=True)
            item.removed = not tmp.exists()
        found.append(item)
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not _empty_name_folder(folder):
            continue
        item = Leftover(folder, "empty dataset folder (no version was ever published)")
        if not dry_run:
            with locked(folder, blocking=False) as got:
                item.removed = bool(got) and drop_if_empty(folder)
        found.append(item)
    return found
