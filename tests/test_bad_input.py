"""Issue 11, input side: image paths that leave the dataset folder, and hostile rows (a decompression
bomb, a lone surrogate, JSON nested 100k deep, integers too large for the schema) in `ingest` and
`import-rationales`. Each is a clean `Error: FILE, row N, field 'F': ...` with nothing published, and
`--skip-invalid` skips the row instead."""

from __future__ import annotations

import json
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ares_data.sample import SAMPLE_DIR
from ares_data.store import Store

from .helpers import data


def _png(path: Path, size: tuple[int, int] = (4, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 30, 30)).save(path)
    return path


def _bomb(path: Path, side: int = 20000) -> Path:
    """A 60-byte PNG whose header declares side x side pixels (PIL refuses it as a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


def _jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def _refused(args: list[Any], where: str, field: str, *parts: str) -> None:
    r = data(args)
    assert r.exit_code == 1, r.output
    assert f"Error: {where}, field '{field}': " in r.stderr, r.stderr
    assert "unexpected" not in r.output and "Traceback" not in r.output
    for part in parts:
        assert part in r.stderr, r.stderr


def _skipped(args: list[Any], n_rows: int, field: str) -> dict[str, Any]:
    r = data([*args, "--skip-invalid", "--json"])
    assert r.exit_code == 0, r.output
    out = r.json()
    assert out["rows"] == n_rows and out["counts"]["skipped"] == 1
    assert out["skipped"][0]["field"] == field
    return out


GOOD = {"question": "Which is a mammal?", "choices": ["cat", "trout"], "answer": 0}


# ---- 8: image paths ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_jsonl_image_outside_the_source_folder_is_refused(tmp_path: Path, store_dir: Path, how: str) -> None:
    secret = _png(tmp_path / "private" / "secret.png")
    folder = tmp_path / "data"
    _png(folder / "imgs" / "ok.png")
    if how == "symlink":
        (folder / "imgs" / "link.png").symlink_to(secret)
    image = {"dotdot": "../private/secret.png", "absolute": str(secret), "symlink": "imgs/link.png"}[how]
    src = _jsonl(folder / "q.jsonl", [{**GOOD, "image": "imgs/ok.png"}, {**GOOD, "image": image},
                                      {**GOOD, "image": "imgs/../imgs/ok.png"}])
    args = ["ingest", "jsonl", src, "-o", "p"]
    _refused(args, f"{src}, row 2", "image", "outside", str(folder), "--allow-outside-images")
    assert not Store(store_dir).names()
    _skipped(args, 2, "image")
    r = data([*args, "-o", "p2", "--allow-outside-images", "--json"])
    assert r.exit_code == 0 and r.json()["counts"]["with_image"] == 3, r.output
    assert r.json()["params"]["allow_outside_images"] is True


def test_jsonl_images_root_is_an_allowed_root(tmp_path: Path, store_dir: Path) -> None:
    pics = tmp_path / "pics"
    _png(pics / "a.png")
    src = _jsonl(tmp_path / "data" / "q.jsonl", [{**GOOD, "image": "a.png"}, {**GOOD, "image": "../x.png"}])
    _png(tmp_path / "x.png")
    args = ["ingest", "jsonl", src, "-o", "p", "--images-root", pics]
    _refused(args, f"{src}, row 2", "image", "outside")
    assert _skipped(args, 1, "image")["counts"]["with_image"] == 1


def test_jsonl_image_path_with_a_nul_byte_is_a_clean_error(tmp_path: Path, store_dir: Path) -> None:
    src = _jsonl(tmp_path / "q.jsonl", [GOOD, {**GOOD, "image": "a\u0000.png"}])
    _refused(["ingest", "jsonl", src, "-o", "p"], f"{src}, row 2", "image", "not a usable file name")


@pytest.fixture
def sqa(tmp_path: Path) -> Path:
    return Path(shutil.copytree(SAMPLE_DIR, tmp_path / "sqa"))


def _edit_problems(root: Path, edit: Any) -> None:
    problems = json.loads((root / "problems.json").read_text())
    edit(problems)
    (root / "problems.json").write_text(json.dumps(problems))


def test_scienceqa_image_name_that_climbs_out_is_refused(sqa: Path, store_dir: Path) -> None:
    _png(sqa.parent / "x.png")  # images/train/1/../../../../x.png
    _edit_problems(sqa, lambda p: p["1"].update(image="../../../../x.png"))
    args = ["ingest", "scienceqa", sqa, "-o", "sqa"]
    _refused(args, f"{sqa / 'problems.json'}, row 1", "image", "outside", "--allow-outside-images")
    assert not Store(store_dir).names()
    _skipped(args, 59, "image")
    r = data([*args, "-o", "sqa2", "--allow-outside-images", "--json"])
    assert r.exit_code == 0 and r.json()["rows"] == 60, r.output


def test_scienceqa_problem_id_that_climbs_out_is_refused(sqa: Path, store_dir: Path) -> None:
    _png(sqa / "in" / "image.png")  # images/train/../../../in/image.png, outside sqa/images but inside sqa
    _png(sqa.parent / "in" / "image.png")  # sqa/../in: outside the dataset folder
    rec = json.loads((sqa / "problems.json").read_text())["1"]

    def add(p: dict) -> None:
        p["../../in"] = {**rec, "split": "train"}
        p["../../../in"] = {**rec, "split": "train"}

    _edit_problems(sqa, add)
    args = ["ingest", "scienceqa", sqa, "-o", "sqa"]
    _refused(args, f"{sqa / 'problems.json'}, row ../../../in", "image", "outside")
    out = _skipped(args, 61, "image")
    assert out["skipped"][0]["row"] == "../../../in"


def test_aokvqa_split_that_climbs_out_is_refused(tmp_path: Path, store_dir: Path) -> None:
    fixtures = Path(__file__).parent / "fixtures" / "aokvqa"
    coco = Path(shutil.copytree(fixtures / "coco", tmp_path / "coco"))
    recs = json.loads((fixtures / "aokvqa_v1p0_val.json").read_text())
    (tmp_path / "x2017").mkdir()
    shutil.copy(coco / "val2017" / "000000004242.jpg", tmp_path / "x2017" / "000000004242.jpg")
    recs[0]["split"] = "../x"  # coco/../x2017/000000004242.jpg
    src = tmp_path / "aok.json"
    src.write_text(json.dumps(recs))
    args = ["ingest", "aokvqa", src, "--images", coco, "-o", "aok"]
    _refused(args, f"{src}, row 0", "split", "outside")
    _skipped(args, len(recs) - 1, "split")


# ---- hostile rows --------------------------------------------------------------------------------------
def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    "bad, field, part",
    [
        ('{"question": "\\ud800 is lonely", "choices": ["a", "b"], "answer": 0}', "question", "surrogate"),
        ('{"question": "q", "choices": ["a", "b"], "answer": 0, "meta": {"x": "\\udfff"}}', "meta.x",
         "surrogate"),
        ('{"question": "q", "choices": ["a", "b"], "answer": 0, "meta": ' + _deep(100_000) + "}", "meta",
         "nested"),
        ("image", "image", "decompression bomb"),
        ('{"question": "q", "choices": ["a", "b"], "answer": 0, "n": 1' + "0" * 5000 + "}", "n", "digits"),
    ],
    ids=["surrogate", "surrogate-nested", "deep", "bomb", "digits"],
)
def test_hostile_jsonl_rows_are_clean_errors(tmp_path: Path, store_dir: Path, bad: str, field: str,
                                             part: str) -> None:
    if bad == "image":
        _bomb(tmp_path / "bomb.png")
        bad = json.dumps({**GOOD, "image": "bomb.png"})
    src = _jsonl(tmp_path / "q.jsonl", [GOOD, bad, GOOD])
    args = ["ingest", "jsonl", src, "-o", "p"]
    _refused(args, f"{src}, row 2", field, part)
    assert not Store(store_dir).names()
    _skipped(args, 2, field)


def test_a_scienceqa_image_bomb_is_a_clean_error(sqa: Path, store_dir: Path) -> None:
    _bomb(sqa / "images" / "train" / "1" / "image.png")
    args = ["ingest", "scienceqa", sqa, "-o", "sqa"]
    _refused(args, f"{sqa / 'problems.json'}, row 1", "image", "decompression bomb")
    _skipped(args, 59, "image")


@pytest.fixture
def problems(store_dir: Path) -> str:
    r = data(["ingest", "scienceqa", SAMPLE_DIR, "-o", "sqa", "--json"])
    assert r.exit_code == 0, r.output
    return r.json()["ref"]


@pytest.mark.parametrize(
    "bad, field, part",
    [
        ('{"problem_id": "1", "text": "Lone \\ud800 here."}', "text", "surrogate"),
        ('{"problem_id": "1", "text": "Fine.", "generator": "\\udc00"}', "generator", "surrogate"),
        ('{"problem_id": "1", "text": "Fine.", "generation_params": ' + _deep(100_000) + "}",
         "generation_params", "nested"),
        ('{"problem_id": "1", "text": "Fine.", "sample_index": ' + str(2**40) + "}", "sample_index", "int32"),
        ('{"problem_id": "1", "text": "Fine.", "round": ' + str(-(2**40)) + "}", "round", "int32"),
        ('{"problem_id": "1", "text": "Fine.", "sample_index": 9' + "9" * 5000 + "}", "sample_index",
         "digits"),
    ],
    ids=["surrogate", "surrogate-generator", "deep", "int32", "int32-negative", "digits"],
)
def test_hostile_rationale_lines_are_clean_errors(problems: str, tmp_path: Path, store_dir: Path, bad: str,
                                                  field: str, part: str) -> None:
    good = {"problem_id": "1", "text": "Cats are mammals. So the answer is cat."}
    src = _jsonl(tmp_path / "r.jsonl", [good, bad, {**good, "problem_id": "2"}])
    args = ["import-rationales", src, "--problems", problems, "-o", "rats"]
    _refused(args, f"{src}, row 2", field, part)
    assert "rats" not in Store(store_dir).names()
    _skipped(args, 2, field)


@pytest.mark.parametrize("source", ["scienceqa", "aokvqa", "jsonl"])
def test_allow_outside_images_is_in_the_help(source: str) -> None:
    r = data(["ingest", source, "--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0 and "--allow-outside-images" in r.stdout


def test_a_parquet_image_bomb_is_a_clean_error(tmp_path: Path, store_dir: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    bomb = _bomb(tmp_path / "bomb.png").read_bytes()
    fine = _png(tmp_path / "fine.png").read_bytes()
    rows = [{"question": f"Q{i}?", "choices": ["a", "b"], "answer": 0,
             "image": {"bytes": img, "path": None}} for i, img in enumerate([fine, bomb, fine])]
    src = tmp_path / "train-00000-of-00001.parquet"
    pq.write_table(pa.Table.from_pylist(rows), src)
    args = ["ingest", "scienceqa", src, "-o", "sqa"]
    _refused(args, f"{src}, row 1", "image", "decompression bomb")
    assert _skipped(args, 2, "image")["counts"]["with_image"] == 2
