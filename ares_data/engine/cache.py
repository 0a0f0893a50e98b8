"""Persistent request cache: `Request.cache_key(provider, model)` -> the reply, written as each reply arrives.

It lives outside the versioned datasets, in `<store>/.cache/teacher/replies.sqlite` (SQLite in WAL mode,
one committed transaction per reply). A process killed at any moment, `kill -9` included, loses at most the
requests that were in flight: every committed reply survives, so a rerun re-sends nothing already answered.
Only replies are stored (never request headers), so no API key can reach the cache.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from ..teachers.base import Reply

CACHE_DIR = Path(".cache") / "teacher"
_REPLY_FIELDS = tuple(f.name for f in dataclasses.fields(Reply))
CACHE_FILE = "replies.sqlite"


@dataclass
class CachedReply:
    reply: Reply
    attempts: int  # HTTP attempts it took the first time
    batch: bool  # answered through a batch API (billed at the batch price)


class RequestCache:
    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / CACHE_FILE
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable against process crashes
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL, "
            "attempts INTEGER NOT NULL, batch INTEGER NOT NULL, created REAL NOT NULL)"
        )

    @classmethod
    def for_store(cls, store_root: str | Path) -> RequestCache:
        return cls(Path(store_root) / CACHE_DIR)

    def get(self, key: str) -> CachedReply | None:
        row = self._db.execute("SELECT reply, attempts, batch FROM replies WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return CachedReply(Reply.from_dict(json.loads(row[0])), int(row[1]), bool(row[2]))

    def __contains__(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM replies WHERE key = ?", (key,)).fetchone() is not None

    def put(self, key: str, reply: Reply, *, attempts: int = 1, batch: bool = False) -> None:
        shallow = {name: getattr(reply, name) for name in _REPLY_FIELDS}  # asdict() deep-copies: slow
        blob = json.dumps(shallow, ensure_ascii=False, separators=(",", ":"))
        self._db.execute(
            "INSERT OR REPLACE INTO replies (key, reply, attempts, batch, created) VALUES (?, ?, ?, ?, ?)",
            (key, blob, attempts, int(batch), time.time()),
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
