"""Compatibility with the real providers' documented behaviour, checked through the official SDKs against the
fake server (which must answer the way the real APIs do): refusals, quota/spend-limit 429s, parameters a
model or an OpenAI-compatible server rejects, error body shapes and rate-limit header formats."""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request

import pytest

from ares_data.tasks import CorrectTask, JudgeTask, ScoreTask, ValidationError
from ares_data.teachers import FatalTeacherError, Reply, Request, RetryableError
from ares_data.teachers.headers import anthropic_limits, parse_duration
from ares_data.testing.teacher_server import serve
from tests.test_teacher_server import PROBLEM, PROVIDERS, RATIONALE, keys, send, teacher  # noqa: F401


@pytest.fixture(scope="module")
def server():
    with serve(retry_after=0.25) as handle:
        yield handle


@pytest.fixture(autouse=True)
def no_rejected_params(server) -> None:  # after the imported autouse `keys`: API keys set, server reset
    server.set_faults(reject_params=[], reject_style="openai")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_a_refusal_is_never_taken_as_an_answer(server, provider: str) -> None:
    # OpenAI: message.content null + message.refusal text; Anthropic: stop_reason "refusal"
    for task in (CorrectTask(include_images=False), ScoreTask(include_images=False)):
        server.enqueue(["refusal"])
        reply = send(teacher(server, provider), task.build(PROBLEM, RATIONALE))
        assert reply.refused and reply.stop_reason == "refusal" and reply.text
        with pytest.raises(ValidationError, match="declined"):
            task.parse(reply, PROBLEM, RATIONALE)


def test_cut_off_and_filtered_stop_reasons() -> None:
    def reply(stop: str) -> Reply:
        return Reply('{"corrected": "A dog has fur."}', {"corrected": "A dog has fur."}, 1, 1, stop)

    # Anthropic documents model_context_window_exceeded; OpenAI content_filter omits content
    assert reply("model_context_window_exceeded").truncated
    assert reply("content_filter").refused and not reply("end_turn").refused
    pair = {"pair_id": "x", "problem_id": "p1", "a": RATIONALE, "b": RATIONALE}
    for task, item in ((CorrectTask(), RATIONALE), (JudgeTask(), pair)):
        with pytest.raises(ValidationError, match="cut off"):
            task.parse(reply("model_context_window_exceeded"), PROBLEM, item)
        with pytest.raises(ValidationError, match="declined"):
            task.parse(reply("content_filter"), PROBLEM, item)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_quota_and_spend_limit_429s_stop_the_run(server, provider: str) -> None:
    request = ScoreTask(include_images=False).build(PROBLEM, RATIONALE)
    server.enqueue(["quota"])
    with pytest.raises(FatalTeacherError) as err:
        send(teacher(server, provider), request)
    assert err.value.status == 429 and "credit" in err.value.hint
    server.enqueue(["429"])  # an ordinary rate limit stays retryable
    with pytest.raises(RetryableError):
        send(teacher(server, provider), request)


@pytest.mark.parametrize(
    ("param", "style"),
    [("temperature", "openai"), *(("response_format", s) for s in ("openai", "fastapi", "lmstudio"))],
)
def test_openai_drops_a_parameter_the_model_or_server_rejects(server, param: str, style: str) -> None:
    task = ScoreTask(include_images=False)
    server.set_faults(reject_params=[param], reject_style=style)
    t = teacher(server, "openai")

    async def two() -> list[Reply]:
        try:
            return [await t.send(task.build(PROBLEM, RATIONALE)) for _ in range(2)]
        finally:
            await t.aclose()

    replies = asyncio.run(two())
    assert [task.parse(r, PROBLEM, RATIONALE)["scores"] for r in replies] == [[1.0, 0.0, 0.0]] * 2
    stats = server.stats
    assert stats.model_requests == 3  # one rejected, then the parameter is left out for good
    assert param in stats.recent[0] and all(param not in body for body in stats.recent[1:])
    server.set_faults(reject_params=["stop"])  # something we never send: no effect
    server.enqueue(["400"])
    with pytest.raises(FatalTeacherError):  # other 400s still stop the run
        send(teacher(server, "openai"), task.build(PROBLEM, RATIONALE))


