"""`ares demo` end to end with reduced settings (one round, few problems, short rationales)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ares_data.store import Store
from ares_train.demo import gold_text

from .helpers import umbrella

SMALL = ["--rounds", "1", "--k", "1", "--limit", "6", "--warm-epochs", "1", "--max-new-tokens", "10",
         "--no-learning"]  # the controlled part's learning is tested in tests/test_learning.py


def test_demo_runs_end_to_end_and_resumes(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    r = umbrella(["demo", "--out", out, *SMALL, "--json"])
    assert r.exit_code == 0, r.output
    report = r.json()
    assert [x["round"] for x in report["rounds"]] == [0, 1]
    assert "learning" not in report and not (out / "learning").exists()
    # each round's row describes one policy: round 0 the warm-started one, round 1 the one after round 1
    run = json.loads((out / "run" / "run.json").read_text())
    first_score = next(s for s in run["stages"] if s["id"] == "r1s1-score")["metrics"]["mean_score"]
    assert report["rounds"][0]["reward"] == first_score and report["rounds"][0]["accuracy"] is not None
    assert [x["rollouts_round"] for x in report["rounds"]] == [1, 2]  # loop's numbering of the rollouts
    final = Store(report["paths"]["store"]).resolve(report["final_scores"])
    assert final.manifest["parents"][0]["ref"] == report["judge"]["a"]  # final rationales, scored
    assert report["rounds"][1]["reward"] is not None and report["rounds"][1]["accuracy"] is not None
    judge = report["judge"]
    assert judge["pairs"] == 6 and judge["judgments"] == 12 and judge["failed"] == 0
    assert abs(sum(judge["rates"].values()) - 1.0) < 1e-6
    paths = report["paths"]
    assert Path(paths["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(Path(paths["report"]).read_text())["judge"]["ref"] == judge["ref"]
    assert (Path(paths["final_model"]) / "ares-checkpoint.json").is_file()
    store = Store(paths["store"])
    assert {"sqa", "sqa-gold", "demo-rationales", "demo-scores", "demo-corrections", "demo-eval",
            "demo-judge"} <= set(store.names())
    gold = store.resolve("sqa-gold")
    assert gold.kind == "corrections" and gold.manifest["rows"] == 40
    assert json.loads((out / "run" / "run.json").read_text())["status"] == "done"

    # running it again reuses everything: same report, no new dataset versions
    before = {n: store.versions(n) for n in store.names()}
    again = umbrella(["demo", "--out", out, *SMALL])
    assert again.exit_code == 0, again.output
    assert "ARES demo" in again.stdout and "judge: final rationales" in again.stdout
    assert "rounds.png" in again.stdout
    assert {n: store.versions(n) for n in store.names()} == before
    # other settings in the same folder are refused with a hint that fits the demo
    other = umbrella(["demo", "--out", out, *SMALL[:2], "--k", "2", *SMALL[4:]])
    assert other.exit_code == 1 and "different settings" in other.stderr and "--out" in other.stderr


def test_gold_text_and_help() -> None:
    problem = {"metadata": json.dumps({"solution": "Like poles repel."}), "answer_index": 1,
               "reference_rationale": "unused"}
    assert gold_text(problem) == "Like poles repel. So the answer is (B)."
    help_ = umbrella(["demo", "--help"])
    assert help_.exit_code == 0 and "--learning" in help_.stdout and "--no-learning" in help_.stdout
    assert "--learning-rounds" in help_.stdout


def test_the_learning_part_reports_a_table_per_round_and_is_reused(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from ares_train import demo_controlled
    from ares_train.tasks.learning import LearningSettings

    def tiny(rounds: int) -> LearningSettings:  # the wiring, not the learning: a few problems, one SFT epoch
        return LearningSettings(problems=4, warm_problems=16, sft_epochs=1, rounds=rounds, k=1,
                                max_new_tokens=12, measure_kl=True)

    monkeypatch.setattr(demo_controlled, "controlled_settings", tiny)
    out = tmp_path / "demo"
    args = ["demo", "--out", out, *SMALL[:-1], "--learning-rounds", "1"]
    r = umbrella(args)
    assert r.exit_code == 0, r.output
    assert "Part 1 measures the machinery" in r.stdout and "Part 2 measures learning" in r.stdout
    assert "controlled task: mean sentence score" in r.stdout
    report = json.loads((out / "report" / "report.json").read_text())
    part = report["learning"]
    assert [x["round"] for x in part["rounds"]] == [0, 1] and part["variant"] == "ppo-sentence"
    for row in part["rounds"]:
        assert 0 <= row["mean_score"] <= 1 and 0 <= row["step_accuracy"] <= 1
        assert 0 <= row["answer_accuracy"] <= 1
    assert part["rounds"][0]["kl"] == 0.0 and part["rounds"][1]["kl"] != 0.0  # KL of the PPO'd policy
    assert Path(report["paths"]["learning_plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    store = Store(Path(part["folder"]) / "store")
    before = {n: store.versions(n) for n in store.names()}
    assert {"add", "add-warm", "ppo-rationales", "ppo-scores"} <= set(before)

    again = umbrella([*args, "--json"])  # reused: same table, nothing sampled or trained again
    assert again.exit_code == 0, again.output
    assert again.json()["learning"] == part
    assert {n: store.versions(n) for n in store.names()} == before


def test_a_teacher_without_its_key_fails_before_any_work(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    r = umbrella(["demo", "--out", tmp_path / "demo", "--teacher", "anthropic:claude-3-haiku-20240307"])
    assert r.exit_code == 1 and "ANTHROPIC_API_KEY is not set" in r.stderr
    assert not (tmp_path / "demo").exists()
