"""Issue 12: what a new user trips over (exit codes, lost fields, messages), each through the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from datasets import load_from_disk

from ares_data.sample import SAMPLE_DIR
from ares_data.store import Store
from ares_data.testing.teacher_server import serve
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
    assert res.exit_code == 1, res.output
    assert "row 1, field 'answer': answer 'd' is not one of the choices nor a letter A-B" in res.stderr


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


def test_stats_plot_into_a_missing_folder_is_an_error(tmp_path: Path, store_dir: Path) -> None:
    _problems_and_rationales(tmp_path, ["Divide 3 by 4. So the answer is 0.75."])
    assert data(["score", "rats", "--teacher", "reference"]).exit_code == 0
    target = tmp_path / "no" / "such" / "p.png"
    res = data(["stats", "rats-scores", "--plot", target])
    assert res.exit_code == 2 and "does not exist" in res.stderr, res.output
    assert not (tmp_path / "no").exists()
    res = data(["stats", "rats-scores", "--plot", tmp_path / "p.png"])
    assert res.exit_code == 0 and (tmp_path / "p.png").stat().st_size > 0, res.output


def test_head_prints_stored_scores_as_written(tmp_path: Path, store_dir: Path) -> None:
    _problems_and_rationales(tmp_path, ["Divide 3 by 4. So the sum is 0.75 and the answer is"])
    assert data(["score", "rats", "--teacher", "reference"]).exit_code == 0
    res = data(["head", "rats-scores", "--json"])
    assert res.exit_code == 0, res.output
    assert res.json()[0]["scores"][-1] == 0.2 and "0.2000000" not in res.stdout
    plain = data(["head", "rats-scores"])
    assert "0.2" in plain.stdout and "0.2000000" not in plain.stdout


@pytest.fixture(scope="module")
def teacher_server() -> Iterator[Any]:
    with serve(retry_after=0.05) as srv:
        yield srv


@pytest.fixture
def fake(teacher_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    teacher_server.reset()
    teacher_server.set_faults(fault_rate=0.0, latency_ms=0.0)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-TESTKEYopenai5678xyz")
    return teacher_server


def _openai(fake: Any) -> list[str]:
    return ["--teacher", "openai:gpt-4o-mini", "--base-url", fake.openai_base_url, "--max-attempts", "1"]


@pytest.mark.parametrize("command", ["score", "correct"])
def test_a_run_where_every_row_failed_exits_non_zero(tmp_path: Path, store_dir: Path, fake: Any,
                                                       command: str) -> None:
    _problems_and_rationales(tmp_path, ["Divide 3 by 4. So the answer is 0.75.", "It is 0.34."])
    fake.set_faults(fault_rate=1.0, faults=["refusal"])  # every reply fails validation, twice
    res = data([command, "rats", *_openai(fake), "-o", "out", "--json"])
    assert res.exit_code == 3, res.output
    assert "none of the 2 rows is usable" in res.stderr and "out@v1 was published" in res.stderr
    assert res.json()["failed"] == 2  # the summary still comes first
    rows = load_from_disk(str(store_dir / "out" / "v1"))
    assert [r["status"] for r in rows] == ["failed", "failed"] and all(r["error"] for r in rows)
    res = data([command, "rats", *_openai(fake), "-o", "out", "--min-ok", "0"])  # accept anything
    assert res.exit_code == 0, res.output


def test_min_ok_makes_partial_failure_an_error(tmp_path: Path, store_dir: Path, fake: Any) -> None:
    _problems_and_rationales(tmp_path, ["Divide 3 by 4. So the answer is 0.75.", "It is 0.34."])
    fake.enqueue(["400"])  # the first request is refused: that row fails, the other is ok
    res = data(["score", "rats", *_openai(fake), "--concurrency", "1", "--min-ok", "0.9"])
    assert res.exit_code == 3, res.output
    assert "only 1 of 2 rows are usable (50.0% < --min-ok 90.0%)" in _flat(res.stderr)
    res = data(["score", "rats", *_openai(fake), "--min-ok", "0.5"])  # same build, reused: half is enough
    assert res.exit_code == 0, res.output
    assert data(["score", "rats", *_openai(fake), "--min-ok", "1.5"]).exit_code == 2
    assert "--min-ok" in data(["score", "--help"]).stdout


def test_judge_where_every_judgment_failed_exits_non_zero(tmp_path: Path, store_dir: Path, fake: Any) -> None:
    _problems_and_rationales(tmp_path, ["Divide 3 by 4. So the answer is 0.75."])
    r = _jsonl(tmp_path / "b.jsonl", [{"problem_id": "p1", "text": "It is 0.34.", "sample_index": 0}])
    assert data(["import-rationales", r, "--problems", "sqa", "-o", "rats-b"]).exit_code == 0
    fake.set_faults(fault_rate=1.0, faults=["refusal"])
    res = data(["judge", "rats", "rats-b", *_openai(fake), "-o", "cmp"])
    assert res.exit_code == 3 and "none of the 2 rows is usable" in res.stderr, res.output
    assert "--retry-failed" not in res.stderr  # judge has no such option
    fake.set_faults(fault_rate=0.0)  # new requests (--max-tokens), all answered
    res = data(["judge", "rats", "rats-b", *_openai(fake), "-o", "cmp", "--min-ok", "1",
                "--max-tokens", "300"])
    assert res.exit_code == 0, res.output


def test_ingest_says_why_there_is_nothing_to_publish(tmp_path: Path, store_dir: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    res = data(["ingest", "jsonl", empty, "-o", "x"])
    assert res.exit_code == 1 and "empty.jsonl: the input holds no records" in res.stderr, res.output
    for split in ("bogus", "minival"):  # the sample's pid_splits.json has train, val and test only
        res = data(["ingest", "scienceqa", SAMPLE_DIR, "--split", split, "-o", "x"])
        assert res.exit_code == 1, res.output
        assert f"no split {split} in the input; its splits: test, train, val" in _flat(res.stderr)
    bad = _jsonl(tmp_path / "bad.jsonl", [{"question": 3}, {"question": ""},
                                          {"question": "ok?", "split": "val"}])
    res = data(["ingest", "jsonl", bad, "-o", "x", "--skip-invalid", "--split", "train"])
    msg = _flat(res.stderr)
    assert res.exit_code == 1 and "every row that could be in split train was skipped as invalid" in msg
    assert "row 1, field 'question': expected a string" in msg and "row 2, field 'question': empty" in msg
    assert "x" not in Store(store_dir).names()


def test_ingest_scienceqa_of_a_jsonl_file_says_what_it_expects(tmp_path: Path, store_dir: Path) -> None:
    f = _jsonl(tmp_path / "some.jsonl", [{"question": "q?"}])
    res = data(["ingest", "scienceqa", f, "-o", "x"])
    msg = _flat(res.stderr)
    assert res.exit_code == 1 and "some.jsonl: not a ScienceQA folder or Parquet file" in msg, res.output
    assert "problems.json" in msg and "ares-data ingest jsonl" in msg and "cannot tell the split" not in msg
    res = data(["ingest", "scienceqa", SAMPLE_DIR / "problems.json", "-o", "sqa", "--json"])
    assert res.exit_code == 0 and res.json()["rows"] == 60, res.output  # its folder is read


def test_export_prm_says_it_leaves_the_problem_images_out(tmp_path: Path, store_dir: Path) -> None:
    from PIL import Image

    Image.new("RGB", (8, 8), "green").save(tmp_path / "leaf.png")
    f = _jsonl(tmp_path / "q.jsonl", [
        {"problem_id": "p1", "question": "Which gas?", "choices": ["O2", "CO2"], "answer": "B",
         "image": "leaf.png"},
        {"problem_id": "p2", "question": "3 + 4?", "choices": ["6", "7"], "answer": "b"},
    ])
    _ingest_jsonl(f, "sqa")
    r = _jsonl(tmp_path / "r.jsonl", [{"problem_id": p, "text": "So the answer is 7."} for p in ("p1", "p2")])
    assert data(["import-rationales", r, "--problems", "sqa", "-o", "rats"]).exit_code == 0
    assert data(["score", "rats", "--teacher", "reference"]).exit_code == 0
    res = data(["export", "prm", "rats-scores", "-o", "prm"])
    assert res.exit_code == 0, res.output
    note = "note: 1 rows have a problem image, not exported: TRL's PRMTrainer is text-only"
    assert note in _flat(res.stdout)
    prm = Store(store_dir).resolve("prm")
    left_out = prm.manifest["images_left_out"]
    assert left_out["rows"] == 1 and "text-only" in left_out["why"]
    assert "images" not in load_from_disk(str(prm.path)).column_names


def test_the_offline_example_runs_end_to_end(tmp_path: Path, store_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands at the top of examples/ares-offline.toml, as written there (smaller: --limit 2)."""
    import torch

    from ares_train.tiny import main as tiny_main

    torch.set_num_threads(1)  # a model this small runs fastest on one thread
    monkeypatch.chdir(tmp_path)  # the config names the model folder relative to where the user stands
    example = Path(__file__).resolve().parents[1] / "examples" / "ares-offline.toml"
    assert "python -m ares_train.tiny tiny-model" in example.read_text()
    assert data(["ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa"]).exit_code == 0
    tiny_main(["tiny-model"])
    res = train(["loop", "--config", example, "--run-dir", "runs/offline", "--limit", "2", "--rounds", "1",
                 "--json"])
    assert res.exit_code == 0, res.output
    out = res.json()
    stages = {s["id"]: s for s in out["stages"]}
    assert out["status"] == "done" and all(s["status"] == "done" for s in stages.values())
    assert [r["round"] for r in out["rounds"]] == [0, 1]  # --rounds 1 over the file's 2
    assert stages["r1s1-rollout"]["metrics"]["rows"] == 2 * 2  # --limit 2 problems x k = 2
    assert Path(out["final_model"]).name == "r1s2-sft"
    assert "--limit" in train(["loop", "--help"]).stdout


