"""Benchmark: `ares-data export prm` and `export dpo` over 1,000,000 score rows: time and peak RSS.

Uses the synthetic lineage of bench/stats.py (problems -> rationales -> scores, 1M score rows over 2,000
problems, 2-8 sentences each, ~5% failures; built once and reused), then runs the real command in a fresh
process per export and reports wall time (start-up included) and the process's peak resident memory.
Each run publishes to a fresh output name (removed afterwards), so nothing is reused. Peak RSS
includes the pages of the memory-mapped source file that were read (330 MiB for the 1M-row scores).

    python bench/export.py [--rows 1000000] [--store /tmp/ares-bench-stats] [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stats import build  # noqa: E402  (bench/stats.py: the shared 1M-row generator)

from ares_data.store import Store  # noqa: E402

EXPORTS = {"prm": ["export", "prm", "scores", "--threshold", "0.5"],
           "dpo": ["export", "dpo", "scores", "--no-images"]}


def run_cmd(args: list[str], store: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MiB) of one `ares-data ARGS` run in a fresh process."""
    env = {**os.environ, "ARES_STORE": str(store)}
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ares_data.cli", *args], env=env,
                            stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"ares-data {' '.join(args)} failed with exit code {proc.returncode}")
    return seconds, usage.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--store", type=Path, default=Path("/tmp/ares-bench-stats"))
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--only", choices=sorted(EXPORTS), action="append")
    a = ap.parse_args()
    store = Store(a.store / str(a.rows))
    build(store, a.rows)
    for name in a.only or sorted(EXPORTS, reverse=True):
        runs = []
        for _ in range(a.repeat):
            out = f"bench-{name}-{uuid.uuid4().hex[:6]}"
            runs.append(run_cmd([*EXPORTS[name], "-o", out], store.root))
            shutil.rmtree(store.root / out)  # a fresh name each run: nothing is reused
        best = min(r[0] for r in runs)
        peak = max(r[1] for r in runs)
        print(f"ares-data {' '.join(EXPORTS[name])} -o NAME : {best:6.1f} s (best of {a.repeat}), "
              f"peak RSS {peak:,.0f} MiB")


if __name__ == "__main__":
    main()
