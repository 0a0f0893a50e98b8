"""`ares-data import-scores` through the CLI: the scores schema, missing rationales, bad lines, and PPO,
stats and export prm on imported scores."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from ares_data.sample import RATIONALES, SAMPLE_DIR
from ares_data.schema import validate_row
from ares_data.store import Store

from .helpers import data, train
from .test_hub import REPO, hub  # noqa: F401 - the fake Hub fixture


@pytest.fixture
def rats(store_dir: Path) -> list[dict[str, Any]]:
    """The shipped sample's problems + rationales in the store; returns the rationales' rows."""
    for args in (["ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa"],
                 ["import-rationales", RATIONALES, "--problems", "sqa", "-o", "rats"]):
        r = data(args)
        assert r.exit_code == 0, r.output
    return list(Store(store_dir).resolve("rats").load().remove_columns(["token_ids"]))


def _write(path: Path, lines: list[Any]) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def _line(row: dict[str, Any], k: int = 0) -> dict[str, Any]:
    """A valid line for `row`: scores vary with the sentence position and k."""
    return {"rationale_id": row["rationale_id"],
            "scores": [round(((i + k) % 5) / 4, 2) for i in range(len(row["sentences"]))]}


def test_help() -> None:
    r = data(["import-scores", "--help"])
    assert r.exit_code == 0
    for word in ("--rationales", "--scorer", "--skip-invalid", "no score imported"):
        assert word in r.stdout


def test_import_is_an_ordinary_scores_version(rats: list[dict[str, Any]], store_dir: Path,
                                              tmp_path: Path) -> None:
    scored = rats[:-2]
    f = _write(tmp_path / "checker.jsonl", [_line(r, k) for k, r in enumerate(reversed(scored))])
    r = data(["import-scores", f, "--rationales", "rats", "-o", "checked", "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    assert out["kind"] == "scores" and out["rows"] == len(rats)
    assert [p["ref"] for p in out["parents"]] == ["rats@v1"] and out["parents"][0]["kind"] == "rationales"
    n_sent = sum(len(x["sentences"]) for x in scored)
    assert out["counts"] == {"ok": len(scored), "failed": 2, "missing": 2, "skipped": 0, "sentences": n_sent}
    assert out["params"]["scorer"] == "import:checker.jsonl"
    version = Store(store_dir).resolve("checked")
    assert version.manifest["teacher"] == "import:checker.jsonl"
    rows = list(version.load())
    assert [x["rationale_id"] for x in rows] == [x["rationale_id"] for x in rats]  # the rationales' order
    expected = {x["rationale_id"]: _line(x, k)["scores"] for k, x in enumerate(reversed(scored))}
    for rat, row in zip(rats, rows, strict=True):
        validate_row("scores", row)
        assert row["problem_id"] == rat["problem_id"]
        assert row["sentences"] == [s["text"] for s in rat["sentences"]]
        assert row["teacher"] == "import:checker.jsonl"
        if rat["rationale_id"] in expected:
            assert row["status"] == "ok" and row["error"] == ""
            assert row["scores"] == pytest.approx(expected[rat["rationale_id"]])
        else:
            assert (row["status"], row["error"], row["scores"]) == ("failed", "no score imported", [])
    # the same Arrow schema as the scores a teacher writes
    r = data(["score", "rats", "--teacher", "reference", "-o", "taught"])
    assert r.exit_code == 0, r.output
    assert version.load().features == Store(store_dir).resolve("taught").load().features
    # stats and the PRM export take it
    r = data(["stats", "checked", "--json"])
    assert r.exit_code == 0, r.output
    assert r.json()["failed"] == 2 and r.json()["sentences"] == n_sent
    r = data(["export", "prm", "checked", "-o", "checked-prm", "--json"])
    assert r.exit_code == 0, r.output
    assert r.json()["rows"] == len(scored)


def test_scorer_option_and_reuse(rats: list[dict[str, Any]], tmp_path: Path) -> None:
    f = _write(tmp_path / "s.jsonl", [_line(r) for r in rats])
    args = ["import-scores", f, "--rationales", "rats@v1", "-o", "v", "--scorer", "checker:arith-v2",
            "--json"]
    first = data(args)
    assert first.exit_code == 0, first.output
    assert first.json()["params"]["scorer"] == "checker:arith-v2" and first.json()["counts"]["missing"] == 0
    again = data(args)
    assert again.json()["ref"] == "v@v1" and again.json()["reused"]
    r = data(["import-scores", f, "--rationales", "rats", "-o", "v", "--scorer", " "])
    assert r.exit_code == 1 and "scorer" in r.stderr


BAD_LINES = [
    (lambda r: {**_line(r), "scores": _line(r)["scores"][:-1]}, "scores", "scores, but rationale"),
    (lambda r: {**_line(r), "rationale_id": "nope"}, "rationale_id", "unknown rationale_id 'nope'"),
    (lambda r: {"scores": _line(r)["scores"]}, "rationale_id", "missing field"),
    (lambda r: {**_line(r), "rationale_id": 7}, "rationale_id", "expected a string"),
    (lambda r: {"rationale_id": r["rationale_id"]}, "scores", "missing field"),
    (lambda r: {**_line(r), "scores": "0.5"}, "scores", "expected a list"),
    (lambda r: {**_line(r), "scores": ["high"] + _line(r)["scores"][1:]}, "scores[0]", "expected a number"),
    (lambda r: {**_line(r), "scores": _line(r)["scores"][:-1] + [True]}, "scores[", "expected a number"),
    (lambda r: {**_line(r), "scores": _line(r)["scores"][:-1] + [1.5]}, "scores[", "outside [0, 1]"),
    (lambda r: {**_line(r), "scores": [-0.1] + _line(r)["scores"][1:]}, "scores[0]", "outside [0, 1]"),
    (lambda r: {**_line(r), "scores": [math.nan] + _line(r)["scores"][1:]}, "scores[0]", "outside [0, 1]"),
    (lambda r: {**_line(r), "problem_id": "other"}, "problem_id", "belongs to problem"),
    (lambda r: {**_line(r), "sentences": ["A different segmentation."]}, "sentences", "differ from"),
]


@pytest.mark.parametrize("make,field,message", BAD_LINES)
def test_bad_lines_name_file_line_and_field(rats: list[dict[str, Any]], store_dir: Path, tmp_path: Path,
                                            make: Any, field: str, message: str) -> None:
    f = _write(tmp_path / "bad.jsonl", [_line(rats[0]), make(rats[1])])
    r = data(["import-scores", f, "--rationales", "rats", "-o", "bad"])
    assert r.exit_code == 1
    assert r.stderr.startswith(f"Error: {f}, row 2, field '{field}") and message in r.stderr, r.stderr
    assert Store(store_dir).versions("bad") == []  # nothing half-written is published


def test_duplicates_unknown_fields_and_malformed_lines(rats: list[dict[str, Any]], tmp_path: Path) -> None:
    cases = [
        ([_line(rats[0]), _line(rats[1]), _line(rats[0], 1)], "row 3, field 'rationale_id'",
         "first at line 1"),
        ([{**_line(rats[0]), "score": 1}], "row 1: unknown field(s) ['score']", "rationale_id, scores"),
        ([_line(rats[0]), "{not json"], "row 2: malformed JSON line", ""),
        ([_line(rats[0]), "[1, 2]"], "row 2: expected a JSON object", ""),
        ([], "no scores to import", ""),
    ]
    for lines, where, extra in cases:
        f = _write(tmp_path / "x.jsonl", lines)
        r = data(["import-scores", f, "--rationales", "rats", "-o", "x"])
        assert r.exit_code == 1 and where in r.stderr and extra in r.stderr, r.stderr
    r = data(["import-scores", tmp_path / "absent.jsonl", "--rationales", "rats", "-o", "x"])
    assert r.exit_code == 1 and "absent.jsonl: file not found" in r.stderr
    r = data(["import-scores", tmp_path / "x.jsonl", "--rationales", "sqa", "-o", "x"])
    assert r.exit_code == 2 and "a problems dataset" in r.stderr


def test_skip_invalid(rats: list[dict[str, Any]], store_dir: Path, tmp_path: Path) -> None:
    lines = [_line(r) for r in rats[3:]]
    lines += [{**_line(rats[0]), "scores": [2.0] * len(rats[0]["sentences"])},  # known id, bad value
              {**_line(rats[1]), "rationale_id": "nope"}, "oops",
              _line(rats[2]), {**_line(rats[2]), "scores": []}]  # a duplicate of a good line
    f = _write(tmp_path / "mixed.jsonl", lines)
    r = data(["import-scores", f, "--rationales", "rats", "-o", "mixed", "--skip-invalid", "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    assert out["counts"]["skipped"] == 4 and out["counts"]["missing"] == 1
    assert out["counts"]["ok"] == len(rats) - 2 and out["counts"]["failed"] == 2
    assert [(s["row"], s["rationale_id"]) for s in out["skipped"]] == [
        (len(rats) - 2, rats[0]["rationale_id"]), (len(rats) - 1, None), (len(rats), None),
        (len(rats) + 2, rats[2]["rationale_id"])]
    rows = {x["rationale_id"]: x for x in Store(store_dir).resolve("mixed").load()}
    assert rows[rats[0]["rationale_id"]]["error"].startswith(f"score line {len(rats) - 2} was skipped: ")
    assert "outside [0, 1]" in rows[rats[0]["rationale_id"]]["error"]
    assert rows[rats[1]["rationale_id"]]["error"] == "no score imported"
    assert rows[rats[2]["rationale_id"]]["status"] == "ok"  # its first, valid line counts


def test_card_push_and_pull(rats: list[dict[str, Any]], hub: Any, store_dir: Path,  # noqa: F811
                            tmp_path: Path) -> None:
    f = _write(tmp_path / "checker.jsonl", [_line(r) for r in rats[1:]])
    assert data(["import-scores", f, "--rationales", "rats", "-o", "checked"]).exit_code == 0
    card = data(["card", "checked"])
    assert card.exit_code == 0 and "provider `import`, model `checker.jsonl`" in card.stdout
    r = data(["push", "checked", "--repo", REPO, "--with-parents", "--json"])
    assert r.exit_code == 0, r.output
    r = data(["pull", f"{REPO}@v1", "-o", "pulled", "--store", tmp_path / "other", "--json"])
    assert r.exit_code == 0, r.output
    pulled = Store(tmp_path / "other").resolve("pulled")
    assert pulled.manifest["teacher"] == "import:checker.jsonl"
    assert pulled.manifest["parents"][0]["ref"] == "rats@v1"
    rows = list(pulled.load())
    assert rows == list(Store(store_dir).resolve("checked").load())
    assert [x["scores"] for x in rows] == [[]] + [_line(r)["scores"] for r in rats[1:]]  # exact in float32


def test_rollout_import_scores_ppo(store_dir: Path, tmp_path: Path) -> None:
    """A verifier's scores of real rollouts train PPO: the imported scores are the sentence rewards."""
    pytest.importorskip("torch")
    from ares_train.tiny import build_tiny_text_model

    model = build_tiny_text_model(tmp_path / "model")
    assert data(["ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa"]).exit_code == 0
    r = train(["rollout", "--model", model, "--problems", "sqa", "-o", "ro", "--k", 2, "--limit", 2,
               "--max-new-tokens", 12, "--seed", 1])
    assert r.exit_code == 0, r.output
    rows = [x for x in Store(store_dir).resolve("ro").load()]
    assert len(rows) == 4 and all(x["sentences"] for x in rows)
    rewards = {}
    for value in (1.0, 0.0):  # every sentence right, every sentence wrong; the first rationale has no line
        f = _write(tmp_path / f"v{value}.jsonl", [{"rationale_id": x["rationale_id"],
                                                  "scores": [value] * len(x["sentences"])} for x in rows[1:]])
        name = f"verified-{int(value)}"
        r = data(["import-scores", f, "--rationales", "ro", "-o", name, "--scorer", "checker:test"])
        assert r.exit_code == 0, r.output
        res = train(["ppo", "--model", model, "--rationales", "ro", "--scores", name, "-o", tmp_path / name,
                     "--ppo-epochs", 1, "--mini-batch-size", 3, "--lr", 1e-4, "--json"])
        assert res.exit_code == 0, res.output
        counts = res.json()["counts"]
        assert counts["used"] == 3 and counts["scores_failed"] == 1 and "no_score" not in counts
        log = [json.loads(x) for x in (tmp_path / name / "ppo_log.jsonl").read_text().splitlines()]
        rewards[value] = log[0]["reward/sentence"]
        manifest = json.loads((tmp_path / name / "ares-checkpoint.json").read_text())
        assert [d["ref"] for d in manifest["datasets"]] == ["ro@v1", f"{name}@v1"]
    n_sent = [len(x["sentences"]) for x in rows[1:]]
    assert rewards[1.0] == pytest.approx(0.5 * sum(n_sent) / 3, rel=1e-4)  # (score - neutral 0.5) summed
    assert rewards[0.0] == pytest.approx(-rewards[1.0], rel=1e-4)
