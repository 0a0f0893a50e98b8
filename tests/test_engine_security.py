"""Issue 11, engine side: a damaged reply cache, keys echoed by a server, the endpoint in the cache key and
refusals that a resumed run must not pay for again. Through the CLI and the official SDKs against the fake
teacher server, except where the engine's own bookkeeping is the point."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from ares_data.engine import RequestCache
from ares_data.engine.cache import CACHE_DIR, CACHE_FILE, SET_ASIDE_FLAG, DamagedCacheError
from ares_data.engine.engine import REJECT_STREAK
from ares_data.teachers.anthropic import AnthropicTeacher
from ares_data.teachers.base import FatalTeacherError, Reply, RequestRejected
from ares_data.teachers.openai import OpenAITeacher
from ares_data.testing.teacher_server import serve
from tests.helpers import data
from tests.test_engine import FakeTask, FakeTeacher, items, run
from tests.test_score_correct_cli import (  # noqa: F401 - server and srv are the fixtures used here
    ANTHROPIC,
    KEYS,
    OPENAI,
    make_rationales,
    rows,
    score,
    server,
    srv,
)


@pytest.fixture
def fake(srv):  # noqa: ANN001, ANN201, F811 - the shared fake teacher server, reset, keys set
    return srv


# ---- 6: a damaged replies.sqlite -------------------------------------------------------------------------
def _damage(path: Path, how: str) -> None:
    size = path.stat().st_size
    if how == "truncated":
        os.truncate(path, size // 2)
    else:
        path.write_bytes(bytes((i * 151 + 7) % 256 for i in range(size)))


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_reply_cache_is_named_and_can_be_set_aside(store_dir: Path, fake, how: str) -> None:  # noqa: ANN001
    s = make_rationales(store_dir)
    assert score("--json", srv=fake).exit_code == 0
    cache = store_dir / CACHE_DIR / CACHE_FILE
    assert not cache.with_name(CACHE_FILE + "-wal").exists()  # checkpointed when the run closed it
    _damage(cache, how)
    r = score("-o", "again", srv=fake)
    assert r.exit_code == 1 and "unexpected" not in r.output, r.output
    assert f"Error: the teacher reply cache {cache} is damaged" in r.stderr
    assert "--set-aside-damaged-cache" in r.stderr and f"mv {cache.parent} " in r.stderr
    assert "again" not in s.names()
    # the flag: the damaged file is kept aside under a new name and the run goes on with an empty cache
    sent = fake.stats.model_requests
    r = score("-o", "again", "--set-aside-damaged-cache", "--json", srv=fake)
    assert r.exit_code == 0, r.output
    aside = sorted(cache.parent.glob(CACHE_FILE + ".damaged-*"))
    assert len(aside) == 1 and f"moved to {aside[0]}" in r.stderr.replace("\n", "")
    assert r.json()["from_cache"] == 0 and fake.stats.model_requests > sent
    assert rows(s, "again") == rows(s, "rats-scores")
    # the flag on a healthy cache moves nothing
    assert score("-o", "third", "--set-aside-damaged-cache", srv=fake).exit_code == 0
    assert len(list(cache.parent.glob(CACHE_FILE + ".damaged-*"))) == 1


def test_following_the_hint_by_hand_also_recovers(store_dir: Path, fake) -> None:  # noqa: ANN001
    make_rationales(store_dir)
    assert score(srv=fake).exit_code == 0
    cache = store_dir / CACHE_DIR / CACHE_FILE
    _damage(cache, "garbage")
    r = score("-o", "again", srv=fake)
    hint = r.stderr.split("mv ", 1)[1].split()
    Path(hint[0]).rename(hint[1])  # what the hint says to do
    r = score("-o", "again", "--json", srv=fake)
    assert r.exit_code == 0, r.output
    assert (Path(hint[1]) / CACHE_FILE).is_file()


def test_set_aside_flag_is_in_the_help_of_every_teacher_command() -> None:
    for cmd in (["score"], ["correct"], ["judge"]):
        r = data([*cmd, "--help"], env={"COLUMNS": "200"})
        assert r.exit_code == 0 and "--set-aside-damaged-cache" in r.stdout


def test_damage_found_after_opening_is_a_named_error_too(tmp_path: Path) -> None:
    with RequestCache(tmp_path) as cache:
        for i in range(300):
            cache.put(f"k{i}", Reply("x" * 500, None, 1, 1, "end_turn"))
    with RequestCache(tmp_path) as cache:  # healthy when opened; then the file is overwritten under it
        cache._db.execute("PRAGMA cache_size=1")  # so pages are read from the file again
        _damage(tmp_path / CACHE_FILE, "garbage")
        with pytest.raises(DamagedCacheError) as exc:
            for i in range(300):
                cache.get(f"k{i}")
    assert str(tmp_path / CACHE_FILE) in str(exc.value) and SET_ASIDE_FLAG in exc.value.render()
    assert isinstance(exc.value.__cause__, sqlite3.DatabaseError)


def test_a_cache_that_cannot_be_opened_is_named_but_not_called_damaged(tmp_path: Path) -> None:
    from ares_data.errors import StoreError

    (tmp_path / CACHE_FILE).mkdir()  # e.g. an unreadable path: sqlite cannot open it
    with pytest.raises(StoreError) as exc:
        RequestCache(tmp_path)
    assert type(exc.value) is StoreError
    assert f"cannot use the teacher reply cache {tmp_path}" in str(exc.value)


# ---- 7: a key echoed in a 200 reply ------------------------------------------------------------------------
@pytest.mark.parametrize("teacher", [ANTHROPIC, OPENAI])
def test_a_key_echoed_by_the_server_is_stored_nowhere(store_dir: Path, fake, teacher: str) -> None:  # noqa: ANN001
    s = make_rationales(store_dir)
    fake.set_faults(fault_rate=1.0, faults=["echokey"])  # every reply repeats the request's key header
    base = fake.anthropic_base_url if teacher == ANTHROPIC else fake.openai_base_url
    outs = [score("--json", srv=fake, teacher=teacher),
            data(["correct", "rats", "--teacher", teacher, "--base-url", base, "--json"])]
    assert all(o.exit_code == 0 for o in outs), [o.output for o in outs]
    scores, fixes = rows(s, "rats-scores"), rows(s, "rats-corrections")
    assert all(r["status"] == "ok" for r in scores + fixes)
    assert all("the request came with" in r["raw_response"] and "***" in r["raw_response"] for r in scores)
    assert all(r["corrected"].endswith("The request came with ***.") or
               r["corrected"].endswith("The request came with Bearer ***.") for r in fixes)
    blobs = [o.output.encode() for o in outs] + [p.read_bytes() for p in store_dir.rglob("*") if p.is_file()]
    key = KEYS["ANTHROPIC_API_KEY" if teacher == ANTHROPIC else "OPENAI_API_KEY"].encode()
    assert not any(key in b for b in blobs), "an echoed API key reached the store or the reply cache"


def test_a_key_echoed_in_batch_results_is_stored_nowhere(store_dir: Path, fake) -> None:  # noqa: ANN001
    s = make_rationales(store_dir)
    fake.set_faults(fault_rate=1.0, faults=["echokey"])
    sub = score("--batch", "--json", srv=fake)
    assert sub.exit_code == 0, sub.output
    col = data(["batch", "collect", sub.json()["batch_id"], "-o", "bscores", "--json"])
    assert col.exit_code == 0, col.output
    got = rows(s, "bscores")
    assert all(r["status"] == "ok" and "the request came with" in r["raw_response"] for r in got)
    assert all(r["raw_response"].endswith('***"}') for r in got)
    key = KEYS["ANTHROPIC_API_KEY"].encode()
    assert not any(key in p.read_bytes() for p in store_dir.rglob("*") if p.is_file())


def test_replies_cached_with_a_key_by_an_older_version_are_redacted_when_reused(tmp_path: Path) -> None:
    teacher = FakeTeacher()
    teacher._keys = ("sk-secret-123456",)
    its = items(["a|b"])
    with RequestCache(tmp_path) as cache:
        key = FakeTask().build(*its[0]).cache_key(teacher.cache_scope, teacher.model)
        leaked = {"scores": [0.5, 0.5], "note": "sk-secret-123456"}
        cache.put(key, Reply(json.dumps(leaked), leaked, 1, 1, "end_turn"))
        got = run(teacher, its, cache=cache)
    assert teacher.calls == [] and got[0]["status"] == "ok"
    assert "sk-secret-123456" not in got[0]["raw_response"] and "***" in got[0]["raw_response"]


# ---- 10: the endpoint in the cache key -------------------------------------------------------------------
def test_replies_from_one_local_server_are_not_reused_for_another(store_dir: Path, fake) -> None:  # noqa: ANN001
    s = make_rationales(store_dir)
    with serve() as other:
        for teacher, base_a, base_b in ((ANTHROPIC, fake.anthropic_base_url, other.anthropic_base_url),
                                        (OPENAI, fake.openai_base_url, other.openai_base_url)):
            name = teacher.split(":")[0]
            cmd = ["score", "rats", "--teacher", teacher, "--json", "--base-url"]
            a = data([*cmd, base_a, "-o", f"{name}-a"])
            assert a.exit_code == 0, a.output
            before = other.stats.model_requests
            b = data([*cmd, base_b, "-o", f"{name}-b"])
            assert b.exit_code == 0, b.output
            assert b.json()["from_cache"] == 0 and other.stats.model_requests - before == b.json()["sent"] > 0
            # the same server again (a trailing slash does not make it another one): all from the cache
            sent = fake.stats.model_requests
            again = data([*cmd, base_a + "/", "-o", f"{name}-a2"])
            assert again.exit_code == 0 and again.json()["sent"] == 0 and fake.stats.model_requests == sent
            dry = data([*cmd, base_a, "--dry-run"])
            assert dry.json()["requests"] == 0 and dry.json()["cached"] > 0
    assert rows(s, "anthropic-a") == rows(s, "anthropic-a2")


def test_a_build_made_with_one_local_server_is_not_reused_for_another(store_dir: Path, fake) -> None:  # noqa: ANN001
    """The loop skips a teacher stage whose identical build exists: the endpoint is part of that build."""
    from ares_data.engine.inputs import TeacherInputs
    from ares_data.engine.stage import find_teacher_dataset, teacher_build_params
    from ares_data.tasks import TASKS

    s = make_rationales(store_dir)
    r = score("--json", "-o", "sc", srv=fake)
    assert r.exit_code == 0, r.output
    inputs = TeacherInputs.resolve(s, "rats", None, "scores")
    task = TASKS["score"](prompt_path=None, include_images=True, max_tokens=None)
    here = AnthropicTeacher.scope_for(fake.anthropic_base_url)
    assert s.resolve("sc").manifest["params"]["endpoint"] == fake.anthropic_base_url
    found = find_teacher_dataset(s, inputs, "score", task, ANTHROPIC, "sc", scope=here)
    assert found is not None and found.ref == r.json()["ref"]
    elsewhere = AnthropicTeacher.scope_for("http://127.0.0.1:1")
    assert find_teacher_dataset(s, inputs, "score", task, ANTHROPIC, "sc", scope=elsewhere) is None
    # the official API: the build parameters (and so the keys of existing builds) are as before
    assert "endpoint" not in teacher_build_params(ANTHROPIC, "score", task, inputs, "anthropic")


def test_official_endpoints_keep_their_cache_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    assert AnthropicTeacher.scope_for(None) == AnthropicTeacher.scope_for("https://api.anthropic.com/") \
        == "anthropic"
    assert OpenAITeacher.scope_for(None) == OpenAITeacher.scope_for("https://api.openai.com/v1") == "openai"
    local = OpenAITeacher.scope_for("HTTP://user:pw@LocalHost:8000/v1/")
    assert local == "openai@http://localhost:8000/v1"
    assert OpenAITeacher.scope_for("http://localhost:8001/v1") != local
    assert AnthropicTeacher.scope_for("https://evil-anthropic.com.example.org") != "anthropic"
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:9/")  # what the SDK would use
    assert AnthropicTeacher.scope_for(None) == "anthropic@http://127.0.0.1:9"


# ---- refusals (400) are cached with the request ------------------------------------------------------------
@pytest.mark.parametrize("teacher", [ANTHROPIC, OPENAI])
def test_a_refused_request_is_not_sent_again_on_resume_but_retry_failed_asks(store_dir: Path, fake,  # noqa: ANN001
                                                                            teacher: str) -> None:
    s = make_rationales(store_dir, unique=True)
    fake.enqueue(["400"])  # the first request is refused
    first = score("--json", "--concurrency", "1", srv=fake, teacher=teacher)
    assert first.exit_code == 0 and first.json()["failed"] == 1, first.output
    sent = fake.stats.model_requests
    again = score("--json", "-o", "resumed", srv=fake, teacher=teacher)  # the rerun of an interrupted run
    assert again.exit_code == 0, again.output
    assert fake.stats.model_requests == sent and again.json()["refused_from_cache"] == 1
    assert rows(s, "resumed") == rows(s, first.json()["ref"])
    failed = [r for r in rows(s, "resumed") if r["status"] == "failed"]
    assert "HTTP 400: injected fault 400" in failed[0]["error"]
    retry = data(["score", "--retry-failed", first.json()["ref"], "--teacher", teacher, "--base-url",
                  fake.anthropic_base_url if teacher == ANTHROPIC else fake.openai_base_url, "--json"])
    assert retry.exit_code == 0 and retry.json()["failed"] == 0, retry.output
    assert fake.stats.model_requests == sent + 1
    # the answer replaces the refusal: a later run reuses it
    last = score("--json", "-o", "last", srv=fake, teacher=teacher)
    assert last.json()["failed"] == 0 and fake.stats.model_requests == sent + 1


def test_a_streak_of_identical_refusals_leaves_no_refusal_cached(tmp_path: Path) -> None:
    teacher = FakeTeacher()
    texts = [f"row {i}|b" for i in range(REJECT_STREAK + 5)]
    for t in texts:
        teacher.faults[t] = [RequestRejected("HTTP 400: this model does not take images", status=400)]

    with RequestCache(tmp_path) as cache, pytest.raises(FatalTeacherError, match="in a row"):
        run(teacher, items(texts), cache=cache, concurrency=1)
    with sqlite3.connect(tmp_path / CACHE_FILE) as db:
        assert db.execute("SELECT COUNT(*) FROM rejections").fetchone()[0] == 0
