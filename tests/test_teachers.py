"""Teacher registry, keys and base URLs, rate-limit headers, request hashing, and the reference heuristic."""

from __future__ import annotations

import asyncio
import email.utils
import json
import time
from pathlib import Path

import pytest

from ares_data.errors import MissingKeyError, UsageError
from ares_data.tasks import CorrectTask, ScoreTask
from ares_data.teachers import FatalTeacherError, Reply, Request, make_teacher
from ares_data.teachers.headers import anthropic_limits, openai_limits, parse_duration, parse_retry_after
from ares_data.teachers.reference import correct_rationale, score_sentences
from ares_data.testing.teacher_server import serve

QUESTION = {
    "question": "Which animal is a mammal?",
    "choices": ["frog", "dog"],
    "answer_index": 1,
    "answer": "dog",
    "reference": "Dogs are mammals because they have fur and feed milk to their young.",
}


def data(task: str, sentences: list[str], **extra) -> dict:
    return {"task": task, **QUESTION, "sentences": sentences, **extra}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_BASE_URL", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


def test_registry_specs() -> None:
    assert make_teacher("reference").spec == "reference:heuristic-v1"
    with pytest.raises(UsageError, match="unknown teacher provider 'gemini'"):
        make_teacher("gemini:pro")
    with pytest.raises(UsageError, match="names no model"):
        make_teacher("anthropic")


def test_missing_keys_say_which_variable_to_set() -> None:
    with pytest.raises(MissingKeyError) as err:
        make_teacher("anthropic:claude-3-haiku-20240307")
    assert (
        "ANTHROPIC_API_KEY is not set" in err.value.render()
        and "export ANTHROPIC_API_KEY" in err.value.render()
    )
    with pytest.raises(MissingKeyError, match="OPENAI_API_KEY"):
        make_teacher("openai:gpt-4o-mini")
    with pytest.raises(MissingKeyError, match="OPENAI_API_KEY"):
        make_teacher("openai:gpt-4o-mini", base_url="https://api.openai.com/v1")


def test_base_urls_from_the_environment_and_keyless_local_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    request = ScoreTask(include_images=False).build(
        {"question": "Q?", "choices": ["a", "b"], "answer_index": 0, "answer": "a"},
        {"text": "So the answer is a.", "sentences": [{"text": "So the answer is a."}]},
    )
    with serve() as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env-key-123456")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.anthropic_base_url)
        monkeypatch.setenv("OPENAI_BASE_URL", server.openai_base_url)  # local server: no key needed
        replies = [
            asyncio.run(make_teacher(spec, timeout=5).send(request))
            for spec in ("anthropic:m", "openai:local-model")
        ]
        stats = server.stats
    assert [r.data for r in replies] == [{"scores": [{"sentence": 1, "score": 1.0}]}] * 2
    assert stats.by_endpoint == {"anthropic:/v1/messages": 1, "openai:/v1/chat/completions": 1}
    assert "max_tokens" in stats.recent[-1]  # compatible servers get max_tokens, not max_completion_tokens


def test_rate_limit_headers() -> None:
    reset = time.time() + 30
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(reset))
    a = anthropic_limits(
        {
            "anthropic-ratelimit-requests-remaining": "7",
            "anthropic-ratelimit-requests-reset": iso,
            "retry-after": "3",
        }
    )
    assert a["requests_remaining"] == 7 and 25 < a["requests_reset_s"] <= 31 and a["retry_after"] == 3.0
    o = openai_limits(
        {
            "x-ratelimit-remaining-requests": "59",
            "x-ratelimit-reset-requests": "6m0s",
            "x-ratelimit-remaining-tokens": "1000",
            "x-ratelimit-reset-tokens": "20ms",
        }
    )
    assert (o["requests_remaining"], o["requests_reset_s"], o["tokens_reset_s"]) == (59, 360.0, 0.02)
    assert parse_duration("1h2m3.5s") == 3723.5
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    date = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 15 < parse_retry_after({"retry-after": date}) <= 21
    assert parse_retry_after({}) is None


