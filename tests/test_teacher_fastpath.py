"""The teachers read reply bodies as plain JSON (no SDK pydantic models). These tests send real requests
through the official SDKs to the fake server and check that the JSON path gives exactly the Reply the SDK's
own parsed objects gave (the conversion the teachers used before), for tool_use, text, refusal, truncated
(max_tokens / length) replies and usage; and that bodies that are not a JSON object stay retryable errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from ares_data.tasks import CorrectTask, ScoreTask
from ares_data.teachers import Reply, RetryableError, make_teacher
from ares_data.testing.teacher_server import serve

from .test_teacher_server import PROBLEM, RATIONALE

SPECS = {"anthropic": "anthropic:claude-3-haiku-20240307", "openai": "openai:gpt-4o-mini"}
# (task, plain_text, queued fault) -> the kind of reply it produces
CASES = [
    (ScoreTask, False, None),  # anthropic tool_use / openai json_schema content
    (ScoreTask, True, None),  # prose text replies
    (ScoreTask, False, "refusal"),  # anthropic stop_reason refusal / openai message.refusal
    (CorrectTask, False, "wronglen"),  # a cut-off correction: max_tokens / length
    (CorrectTask, False, None),
]


def anthropic_from_models(message: Any) -> Reply:
    """The conversion from the SDK's parsed Message the teacher used before the JSON path."""
    data, texts = None, []
    for block in message.content or []:
        if block.type == "tool_use" and data is None and isinstance(block.input, dict):
            data = block.input
        elif block.type == "text":
            texts.append(block.text)
    text = json.dumps(data, ensure_ascii=False) if data is not None else "".join(texts)
    return Reply(text, data, int(message.usage.input_tokens or 0), int(message.usage.output_tokens or 0),
                 message.stop_reason, {"id": message.id, "model": message.model})


def openai_from_models(completion: Any) -> Reply:
    """The conversion from the SDK's parsed ChatCompletion the teacher used before the JSON path."""
    choice = completion.choices[0]
    refusal = getattr(choice.message, "refusal", None)
    text = choice.message.content or refusal or ""
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        data = None
    return Reply(text, data if isinstance(data, dict) else None, int(completion.usage.prompt_tokens or 0),
                 int(completion.usage.completion_tokens or 0),
                 "refusal" if refusal else choice.finish_reason,
                 {"id": completion.id, "model": completion.model})


@pytest.fixture(scope="module")
def server():
    with serve() as handle:
        yield handle


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-fake-key-0123456789")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-fake-openai-key-0123456789")


async def both_paths(teacher: Any, provider: str, request: Any) -> tuple[Reply, Reply, Reply]:
    """(JSON path of one raw reply, SDK-model path of the same reply, teacher.send of the same request)."""
    params = teacher.params(request)
    if provider == "anthropic":
        raw = await teacher.client.messages.with_raw_response.create(**params)
        body, parsed, old = await raw.json(), await raw.parse(), anthropic_from_models
    else:
        raw = await teacher.client.chat.completions.with_raw_response.create(**params)
        body, parsed, old = raw.http_response.json(), raw.parse(), openai_from_models
    return teacher.to_reply(body), old(parsed), await teacher.send(request)


@pytest.mark.parametrize("provider", sorted(SPECS))
def test_json_path_equals_sdk_models(server, provider: str) -> None:
    base = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
    seen: set[str | None] = set()

    async def go() -> None:
        teacher = make_teacher(SPECS[provider], base_url=base)
        try:
            for task_cls, plain, fault in CASES:
                server.set_faults(plain_text=plain)
                server.enqueue([fault, fault])  # the raw call, then teacher.send
                new, old, sent = await both_paths(teacher, provider, task_cls().build(PROBLEM, RATIONALE))
                assert new == old
                assert new.input_tokens > 0 and new.output_tokens > 0
                assert (sent.text, sent.data, sent.stop_reason) == (new.text, new.data, new.stop_reason)
                seen.add(new.stop_reason)
                if fault is None and not plain:
                    assert isinstance(new.data, dict) and new.data
        finally:
            server.set_faults(plain_text=False)
            await teacher.aclose()

    asyncio.run(go())
    expected = {"tool_use", "end_turn", "refusal", "max_tokens"} if provider == "anthropic" else {
        "stop", "refusal", "length"}
    assert expected <= seen


@pytest.mark.parametrize("provider", sorted(SPECS))
def test_non_json_body_is_retryable(server, provider: str) -> None:
    base = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url

    async def go() -> None:
        teacher = make_teacher(SPECS[provider], base_url=base)
        try:
            server.enqueue(["badjson"])
            with pytest.raises(RetryableError, match="unreadable response body"):
                await teacher.send(ScoreTask().build(PROBLEM, RATIONALE))
            reply = await teacher.send(ScoreTask().build(PROBLEM, RATIONALE))  # the next one is fine
            assert reply.data and reply.input_tokens > 0
        finally:
            await teacher.aclose()

    asyncio.run(go())
