"""`ares-data ingest scienceqa|aokvqa|jsonl` through the CLI: formats, images, reuse, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from datasets import load_from_disk
from PIL import Image

from ares_data.sample import SAMPLE_DIR
from ares_data.store import Store

from .helpers import data

FIXTURES = Path(__file__).parent / "fixtures"
AOKVQA = FIXTURES / "aokvqa"
SAMPLE_PROBLEMS = json.loads((SAMPLE_DIR / "problems.json").read_text())


@pytest.fixture
def sqa_copy(tmp_path: Path) -> Path:
    """A private, editable copy of the shipped ScienceQA-format sample."""
    return Path(shutil.copytree(SAMPLE_DIR, tmp_path / "sqa"))


def _edit(root: Path, pid: str, **changes: Any) -> None:
    problems = json.loads((root / "problems.json").read_text())
    for key, value in changes.items():
        if value is _DELETE:
            del problems[pid][key]
        else:
            problems[pid][key] = value
    (root / "problems.json").write_text(json.dumps(problems))


_DELETE = object()


def _ok(args: list[Any]) -> dict[str, Any]:
    r = data([*args, "--json"])
    assert r.exit_code == 0, r.output
    return r.json()


def test_ingest_scienceqa_official_images_survive_deleting_the_source(
    sqa_copy: Path, store_dir: Path
) -> None:
    out = _ok(["ingest", "scienceqa", sqa_copy, "-o", "sqa"])
    assert out["ref"] == "sqa@v1" and out["rows"] == 60 and not out["reused"]
    assert out["counts"] == {
        "skipped": 0,
        "split.train": 40,
        "split.val": 10,
        "split.test": 10,
        "with_image": 12,
    }
    assert out["params"]["path"] == str(sqa_copy.resolve()) and len(out["params"]["content_sha256"]) == 64
    shutil.rmtree(sqa_copy)
    ds = load_from_disk(out["path"])  # plain datasets, no ares code, source folder gone
    by_id = {r["problem_id"]: r for r in ds}
    bars = by_id["14"]
    src = SAMPLE_PROBLEMS["14"]
    assert bars["question"] == src["question"] and bars["choices"] == src["choices"]
    assert bars["answer_index"] == src["answer"] and bars["answer"] == src["choices"][src["answer"]]
    assert bars["context"] == src["hint"] and bars["split"] == "train" and bars["grade"] == "grade4"
    assert bars["reference_rationale"] == src["lecture"] + "\n\n" + src["solution"]
    assert json.loads(bars["metadata"])["topic"] == "earth-science"
    assert bars["image"].size == (64, 64)
    assert bars["image"].getpixel((32, 20)) != (255, 255, 255)  # the tall middle bar is drawn
    assert by_id["2"]["image"] is None
    raw = load_from_disk(out["path"]).cast_column("image", type(ds.features["image"])(decode=False))
    assert raw[0]["image"]["bytes"][:8] == b"\x89PNG\r\n\x1a\n"  # stored bytes, not a path


def test_identical_reingest_reuses_version_and_changed_input_does_not(
    sqa_copy: Path, store_dir: Path
) -> None:
    first = _ok(["ingest", "scienceqa", sqa_copy, "-o", "sqa"])
    again = _ok(["ingest", "scienceqa", sqa_copy, "-o", "sqa"])
    assert again["reused"] and again["ref"] == first["ref"]
    assert Store(store_dir).versions("sqa") == [1]
    Image.new("RGB", (64, 64), "red").save(sqa_copy / "images" / "train" / "14" / "image.png")
    changed = _ok(["ingest", "scienceqa", sqa_copy, "-o", "sqa"])
    assert (
        changed["ref"] == "sqa@v2"
        and changed["params"]["content_sha256"] != first["params"]["content_sha256"]
    )


def test_split_filter_and_alternative_image_folders(sqa_copy: Path, store_dir: Path) -> None:
    # move the images to the two other official layouts: <split>/<pid>/ and images/<pid>/
    for i, img in enumerate(sorted((sqa_copy / "images").glob("*/*/image.png"))):
        split, pid = img.parts[-3], img.parts[-2]
        dest = sqa_copy / split / pid if i % 2 else sqa_copy / "images" / pid
        dest.mkdir(parents=True, exist_ok=True)
        shutil.move(str(img), dest / "image.png")
    out = _ok(["ingest", "scienceqa", sqa_copy, "-o", "sqa", "--split", "val", "--split", "test"])
    assert (
        out["rows"] == 20 and out["counts"]["with_image"] == 4 and out["params"]["splits"] == ["test", "val"]
    )
    assert set(load_from_disk(out["path"])["split"]) == {"val", "test"}


def test_ingest_scienceqa_hf_parquet_layout(tmp_path: Path, store_dir: Path) -> None:
    from datasets import Dataset, Features, Image, Sequence, Value

    feats = Features(
        {
            "image": Image(),
            "question": Value("string"),
            "choices": Sequence(Value("string")),
            "answer": Value("int8"),
            "hint": Value("string"),
            "task": Value("string"),
            "grade": Value("string"),
            "subject": Value("string"),
            "topic": Value("string"),
            "category": Value("string"),
            "skill": Value("string"),
            "lecture": Value("string"),
            "solution": Value("string"),
        }
    )
    folder = tmp_path / "hf" / "data"
    folder.mkdir(parents=True)
    for split, hf_name in (("train", "train"), ("val", "validation"), ("test", "test")):
        rows = []
        for pid in json.loads((SAMPLE_DIR / "pid_splits.json").read_text())[split]:
            rec = {k: v for k, v in SAMPLE_PROBLEMS[pid].items() if k in feats}
            img = SAMPLE_DIR / "images" / split / pid / "image.png"
            rec["image"] = {"bytes": img.read_bytes(), "path": None} if img.exists() else None
            rows.append(rec)
        Dataset.from_list(rows, features=feats).to_parquet(str(folder / f"{hf_name}-00000-of-00001.parquet"))
    out = _ok(["ingest", "scienceqa", tmp_path / "hf", "-o", "sqa_hf"])
    assert out["rows"] == 60 and out["counts"]["with_image"] == 12 and out["params"]["layout"] == "parquet"
    ds = load_from_disk(out["path"])
    assert set(ds["split"]) == {"train", "val", "test"}
    first_val = ds.filter(lambda r: r["problem_id"] == "val-0")[0]
    pid = json.loads((SAMPLE_DIR / "pid_splits.json").read_text())["val"][0]
    assert first_val["question"] == SAMPLE_PROBLEMS[pid]["question"]
    with_img = [r for r in ds if r["image"] is not None]
    assert all(r["image"].size == (64, 64) for r in with_img)


def test_ingest_aokvqa_with_coco_images(store_dir: Path) -> None:
    out = _ok(["ingest", "aokvqa", AOKVQA / "aokvqa_v1p0_val.json", "--images", AOKVQA / "coco", "-o", "aok"])
    assert out["rows"] == 3 and out["counts"]["split.val"] == 3 and out["counts"]["with_image"] == 3
    ds = load_from_disk(out["path"])
    row = ds[0]
    assert row["problem_id"] == "aok_val_0001" and row["source"] == "aokvqa"
    assert row["answer_index"] == 1 and row["answer"] == "eat the grass"
    assert row["reference_rationale"].split("\n")[1] == "Cows spend much of the day grazing."
    meta = json.loads(row["metadata"])
    assert meta["image_id"] == 4242 and "graze" in meta["direct_answers"]
    assert row["image"].size == (32, 32)
    no_images = _ok(["ingest", "aokvqa", AOKVQA / "aokvqa_v1p0_val.json", "-o", "aok_text"])
    assert no_images["counts"].get("with_image", 0) == 0


def test_aokvqa_test_split_without_answers(tmp_path: Path, store_dir: Path) -> None:
    recs = json.loads((AOKVQA / "aokvqa_v1p0_val.json").read_text())
    for r in recs:
        r.pop("correct_choice_idx"), r.pop("rationales"), r.pop("split")
    (tmp_path / "aokvqa_v1p0_test.json").write_text(json.dumps(recs))
    out = _ok(["ingest", "aokvqa", tmp_path / "aokvqa_v1p0_test.json", "-o", "aok_test"])
    ds = load_from_disk(out["path"])
    assert ds[0]["split"] == "test" and ds[0]["answer_index"] is None and ds[0]["answer"] == ""


def test_ingest_jsonl_with_mapping(tmp_path: Path, store_dir: Path) -> None:
    Image.new("RGB", (8, 8), "green").save(tmp_path / "leaf.png")
    lines = [
        {
            "id": "a1",
            "q": "Which gas do plants take in?",
            "opts": ["oxygen", "carbon dioxide"],
            "label": "B",
            "meta": {"level": "7"},
            "img": "leaf.png",
            "why": "Plants use CO2 for photosynthesis.",
            "src": "mine",
        },
        {"id": "a2", "q": "What is 3 + 4?", "opts": ["6", "7", "8"], "label": "7", "meta": {"level": "2"}},
        {"id": 3, "q": "Name a planet.", "label": "Mars", "part": "test"},
    ]
    f = tmp_path / "mine.jsonl"
    f.write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n")
    out = _ok(
        [
            "ingest",
            "jsonl",
            f,
            "-o",
            "mine",
            "--map",
            "problem_id=id",
            "--map",
            "question=q",
            "--map",
            "choices=opts",
            "--map",
            "answer=label",
            "--map",
            "grade=meta.level",
            "--map",
            "image=img",
            "--map",
            "reference_rationale=why",
            "--map",
            "split=part",
            "--source-name",
            "my-quiz",
        ]
    )
    assert out["rows"] == 3 and out["params"]["mapping"]["question"] == "q"
    rows = {r["problem_id"]: r for r in load_from_disk(out["path"])}
    assert rows["a1"]["answer_index"] == 1 and rows["a1"]["answer"] == "carbon dioxide"
    assert (
        rows["a1"]["grade"] == "7"
        and rows["a1"]["image"].size == (8, 8)
        and rows["a1"]["source"] == "my-quiz"
    )
    assert json.loads(rows["a1"]["metadata"]) == {"src": "mine"}
    assert rows["a2"]["answer_index"] == 1 and rows["a2"]["split"] == "train"
    assert rows["3"]["choices"] == [] and rows["3"]["answer"] == "Mars" and rows["3"]["split"] == "test"
    only_test = _ok(
        [
            "ingest",
            "jsonl",
            f,
            "-o",
            "mine_test",
            "--map",
            "question=q",
            "--map",
            "split=part",
            "--map",
            "choices=opts",
            "--map",
            "answer=label",
            "--split",
            "test",
        ]
    )
    assert only_test["rows"] == 1


def _break_sqa(root: Path, how: str) -> tuple[list[str], str]:
    """Break a sample copy one way; returns (expected message parts, expected file name)."""
    if how == "malformed_json":
        (root / "problems.json").write_text('{"1": {"question": "x",\n  oops}')
        return ["invalid JSON at line 2"], "problems.json"
    if how == "missing_field":
        _edit(root, "5", question=_DELETE)
        return ["row 5", "field 'question'", "missing field"], "problems.json"
    if how == "answer_out_of_range":
        _edit(root, "7", answer=9)
        return ["row 7", "field 'answer'", "out of range"], "problems.json"
    if how == "missing_image":
        (root / "images" / "train" / "15" / "image.png").unlink()
        return ["row 15", "field 'image'", "not found"], "problems.json"
    if how == "unreadable_image":
        (root / "images" / "train" / "15" / "image.png").write_bytes(b"not a png at all")
        return ["row 15", "field 'image'", "unreadable image", "not an image file"], "problems.json"
    raise AssertionError(how)


@pytest.mark.parametrize(
    "how", ["malformed_json", "missing_field", "answer_out_of_range", "missing_image", "unreadable_image"]
)
def test_bad_scienceqa_input_fails_and_publishes_nothing(sqa_copy: Path, store_dir: Path, how: str) -> None:
    parts, fname = _break_sqa(sqa_copy, how)
    r = data(["ingest", "scienceqa", sqa_copy, "-o", "sqa"])
    assert r.exit_code == 1, r.output
    assert r.stderr.startswith("Error: ") and fname in r.stderr
    for part in parts:
        assert part in r.stderr, (part, r.stderr)
    assert Store(store_dir).versions("sqa") == []
    assert not any((store_dir / "sqa").glob(".tmp-*")) if (store_dir / "sqa").exists() else True


def test_missing_input_files(tmp_path: Path, store_dir: Path) -> None:
    r = data(["ingest", "scienceqa", tmp_path / "nope", "-o", "x"])
    assert r.exit_code == 1 and "nope" in r.stderr and "no such file" in r.stderr
    r = data(["ingest", "jsonl", tmp_path / "nope.jsonl", "-o", "x"])
    assert r.exit_code == 1 and "nope.jsonl" in r.stderr and "file not found" in r.stderr
    r = data(["ingest", "aokvqa", AOKVQA / "aokvqa_v1p0_val.json", "--images", tmp_path / "coco", "-o", "x"])
    assert r.exit_code == 1 and "image folder not found" in r.stderr
    assert Store(store_dir).names() == []


@pytest.mark.parametrize(
    "lines,parts",
    [
        (
            ['{"question": "ok?", "choices": ["a", "b"], "answer": 0}', '{"question": "broken",'],
            ["row 2", "malformed JSON line"],
        ),
        (
            ['{"question": "ok?", "choices": ["a", "b"], "answer": 0}', '{"choices": ["a"], "answer": 0}'],
            ["row 2", "field 'question'", "missing field"],
        ),
        (
            ['{"question": "ok?", "choices": ["a", "b"], "answer": 5}'],
            ["row 1", "field 'answer'", "out of range"],
        ),
        (['{"question": "ok?", "choices": ["a", "b"], "answer": "c"}'], ["row 1", "not one of the choices"]),
        (['{"question": "ok?", "image": "missing.png"}'], ["row 1", "field 'image'", "image not found"]),
        (['{"question": " ", "choices": ["a", "b"], "answer": 0}'],
         ["row 1", "field 'question'", "empty field"]),
        (
            ['{"problem_id": "p", "question": "a"}', '{"problem_id": "p", "question": "b"}'],
            ["row 2", "duplicate problem_id"],
        ),
    ],
)
def test_bad_jsonl_input(tmp_path: Path, store_dir: Path, lines: list[str], parts: list[str]) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text("\n".join(lines) + "\n")
    r = data(["ingest", "jsonl", f, "-o", "bad"])
    assert r.exit_code == 1, r.output
    for part in ["bad.jsonl", *parts]:
        assert part in r.stderr, (part, r.stderr)
    assert Store(store_dir).versions("bad") == []


def test_bad_aokvqa_input(tmp_path: Path, store_dir: Path) -> None:
    recs = json.loads((AOKVQA / "aokvqa_v1p0_val.json").read_text())
    recs[1]["correct_choice_idx"] = 7
    recs[2]["image_id"] = 999
    f = tmp_path / "aokvqa_v1p0_val.json"
    f.write_text(json.dumps(recs))
    r = data(["ingest", "aokvqa", f, "--images", AOKVQA / "coco", "-o", "aok"])
    assert r.exit_code == 1 and "row 1" in r.stderr and "field 'correct_choice_idx'" in r.stderr
    out = _ok(["ingest", "aokvqa", f, "--images", AOKVQA / "coco", "-o", "aok", "--skip-invalid"])
    assert out["rows"] == 1 and out["counts"]["skipped"] == 2
    assert [s["field"] for s in out["skipped"]] == ["correct_choice_idx", "image_id"]


def test_skip_invalid_records_reasons_in_manifest(sqa_copy: Path, store_dir: Path) -> None:
    _edit(sqa_copy, "5", question=_DELETE)
    _edit(sqa_copy, "7", answer=9)
    (sqa_copy / "images" / "train" / "15" / "image.png").write_bytes(b"garbage")
    out = _ok(["ingest", "scienceqa", sqa_copy, "-o", "sqa", "--skip-invalid"])
    assert out["rows"] == 57 and out["counts"]["skipped"] == 3
    skipped = {s["row"]: s for s in out["skipped"]}
    assert skipped["5"]["field"] == "question" and skipped["7"]["field"] == "answer"
    assert "unreadable image" in skipped["15"]["reason"] and skipped["15"]["file"].endswith("problems.json")
    manifest = json.loads((Path(out["path"]) / "manifest.json").read_text())
    assert manifest["skipped"] == out["skipped"] and manifest["params"]["skip_invalid"] is True
    human = data(["ingest", "scienceqa", sqa_copy, "-o", "sqa", "--skip-invalid"])
    assert human.exit_code == 0 and "skipped 3 invalid rows" in human.stdout and "reused" in human.stdout


@pytest.mark.parametrize(
    "cmd",
    [["ingest"], ["ingest", "scienceqa"], ["ingest", "aokvqa"], ["ingest", "jsonl"], ["import-rationales"]],
)
def test_help(cmd: list[str]) -> None:
    r = data([*cmd, "--help"])
    assert r.exit_code == 0 and "Usage" in r.stdout


def test_bad_map_is_a_usage_error(tmp_path: Path, store_dir: Path) -> None:
    f = tmp_path / "x.jsonl"
    f.write_text('{"q": "x"}\n')
    r = data(["ingest", "jsonl", f, "-o", "x", "--map", "questoin=q"])
    assert r.exit_code == 2 and "unknown column 'questoin'" in r.stderr


def test_plain_pyarrow_parquet_and_corrupt_parquet(tmp_path: Path, store_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    png = (SAMPLE_DIR / "images" / "train" / "1" / "image.png").read_bytes()
    rows = [
        {k: SAMPLE_PROBLEMS[pid][k] for k in ("question", "choices", "answer", "hint", "lecture", "solution")}
        | {"image": {"bytes": png, "path": "a.png"} if pid == "1" else None}
        for pid in ("1", "2")
    ]
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), folder / "test-00000-of-00001.parquet")  # no HF metadata
    out = _ok(["ingest", "scienceqa", folder, "-o", "plain"])
    assert out["rows"] == 2 and out["counts"]["with_image"] == 1
    assert load_from_disk(out["path"])[0]["image"].size == (64, 64)
    (folder / "val-00000-of-00001.parquet").write_bytes(b"garbage")
    r = data(["ingest", "scienceqa", folder, "-o", "broken"])
    assert r.exit_code == 1 and "val-00000-of-00001.parquet" in r.stderr and "cannot read parquet" in r.stderr
    (folder / "val-00000-of-00001.parquet").rename(folder / "mystery.parquet")
    r = data(["ingest", "scienceqa", folder, "-o", "broken"])
    assert r.exit_code == 1 and "cannot tell the split" in r.stderr


def test_repo_root_is_accepted(tmp_path: Path, store_dir: Path) -> None:
    shutil.copytree(SAMPLE_DIR, tmp_path / "ScienceQA" / "data" / "scienceqa")
    out = _ok(["ingest", "scienceqa", tmp_path / "ScienceQA", "-o", "sqa", "--split", "test"])
    assert out["rows"] == 10 and out["params"]["path"].endswith("data/scienceqa")


def test_global_store_option_wins_over_env(tmp_path: Path, store_dir: Path) -> None:
    other = tmp_path / "other-store"
    out = _ok(["--store", other, "ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa", "--split", "val"])
    assert Path(out["path"]).is_relative_to(other) and Store(store_dir).names() == []
    out = _ok(
        ["ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa", "--split", "val", "--store", tmp_path / "third"]
    )
    assert Path(out["path"]).is_relative_to(tmp_path / "third")


def test_library_reports_progress(store_dir: Path) -> None:
    from ares_data.sources import ingest, open_scienceqa

    calls: list[tuple[int, int | None]] = []
    v = ingest(
        Store(store_dir),
        "sqa",
        open_scienceqa(SAMPLE_DIR),
        splits=["test"],
        progress=lambda done, total: calls.append((done, total)),
    )
    assert v.manifest["rows"] == 10 and calls[-1] == (60, 60) and len(calls) == 60