def _readme_blocks(marker: str) -> list[str]:
    """The fenced code blocks between `<!-- marker -->` and `<!-- /marker -->` in README.md."""
    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text.split(f"<!-- {marker} -->")[1].split(f"<!-- /{marker} -->")[0]
    return [b.split("\n", 1)[1] for b in section.split("```")[1::2]]


def test_the_readme_trl_snippet_trains_on_the_exports(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import shlex

    import torch

    from ares_data.sample import RATIONALES
    from ares_train.tiny import main as tiny_main

    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ARES_STORE", raising=False)  # the snippet uses the default ./ares-store
    shell, code = _readme_blocks("trl-snippet")
    values = {"$SAMPLE": str(SAMPLE_DIR), "$RATS": str(RATIONALES)}
    for line in shell.splitlines():
        if line.startswith(("SAMPLE=", "RATS=")):
            continue
        args = [values.get(a, a) for a in shlex.split(line)]
        if args[0] == "ares-data":
            res = data(args[1:])
            assert res.exit_code == 0, (line, res.output)
        else:
            assert args[:3] == ["python", "-m", "ares_train.tiny"], line
            tiny_main(args[3:])
    exec(compile(code, "README.md (trl-snippet)", "exec"), {})
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"sft", "prm", "dpo"}


def test_tiny_model_command_help(capsys: pytest.CaptureFixture[str]) -> None:
    from ares_train.tiny import main as tiny_main

    with pytest.raises(SystemExit) as exit_info:
        tiny_main(["--help"])
    out = _flat(capsys.readouterr().out)
    assert exit_info.value.code == 0 and "python -m ares_train.tiny" in out
    assert "random" in out and "hub id" in out and "--vlm" in out and "--tokenizer" in out