def _post(url: str, body: dict | bytes, headers: dict) -> tuple[int, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {"content-type": "application/json", **headers})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_fake_error_bodies_have_the_documented_shapes(server) -> None:
    server.enqueue(["529", "400", "quota"])
    a = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
    msg = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    status, body = _post(server.url + "/v1/messages", msg, a)
    assert status == 529 and body["type"] == "error" and body["error"]["type"] == "overloaded_error"
    assert body["request_id"].startswith("req_")
    o = {"authorization": "Bearer k"}
    status, body = _post(server.openai_base_url + "/chat/completions", msg, o)
    assert status == 400 and body["error"]["type"] == "invalid_request_error"
    status, body = _post(server.url + "/v1/messages", msg, a)
    assert status == 429 and body["error"]["details"]["error_code"] == "enforced_spend_limit_reached"
    status, body = _post(server.url + "/v1/messages", b"{not json", a)  # unreadable -> Anthropic shape
    assert status == 400 and body["type"] == "error" and body["error"]["type"] == "invalid_request_error"


def test_rate_limit_header_formats() -> None:
    assert parse_duration("6m0s") == 360.0 and parse_duration("1s") == 1.0
    assert parse_duration("20ms") == pytest.approx(0.02) and parse_duration("1h2m3.5s") == 3723.5
    reset = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + 30))
    for value in (reset + "Z", reset + ".250000Z", reset + "+00:00"):
        hint = anthropic_limits({"anthropic-ratelimit-requests-reset": value})
        assert 25 < hint["requests_reset_s"] <= 31


@pytest.mark.parametrize("provider", PROVIDERS)
def test_validation_follow_up_of_a_blank_reply_is_accepted(server, provider: str) -> None:
    # the Messages API rejects empty or whitespace-only text blocks with a 400 (which would stop the run)
    task = ScoreTask(include_images=False)
    request = task.build(PROBLEM, RATIONALE)
    follow_up = task.retry_request(request, Reply(" \n", None, 1, 1, "end_turn"), "no scores")
    reply = send(teacher(server, provider), follow_up)
    assert task.parse(reply, PROBLEM, RATIONALE)["scores"] == [1.0, 0.0, 0.0]
    blank = {"role": "user", "content": [{"type": "text", "text": "  "}]}
    with pytest.raises(FatalTeacherError, match="non-whitespace"):
        send(teacher(server, "anthropic"), Request("", [blank], 16))


def test_every_task_schema_is_valid_in_strict_json_schema_mode(server) -> None:
    pair = {"pair_id": "x", "problem_id": "p1", "a": RATIONALE, "b": RATIONALE}
    for task, item in ((ScoreTask(), RATIONALE), (CorrectTask(), RATIONALE), (JudgeTask(), pair)):
        task.parse(send(teacher(server, "openai"), task.build(PROBLEM, item)), PROBLEM, item)
    stats = server.stats
    assert stats.model_requests == 3
    assert all(body["response_format"]["json_schema"]["strict"] for body in stats.recent)
    loose = Request("", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], 16,
                    response_schema={"type": "object", "properties": {"x": {"type": "string"}}})
    t = teacher(server, "openai")
    send(t, loose)  # the real API refuses the schema (400 naming response_format): sent again without it
    assert t.dropped == {"response_format"} and "response_format" not in server.stats.recent[-1]


def test_a_compatible_endpoint_that_wants_max_completion_tokens_gets_it(server) -> None:
    # o-series models reject max_tokens (400 naming it) also behind OpenAI-compatible gateways
    task = ScoreTask(include_images=False)
    server.set_faults(reject_params=["max_tokens"])
    t = teacher(server, "openai")
    reply = send(t, task.build(PROBLEM, RATIONALE))
    assert task.parse(reply, PROBLEM, RATIONALE)["scores"] == [1.0, 0.0, 0.0]
    first, second = server.stats.recent[-2:]
    assert "max_tokens" in first and second["max_completion_tokens"] == first["max_tokens"]
    assert "max_tokens" not in second
