from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_from_disk

from ares_train.eval import context_type, grade_band, summarize

from .helpers import data, train


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ares_train.tiny import build_tiny_text_model

    return build_tiny_text_model(tmp_path_factory.mktemp("tiny") / "model", vocab_size=300)


def _ingest_sample() -> None:
    from ares_data.sample import SAMPLE_DIR

    r = data(["ingest", "scienceqa", str(SAMPLE_DIR), "-o", "sqa", "--json"])
    assert r.exit_code == 0, r.output


def test_eval_cli_writes_dataset_and_summary(store_dir: Path, tiny_model: Path, tmp_path: Path) -> None:
    _ingest_sample()
    summary_file = tmp_path / "summary.json"
    r = train(["eval", "--model", tiny_model, "--problems", "sqa", "--split", "test", "--max-new-tokens", "8",
               "--answer-tokens", "4", "-o", "ev", "--summary", summary_file, "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    summary = out["summary"]
    assert summary["overall"]["n"] == 10
    assert set(summary["subject"]) <= {"natural science", "social science", "language science"}
    assert sum(g["n"] for g in summary["grade"].values()) == 10
    assert "image" in summary["context"] and "none" in summary["context"]
    assert json.loads(summary_file.read_text()) == summary
    ds = load_from_disk(out["path"])
    assert ds.num_rows == 10 and set(ds["split"]) == {"test"}
    for row in ds:
        assert row["correct"] == (row["predicted_index"] is not None
                                  and row["predicted_index"] == row["answer_index"])
        # a rationale without a parseable answer triggered the answer step
        assert row["parse_rule"] == "statement" or row["answer_text"].startswith("So the answer is (")
    manifest = json.loads((Path(out["path"]) / "manifest.json").read_text())
    assert manifest["kind"] == "eval" and manifest["parents"][0]["ref"] == "sqa@v1"
    assert manifest["summary"] == summary and manifest["params"]["model_fingerprint"]
    # the same model on the same problems is an identical build: the version is reused
    again = train(["eval", "--model", tiny_model, "--problems", "sqa", "--max-new-tokens", "8",
                   "--answer-tokens", "4", "-o", "ev", "--json"])
    assert again.json()["ref"] == out["ref"]


def test_eval_errors(store_dir: Path, tiny_model: Path) -> None:
    _ingest_sample()
    r = train(["eval", "--model", tiny_model, "--problems", "sqa", "--split", "nope"])
    assert r.exit_code == 1 and "no problems in split 'nope'" in r.stderr
    r = train(["eval", "--model", "/does/not/exist", "--problems", "sqa"])
    assert r.exit_code != 0 and "Error:" in r.stderr
    assert train(["eval", "--help"]).exit_code == 0


def test_categories_and_summary() -> None:
    assert grade_band("grade3") == "1-6" and grade_band("grade11") == "7-12" and grade_band("") == ""
    assert context_type({"context": "hint", "image": object()}) == "image+text"
    assert context_type({"context": " ", "image": None}) == "none"
    rows = [
        {"subject": "natural science", "context_type": "image+text", "grade_band": "1-6", "correct": True,
         "predicted_index": 0},
        {"subject": "social science", "context_type": "none", "grade_band": "7-12", "correct": False,
         "predicted_index": None},
        {"subject": "natural science", "context_type": "text", "grade_band": "7-12", "correct": False,
         "predicted_index": 1},
    ]
    s = summarize(rows)
    assert s["overall"] == {"n": 3, "correct": 1, "accuracy": 0.3333}
    assert s["subject"]["natural science"] == {"n": 2, "correct": 1, "accuracy": 0.5}
    assert "language science" not in s["subject"]
    assert s["context"]["text"]["n"] == 2 and s["context"]["image"]["n"] == 1  # both counts in both
    assert s["grade"]["7-12"]["accuracy"] == 0.0 and s["unparsed"] == 1 and s["predicted"] == {"A": 1, "B": 1}
