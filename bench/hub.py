"""Benchmark: push and pull of a large scores dataset through the real huggingface_hub client and the
fake Hub on loopback (no network): Parquet + card + content fingerprint, no-op re-push, pull + verification.

    python bench/hub.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import huggingface_hub.constants as constants  # noqa: E402
from stats import build  # noqa: E402  (bench/stats.py: the synthetic 1M-row lineage builder)

from ares_data.hub import push  # noqa: E402
from ares_data.hub_pull import pull  # noqa: E402
from ares_data.store import Store  # noqa: E402
from ares_data.testing.fake_hub import FakeHub  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=200_000)
    a = ap.parse_args()
    constants.HF_HUB_DISABLE_XET = True  # the fake Hub speaks LFS only
    constants.HF_HUB_OFFLINE = False
    with tempfile.TemporaryDirectory() as tmp, FakeHub(token="hf_bench") as hub:
        os.environ.update(HF_ENDPOINT=hub.url, HF_TOKEN="hf_bench")
        store = Store(Path(tmp) / "store")
        build(store, a.rows)
        t = time.perf_counter()
        res = push(store, "scores", "bench/scores", with_parents=True)
        t_push = time.perf_counter() - t
        size = sum(len(b) for b in hub.repos["bench/scores"].files("v1").values())
        t = time.perf_counter()
        again = push(store, "scores", "bench/scores", with_parents=True)
        t_again = time.perf_counter() - t
        t = time.perf_counter()
        versions = pull(Store(Path(tmp) / "mirror"), "bench/scores@v1")
        t_pull = time.perf_counter() - t
    print(f"rows: {a.rows:,} scores (+2,000 problems, 2,000 rationales); repo {size / 1e6:.1f} MB, "
          f"{len(res.uploaded)} files")
    print(f"push --with-parents : {t_push:.2f}s")
    print(f"push again (no-op)  : {t_again:.2f}s, {len(again.uploaded)} files uploaded")
    print(f"pull + verify       : {t_pull:.2f}s, {[v.ref for v in versions]}")


if __name__ == "__main__":
    main()
