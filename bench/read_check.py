"""Benchmark: what the integrity checks cost on 1,000,000 score rows (CPU time, so shared cores matter less).

Uses the lineage of bench/stats.py (built once into the store folder and reused). Measures, in one
process, the median CPU time of N runs of:

- `Store.resolve` with the always-on check (manifest fields + file sizes: three `stat` calls) vs without;
- `stats.read_table` (memory-mapped) with its row-count + schema check vs the bare memory-mapped read;
- `Version.load()` (`datasets`) with the check vs a bare `load_from_disk`;
- the fingerprint re-hash (what `verify`, `push` and a new child's writer pay, once per parent).

    python bench/read_check.py [--rows 1000000] [--store /tmp/ares-bench-stats] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import build  # noqa: E402  (bench/stats.py: the shared 1M-row generator)

from ares_data.integrity import DATA_FILE  # noqa: E402
from ares_data.stats import read_table  # noqa: E402
from ares_data.store import Store  # noqa: E402


def cpu(fn: Callable[[], object], repeat: int) -> float:
    """Median CPU seconds of `fn` (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.process_time()
        fn()
        times.append(time.process_time() - t)
    return statistics.median(times)


def bare_read(path: Path) -> pa.Table:
    with pa.memory_map(str(path / DATA_FILE)) as source:
        return pa.ipc.open_stream(source).read_all()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--store", default="/tmp/ares-bench-stats")
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    store = Store(args.store)
    build(store, args.rows)
    v = store.resolve("scores")
    from datasets import load_from_disk

    size = (v.path / DATA_FILE).stat().st_size / 2**20
    rows = [
        ("resolve", lambda: store.resolve("scores", check=False), lambda: store.resolve("scores")),
        ("read_table (mmap)", lambda: bare_read(v.path), lambda: read_table(v)),
        ("Version.load (datasets)", lambda: load_from_disk(str(v.path)), v.load),
    ]
    print(f"scores: {v.manifest['rows']:,} rows, {size:.0f} MiB; median CPU of {args.repeat} runs")
    print("| read | without the check | with the check |")
    print("|---|---|---|")
    for name, bare, checked in rows:
        without, with_check = cpu(bare, args.repeat), cpu(checked, args.repeat)
        print(f"| {name} | {without * 1e3:.2f} ms | {with_check * 1e3:.2f} ms |")
    print(f"| fingerprint re-hash ({size:.0f} MiB) | - | {cpu(v.verify_fingerprint, 3) * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
