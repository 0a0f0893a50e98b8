"""Memory and run time of `ares-data score` over 100,000 rationales against a zero-latency fake server.

    python bench/engine_memory.py                       # 100,000 rationales (several minutes)
    python bench/engine_memory.py --rationales 20000    # to see that peak memory does not grow with rows

Every rationale is distinct, so every row is one HTTP request through the official Anthropic SDK (fake
server in another process, 1,000 problems, every fourth with an image). The CLI runs as a child process;
its resident memory is sampled every second and its peak (ru_maxrss) read when it exits.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine_common import children_max_rss_mb, env, make_store, server_process


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rationales", type=int, default=100_000)
    p.add_argument("--concurrency", type=int, default=64)
    a = p.parse_args()
    # the fake server advertises a requests/min limit in its rate-limit headers (default 4000) and the engine
    # obeys them (pausing when "remaining" hits 0), so raise it: this measures the engine, not a limit
    with server_process(0.0, "--rpm-limit", "100000000") as srv, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        t0 = time.monotonic()
        make_store(root, a.rationales, n_problems=1000)
        built = time.monotonic() - t0
        cmd = [sys.executable, "-m", "ares_data.cli", "score", "rats", "--teacher",
               "anthropic:claude-3-haiku-20240307", "--base-url", srv.anthropic_base_url,
               "--concurrency", str(a.concurrency), "--json"]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env(root), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True)
        samples: list[tuple[float, float]] = []
        while proc.poll() is None:
            r = rss_mb(proc.pid)
            if r is not None:
                samples.append((time.monotonic() - t0, r))
            time.sleep(1.0)
        wall = time.monotonic() - t0
        out = json.loads(proc.stdout.read())
        peak = children_max_rss_mb()
        size = sum(f.stat().st_size for f in (root / "rats-scores").rglob("*") if f.is_file()) / 2**20
    quarter = [r for t, r in samples if t >= wall * 0.25][:1]
    print(f"{a.rationales} rationales, concurrency {a.concurrency}, zero-latency fake server "
          f"(store built in {built:.1f} s)")
    print("| measure | value |\n|---|---|")
    print(f"| rows ok / failed | {out['ok']} / {out['failed']} |")
    print(f"| run time (process start to exit) | {wall:.1f} s |")
    print(f"| engine time, requests/s | {out['elapsed_s']:.1f} s, {out['requests_per_s']:.1f}/s |")
    print(f"| peak RSS of the score process | {peak:.0f} MB |")
    if quarter:
        print(f"| RSS at 25% of the run / at the end | {quarter[0]:.0f} MB / {samples[-1][1]:.0f} MB |")
    print(f"| published dataset on disk | {size:.1f} MB |")


if __name__ == "__main__":
    main()
