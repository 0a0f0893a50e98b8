"""Benchmark: peak memory of `ares-data pull` on a hostile repo whose small Parquet file decodes to ~1 GiB.

A fake Hub (ares_data.testing.fake_hub) serves a pushed lineage whose `scores` shard is replaced by rows
that each carry the same 1 MiB `raw_response` (stored once in the Parquet dictionary page: the shard is
a few KB). The manifest declares the right row count, so only reading can tell. Two cases:

- `bad-first-row`: row 1 has a score of 99 (refused by the row checks);
- `stale-fingerprint`: valid rows, but the content fingerprint does not match (refused after staging).

Each case runs the real command in a fresh process and reports wall time, the process's peak RSS (VmHWM
of its own address space: `ru_maxrss` would count the parent's pages before exec; it includes pages of
memory-mapped files that were read) and its peak anonymous RSS (sampled every 5 ms: heap and Arrow
buffers, what cannot be paged back to a file).
`--code DIR` runs another checkout of the package (e.g. `git archive HEAD~3 | tar -x -C /tmp/old`).

    python bench/pull_memory.py [--rows 1000] [--code /tmp/old]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from ares_data.hub import content_fingerprint, push
from ares_data.store import Store
from ares_data.testing.fake_hub import FakeHub
from ares_data.testing.lineage import build_lineage, rationale_rows, score_rows

TOKEN = "hf_bench_token_0000000000"
REPO = "bench/bomb"
SHARD = "data/scores/train-00000-of-00001.parquet"


def bomb(hub: FakeHub, rows: int, case: str) -> int:
    """Replace the scores config at v1; returns the shard's size in bytes."""
    head = hub.repos[REPO].commits[hub.repos[REPO].tags["v1"]]
    template = score_rows(rationale_rows(rows // 3 + 1, 3), fail_every=0)[:rows]
    big = "x" * (1 << 20)
    for r in template:
        r["raw_response"] = big
    if case == "bad-first-row":
        template[0]["scores"] = [99.0] * len(template[0]["scores"])
    schema = pq.read_schema(io.BytesIO(head.files[SHARD].data))
    table = pa.Table.from_pylist(template, schema=schema)
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd")
    head.files[SHARD].data = buf.getvalue()
    manifest = json.loads(head.files["ares/scores/manifest.json"].data)
    manifest["rows"] = rows
    good = case == "bad-first-row"  # rows refused on their own; otherwise the fingerprint refuses them
    manifest["content_fingerprint"] = content_fingerprint("scores", table) if good else "0" * 64
    head.files["ares/scores/manifest.json"].data = json.dumps(manifest).encode()
    del table, template
    return len(buf.getvalue())


_CHILD = """
import atexit, sys, threading, time
out, anon = sys.argv[1], [0]
def status(key):
    return int([l for l in open("/proc/self/status") if l.startswith(key)][0].split()[1])
def sample():
    while True:
        anon[0] = max(anon[0], status("RssAnon:"))
        time.sleep(0.005)
threading.Thread(target=sample, daemon=True).start()
atexit.register(lambda: open(out, "w").write(f"{status('VmHWM:')} {max(anon[0], status('RssAnon:'))}"))
sys.argv = ["ares-data", "pull", sys.argv[2]]
from ares_data.cli import main
main()
"""


def run_pull(hub: FakeHub, store: Path, code: str | None) -> tuple[float, float, float, int, str]:
    """(seconds, peak RSS MiB, peak anonymous RSS MiB, exit code, first error line) of `ares-data pull`
    in a fresh process (run outside the checkout, so `--code` decides which package is imported)."""
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HUB_DISABLE_XET": "1",
           "HF_HUB_OFFLINE": "0", "ARES_STORE": str(store)}
    if code:
        env["PYTHONPATH"] = code
    peak = store.parent / f"peak-{store.name}"
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, str(peak), f"{REPO}@v1"], env=env, cwd=store.parent,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t
    err = proc.stderr.strip()
    hwm, anon = (int(x) / 1024 for x in peak.read_text().split())
    return seconds, hwm, anon, proc.returncode, err.splitlines()[0][:150] if err else ""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--code", default=None, help="PYTHONPATH of another checkout to measure")
    args = ap.parse_args()
    import huggingface_hub.constants as constants

    constants.HF_HUB_DISABLE_XET, constants.HF_HUB_OFFLINE = True, False
    with tempfile.TemporaryDirectory() as tmp, FakeHub(token=TOKEN) as hub:
        os.environ.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN)
        src = Store(Path(tmp) / "src")
        build_lineage(src)
        push(src, "scores", REPO, with_parents=True)
        for case in ("bad-first-row", "stale-fingerprint"):
            size = bomb(hub, args.rows, case)
            seconds, rss, anon, code, err = run_pull(hub, Path(tmp) / f"dst-{case}", args.code)
            print(f"{case}: shard {size / 1024:.0f} KiB, {args.rows} rows x 1 MiB decoded; exit {code}, "
                  f"{seconds:.1f} s, peak RSS {rss:.0f} MiB (anonymous {anon:.0f} MiB); {err}")


if __name__ == "__main__":
    main()
