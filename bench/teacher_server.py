"""Fake teacher server capacity: handler cost per request, and the official SDK sending straight to it.

    python bench/teacher_server.py            # both measurements, printed as one JSON line

1. `FakeTeacher.handle` called in-process on 5,000 distinct Anthropic score requests (no sockets): the
   server's own CPU cost per request (reference-teacher answer included).
2. `AnthropicTeacher.send` with 64 requests in flight against the server in a child process with 200 ms
   latency, 2,000 requests: the rate the SDK + server reach without the engine (ideal 320/s).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("ANTHROPIC_API_KEY", "sk-ant-bench-not-a-real-key")

from ares_data.tasks import ScoreTask  # noqa: E402
from ares_data.teachers.anthropic import AnthropicTeacher  # noqa: E402
from ares_data.testing.http import HttpRequest  # noqa: E402
from ares_data.testing.teacher_server import FakeTeacher, Options, serve  # noqa: E402

PROBLEM = {
    "question": "Which is a mammal?",
    "choices": ["frog", "dog"],
    "answer_index": 1,
    "answer": "dog",
    "context": "",
    "reference_rationale": "A dog is a mammal. Mammals have fur and feed milk.",
}


def requests(n: int) -> list:
    task = ScoreTask()
    return [
        task.build(
            PROBLEM,
            {
                "text": "",
                "sentences": [
                    {"text": f"We look at option {i}."},
                    {"text": f"Step {i} checks the count."},
                    {"text": "So the answer is dog."},
                ],
            },
        )
        for i in range(n)
    ]


async def handler_cost(n: int = 5000) -> float:
    teacher = AnthropicTeacher("m")
    bodies = [json.dumps(teacher.params(r)).encode() for r in requests(n)]
    fake = FakeTeacher(Options())
    t0 = time.perf_counter()
    for b in bodies:
        await fake.handle(HttpRequest("POST", "/v1/messages", {}, {"x-api-key": "k"}, b))
    return (time.perf_counter() - t0) / n * 1e6


async def sdk_rate(base_url: str, n: int = 2000, concurrency: int = 64) -> float:
    teacher = AnthropicTeacher("m", base_url=base_url, timeout=30)
    sem = asyncio.Semaphore(concurrency)

    async def one(r):
        async with sem:
            return await teacher.send(r)

    reqs = requests(n)
    t0 = time.perf_counter()
    await asyncio.gather(*(one(r) for r in reqs))
    rate = n / (time.perf_counter() - t0)
    await teacher.aclose()
    return rate


def main() -> None:
    us = asyncio.run(handler_cost())
    with serve(latency_ms=200, process=True) as server:
        rate = asyncio.run(sdk_rate(server.anthropic_base_url))
    print(
        json.dumps({"handler_us_per_request": round(us, 1), "sdk_direct_req_per_s_c64_200ms": round(rate, 1)})
    )


if __name__ == "__main__":
    main()
