"""Shared helpers for the teacher-engine benchmarks: a fake server process and a store of N rationales."""

from __future__ import annotations

import contextlib
import os
import resource
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ares_data.store import Store  # noqa: E402
from ares_data.testing.lineage import problem_rows  # noqa: E402
from ares_data.testing.teacher_server import ServerHandle  # noqa: E402

FAKE_KEYS = {"ANTHROPIC_API_KEY": "sk-ant-bench-not-a-real-key", "OPENAI_API_KEY": "sk-bench-not-a-real-key"}


@contextlib.contextmanager
def server_process(latency_ms: float = 0.0, *extra: str) -> Iterator[ServerHandle]:
    """The fake teacher server in its own process (so it does not share the client's GIL)."""
    proc = subprocess.Popen([sys.executable, "-m", "ares_data.testing.teacher_server", "--port", "0",
                             "--latency-ms", str(latency_ms), *extra], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"fake server did not start: {line!r}")
        yield ServerHandle(int(line.rsplit(":", 1)[1]))
    finally:
        proc.kill()
        proc.wait()


def rationale_rows(n: int, n_problems: int) -> Iterator[dict[str, Any]]:
    """n distinct rationales (three sentences each) spread over n_problems problems."""
    for j in range(n):
        sents = [f"We look at option {j % 7}.", f"Step {j} checks the count.", "So the answer is one."]
        text, spans, pos = " ".join(sents), [], 0
        for s in sents:
            spans.append({"text": s, "start": pos, "end": pos + len(s)})
            pos += len(s) + 1
        yield {"rationale_id": f"r{j}", "problem_id": f"p{j % n_problems}", "sample_index": 0, "round": 0,
               "text": text, "sentences": spans, "dropped_sentences": [], "generator": "bench",
               "generator_fingerprint": "", "generation_params": "{}", "prompt": "", "token_ids": []}


def make_store(root: Path, n: int, n_problems: int = 200) -> Store:
    store = Store(root)
    if not store.versions("rats"):
        problems = store.publish("sqa", "problems", problem_rows(n_problems, images_every=4),
                                 command=["bench"])
        store.publish("rats", "rationales", rationale_rows(n, n_problems), parents=[problems],
                      command=["bench"])
    return store


def env(store: Path) -> dict[str, str]:
    return {**os.environ, **FAKE_KEYS, "ARES_STORE": str(store)}


def children_max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
