"""kill -9 in the middle of `ares-data score`, then rerun: answered requests are never sent again (counted at
the fake server, a separate process) and the dataset equals an uninterrupted run's."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ares_data.store import Store
from ares_data.testing.teacher_server import ServerHandle
from tests.helpers import data
from tests.test_score_correct_cli import ANTHROPIC, make_rationales

KEY = {"ANTHROPIC_API_KEY": "sk-ant-api03-crashtestKEY0000"}
CONCURRENCY = 4


@pytest.fixture
def server() -> Iterator[ServerHandle]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ares_data.testing.teacher_server", "--port", "0", "--latency-ms", "100"],
        stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()  # "fake teacher server listening on http://127.0.0.1:PORT"
        assert "listening" in line, line
        yield ServerHandle(int(line.rsplit(":", 1)[1]))
    finally:
        proc.kill()
        proc.wait()


def cached_replies(store_dir: Path) -> int:
    path = store_dir / ".cache" / "teacher" / "replies.sqlite"
    if not path.exists():
        return 0
    try:
        with sqlite3.connect(path, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]
    except sqlite3.OperationalError:  # the table is not created yet
        return 0


def test_kill9_then_rerun_sends_nothing_answered_and_matches(tmp_path: Path, server: ServerHandle,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    make_rationales(killed, n_problems=20, k=4, unique=True)  # 80 rows, 62 distinct requests
    make_rationales(clean, n_problems=20, k=4, unique=True)
    args = ["score", "rats", "--teacher", ANTHROPIC, "--base-url", server.anthropic_base_url,
            "--concurrency", str(CONCURRENCY)]
    env = {**os.environ, **KEY, "ARES_STORE": str(killed)}
    proc = subprocess.Popen([sys.executable, "-m", "ares_data.cli", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while cached_replies(killed) < 15 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(0.3)  # let the server finish answering what was in flight
    answered_before = sum(server.stats.answered_by_hash.values())
    survived = cached_replies(killed)
    assert 15 <= survived < 62 and not Store(killed).versions("rats-scores")  # nothing half-published

    for k, v in KEY.items():
        monkeypatch.setenv(k, v)
    r = data([*args, "--json"], env={"ARES_STORE": str(killed)})
    assert r.exit_code == 0, r.output
    stats = server.stats
    lost_in_flight = answered_before - survived
    assert 0 <= lost_in_flight <= CONCURRENCY
    assert stats.repeated_answers() == lost_in_flight  # no reply that reached the cache was asked again
    assert r.json()["from_cache"] == survived

    server.reset()
    r2 = data([*args, "--json"], env={"ARES_STORE": str(clean)})
    assert r2.exit_code == 0, r2.output
    resumed, uninterrupted = Store(killed).resolve("rats-scores"), Store(clean).resolve("rats-scores")
    assert resumed.load().to_list() == uninterrupted.load().to_list()
    assert resumed.fingerprint == uninterrupted.fingerprint
