"""Benchmark: `ares-data stats` over 1,000,000 score rows (target: under 5 s on the project machine).

Generates a synthetic lineage once (problems -> rationales -> scores with 1M rows, 2-8 sentences each,
~5% failures) in a store folder that is reused on later runs, then times the real command in a fresh
process, end to end (Python start-up and imports included), with and without `--by subject --plot`.

    python bench/stats.py [--rows 1000000] [--store /tmp/ares-bench-stats] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ares_data.schema import SCORES  # noqa: E402
from ares_data.store import Store  # noqa: E402
from ares_data.testing.lineage import problem_rows, rationale_rows  # noqa: E402


def score_table(n: int, n_problems: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(2, 9, n)
    failed = rng.random(n) < 0.05
    lengths[failed] = 0
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    total = int(offsets[-1])
    scores = (np.round(rng.beta(2, 1.5, total) * 10) / 10).astype(np.float32)
    sentence_pool = pa.array([f"Sentence {i} about the problem." for i in range(64)])
    sentences = sentence_pool.take(pa.array(rng.integers(0, 64, total)))
    problem = rng.integers(0, n_problems, n)
    cols = {
        "rationale_id": pa.array([f"r{i:08d}" for i in range(n)]),
        "problem_id": pa.array([f"p{i}" for i in problem]),
        "sentences": pa.ListArray.from_arrays(pa.array(offsets), sentences),
        "scores": pa.ListArray.from_arrays(pa.array(offsets), pa.array(scores)),
        "status": pa.array(np.where(failed, "failed", "ok")),
        "error": pa.array(np.where(failed, "score count mismatch", "")),
        "raw_response": pa.array([""] * n),
        "teacher": pa.array(["reference:offline-v1"] * n),
        "prompt_sha": pa.array(["0" * 64] * n),
        "input_tokens": pa.array(rng.integers(200, 900, n)),
        "output_tokens": pa.array(rng.integers(20, 120, n)),
        "cost_usd": pa.array(rng.random(n) * 1e-4),
        "attempts": pa.array(np.ones(n, dtype=np.int32)),
        "cached": pa.array(np.zeros(n, dtype=bool)),
    }
    return pa.table(cols).cast(SCORES.arrow_schema)


def build(store: Store, rows: int) -> None:
    if "scores" in store.names():
        return
    n_problems = 2000
    problems = store.publish("sqa", "problems", problem_rows(n_problems, images_every=10**9))
    rats = store.publish("rats", "rationales", rationale_rows(n_problems, 1), parents=[problems])
    t = time.perf_counter()
    with store.writer("scores", "scores", parents=[rats]) as w:
        table = score_table(rows, n_problems)
        w.write_table(table)
    print(f"generated {rows:,} score rows in {time.perf_counter() - t:.1f}s -> {w.result.path}")


def time_cmd(args: list[str], store: Path, repeat: int) -> float:
    env = {**os.environ, "ARES_STORE": str(store)}
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "ares_data.cli", *args], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--store", type=Path, default=Path("/tmp/ares-bench-stats"))
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    store = Store(a.store / str(a.rows))
    build(store, a.rows)
    plain = time_cmd(["stats", "scores", "--json"], store.root, a.repeat)
    full = time_cmd(["stats", "scores", "--by", "subject", "--plot", str(a.store / "scores.png"), "--json"],
                    store.root, a.repeat)
    print(f"ares-data stats scores --json                        : {plain:.2f}s (best of {a.repeat})")
    print(f"ares-data stats scores --by subject --plot P --json  : {full:.2f}s (best of {a.repeat})")
    print(f"target < 5 s: {'met' if full < 5 else 'NOT met'}")


if __name__ == "__main__":
    main()
