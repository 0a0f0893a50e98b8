"""The request engine against an in-process fake teacher (no network): order, retries, cache, dedup,
validation retries, budget, rate limits. The CLI tests drive the official SDKs against the fake server."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from ares_data.engine import Done, Fresh, PriceTable, RequestCache, Stats, run_task
from ares_data.engine.limiter import RateLimiter
from ares_data.errors import BudgetExceeded
from ares_data.tasks.base import ValidationError
from ares_data.teachers.base import (
    FatalTeacherError,
    Reply,
    Request,
    RequestRejected,
    RetryableError,
    Teacher,
)


class FakeTeacher(Teacher):
    """Answers {"scores": [...]} with one score per sentence; `faults[n]` scripts the n-th reply of a text."""

    provider = "fake"

    def __init__(self, model: str = "m", latency: float = 0.0, **kw: object) -> None:
        super().__init__(model)
        self.latency = latency
        self.calls: list[str] = []  # the rationale text of every HTTP attempt
        self.faults: dict[str, list[object]] = {}
        self.active = self.peak = 0

    async def send(self, request: Request) -> Reply:
        text = request.messages[0]["content"][0]["text"]
        self.calls.append(request.messages[-1]["content"][0]["text"])
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            if self.latency:
                await asyncio.sleep(self.latency)
            script = self.faults.get(text)
            step = script.pop(0) if script else None
            if isinstance(step, BaseException):
                raise step
            if step == "hang":
                await asyncio.sleep(30)
            n = len(text.split("|")) if step != "wronglen" else 99
            data = {"scores": [0.5] * n}
            return Reply(json.dumps(data), data, input_tokens=100, output_tokens=10, stop_reason="end_turn")
        finally:
            self.active -= 1


class FakeTask:
    """Scores: one score per '|'-separated sentence; the follow-up request appends the error."""

    kind = "scores"
    prompt_sha = "sha-test"

    def build(self, problem: dict, rationale: dict) -> Request:
        return Request(system="s", messages=[{"role": "user", "content": [{"type": "text",
                       "text": rationale["text"]}]}], max_tokens=50)

    def row_ids(self, problem: dict, rationale: dict) -> dict:
        return {"rationale_id": rationale["id"], "problem_id": problem["id"]}

    def parse(self, reply: Reply, problem: dict, rationale: dict) -> dict:
        n = len(rationale["text"].split("|"))
        if len(reply.data["scores"]) != n:
            raise ValidationError(f"expected {n} scores, got {len(reply.data['scores'])}")
        return {"scores": reply.data["scores"]}

    def retry_request(self, request: Request, reply: Reply, error: str) -> Request:
        msgs = [*request.messages, {"role": "user", "content": [{"type": "text", "text": error}]}]
        return Request(system=request.system, messages=msgs, max_tokens=request.max_tokens)

    def failed_fields(self, problem: dict, rationale: dict) -> dict:
        return {"scores": []}


def items(texts: list[str]) -> list[tuple[dict, dict]]:
    return [({"id": f"p{i}"}, {"id": f"r{i}", "text": t}) for i, t in enumerate(texts)]


def run(teacher: Teacher, its: list, **kw: object) -> list[dict]:
    async def go() -> list[dict]:
        return [row async for row in run_task(teacher, FakeTask(), its, **kw)]

    return asyncio.run(go())


FAST = {"backoff_base": 0.01, "timeout": 0.3}


def test_rows_in_order_and_duplicates_sent_once() -> None:
    t = FakeTeacher(latency=0.01)
    texts = [f"a{i}|b" for i in range(30)] + ["a3|b", "a3|b", "x|y|z"]
    stats = Stats()
    rows = run(t, items(texts), concurrency=8, stats=stats, pricing=PriceTable({"m": (1.0, 2.0)}))
    assert [r["rationale_id"] for r in rows] == [f"r{i}" for i in range(len(texts))]
    assert sorted(t.calls) == sorted(set(texts))  # each distinct request sent once
    assert [r["cached"] for r in rows[30:]] == [True, True, False]
    assert rows[30]["cost_usd"] == 0 and rows[30]["input_tokens"] == 100
    assert rows[0]["cost_usd"] == pytest.approx((100 * 1 + 10 * 2) / 1e6)
    assert all(r["status"] == "ok" for r in rows) and rows[-1]["scores"] == [0.5] * 3
    assert t.peak <= 8 and stats.ok == len(texts) and stats.sent == 31


def test_transient_faults_are_retried_then_give_up_with_reason() -> None:
    t = FakeTeacher()
    t.faults = {
        "a|b": [RetryableError("429", retry_after=0.05, status=429),
                RetryableError("overloaded", status=529)],
        "c": ["hang"],
        "d": [RetryableError("500 internal", status=500)] * 5,
    }
    rows = run(t, items(["a|b", "c", "d", "e"]), max_attempts=3, **FAST)
    assert [r["status"] for r in rows] == ["ok", "ok", "failed", "ok"]
    assert [r["attempts"] for r in rows] == [3, 2, 3, 1]
    assert "gave up after 3 attempts" in rows[2]["error"] and "500 internal" in rows[2]["error"]
    assert rows[2]["scores"] == [] and rows[2]["cost_usd"] == 0


def test_invalid_reply_gets_one_retry_stating_the_error() -> None:
    t = FakeTeacher()
    t.faults = {"a|b": ["wronglen"]}
    rows = run(t, items(["a|b", "c|d"]), **FAST)
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert rows[0]["input_tokens"] == 200 and rows[1]["input_tokens"] == 100  # both requests counted
    assert sorted(t.calls) == ["a|b", "c|d", "expected 2 scores, got 99"]


def test_invalid_twice_is_failed_with_raw_reply() -> None:
    class AlwaysWrong(FakeTeacher):
        async def send(self, request: Request) -> Reply:
            self.calls.append(request.messages[-1]["content"][0]["text"])
            return Reply('{"scores": [1]}', {"scores": [1.0]}, 5, 5, "end_turn")

    t = AlwaysWrong()
    rows = run(t, items(["a|b"]), **FAST)
    assert rows[0]["status"] == "failed" and rows[0]["scores"] == []
    assert "after one retry" in rows[0]["error"] and rows[0]["raw_response"] == '{"scores": [1]}'
    assert t.calls == ["a|b", "expected 2 scores, got 1"]


def test_cache_makes_a_rerun_send_nothing_and_rows_identical(tmp_path: Path) -> None:
    texts = [f"s{i}|t" for i in range(20)]
    t1 = FakeTeacher()
    t1.faults = {"s3|t": ["wronglen"]}
    with RequestCache(tmp_path / "c") as cache:
        first = run(t1, items(texts), cache=cache)
    t2 = FakeTeacher()
    stats = Stats()
    with RequestCache(tmp_path / "c") as cache:
        second = run(t2, items(texts), cache=cache, stats=stats)
    assert t2.calls == [] and stats.from_cache == 21 and stats.spent_usd == 0
    assert first == second


def test_fatal_error_stops_the_run() -> None:
    class Denied(FakeTeacher):
        async def send(self, request: Request) -> Reply:
            self.calls.append("x")
            raise FatalTeacherError("401 invalid x-api-key")

    t = Denied()
    with pytest.raises(FatalTeacherError):
        run(t, items([f"a{i}" for i in range(50)]), concurrency=4)
    assert len(t.calls) <= 8


def test_a_rejected_request_fails_its_row_only() -> None:
    t = FakeTeacher()
    t.faults = {"big|img": [RequestRejected("anthropic HTTP 413: request too large", status=413)],
                "long": [RequestRejected("openai HTTP 400: prompt is too long", status=400)]}
    rows = run(t, items(["a|b", "big|img", "c", "long", "d"]), **FAST)
    assert [r["status"] for r in rows] == ["ok", "failed", "ok", "failed", "ok"]
    assert "HTTP 413: request too large" in rows[1]["error"] and rows[1]["attempts"] == 1
    assert "prompt is too long" in rows[3]["error"] and rows[3]["scores"] == []
    assert t.calls.count("big|img") == 1  # not retried: the same request would be refused again


def test_many_identical_rejections_in_a_row_stop_the_run() -> None:
    class BadParam(FakeTeacher):
        async def send(self, request: Request) -> Reply:
            self.calls.append("x")
            raise RequestRejected("openai HTTP 400: Unsupported value: 'top_k' (request 7)", status=400)

    t = BadParam()
    with pytest.raises(FatalTeacherError, match="rejected the last 20 requests in a row") as exc:
        run(t, items([f"a{i}" for i in range(200)]), concurrency=4)
    assert "top_k" in str(exc.value) and len(t.calls) < 40


def test_max_cost_stops_and_a_rerun_resumes(tmp_path: Path) -> None:
    prices = PriceTable({"m": (1000.0, 1000.0)})  # each request: est ~ (12+50) tokens -> ~$0.06; real $0.11
    texts = [f"q{i}" for i in range(10)]
    t = FakeTeacher()
    with RequestCache(tmp_path / "c") as cache, pytest.raises(BudgetExceeded) as exc:
        run(t, items(texts), cache=cache, pricing=prices, max_cost=0.35, concurrency=1)
    assert "rerun" in exc.value.render()
    sent_first = len(t.calls)
    assert 1 <= sent_first <= 4
    t2 = FakeTeacher()
    with RequestCache(tmp_path / "c") as cache:
        rows = run(t2, items(texts), cache=cache, pricing=prices, max_cost=100.0)
    assert len(t2.calls) == 10 - sent_first and all(r["status"] == "ok" for r in rows)


def test_done_and_fresh_items(tmp_path: Path) -> None:
    t = FakeTeacher()
    with RequestCache(tmp_path / "c") as cache:
        run(t, items(["a", "b"]), cache=cache)
        kept = {"rationale_id": "r0", "status": "ok"}
        its = items(["a", "b"])
        rows = run(t, [Done(kept), Fresh(its[1])], cache=cache)
    assert rows[0] is not None and rows[0] == kept and rows[1]["status"] == "ok"
    assert t.calls == ["a", "b", "b"]  # the Fresh item was re-sent despite the cache


def test_memory_window_bounds_rows_in_flight() -> None:
    t = FakeTeacher()
    seen = []

    def gen():
        for i in range(500):
            seen.append(i)
            yield ({"id": "p"}, {"id": f"r{i}", "text": f"t{i}"})

    async def go() -> int:
        most_ahead = 0
        n = 0
        async for _row in run_task(t, FakeTask(), gen(), concurrency=4, window=32):
            n += 1
            most_ahead = max(most_ahead, len(seen) - n)
        return most_ahead

    assert asyncio.run(go()) <= 32


def test_limiter_never_exceeds_rpm_in_any_window() -> None:
    async def go() -> list[float]:
        lim = RateLimiter(rpm=20, window=1.0)
        stamps = []
        for _ in range(45):
            await lim.acquire()
            stamps.append(time.monotonic())
        return stamps

    stamps = asyncio.run(go())
    for i, s in enumerate(stamps):
        assert sum(1 for x in stamps[i:] if x < s + 1.0) <= 20
    rate = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    assert rate >= 0.9 * 20


def test_limiter_tokens_per_window_and_pause() -> None:
    async def go() -> tuple[list[float], float]:
        lim = RateLimiter(tpm=100, window=0.5)
        stamps = []
        for _ in range(5):
            await lim.acquire(40)
            stamps.append(time.monotonic())
        lim.pause_for(0.3)
        t0 = time.monotonic()
        await lim.acquire(0)
        return stamps, time.monotonic() - t0

    stamps, paused = asyncio.run(go())
    for i, s in enumerate(stamps):
        assert 40 * sum(1 for x in stamps[i:] if x < s + 0.5) <= 100
    assert paused >= 0.25


def test_provider_remaining_zero_pauses_every_worker_until_reset() -> None:
    class Exhausted(FakeTeacher):
        async def send(self, request: Request) -> Reply:
            reply = await super().send(request)
            self.stamps.append(time.monotonic())
            first = len(self.stamps) == 1
            self._rate_limit = {"requests_remaining": 0 if first else 5, "requests_reset_s": 0.4}
            return reply

    t = Exhausted()
    t.stamps = []
    rows = run(t, items(["a", "b", "c"]), concurrency=1)
    assert all(r["status"] == "ok" for r in rows)
    assert t.stamps[1] - t.stamps[0] >= 0.35 and t.stamps[2] - t.stamps[1] < 0.3


def test_unknown_model_costs_zero_with_a_warning() -> None:
    from ares_data.engine import Engine, EngineConfig

    t = FakeTeacher(model="mystery-model")
    engine = Engine(t, FakeTask(), EngineConfig())
    assert engine.price.cost(1000, 1000) == 0 and "mystery-model" in engine.warnings[0]
    rows = run(t, items(["a"]))
    assert rows[0]["cost_usd"] == 0 and rows[0]["input_tokens"] == 100


def test_limiter_settle_frees_estimated_tokens() -> None:
    async def go() -> float:
        lim = RateLimiter(tpm=100)  # a real 60 s window
        grant = await lim.acquire(80)  # estimate: prompt + max_tokens
        lim.settle(grant, 10)  # the provider reported 10
        t0 = time.monotonic()
        await lim.acquire(80)
        return time.monotonic() - t0

    assert asyncio.run(go()) < 1.5


def test_large_batches_are_split_by_count_and_size() -> None:
    from ares_data.engine.batch import chunks

    reqs = [(f"c{i}", FakeTask().build({}, {"text": "x" * 100})) for i in range(10)]
    assert [len(c) for c in chunks(reqs, max_requests=4)] == [4, 4, 2]
    assert [len(c) for c in chunks(reqs, max_bytes=1500)] == [2, 2, 2, 2, 2]
    assert [cid for c in chunks(reqs, max_requests=3) for cid, _ in c] == [f"c{i}" for i in range(10)]
