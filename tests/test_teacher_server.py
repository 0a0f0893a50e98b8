"""Both providers through their official SDKs against the fake teacher server over loopback (no patching)."""

from __future__ import annotations

import asyncio
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from PIL import Image

from ares_data.tasks import CorrectTask, ScoreTask, ValidationError
from ares_data.teachers import FatalTeacherError, RetryableError, make_teacher
from ares_data.testing.teacher_server import serve

ANTHROPIC_KEY = "sk-ant-fake-key-0123456789"
OPENAI_KEY = "sk-fake-openai-key-0123456789"
PROVIDERS = ["anthropic", "openai"]


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


PROBLEM = {
    "problem_id": "p1",
    "question": "Which animal is a mammal?",
    "choices": ["frog", "dog"],
    "answer_index": 1,
    "answer": "dog",
    "context": "",
    "image": {"bytes": png(), "path": None},
    "reference_rationale": "Dogs are mammals: they have fur and feed their young milk.",
}
TEXT = "A dog has fur. A dog has fur. So the answer is frog."
RATIONALE = {
    "rationale_id": "r1",
    "problem_id": "p1",
    "text": TEXT,
    "sentences": [
        {"text": "A dog has fur.", "start": 0, "end": 14},
        {"text": "A dog has fur.", "start": 15, "end": 29},
        {"text": "So the answer is frog.", "start": 30, "end": 52},
    ],
}


@pytest.fixture(scope="module")
def server():
    with serve(hang_s=3.0, retry_after=0.25) as handle:
        yield handle


@pytest.fixture(autouse=True)
def keys(monkeypatch: pytest.MonkeyPatch, server) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    server.reset()
    server.set_faults(fault_rate=0.0, plain_text=False, batch_delay_s=0.0, rpm_limit=None)


def teacher(server, provider: str, timeout: float = 5.0):
    url = server.anthropic_base_url if provider == "anthropic" else server.openai_base_url
    return make_teacher(f"{provider}:fake-model", base_url=url, timeout=timeout)


def send(t, request):
    async def go():
        try:
            return await t.send(request)
        finally:
            await t.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize("provider", PROVIDERS)
def test_score_structured_reply_with_image(server, provider: str) -> None:
    task = ScoreTask()
    reply = send(teacher(server, provider), task.build(PROBLEM, RATIONALE))
    assert reply.data is not None  # structured output (tool use / json_schema) came back as an object
    assert task.parse(reply, PROBLEM, RATIONALE)["scores"] == [1.0, 0.0, 0.0]  # repeat and wrong answer -> 0
    assert reply.input_tokens > 0 and reply.output_tokens > 0
    stats = server.stats
    assert stats.images == 1
    body = stats.recent[-1]
    if provider == "anthropic":
        assert body["tool_choice"] == {"type": "tool", "name": "score"}
        image = body["messages"][0]["content"][0]
        assert image["type"] == "image" and image["source"]["media_type"] == "image/png"
    else:
        assert body["response_format"]["type"] == "json_schema"
        url = body["messages"][1]["content"][0]["image_url"]["url"]
        assert url.startswith("data:image/png;base64,")


@pytest.mark.parametrize("provider", PROVIDERS)
def test_correct_structured_reply(server, provider: str) -> None:
    task = CorrectTask(include_images=False)
    fields = task.parse(send(teacher(server, provider), task.build(PROBLEM, RATIONALE)), PROBLEM, RATIONALE)
    assert fields["corrected"] == "A dog has fur. The answer is dog."
    # the repeat is removed; "So the answer is frog." is edited into "The answer is dog."
    assert (fields["kept"], fields["edited"], fields["removed"], fields["added"]) == (1, 1, 1, 0)
    assert server.stats.images == 0


@pytest.mark.parametrize("provider", PROVIDERS)
def test_plain_text_servers_are_parsed_leniently(server, provider: str) -> None:
    server.set_faults(plain_text=True)
    score = ScoreTask()
    reply = send(teacher(server, provider), score.build(PROBLEM, RATIONALE))
    assert reply.data is None and "Sentence 1:" in reply.text
    assert score.parse(reply, PROBLEM, RATIONALE)["scores"] == [1.0, 0.0, 0.0]


RETRYABLE = ["429", "529", "500", "hang", "drop", "truncate", "badjson"]


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", RETRYABLE)
def test_transient_faults_are_retryable(server, provider: str, fault: str) -> None:
    server.enqueue([fault])
    with pytest.raises(RetryableError) as err:
        send(
            teacher(server, provider, timeout=0.5), ScoreTask(include_images=False).build(PROBLEM, RATIONALE)
        )
    if fault in ("429", "529"):
        assert err.value.retry_after == 0.25 and err.value.status == int(fault)
    assert server.stats.faults == {fault: 1}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["400", "401", "403", "404"])
