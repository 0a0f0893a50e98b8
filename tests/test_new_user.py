"""Issue 12: what a new user trips over (exit codes, lost fields, messages), each through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from datasets import load_from_disk

from tests.helpers import data, train


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_train_help_names_the_train_extra() -> None:
    res = train(["--help"])
    assert res.exit_code == 0
    assert "pip install 'ares-toolkit[train]'" in _flat(res.stdout)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _ingest_jsonl(f: Path, name: str, *maps: str) -> dict[str, Any]:
    args: list[Any] = ["ingest", "jsonl", f, "-o", name, "--json"]
    for m in maps:
        args += ["--map", m]
    res = data(args)
    assert res.exit_code == 0, res.output
    return res.json()


def test_ingest_jsonl_keeps_the_unmapped_fields_of_a_mapped_object(tmp_path: Path, store_dir: Path) -> None:
    f = _jsonl(tmp_path / "q.jsonl", [{
        "question": "Which is a mammal?", "choices": ["whale", "shark"], "answer": 0,
        "meta": {"grade": "grade4", "topic": "biology", "deep": {"a": "biology", "b": 2}}, "src": "mine",
    }])
    out = _ingest_jsonl(f, "mine", "grade=meta.grade", "subject=meta.deep.a")
    row = load_from_disk(out["path"])[0]
    assert row["grade"] == "grade4" and row["subject"] == "biology"
    assert json.loads(row["metadata"]) == {"meta": {"topic": "biology", "deep": {"b": 2}}, "src": "mine"}


def test_ingest_jsonl_accepts_a_lowercase_letter_answer(tmp_path: Path, store_dir: Path) -> None:
    f = _jsonl(tmp_path / "q.jsonl", [
        {"problem_id": "p1", "question": "2 + 2?", "choices": ["3", "4", "5"], "answer": "b"},
        {"problem_id": "p2", "question": "Pick the letter.", "choices": ["a", "b", "c"], "answer": "b"},
        {"problem_id": "p3", "question": "Pick the letter.", "choices": ["c", "b", "a"], "answer": "a"},
    ])
    rows = {r["problem_id"]: r for r in load_from_disk(_ingest_jsonl(f, "mine")["path"])}
    assert rows["p1"]["answer_index"] == 1 and rows["p1"]["answer"] == "4"
    assert rows["p2"]["answer_index"] == 1  # the text of a choice, which is also letter B
    assert rows["p3"]["answer_index"] == 2 and rows["p3"]["answer"] == "a"  # the choice "a", not letter A


def test_ingest_jsonl_letter_beyond_the_choices_is_an_error(tmp_path: Path, store_dir: Path) -> None:
    f = _jsonl(tmp_path / "q.jsonl", [{"question": "2 + 2?", "choices": ["3", "4"], "answer": "d"}])
    res = data(["ingest", "jsonl", f, "-o", "mine"])
    assert res.exit_code != 0 and "row 1" in res.stderr and "'answer'" in res.stderr, res.output


def _problems_and_rationales(tmp_path: Path, texts: list[str]) -> None:
    """`sqa` (one 2-choice problem, gold "0.75") and `rats` (one rationale per text), through the CLI."""
    f = _jsonl(tmp_path / "q.jsonl", [{"problem_id": "p1", "question": "What is 3/4 as a decimal?",
                                       "choices": ["0.75", "0.34"], "answer": "A",
                                       "reference_rationale": "Divide 3 by 4 to get 0.75."}])
    _ingest_jsonl(f, "sqa")
    r = _jsonl(tmp_path / "r.jsonl", [{"problem_id": "p1", "text": t, "sample_index": i}
                                      for i, t in enumerate(texts)])
    res = data(["import-rationales", r, "--problems", "sqa", "-o", "rats"])
    assert res.exit_code == 0, res.output


def test_reference_teacher_scores_an_unfinished_last_sentence_0_2(tmp_path: Path, store_dir: Path) -> None:
    _problems_and_rationales(tmp_path, ["Divide 3 by 4. So the sum is 0.75 and the answer is",
                                        "Divide 3 by 4. So the answer is 0.75."])
    res = data(["score", "rats", "--teacher", "reference", "--json"])
    assert res.exit_code == 0, res.output
    got = [r["scores"] for r in load_from_disk(res.json()["path"])]
    assert got[0][-1] == pytest.approx(0.2)  # unfinished, though it names the gold option
    assert got[1][-1] == pytest.approx(1.0)  # the same claim, finished
