"""The real dataset layouts: ScienceQA's official pid_splits.json (train/val/test plus the trainval,
minitrain, minival and minitest subsets the official and MM-CoT code select with), the HF parquet files
(hash-suffixed names, `validation`, int8 answers, image None), and A-OKVQA (test without answers,
test_w_ans)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from datasets import load_from_disk
from PIL import Image

from ares_data.sample import SAMPLE_DIR

from .helpers import data


def _ok(args: list) -> dict:
    r = data([*map(str, args), "--json"])
    assert r.exit_code == 0, r.output
    return r.json()


def _official_copy(tmp_path: Path) -> tuple[Path, dict[str, list[str]]]:
    root = Path(shutil.copytree(SAMPLE_DIR, tmp_path / "scienceqa"))
    splits = json.loads((root / "pid_splits.json").read_text())
    splits["trainval"] = splits["train"] + splits["val"]
    splits["minitrain"], splits["minival"], splits["minitest"] = (
        splits["train"][:5], splits["val"][:3], splits["test"][:2])
    (root / "pid_splits.json").write_text(json.dumps(splits))
    return root, splits


def test_scienceqa_subset_splits_select_their_problems(tmp_path: Path, store_dir: Path) -> None:
    root, splits = _official_copy(tmp_path)
    full = load_from_disk(_ok(["ingest", "scienceqa", root, "-o", "all"])["path"])
    assert len(full) == 60 and set(full["split"]) == {"train", "val", "test"}  # a row keeps its own split
    mini = _ok(["ingest", "scienceqa", root, "-o", "minival", "--split", "minival"])
    ds = load_from_disk(mini["path"])
    assert sorted(ds["problem_id"]) == sorted(splits["minival"]) and set(ds["split"]) == {"val"}
    both = _ok(["ingest", "scienceqa", root, "-o", "mix", "--split", "minitrain", "--split", "test"])
    assert both["rows"] == 5 + 10


def test_scienceqa_null_image_and_empty_hint(tmp_path: Path, store_dir: Path) -> None:
    root, _ = _official_copy(tmp_path)
    problems = json.loads((root / "problems.json").read_text())
    pid = next(p for p, r in problems.items() if r["image"])
    problems[pid].update(image=None, hint="", lecture="", solution="")
    (root / "problems.json").write_text(json.dumps(problems))
    ds = load_from_disk(_ok(["ingest", "scienceqa", root, "-o", "s"])["path"])
    row = ds.filter(lambda r: r["problem_id"] == pid)[0]
    assert row["image"] is None and row["context"] == "" and row["reference_rationale"] == ""


def test_hf_parquet_names_with_hash_suffix_and_missing_images(tmp_path: Path, store_dir: Path) -> None:
    from datasets import Dataset, Features, Sequence, Value
    from datasets import Image as HFImage

    feats = Features({"image": HFImage(), "question": Value("string"), "choices": Sequence(Value("string")),
                      "answer": Value("int8"), "hint": Value("string"), "lecture": Value("string"),
                      "solution": Value("string"), "subject": Value("string"), "grade": Value("string")})
    png = tmp_path / "x.png"
    Image.new("RGB", (5, 5), "blue").save(png)
    rows = [{"image": {"bytes": png.read_bytes(), "path": None}, "question": "Q1?", "choices": ["a", "b"],
             "answer": 1, "hint": "", "lecture": "", "solution": "b.", "subject": "s", "grade": "grade1"},
            {"image": None, "question": "Q2?", "choices": ["c", "d", "e"], "answer": 0, "hint": "h",
             "lecture": "L", "solution": "", "subject": "s", "grade": "grade2"}]
    folder = tmp_path / "ScienceQA" / "data"
    folder.mkdir(parents=True)
    for name in ("train-00000-of-00001-1028f23e353fbe3e", "validation-00000-of-00001-6c7328ff6c84284c"):
        Dataset.from_list(rows, features=feats).to_parquet(str(folder / f"{name}.parquet"))
    ds = load_from_disk(_ok(["ingest", "scienceqa", tmp_path / "ScienceQA", "-o", "hf"])["path"])
    assert sorted(ds["problem_id"]) == ["train-0", "train-1", "val-0", "val-1"]
    by_id = {r["problem_id"]: r for r in ds}
    assert by_id["val-0"]["answer"] == "b" and by_id["val-0"]["image"].size == (5, 5)
    assert by_id["val-1"]["image"] is None and by_id["val-1"]["answer_index"] == 0


def _aokvqa_record(i: int, answers: bool) -> dict:
    rec = {"split": "test", "image_id": 100 + i, "question_id": f"q{i}", "question": "What is it?",
           "choices": ["cat", "dog", "cow", "bird"], "difficult_direct_answer": False}
    if answers:
        rec.update(correct_choice_idx=2, direct_answers=["cow"] * 10, rationales=["It moos."])
    return rec


def test_aokvqa_test_files_with_and_without_answers(tmp_path: Path, store_dir: Path) -> None:
    coco = tmp_path / "coco" / "test2017"
    coco.mkdir(parents=True)
    for i in range(2):
        Image.new("RGB", (6, 6), "red").save(coco / f"{100 + i:012d}.jpg")
    plain, with_ans = tmp_path / "aokvqa_v1p0_test.json", tmp_path / "aokvqa_v1p0_test_w_ans.json"
    plain.write_text(json.dumps([_aokvqa_record(i, False) for i in range(2)]))
    with_ans.write_text(json.dumps([_aokvqa_record(i, True) for i in range(2)]))
    ds = load_from_disk(_ok(["ingest", "aokvqa", plain, "--images", tmp_path / "coco", "-o", "t"])["path"])
    assert ds[0]["answer_index"] is None and ds[0]["image"].size == (6, 6)
    assert json.loads(ds[0]["metadata"])["difficult_direct_answer"] is False
    ds = load_from_disk(_ok(["ingest", "aokvqa", with_ans, "--images", tmp_path / "coco", "-o", "a"])["path"])
    assert ds[0]["split"] == "test" and ds[0]["answer"] == "cow"
    assert ds[0]["reference_rationale"] == "It moos."


def test_hf_repo_with_several_configs_asks_for_one(tmp_path: Path, store_dir: Path) -> None:
    # lmms-lab/ScienceQA keeps two configs side by side (ScienceQA-FULL/, ScienceQA-IMG/, the second a subset
    # of the first): ingesting the repo root must not silently mix them
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": "Q?", "choices": ["a", "b"], "answer": 0, "hint": "", "image": None}]
    for config in ("ScienceQA-FULL", "ScienceQA-IMG"):
        (tmp_path / "repo" / config).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows), tmp_path / "repo" / config / "test-00000-of-00001.parquet")
    r = data(["ingest", "scienceqa", str(tmp_path / "repo"), "-o", "x"])
    assert r.exit_code == 1 and "ScienceQA-FULL" in r.stderr and "ScienceQA-IMG" in r.stderr
    one = _ok(["ingest", "scienceqa", tmp_path / "repo" / "ScienceQA-IMG", "-o", "img"])
    assert one["rows"] == 1