def test_client_errors_are_typed_with_a_hint(server, provider: str, fault: str) -> None:
    """Through each SDK: a 400 refuses this request only (the row fails); 401/403/404 stop the run."""
    from ares_data.teachers import RequestRejected

    server.enqueue([fault])
    with pytest.raises(FatalTeacherError) as err:
        send(teacher(server, provider), ScoreTask(include_images=False).build(PROBLEM, RATIONALE))
    assert err.value.status == int(fault) and err.value.hint
    assert isinstance(err.value, RequestRejected) == (fault == "400")
    if fault == "401":
        assert ("ANTHROPIC_API_KEY" if provider == "anthropic" else "OPENAI_API_KEY") in err.value.hint


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("fault", ["malformed", "wronglen"])
def test_bad_content_fails_validation(server, provider: str, fault: str) -> None:
    for task in (ScoreTask(include_images=False), CorrectTask(include_images=False)):
        server.enqueue([fault])
        reply = send(teacher(server, provider), task.build(PROBLEM, RATIONALE))
        if fault == "malformed" and task.name == "correct":
            continue  # prose is an acceptable correction (lenient fallback); its content is checked elsewhere
        with pytest.raises(ValidationError):
            task.parse(reply, PROBLEM, RATIONALE)


@pytest.mark.parametrize("provider", PROVIDERS)
def test_batch_round_trip_with_a_per_request_error(server, provider: str) -> None:
    score, correct = ScoreTask(include_images=False), CorrectTask(include_images=False)
    items = [
        ("s-1", score.build(PROBLEM, RATIONALE)),
        ("c-1", correct.build(PROBLEM, RATIONALE)),
        ("s-2", score.build(PROBLEM, {**RATIONALE, "sentences": RATIONALE["sentences"][:1]})),
    ]
    server.set_faults(batch_delay_s=0.5)
    server.enqueue([None, None, "500"])
    t = teacher(server, provider)

    async def go():
        batch_id = await t.submit_batch(items)
        first = await t.batch_status(batch_id)
        await asyncio.sleep(0.6)
        return first, await t.batch_status(batch_id), await t.batch_results(batch_id)

    first, last, results = asyncio.run(go())
    assert first["state"] == "in_progress" and last["state"] == "ended"
    assert set(results) == {"s-1", "c-1", "s-2"}
    assert score.parse(results["s-1"], PROBLEM, RATIONALE)["scores"] == [1.0, 0.0, 0.0]
    assert correct.parse(results["c-1"], PROBLEM, RATIONALE)["corrected"].endswith("The answer is dog.")
    assert isinstance(results["s-2"], str) and "errored" in results["s-2"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_batches_with_duplicate_or_invalid_custom_ids_are_rejected(server, provider: str) -> None:
    request = ScoreTask(include_images=False).build(PROBLEM, RATIONALE)
    bad_ids = [["dup", "dup"]] + ([["has space"]] if provider == "anthropic" else [])
    for ids in bad_ids:
        with pytest.raises(FatalTeacherError) as err:
            asyncio.run(teacher(server, provider).submit_batch([(i, request) for i in ids]))
        assert err.value.status == 400 and "custom_id" in str(err.value)


def test_stats_count_repeated_requests_and_never_keep_keys(server) -> None:
    request = ScoreTask(include_images=False).build(PROBLEM, RATIONALE)
    for provider in PROVIDERS:
        send(teacher(server, provider), request)
    send(teacher(server, "anthropic"), request)
    stats = server.stats
    assert stats.model_requests == 3 and stats.repeated_answers() == 1
    assert sorted(stats.answered_by_hash.values()) == [1, 2]
    dump = json.dumps(stats.__dict__)
    assert ANTHROPIC_KEY not in dump and OPENAI_KEY not in dump


def test_requests_without_a_key_header_are_refused(server) -> None:
    req = urllib.request.Request(server.url + "/v1/messages", data=b"{}", method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=5)
    assert err.value.code == 401
    assert server.stats.unauthenticated == 1


def test_rpm_limit_answers_429_with_retry_after(server) -> None:
    server.set_faults(rpm_limit=2)
    request = ScoreTask(include_images=False).build(PROBLEM, RATIONALE)
    send(teacher(server, "openai"), request)
    send(teacher(server, "openai"), request)
    with pytest.raises(RetryableError) as err:
        send(teacher(server, "openai"), request)
    assert err.value.status == 429 and 50 < err.value.retry_after <= 60


def test_seeded_fault_rate_is_deterministic() -> None:
    from ares_data.testing.teacher_server import FakeTeacher, Options

    def draws(seed: int) -> list[str | None]:
        fake = FakeTeacher(Options(fault_rate=0.5, seed=seed))
        return [fake.draw_fault(f"key{i}") for i in range(200)]

    a = draws(7)
    assert a == draws(7) and a != draws(8)
    assert 60 < sum(f is not None for f in a) < 140


def test_command_line_server_and_process_mode() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ares_data.testing.teacher_server", "--port", "0", "--latency-ms", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("fake teacher server listening on http://127.0.0.1:")
        with urllib.request.urlopen(line.split(" on ")[1].strip() + "/_fake/stats", timeout=5) as r:
            assert json.loads(r.read())["by_endpoint"] == {}
    finally:
        proc.terminate()
        proc.wait(10)


def test_server_module_stays_light() -> None:
    """The fake server starts in its own process for benchmarks: no SDKs, no datasets, no torch."""
    code = (
        "import sys, ares_data.testing.teacher_server; "
        "print(sorted(m for m in ('anthropic', 'openai', 'datasets', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stderr
