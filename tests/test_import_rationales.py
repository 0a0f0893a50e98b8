"""`ares-data import-rationales` through the CLI: segmentation offsets, ids, parents, bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from datasets import load_from_disk

from ares_data.rationales import build_rationale, rationale_id
from ares_data.sample import RATIONALES, SAMPLE_DIR
from ares_data.store import Store

from .helpers import data


@pytest.fixture
def problems(store_dir: Path) -> str:
    r = data(["ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa", "--json"])
    assert r.exit_code == 0, r.output
    return r.json()["ref"]


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_import_sample_rationales(problems: str, store_dir: Path) -> None:
    r = data(["import-rationales", RATIONALES, "--problems", problems, "-o", "rats", "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    source = [json.loads(line) for line in RATIONALES.read_text().splitlines()]
    assert out["rows"] == len(source) and out["kind"] == "rationales"
    assert [p["ref"] for p in out["parents"]] == ["sqa@v1"] and out["parents"][0]["kind"] == "problems"
    ds = load_from_disk(out["path"])
    n_sentences = 0
    for src, row in zip(source, ds, strict=True):
        assert row["text"] == src["text"] and row["problem_id"] == src["problem_id"]
        assert row["sample_index"] == src["sample_index"] and row["generator"] == "sample-llava-7b"
        assert row["rationale_id"] == rationale_id(src["problem_id"], 0, src["sample_index"], src["text"])
        assert row["token_ids"] == [] and row["prompt"] == "" and row["dropped_sentences"] == []
        assert row["sentences"], row["text"]
        for s in row["sentences"]:
            assert row["text"][s["start"] : s["end"]] == s["text"]
        n_sentences += len(row["sentences"])
    assert out["counts"]["sentences"] == n_sentences
    store = Store(store_dir)
    assert store.parent_chain(store.resolve("rats"), "problems").ref == "sqa@v1"
    again = data(["import-rationales", RATIONALES, "--problems", problems, "-o", "rats", "--json"])
    assert again.json()["reused"] and store.versions("rats") == [1]


def test_segmentation_offsets_and_drop_repeats(problems: str, tmp_path: Path, store_dir: Path) -> None:
    text = "Oil floats on water. Oil is less dense.  Oil floats on water. So the answer is oil"
    f = _write(
        tmp_path / "r.jsonl", [{"problem_id": "12", "text": text}, {"problem_id": "12", "text": "Oil."}]
    )
    r = data(
        [
            "import-rationales",
            f,
            "--problems",
            problems,
            "-o",
            "rats",
            "--drop-repeats",
            "--json",
            "--generator",
            "my-model",
            "--round",
            "2",
        ]
    )
    assert r.exit_code == 0, r.output
    rows = list(load_from_disk(r.json()["path"]))
    first = rows[0]
    assert [s["text"] for s in first["sentences"]] == [
        "Oil floats on water.",
        "Oil is less dense.",
        "So the answer is oil",
    ]
    assert first["dropped_sentences"] == [{"text": "Oil floats on water.", "start": 41, "end": 61}]
    assert text[41:61] == "Oil floats on water." and first["sentences"][2]["start"] == 62
    assert first["text"] == text  # the text itself is kept whole
    assert (first["round"], first["generator"]) == (2, "my-model")
    assert [row["sample_index"] for row in rows] == [0, 1]  # assigned in file order when absent
    assert r.json()["counts"]["dropped_sentences"] == 1 and r.json()["params"]["drop_repeats"] is True


def test_build_rationale_is_the_shared_row_builder() -> None:
    row = build_rationale(
        "7",
        "W = m g.It is 98 N.",
        sample_index=3,
        round=1,
        generator="g",
        generation_params={"temperature": 0.7},
        token_ids=[5, 6],
    )
    assert row["rationale_id"] == rationale_id("7", 1, 3, "W = m g.It is 98 N.")
    assert rationale_id("7", 1, 3, "x") != rationale_id("7", 1, 4, "x")
    assert json.loads(row["generation_params"]) == {"temperature": 0.7} and row["token_ids"] == [5, 6]
    for s in row["sentences"]:
        assert row["text"][s["start"] : s["end"]] == s["text"]


@pytest.mark.parametrize(
    "lines,parts",
    [
        (
            [{"problem_id": "1", "text": "Fine."}, {"problem_id": "no-such-id", "text": "Hm."}],
            ["row 2", "field 'problem_id'", "unknown problem_id 'no-such-id'"],
        ),
        (
            [{"problem_id": "1", "text": "Fine."}, '{"problem_id": "1", "text": '],
            ["row 2", "malformed JSON line"],
        ),
        ([{"text": "No id."}], ["row 1", "field 'problem_id'", "missing field"]),
        ([{"problem_id": "1"}], ["row 1", "field 'text'"]),
        ([{"problem_id": "1", "text": "A.", "sample_index": "zero"}], ["row 1", "field 'sample_index'"]),
        (
            [
                {"problem_id": "1", "text": "A.", "sample_index": 0},
                {"problem_id": "1", "text": "B.", "sample_index": 0},
            ],
            ["row 2", "field 'sample_index'", "duplicate sample_index 0"],
        ),
    ],
)
def test_bad_rationale_lines(
    problems: str, tmp_path: Path, store_dir: Path, lines: list[Any], parts: list[str]
) -> None:
    f = _write(tmp_path / "bad.jsonl", lines)
    r = data(["import-rationales", f, "--problems", problems, "-o", "rats"])
    assert r.exit_code == 1, r.output
    for part in ["bad.jsonl", *parts]:
        assert part in r.stderr, (part, r.stderr)
    assert Store(store_dir).versions("rats") == []


def test_skip_invalid_and_missing_inputs(problems: str, tmp_path: Path, store_dir: Path) -> None:
    f = _write(
        tmp_path / "r.jsonl",
        [{"problem_id": "1", "text": "Like poles repel."}, {"problem_id": "zzz", "text": "Hm."}, "not json"],
    )
    r = data(["import-rationales", f, "--problems", problems, "-o", "rats", "--skip-invalid", "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    assert out["rows"] == 1 and out["counts"]["skipped"] == 2
    assert [(s["row"], s["field"]) for s in out["skipped"]] == [(2, "problem_id"), (3, None)]
    missing = data(["import-rationales", tmp_path / "nope.jsonl", "--problems", problems, "-o", "rats2"])
    assert missing.exit_code == 1 and "nope.jsonl" in missing.stderr and "file not found" in missing.stderr
    no_problems = data(["import-rationales", f, "--problems", "nosuch", "-o", "rats3"])
    assert no_problems.exit_code == 1 and "no dataset named 'nosuch'" in no_problems.stderr
    wrong_kind = data(["import-rationales", f, "--problems", "rats", "-o", "rats4"])
    assert wrong_kind.exit_code == 2 and "rationales dataset" in wrong_kind.stderr
