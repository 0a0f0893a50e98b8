"""Teacher-engine throughput: `ares-data score` against the fake server with 200 ms latency.

    python bench/engine_throughput.py                       # 3000 requests at concurrency 64 + baseline
    python bench/engine_throughput.py --provider openai --requests 2000
    python bench/engine_throughput.py --engine-only --requests 20000   # the engine's own CPU per row

Every rationale is distinct (no cache or de-duplication help) and each run uses a fresh store, so every
request goes over HTTP through the official SDK to a fake server in another process. The ideal rate is
concurrency / latency (64 / 0.2 s = 320 requests/s). The baseline is one request at a time (what the
original ARES scripts did): ideal 5 requests/s.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

from engine_common import env, make_store, server_process

TEACHERS = {"anthropic": "anthropic:claude-3-haiku-20240307", "openai": "openai:gpt-4o-mini"}


def score_run(srv, provider: str, n: int, concurrency: int) -> dict:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        make_store(root, n)
        base = srv.anthropic_base_url if provider == "anthropic" else srv.openai_base_url
        cmd = [sys.executable, "-m", "ares_data.cli", "score", "rats", "--teacher", TEACHERS[provider],
               "--base-url", base, "--concurrency", str(concurrency), "--json"]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        out = subprocess.run(cmd, env=env(root), capture_output=True, text=True, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = json.loads(out.stdout)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        result["client_cpu_ms_per_request"] = round(cpu / max(result["sent"], 1) * 1000, 2)
        return result


def engine_only(n: int, concurrency: int) -> None:
    """CPU per row of `run_task` alone: ScoreTask requests, a teacher that answers at once, no HTTP."""
    import asyncio
    import time

    from ares_data.engine import run_task
    from ares_data.engine.inputs import TeacherInputs
    from ares_data.tasks import ScoreTask
    from ares_data.teachers.base import Reply, Teacher

    class Instant(Teacher):
        provider = "instant"

        async def send(self, request):  # noqa: ANN001, ANN202
            data = {"scores": [{"sentence": i, "score": 0.5} for i in (1, 2, 3)]}
            return Reply(json.dumps(data), data, 100, 10, "end_turn")

    with tempfile.TemporaryDirectory() as tmp:
        items = list(TeacherInputs.resolve(make_store(Path(tmp) / "s", n), "rats", None, "scores").items())
    task = ScoreTask()
    t0 = time.process_time()
    built = [task.build(*it).cache_key("a", "b") for it in items]
    build_us = (time.process_time() - t0) / len(built) * 1e6

    async def go() -> float:
        t0 = time.process_time()
        rows = [r async for r in run_task(Instant("m"), task, items, concurrency=concurrency)]
        assert all(r["status"] == "ok" for r in rows)
        return (time.process_time() - t0) / len(rows) * 1e6

    total = asyncio.run(go())
    print(f"run_task over {n} rows, no HTTP: {total:.0f} us CPU per row, of which building the request and "
          f"its hash {build_us:.0f} us")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--provider", choices=sorted(TEACHERS), default="anthropic")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency-ms", type=float, default=200.0)
    p.add_argument("--baseline-requests", type=int, default=30)
    p.add_argument("--engine-only", action="store_true", help="CPU per row of run_task alone, no HTTP")
    a = p.parse_args()
    if a.engine_only:
        engine_only(a.requests, a.concurrency)
        return
    with server_process(a.latency_ms, "--rpm-limit", "100000000") as srv:  # advertise no practical limit
        fast = score_run(srv, a.provider, a.requests, a.concurrency)
        base = score_run(srv, a.provider, a.baseline_requests, 1)
    ideal = a.concurrency / (a.latency_ms / 1000.0)
    rows = [
        ("concurrency", a.concurrency, 1),
        ("requests sent", fast["sent"], base["sent"]),
        ("elapsed (s)", fast["elapsed_s"], base["elapsed_s"]),
        ("requests/s", fast["requests_per_s"], base["requests_per_s"]),
        ("ideal requests/s", ideal, 1000.0 / a.latency_ms),
        ("client CPU per request, whole process (ms)", fast["client_cpu_ms_per_request"],
         base["client_cpu_ms_per_request"]),
        ("% of ideal", round(100 * fast["requests_per_s"] / ideal, 1),
         round(100 * base["requests_per_s"] * a.latency_ms / 1000.0, 1)),
    ]
    print(f"provider {a.provider}, latency {a.latency_ms:g} ms, "
          f"failed rows {fast['failed']}+{base['failed']}")
    print("| | engine | one at a time |\n|---|---|---|")
    for name, x, y in rows:
        print(f"| {name} | {x} | {y} |")
    print(f"speed-up over one-at-a-time: {fast['requests_per_s'] / base['requests_per_s']:.1f}x")


if __name__ == "__main__":
    main()
