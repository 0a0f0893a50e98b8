"""Score/correct tasks: prompt templates and their hashes, request building, strict reply validation."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pytest
from PIL import Image

from ares_data.errors import ConfigError
from ares_data.schema import CORRECTIONS, SCORES
from ares_data.tasks import CorrectTask, ScoreTask, ValidationError, edit_summary
from ares_data.tasks.base import PROMPTS_DIR, extract_data
from ares_data.teachers.base import Reply

PROBLEM = {
    "question": "Which animal is a mammal?",
    "choices": ["frog", "dog"],
    "answer_index": 1,
    "answer": "dog",
    "context": "Look at the animals.",
    "reference_rationale": "Dogs have fur.",
    "image": None,
}
SENTS = ["A dog has fur.", "A dog has fur.", "So the answer is dog."]
RATIONALE = {
    "rationale_id": "r1",
    "problem_id": "p1",
    "text": " ".join(SENTS),
    "sentences": [{"text": s, "start": 0, "end": 0} for s in SENTS],
}


def reply(text: str = "", data: dict | None = None, stop: str = "end_turn") -> Reply:
    return Reply(text=text or json.dumps(data), data=data, input_tokens=10, output_tokens=5, stop_reason=stop)


def scores_obj(values: list) -> dict:
    return {"scores": [{"sentence": i, "score": v} for i, v in enumerate(values, 1)]}


def test_prompt_sha_is_the_hash_of_the_template_file_and_stable() -> None:
    for task, name in ((ScoreTask(), "score.txt"), (CorrectTask(), "correct.txt")):
        assert task.prompt_sha == hashlib.sha256((PROMPTS_DIR / name).read_bytes()).hexdigest()
        assert type(task)().prompt_sha == task.prompt_sha


def test_custom_prompt_file(tmp_path: Path) -> None:
    path = tmp_path / "mine.txt"
    path.write_text("<<system>>\nBe strict.\n<<user>>\nQ: {{question}}\n{{sentences}}\nJSON please.\n")
    task = ScoreTask(prompt_path=path)
    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    assert ScoreTask(prompt_path=crlf).build(PROBLEM, RATIONALE).system == "Be strict."
    assert task.prompt_sha == hashlib.sha256(path.read_bytes()).hexdigest() != ScoreTask().prompt_sha
    request = task.build(PROBLEM, RATIONALE)
    assert request.system == "Be strict."
    assert request.messages[0]["content"][-1]["text"].startswith("Q: Which animal is a mammal?\nSentence 1:")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("no markers at all {{sentences}}", "<<system>>"),
        ("<<system>>\ns\n<<user>>\n{{sentences}} {{bogus}}\n", "bogus"),
        ("<<system>>\ns\n<<user>>\n{{question}} only\n", "sentences"),
    ],
)
def test_bad_templates_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        ScoreTask(prompt_path=path)
    assert str(path) in str(err.value) and message in str(err.value)
    with pytest.raises(ConfigError, match="cannot read"):
        ScoreTask(prompt_path=tmp_path / "missing.txt")


def test_build_keys_sentences_by_index_and_embeds_task_data() -> None:
    request = ScoreTask().build(PROBLEM, RATIONALE)
    text = request.messages[0]["content"][-1]["text"]
    assert "Sentence 1: A dog has fur.\nSentence 2: A dog has fur.\nSentence 3: So the answer is dog." in text
    assert "(B) dog" in text and "0.5" in text and "0.0" in text  # answer shown; neutral/repeat rules stated
    data = extract_data(text)
    assert data["task"] == "score" and data["sentences"] == SENTS and data["answer_index"] == 1
    assert request.response_schema["required"] == ["scores"] and request.schema_name == "score"


def test_images_are_sent_unless_disabled() -> None:
    buf = io.BytesIO()
    Image.new("RGB", (3, 3)).save(buf, format="JPEG")
    problem = {**PROBLEM, "image": {"bytes": buf.getvalue(), "path": None}}
    block = ScoreTask().build(problem, RATIONALE).messages[0]["content"][0]
    assert block["type"] == "image" and block["media_type"] == "image/jpeg"
    assert ScoreTask(include_images=False).build(problem, RATIONALE).image_count() == 0
    pil = ScoreTask().build({**PROBLEM, "image": Image.new("RGB", (2, 2))}, RATIONALE)
    assert pil.messages[0]["content"][0]["media_type"] == "image/png"


@pytest.mark.parametrize(
    "r",
    [
        reply(data=scores_obj([0.5, 0.0, 1.0])),
        reply("Sure:\n```json\n" + json.dumps(scores_obj([0.5, 0.0, 1.0])) + "\n```"),
        reply("Sentence 1: 0.5\nSentence 2: 0.0\nSentence 3: 1"),
        reply(data={"scores": {"1": 0.5, "2": 0.0, "3": 1.0}}),
        reply(data={"scores": [0.5, 0.0, 1.0]}),
    ],
)
def test_score_parse_accepts_structured_and_lenient_forms(r: Reply) -> None:
    fields = ScoreTask().parse(r, PROBLEM, RATIONALE)
    assert fields == {"sentences": SENTS, "scores": [0.5, 0.0, 1.0]}


@pytest.mark.parametrize(
    ("r", "message"),
    [
        (reply(data=scores_obj([0.5, 0.0])), "missing sentence(s) 3"),
        (reply(data=scores_obj([0.5, 0.0, 1.0, 0.2])), "score for sentence 4"),
        (reply(data=scores_obj([0.5, 1.2, 1.0])), "outside [0, 1]"),
        (reply(data=scores_obj([0.5, -0.1, 1.0])), "outside [0, 1]"),
        (reply(data=scores_obj([0.5, "0.3", 1.0])), "not a number"),
        (reply(data=scores_obj([0.5, True, 1.0])), "not a number"),
        (reply(data=scores_obj([0.5, float("nan"), 1.0])), "not a number"),
        (
            reply(
                data={
                    "scores": [
                        {"sentence": 1, "score": 0.1},
                        {"sentence": 1, "score": 0.2},
                        {"sentence": 3, "score": 0.3},
                    ]
                }
            ),
            "scored twice",
        ),
        (reply(data={"verdict": "good"}), '"scores"'),
        (reply("I think it is all fine."), "neither JSON"),
        (reply(data=scores_obj([0.5, 0.0, 1.0]), stop="max_tokens"), "cut off"),
    ],
)
def test_score_parse_rejects_bad_replies(r: Reply, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        ScoreTask().parse(r, PROBLEM, RATIONALE)
    assert message in str(err.value)


def test_correct_parse_segments_and_summarises() -> None:
    corrected = "A dog has fur. So the answer is dog."
    fields = CorrectTask().parse(reply(data={"corrected": corrected}), PROBLEM, RATIONALE)
    assert fields["corrected"] == corrected and fields["original"] == RATIONALE["text"]
    assert [s["text"] for s in fields["corrected_sentences"]] == ["A dog has fur.", "So the answer is dog."]
    for s in fields["corrected_sentences"]:
        assert corrected[s["start"] : s["end"]] == s["text"]
    assert (fields["kept"], fields["edited"], fields["added"], fields["removed"]) == (2, 0, 0, 1)
    prose = CorrectTask().parse(reply(corrected, stop="stop"), PROBLEM, RATIONALE)
    assert prose["corrected"] == corrected


@pytest.mark.parametrize(
    ("r", "message"),
    [
        (reply(data={"corrected": "   "}), "empty"),
        (reply(data={"corrected": 3}), '"corrected"'),
        (reply(data={"corrected": "A dog has"}, stop="length"), "cut off"),
    ],
)
def test_correct_parse_rejects_empty_or_truncated(r: Reply, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CorrectTask().parse(r, PROBLEM, RATIONALE)


def test_edit_summary_counts() -> None:
    original = ["The sky is blue.", "Grass is red.", "Water is wet.", "Fire is cold."]
    corrected = ["The sky is blue.", "Grass is green.", "Water is wet.", "Rocks are hard."]
    assert edit_summary(original, corrected) == {"kept": 2, "edited": 1, "added": 1, "removed": 1}
    assert edit_summary([], ["New."]) == {"kept": 0, "edited": 0, "added": 1, "removed": 0}
    assert edit_summary(["Same.  text."], ["Same. text."])["kept"] == 1  # whitespace-insensitive


def test_retry_request_states_the_error_after_the_bad_reply() -> None:
    task = ScoreTask()
    request = task.build(PROBLEM, RATIONALE)
    bad = reply(data=scores_obj([0.5]))
    retry = task.retry_request(request, bad, "expected 3 scores, got 1")
    assert [m["role"] for m in retry.messages] == ["user", "assistant", "user"]
    assert retry.messages[1]["content"][0]["text"] == bad.text
    assert "expected 3 scores, got 1" in retry.messages[2]["content"][0]["text"]
    assert retry.response_schema == request.response_schema and retry.system == request.system
    assert retry.cache_key("p", "m") != request.cache_key("p", "m")
    again = task.retry_request(retry, bad, "still wrong")  # retries never grow beyond one exchange
    assert len(again.messages) == 3


def test_failed_fields_fit_the_output_schemas() -> None:
    teacher_cols = {
        "status",
        "error",
        "raw_response",
        "teacher",
        "prompt_sha",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "attempts",
        "cached",
        "rationale_id",
        "problem_id",
    }
    score_failed = ScoreTask().failed_fields(PROBLEM, RATIONALE)
    assert set(score_failed) == set(SCORES) - teacher_cols and score_failed["scores"] == []
    assert set(CorrectTask().failed_fields(PROBLEM, RATIONALE)) == set(CORRECTIONS) - teacher_cols
    assert set(ScoreTask().row_ids(PROBLEM, RATIONALE)) == {"rationale_id", "problem_id"}