def test_request_cache_key_covers_everything_including_image_bytes() -> None:
    def req(image: str = "AAAA", **kw) -> Request:
        content = [
            {"type": "image", "media_type": "image/png", "data_b64": image},
            {"type": "text", "text": "hi"},
        ]
        return Request(
            **{"system": "s", "messages": [{"role": "user", "content": content}], "max_tokens": 10, **kw}
        )

    base = req().cache_key("anthropic", "m")
    assert (
        base
        == req().cache_key("anthropic", "m")
        == Request.from_dict(req().to_dict()).cache_key("anthropic", "m")
    )
    others = {
        req("BBBB").cache_key("anthropic", "m"),
        req().cache_key("openai", "m"),
        req().cache_key("anthropic", "m2"),
        req(temperature=0.5).cache_key("anthropic", "m"),
        req(max_tokens=11).cache_key("anthropic", "m"),
    }
    assert base not in others and len(others) == 5
    r = Reply("t", {"a": 1}, 1, 2, "max_tokens")
    assert r.truncated and Reply.from_dict(r.to_dict()) == r


def test_cache_keys_are_stable_across_versions() -> None:
    """Existing caches stay valid: the key of a fixed request is pinned (computed by the first release)."""
    content = [{"type": "image", "media_type": "image/png", "data_b64": "iVBO"},
               {"type": "text", "text": "é x"}]
    req = Request(system="s", messages=[{"role": "user", "content": content}], max_tokens=7,
                  response_schema={"type": "object"})
    pinned = "89abccecd3af597e9700403af86992c1570a94eefb055c2bb5194e9f1ce99487"
    assert req.cache_key("anthropic", "m") == pinned
    assert json.loads(req.canonical_json()) == req.to_dict()


def test_reference_scoring_rules() -> None:
    sentences = [
        "Let's look at each animal.",  # set-up -> 0.5
        "Dogs have fur and feed milk to their young.",  # fully supported by the reference -> 1.0
        "Dogs have fur and feed milk to their young.",  # repeat -> 0.0
        "A frog is not a mammal.",  # negated mention of a wrong option: not an assertion -> restates question
        "Frogs can jump very high.",  # unsupported claim -> 0.3
        "So the answer is frog.",  # asserts a wrong option -> 0.0
        "The answer is (B).",  # asserts the gold answer by letter -> 1.0
        "Dogs bark at",  # unfinished last sentence -> 0.2
    ]
    assert score_sentences(data("score", sentences)) == [0.5, 1.0, 0.0, 0.5, 0.3, 0.0, 1.0, 0.2]


def test_reference_free_form_answers() -> None:
    d = {
        "task": "score",
        "question": "What is 2 + 2?",
        "choices": [],
        "answer_index": None,
        "answer": "4",
        "reference": "",
        "sentences": ["Two plus two makes four.", "So the answer is 5.", "The answer is 4."],
    }
    assert score_sentences(d)[1:] == [0.0, 1.0]


def test_reference_correction_rules() -> None:
    sentences = [
        "dogs have fur.",
        "dogs have fur.",
        "So the answer is frog.",
        "Frogs are amphibians",
        "Dogs bark at the",
    ]
    assert correct_rationale(data("correct", sentences)) == (
        "Dogs have fur. Frogs are amphibians. The answer is dog."
    )
    kept = ["Dogs feed milk to their young.", "So the answer is dog."]
    assert correct_rationale(data("correct", kept)) == " ".join(kept)  # nothing to fix: unchanged
    long_tail = ["Dogs have fur", "Dogs feed their young with milk"]
    assert correct_rationale(data("correct", long_tail)).startswith(
        "Dogs have fur. Dogs feed their young with milk."
    )


