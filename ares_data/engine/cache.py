"""Persistent request cache: `Request.cache_key(scope, model)` -> the reply, written as each reply arrives.

It lives outside the versioned datasets, in `<store>/.cache/teacher/replies.sqlite` (SQLite in WAL mode,
one committed transaction per reply). A process killed at any moment, `kill -9` included, loses at most the
requests that were in flight: every committed reply survives, so a rerun re-sends nothing already answered.
Only replies are stored (never request headers); the engine redacts the keys in use from each reply first.
Requests the provider refused (400/413/422) are kept too, so a resumed run does not send them again
(`--retry-failed` asks again on purpose). A damaged file (a truncated copy, a disk error) is found when the
cache is opened (`PRAGMA quick_check`) and reported as `DamagedCacheError`, naming the file;
`set_aside_if_damaged` moves it out of the way so an empty cache takes its place.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from ..teachers.base import Reply

CACHE_DIR = Path(".cache") / "teacher"
_REPLY_FIELDS = tuple(f.name for f in dataclasses.fields(Reply))
CACHE_FILE = "replies.sqlite"
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")  # sqlite's error names for a damaged file
SET_ASIDE_FLAG = "--set-aside-damaged-cache"
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL, "
    "attempts INTEGER NOT NULL, batch INTEGER NOT NULL, created REAL NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rejections (key TEXT PRIMARY KEY, status INTEGER, message TEXT NOT NULL, "
    "attempts INTEGER NOT NULL, created REAL NOT NULL)",
)


class DamagedCacheError(StoreError):
    """The reply cache file cannot be read (truncated, overwritten, a disk error)."""

    def __init__(self, path: Path, reason: str) -> None:
        aside = path.parent.with_name(path.parent.name + ".damaged")
        super().__init__(
            f"the teacher reply cache {path} is damaged ({reason})",
            hint=f"rerun score/correct/judge with {SET_ASIDE_FLAG} to move it aside and start an empty "
            f"cache (replies it held are asked for again), or move the folder aside yourself: "
            f"mv {path.parent} {aside}",
        )
        self.path = path


@dataclass
class CachedReply:
    reply: Reply
    attempts: int  # HTTP attempts it took the first time
    batch: bool  # answered through a batch API (billed at the batch price)


@dataclass
class CachedRejection:
    """The provider refused this request (HTTP 400/413/422): its message, as the row's error gave it."""

    status: int | None
    message: str
    attempts: int


class RequestCache:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / CACHE_FILE
        db = None
        try:
            with self._guard():
                db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process crashes
                for statement in _SCHEMA:
                    db.execute(statement)
                problems = [r[0] for r in db.execute("PRAGMA quick_check(3)").fetchall()]  # see bench/
                if problems != ["ok"]:
                    raise DamagedCacheError(self.path, "; ".join(map(str, problems)))
        except StoreError:
            if db is not None:
                db.close()
            raise
        self._db = db

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """sqlite's "database disk image is malformed" / "file is not a database" -> DamagedCacheError;
        other failures to use the file (read-only, disk full, an I/O error) -> StoreError naming it."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            code = getattr(exc, "sqlite_errorname", "")
            if code in _DAMAGED or (not code and not isinstance(exc, sqlite3.OperationalError)):
                raise DamagedCacheError(self.path, str(exc)) from exc
            if code.startswith("SQLITE_BUSY") or code.startswith("SQLITE_LOCKED"):
                raise  # another writer held the lock past the timeout: not a problem with the file
            raise StoreError(f"cannot use the teacher reply cache {self.path}: {exc}",
                             hint=f"check that {self.folder} is writable and its disk has room") from exc

    @classmethod
    def for_store(cls, store_root: str | Path) -> RequestCache:
        return cls(Path(store_root) / CACHE_DIR)

    @classmethod
    def set_aside_if_damaged(cls, store_root: str | Path) -> Path | None:
        """Open the store's cache; if it is damaged, rename its files to `*.damaged-<UTC time>` (an empty
        cache is made on the next open) and return the new path of the main file. None when it was fine."""
        try:
            cls.for_store(store_root).close()
            return None
        except DamagedCacheError as exc:
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            moved = exc.path.with_name(f"{exc.path.name}.damaged-{stamp}")
            for suffix in ("-wal", "-shm", ""):  # the main file last: a crash leaves it findable
                part = exc.path.with_name(exc.path.name + suffix)
                if part.exists():
                    part.rename(part.with_name(f"{part.name}.damaged-{stamp}"))
            return moved

    def get(self, key: str) -> CachedReply | CachedRejection | None:
        """The cached reply, or the provider's refusal, of the request with this key."""
        with self._guard():
            row = self._db.execute("SELECT reply, attempts, batch FROM replies WHERE key = ?",
                                   (key,)).fetchone()
            if row is not None:
                return CachedReply(Reply.from_dict(json.loads(row[0])), int(row[1]), bool(row[2]))
            row = self._db.execute("SELECT status, message, attempts FROM rejections WHERE key = ?",
                                   (key,)).fetchone()
        return None if row is None else CachedRejection(row[0], str(row[1]), int(row[2]))

    def __contains__(self, key: str) -> bool:
        with self._guard():
            for table in ("replies", "rejections"):
                if self._db.execute(f"SELECT 1 FROM {table} WHERE key = ?", (key,)).fetchone() is not None:
                    return True
        return False

    def put(self, key: str, reply: Reply, *, attempts: int = 1, batch: bool = False) -> None:
        shallow = {name: getattr(reply, name) for name in _REPLY_FIELDS}  # asdict() deep-copies: slow
        blob = json.dumps(shallow, ensure_ascii=False, separators=(",", ":"))
        with self._guard():  # a reply wins over an earlier refusal of the same request (see `get`)
            self._db.execute(
                "INSERT OR REPLACE INTO replies (key, reply, attempts, batch, created) "
                "VALUES (?, ?, ?, ?, ?)", (key, blob, attempts, int(batch), time.time()))

    def put_rejection(self, key: str, status: int | None, message: str, *, attempts: int = 1) -> None:
        with self._guard():
            self._db.execute(
                "INSERT OR REPLACE INTO rejections (key, status, message, attempts, created) "
                "VALUES (?, ?, ?, ?, ?)", (key, status, message, attempts, time.time()))

    def forget_rejections(self, keys: Iterable[str]) -> None:
        with self._guard():
            self._db.executemany("DELETE FROM rejections WHERE key = ?", [(k,) for k in keys])

    def __len__(self) -> int:
        with self._guard():
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