def test_batch_collect_where_every_row_failed_exits_non_zero(tmp_path: Path, store_dir: Path,
                                                            fake: Any) -> None:
    _problems_and_rationales(tmp_path, ["Divide 3 by 4. So the answer is 0.75.", "It is 0.34."])
    fake.set_faults(fault_rate=1.0, faults=["refusal"])
    sub = data(["score", "rats", *_openai(fake), "--batch", "--json"])
    assert sub.exit_code == 0, sub.output
    res = data(["batch", "collect", sub.json()["batch_id"], "-o", "bscores"])
    assert res.exit_code == 3 and "none of the 2 rows is usable" in res.stderr, res.output
    assert [r["status"] for r in Store(store_dir).load("bscores")] == ["failed", "failed"]


def test_ingest_a_pid_splits_subset_whose_rows_are_all_invalid(tmp_path: Path, store_dir: Path) -> None:
    import shutil

    root = Path(shutil.copytree(SAMPLE_DIR, tmp_path / "sqa"))
    splits = json.loads((root / "pid_splits.json").read_text())
    pid = splits["val"][0]
    (root / "pid_splits.json").write_text(json.dumps({**splits, "minival": [pid]}))
    problems = json.loads((root / "problems.json").read_text())
    problems[pid]["question"] = 3
    (root / "problems.json").write_text(json.dumps(problems))
    res = data(["ingest", "scienceqa", root, "--split", "minival", "--skip-invalid", "-o", "x"])
    msg = _flat(res.stderr)
    assert res.exit_code == 1, msg
    assert "every row that could be in split minival was skipped as invalid" in msg
    assert f"row {pid}, field 'question': expected str" in msg