def test_reference_teacher_goes_through_send_and_validates() -> None:
    problem = {
        "question": QUESTION["question"],
        "choices": QUESTION["choices"],
        "answer_index": 1,
        "answer": "dog",
        "reference_rationale": QUESTION["reference"],
        "image": None,
    }
    rationale = {
        "text": "Dogs have fur. So the answer is frog.",
        "sentences": [{"text": "Dogs have fur."}, {"text": "So the answer is frog."}],
    }
    teacher = make_teacher("reference")
    score, correct = ScoreTask(), CorrectTask()
    scored = score.parse(asyncio.run(teacher.send(score.build(problem, rationale))), problem, rationale)
    assert scored["scores"] == [1.0, 0.0]
    fixed = correct.parse(asyncio.run(teacher.send(correct.build(problem, rationale))), problem, rationale)
    assert fixed["corrected"] == "Dogs have fur. The answer is dog."
    with pytest.raises(FatalTeacherError, match="ares_task_data"):
        asyncio.run(
            teacher.send(Request("s", [{"role": "user", "content": [{"type": "text", "text": "hi"}]}], 5))
        )


def test_reference_batches_survive_a_new_process(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARES_REFERENCE_BATCH_DIR", str(tmp_path))
    problem = {"question": "Q?", "choices": ["a", "b"], "answer_index": 0, "answer": "a"}
    rationale = {"text": "So the answer is a.", "sentences": [{"text": "So the answer is a."}]}
    bad = Request("s", [{"role": "user", "content": [{"type": "text", "text": "no task"}]}], 5)
    batch_id = asyncio.run(
        make_teacher("reference").submit_batch([("one", ScoreTask().build(problem, rationale)), ("two", bad)])
    )
    fresh = make_teacher("reference")  # another process would build a new teacher the same way
    status = asyncio.run(fresh.batch_status(batch_id))
    assert (
        status["state"] == "ended" and status["counts"]["succeeded"] == 1 and status["counts"]["errored"] == 1
    )
    results = asyncio.run(fresh.batch_results(batch_id))
    assert results["one"].data == {"scores": [{"sentence": 1, "score": 1.0}]}
    assert results["two"].startswith("errored:")
    with pytest.raises(FatalTeacherError, match="unknown reference batch"):
        asyncio.run(fresh.batch_status("refbatch_" + "0" * 24))


def test_error_messages_never_carry_a_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from ares_data.teachers.headers import status_error

    key = "sk-proj-abcdefghijklmnopqrstuvwx"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    err = status_error(
        "openai", 401, f"Incorrect API key provided: {key[:12]}****uvwx. Or {key}", {}, "OPENAI_API_KEY"
    )
    assert isinstance(err, FatalTeacherError) and "sk-proj-abcd" not in str(err) and key not in str(err)
    assert "OPENAI_API_KEY" in err.hint


def test_one_bad_request_fails_a_row_while_account_errors_stop_the_run() -> None:
    from ares_data.teachers.base import RequestRejected
    from ares_data.teachers.headers import status_error

    for status in (400, 413, 422):
        err = status_error("anthropic", status, "prompt is too long: 210000 tokens", {}, "ANTHROPIC_API_KEY")
        assert isinstance(err, RequestRejected) and "prompt is too long" in str(err)
    for status in (401, 402, 403, 404):
        err = status_error("openai", status, "nope", {}, "OPENAI_API_KEY")
        assert isinstance(err, FatalTeacherError) and not isinstance(err, RequestRejected)
    credit = "Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing."
    err = status_error("anthropic", 400, credit, {}, "ANTHROPIC_API_KEY")  # Anthropic says so with a 400
    assert isinstance(err, FatalTeacherError) and not isinstance(err, RequestRejected)
    err = status_error("openai", 400, "quota", {}, "OPENAI_API_KEY", {"insufficient_quota"})
    assert not isinstance(err, RequestRejected)
