"""Sentence segmentation: exact offsets, the gold set, tricky cases, drop_repeats, `ares-data segment`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ares_data.segment import Sentence, drop_repeats, segment
from tests.helpers import data

GOLD = Path(__file__).resolve().parents[1] / "bench" / "data" / "segment_gold.jsonl"
GOLD_RECORDS = [json.loads(line) for line in GOLD.read_text(encoding="utf-8").splitlines() if line.strip()]


def assert_offsets(text: str, sents: list[Sentence]) -> None:
    """The contract: exact slices, in order, non-overlapping, trimmed, every non-space char covered once."""
    last = 0
    for s in sents:
        assert text[s.start:s.end] == s.text
        assert s.start >= last and s.end > s.start
        assert s.text == s.text.strip() and s.text
        assert not text[last:s.start].strip(), f"non-space text dropped before {s!r}"
        last = s.end
    assert not text[last:].strip(), "non-space text dropped at the end"


def test_gold_set_is_big_enough_and_well_formed() -> None:
    assert len(GOLD_RECORDS) >= 40
    assert {"tune", "heldout-1", "heldout-2", "heldout-3"} <= {r["split"] for r in GOLD_RECORDS}
    for rec in GOLD_RECORDS:  # gold sentences are trimmed slices, in order, covering all non-space text
        text = rec["text"]
        pos = 0
        for sent in rec["sentences"]:
            start = text.index(sent, pos)
            assert sent == sent.strip() and not text[pos:start].strip(), (rec["id"], sent)
            pos = start + len(sent)
        assert not text[pos:].strip(), rec["id"]


@pytest.mark.parametrize("rec", GOLD_RECORDS, ids=[r["id"] for r in GOLD_RECORDS])
def test_gold_offsets_hold(rec: dict) -> None:
    assert_offsets(rec["text"], segment(rec["text"]))


def test_gold_sentences_match() -> None:
    wrong = [(r["id"], [s.text for s in segment(r["text"])]) for r in GOLD_RECORDS
             if [s.text for s in segment(r["text"])] != r["sentences"]]
    assert not wrong, wrong


TOKENS = ["Dr.", "e.g.", "U.S.", "etc.", "9.8", "3:1", "(A)", "Solution:", "...", "\u2026", "layers.The",
          "J.", "K.", "1.", "2)", "\n", "\n\n", " ", "  ", "\t", "\r\n", "\u00a0", "\u2028", "?", "!", ".",
          "\"", "\u201d", ")", "The", "answer", "is", "B.", "\u6c34\u3002", "\u00e9t\u00e9", "\U0001f600",
          "m/s.", "- ", "* ", "**Answer:**", "Step", "x", "=", "a"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40).map("".join))
def test_offsets_hold_for_generated_rationales(text: str) -> None:
    assert_offsets(text, segment(text))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_offsets_hold_for_any_unicode(text: str) -> None:
    assert_offsets(text, segment(text))


@pytest.mark.parametrize("text", ["", " ", "\n\n\t ", "\u00a0\u2028"])
def test_empty_and_whitespace_give_no_sentences(text: str) -> None:
    assert segment(text) == []


def test_very_long_inputs() -> None:
    many = "The block slides 2.5 m. It stops. " * 5000
    sents = segment(many)
    assert len(sents) == 10000
    assert_offsets(many, sents)
    one = "a e.g. b Step 1. x " * 20000  # many non-boundary candidates inside one huge sentence
    assert_offsets(one, segment(one))


def split(text: str) -> list[str]:
    return [s.text for s in segment(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Rocks form in layers.The oldest are at the bottom.",
         ["Rocks form in layers.", "The oldest are at the bottom."]),
        ("Solution: The mass is 1.898 x 10^27 kg. The ratio is 3:1.",
         ["Solution: The mass is 1.898 x 10^27 kg.", "The ratio is 3:1."]),
        ("Solution:\nWater is H2O. The answer is B.", ["Solution:\nWater is H2O.", "The answer is B."]),
        ("Dr. Lee used approx. 9.8 m/s^2, e.g. on Earth. Fig. 3 shows it.",
         ["Dr. Lee used approx. 9.8 m/s^2, e.g. on Earth.", "Fig. 3 shows it."]),
        ("Option (A) is wrong. Option (B) is right.", ["Option (A) is wrong.", "Option (B) is right."]),
        ("She said, \"Stop.\" Then she left.", ["She said, \"Stop.\"", "Then she left."]),
        ("Let me think... The answer is B. Because the force is",
         ["Let me think...", "The answer is B.", "Because the force is"]),
        ("It was written by J. K. Rowling. The answer is A.",
         ["It was written by J. K. Rowling.", "The answer is A."]),
        ("The answer is B. Copper conducts.", ["The answer is B.", "Copper conducts."]),
        ("1. Heat it. 2. Stir it.", ["1. Heat it.", "2. Stir it."]),
        ("- (A) sand\n- (B) milk", ["- (A) sand", "- (B) milk"]),
        ("It is in the U.S. The capital is far. The U.S. Army came.",
         ["It is in the U.S.", "The capital is far.", "The U.S. Army came."]),
        ("Is it alive? Yes! It grows.", ["Is it alive?", "Yes!", "It grows."]),
        ("So the answer is A.The cat sat.", ["So the answer is A.", "The cat sat."]),
        ("Count 1, 2, ... 10 now. Wait... Yes.", ["Count 1, 2, ... 10 now.", "Wait...", "Yes."]),
        ("So 5! = 120 is big! Wow.", ["So 5! = 120 is big!", "Wow."]),
        ("Eat vitamin C. Without it you get sick.", ["Eat vitamin C.", "Without it you get sick."]),
        ("The force is\nequal to ma. So F = 6 N.", ["The force is\nequal to ma.", "So F = 6 N."]),
        ("Known:\nm = 4 kg\na = 2 m/s^2", ["Known:\nm = 4 kg", "a = 2 m/s^2"]),
        ("Ask the\u00a0Dr. Smith. Ok.", ["Ask the\u00a0Dr. Smith.", "Ok."]),
        ("\u6c34\u7ed3\u51b0\u3002\u6240\u4ee5\u662fA\u3002",
         ["\u6c34\u7ed3\u51b0\u3002", "\u6240\u4ee5\u662fA\u3002"]),
    ],
)
def test_tricky_cases(text: str, expected: list[str]) -> None:
    assert split(text) == expected


def test_repeated_sentences_are_kept_by_segment() -> None:
    text = "The answer is A. The answer is A."
    assert split(text) == ["The answer is A.", "The answer is A."]


def test_drop_repeats_records_what_was_dropped() -> None:
    text = "Heat flows. The cup cools.  Heat   FLOWS. The answer is B. The cup cools."
    kept, dropped = drop_repeats(segment(text))
    assert [s.text for s in kept] == ["Heat flows.", "The cup cools.", "The answer is B."]
    assert [s.text for s in dropped] == ["Heat   FLOWS.", "The cup cools."]
    for s in kept + dropped:
        assert text[s.start:s.end] == s.text
    assert drop_repeats([]) == ([], [])


def test_sentence_as_dict() -> None:
    assert Sentence("Hi.", 2, 5).as_dict() == {"text": "Hi.", "start": 2, "end": 5}


# ---- the `ares-data segment` command ----

def _records(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines()]


def test_segment_command_reads_jsonl_file(tmp_path: Path) -> None:
    src = tmp_path / "in.jsonl"
    texts = [r["text"] for r in GOLD_RECORDS[:5]]
    lines = [json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(texts)]
    src.write_text("".join(lines), encoding="utf-8")
    res = data(["segment", str(src)])
    assert res.exit_code == 0, res.output
    out = _records(res.stdout)
    assert [o["text"] for o in out] == texts
    for o in out:
        assert o["sentences"] == [s.as_dict() for s in segment(o["text"])]
        for s in o["sentences"]:
            assert o["text"][s["start"]:s["end"]] == s["text"]


def test_segment_command_plain_lines_from_stdin() -> None:
    res = data(["segment", "-"], stdin="Dr. Smith came. He left.\n\nYes! No.\n")
    assert res.exit_code == 0, res.output
    out = _records(res.stdout)
    got = [[s["text"] for s in o["sentences"]] for o in out]
    assert got == [["Dr. Smith came.", "He left."], ["Yes!", "No."]]


def test_segment_command_default_is_stdin_and_field_option() -> None:
    res = data(["segment", "--field", "rationale"], stdin=json.dumps({"rationale": "A. B is it."}) + "\n")
    assert res.exit_code == 0, res.output
    assert _records(res.stdout)[0]["text"] == "A. B is it."


def test_segment_command_drop_repeats() -> None:
    res = data(["segment", "--drop-repeats"], stdin="It is A. It is A. Done.\n")
    assert res.exit_code == 0, res.output
    out = _records(res.stdout)[0]
    assert [s["text"] for s in out["sentences"]] == ["It is A.", "Done."]
    assert out["dropped"] == [{"text": "It is A.", "start": 9, "end": 17}]


def test_segment_command_malformed_json_names_the_line(tmp_path: Path) -> None:
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine."}\n{"text": "broken\n', encoding="utf-8")
    res = data(["segment", str(src)])
    assert res.exit_code == 1
    assert "Error:" in res.stderr and "bad.jsonl" in res.stderr and "row 2" in res.stderr
    assert "Traceback" not in res.stderr


def test_segment_command_missing_field_and_missing_file(tmp_path: Path) -> None:
    res = data(["segment"], stdin='{"body": "x"}\n')
    assert res.exit_code == 1 and "field 'text'" in res.stderr and "row 1" in res.stderr
    res = data(["segment", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 1 and "nope.jsonl" in res.stderr and "not found" in res.stderr


def test_segment_command_rejects_non_utf8(tmp_path: Path) -> None:
    src = tmp_path / "latin1.txt"
    src.write_bytes(b"ok line.\n" + "caf\u00e9.\n".encode("latin-1"))
    res = data(["segment", str(src)])
    assert res.exit_code == 1 and "UTF-8" in res.stderr
