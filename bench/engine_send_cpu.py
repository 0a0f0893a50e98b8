"""Client CPU per request of a teacher's `send` alone (no engine, no store writes): ScoreTask requests sent
64 at a time through the official SDK to the fake server in another process.

    python bench/engine_send_cpu.py                        # anthropic, 3000 requests, 50 ms latency
    python bench/engine_send_cpu.py --provider openai

Prints requests/s and the client process's CPU time per request (user + system), the quantity that limits
`ares-data score` throughput at high concurrency.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from engine_common import FAKE_KEYS, make_store, server_process

from ares_data.engine.inputs import TeacherInputs
from ares_data.tasks import ScoreTask
from ares_data.teachers import make_teacher

TEACHERS = {"anthropic": "anthropic:claude-3-haiku-20240307", "openai": "openai:gpt-4o-mini"}


async def drive(teacher, requests: list, concurrency: int) -> tuple[float, float]:  # noqa: ANN001
    queue = iter(requests[:16])

    async def worker() -> None:
        for req in queue:
            await teacher.send(req)

    await asyncio.gather(*(worker() for _ in range(4)))  # warm the connection pool
    queue = iter(requests)
    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - t0, time.process_time() - c0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--provider", choices=sorted(TEACHERS), default="anthropic")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency-ms", type=float, default=50.0)
    a = p.parse_args()
    os.environ.update(FAKE_KEYS)
    with tempfile.TemporaryDirectory() as tmp:
        items = list(TeacherInputs.resolve(make_store(Path(tmp) / "s", a.requests), "rats", None,
                                           "scores").items())
    task = ScoreTask()
    requests = [task.build(*it) for it in items]
    with server_process(a.latency_ms, "--rpm-limit", "100000000") as srv:
        base = srv.anthropic_base_url if a.provider == "anthropic" else srv.openai_base_url
        teacher = make_teacher(TEACHERS[a.provider], base_url=base)

        async def go() -> tuple[float, float]:
            try:
                return await drive(teacher, requests, a.concurrency)
            finally:
                await teacher.aclose()

        wall, cpu = asyncio.run(go())
    n = len(requests)
    print(f"{a.provider}: {n} requests, concurrency {a.concurrency}, latency {a.latency_ms:g} ms: "
          f"{n / wall:.1f} req/s, client CPU {cpu / n * 1e6:.0f} us per request")


if __name__ == "__main__":
    main()
