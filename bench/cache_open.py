"""What checking the reply cache on open costs: `RequestCache(folder)` runs `PRAGMA quick_check` so a damaged
`replies.sqlite` is reported before anything is sent.

    python bench/cache_open.py                  # 200,000 replies of ~600 characters (~180 MB)
    python bench/cache_open.py --replies 20000

Builds a cache in a temporary folder, then times (CPU and wall, best of --repeat) opening it the way every
teacher command does, against the same open without the check. The file is in the OS page cache after
being written, so a first open after a reboot reads it from disk on top of this.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ares_data.engine.cache import CACHE_FILE, RequestCache  # noqa: E402
from ares_data.teachers.base import Reply  # noqa: E402


def fill(folder: Path, n: int) -> None:
    text = json.dumps({"scores": [{"sentence": i, "score": 0.5} for i in range(1, 25)]})[:600]
    with RequestCache(folder) as cache:
        cache._db.execute("BEGIN")
        for i in range(n):
            cache.put(f"{i:064x}", Reply(text, None, 900, 120, "tool_use", {"id": f"msg_{i}"}))
        cache._db.execute("COMMIT")


def plain_open(folder: Path) -> None:
    """The open before the check: connect, WAL, create the tables."""
    db = sqlite3.connect(folder / CACHE_FILE, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, reply TEXT NOT NULL, "
               "attempts INTEGER NOT NULL, batch INTEGER NOT NULL, created REAL NOT NULL)")
    db.close()


def best(fn: object, repeat: int) -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(repeat):
        c, w = time.process_time(), time.perf_counter()
        fn()  # type: ignore[operator]
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    return min(cpu), min(wall)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--replies", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="ares-cache-bench-") as tmp:
        folder = Path(tmp)
        fill(folder, a.replies)
        checked = best(lambda: RequestCache(folder).close(), a.repeat)
        plain = best(lambda: plain_open(folder), a.repeat)
        out = {"replies": a.replies, "file_mb": round((folder / CACHE_FILE).stat().st_size / 2**20, 1),
               "open_checked_cpu_s": round(checked[0], 4), "open_checked_wall_s": round(checked[1], 4),
               "open_plain_cpu_s": round(plain[0], 4), "open_plain_wall_s": round(plain[1], 4),
               "check_us_per_reply": round((checked[0] - plain[0]) / a.replies * 1e6, 3)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
