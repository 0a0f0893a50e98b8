"""Client-side rate limit: with `--rpm 600` no 60 s window holds more than 600 sends, and the rate reaches
at least 95% of the limit.

    python bench/engine_rpm.py                      # 1500 requests at --rpm 600: about 2.5 minutes
    python bench/engine_rpm.py --rpm 120 --requests 300

The engine runs in-process (as `ares-data score --rpm` runs it) against the fake server in another process,
through the official Anthropic SDK, at concurrency 16 and 50 ms latency; the moment of every HTTP attempt is
recorded by wrapping the teacher's `send`. Reported: the most sends in any 60 s window (every window that
starts at a send), the fewest in any full 60 s window, and the mean rate.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import tempfile
import time
from pathlib import Path

from engine_common import FAKE_KEYS, make_store, server_process


def windows(stamps: list[float], width: float = 60.0) -> tuple[int, int | None]:
    """(most sends in any window [t, t+width) starting at a send, fewest in such a window that fits)."""
    most, fewest = 0, None
    for i, t in enumerate(stamps):
        n = bisect.bisect_left(stamps, t + width) - i
        most = max(most, n)
        if t + width <= stamps[-1]:
            fewest = n if fewest is None else min(fewest, n)
    return most, fewest


async def run(base_url: str, store_root: Path, rpm: float, concurrency: int) -> list[float]:
    from ares_data.engine import run_task
    from ares_data.engine.inputs import TeacherInputs
    from ares_data.store import Store
    from ares_data.tasks import ScoreTask
    from ares_data.teachers import make_teacher

    teacher = make_teacher("anthropic:claude-3-haiku-20240307", base_url=base_url)
    stamps: list[float] = []
    send = teacher.send

    async def timed_send(request):  # noqa: ANN001, ANN202
        stamps.append(time.monotonic())
        return await send(request)

    teacher.send = timed_send
    inputs = TeacherInputs.resolve(Store(store_root), "rats", None, "scores")
    failed = 0
    async for row in run_task(teacher, ScoreTask(), inputs.items(), concurrency=concurrency, rpm=rpm):
        failed += row["status"] != "ok"
    await teacher.aclose()
    if failed:
        print(f"warning: {failed} failed rows")
    return stamps


def main() -> None:
    import os

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rpm", type=float, default=600)
    p.add_argument("--requests", type=int, default=1500)
    p.add_argument("--concurrency", type=int, default=16)
    a = p.parse_args()
    os.environ.update(FAKE_KEYS)
    with server_process(50.0) as srv, tempfile.TemporaryDirectory() as tmp:
        make_store(Path(tmp) / "store", a.requests)
        t0 = time.monotonic()
        stamps = asyncio.run(run(srv.anthropic_base_url, Path(tmp) / "store", a.rpm, a.concurrency))
        wall = time.monotonic() - t0
        at_server = srv.stats.model_requests
    most, fewest = windows(stamps)
    mean = 60.0 * (len(stamps) - 1) / (stamps[-1] - stamps[0])
    print(f"--rpm {a.rpm:g}, {len(stamps)} sends ({at_server} counted at the server) in {wall:.1f} s")
    print("| measure | value |\n|---|---|")
    print(f"| most sends in any 60 s window | {most} (limit {a.rpm:g}) |")
    share = 100 * (fewest or 0) / a.rpm
    print(f"| fewest sends in any full 60 s window | {fewest} ({share:.1f}% of the limit) |")
    print(f"| mean rate, first to last send | {mean:.1f}/min ({100 * mean / a.rpm:.1f}% of the limit) |")


if __name__ == "__main__":
    main()
