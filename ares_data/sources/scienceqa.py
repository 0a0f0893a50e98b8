"""ScienceQA in its two common layouts.

* Official files: `DIR/problems.json` (pid -> {question, choices, answer, hint, image, task, grade, subject,
  topic, category, skill, lecture, solution, split}), optional `DIR/pid_splits.json`, and images at
  `DIR/images/<split>/<pid>/<image>`, `DIR/<split>/<pid>/<image>` or `DIR/images/<pid>/<image>`.
* Hugging Face parquet: a folder (searched recursively) or one `*.parquet` file with the same columns and an
  `image` column ({bytes, path}); the split comes from the file name (`train-00000-of-00001.parquet`).
"""

from __future__ import annotations

import contextlib
import json
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError
from .base import ProblemSource, Where, check_choices, check_image_bytes, problem_row, read_image, require
from .guards import check_image_inside, image_roots, usable_image

META_KEYS = ("task", "topic", "category", "skill", "lecture", "solution")
SPLIT_ALIASES = {"validation": "val", "dev": "val"}
_SPLIT_FROM_NAME = re.compile(r"^(train|val|validation|dev|test|minival|minitrain|trainval)(?=[-_.])")


def load_json(path: Path) -> Any:
    """Parse a JSON file; InputError naming the file and line when it is missing or malformed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", file=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read file: {exc}", file=str(path)) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", file=str(path)
        ) from exc
    except RecursionError:
        raise InputError("JSON nested too deeply to read", file=str(path)) from None
    except ValueError as exc:  # a number with more digits than Python reads
        raise InputError(f"unreadable JSON: {exc}", file=str(path)) from None


def scienceqa_row(
    pid: str, split: str, rec: dict[str, Any], where: Where, image: dict[str, Any] | None
) -> dict[str, Any]:
    """One problems row from a ScienceQA record (shared by both layouts)."""
    question = require(rec, "question", str, where)
    choices, answer = check_choices(
        require(rec, "choices", list, where), require(rec, "answer", int, where), where
    )
    for key in ("hint", "lecture", "solution", "subject", "grade", *META_KEYS):
        if rec.get(key) is not None and not isinstance(rec[key], str):
            raise InputError(
                f"expected a string, got {type(rec[key]).__name__}", file=where.file, row=where.row, field=key
            )
    lecture, solution = rec.get("lecture") or "", rec.get("solution") or ""
    metadata = {k: rec.get(k) or "" for k in META_KEYS}
    metadata["pid"] = pid
    return problem_row(
        problem_id=pid,
        source="scienceqa",
        split=split,
        question=question,
        choices=choices,
        answer_index=answer,
        answer=choices[answer],
        context=rec.get("hint") or "",
        image=image,
        reference_rationale="\n\n".join(t for t in (lecture.strip(), solution.strip()) if t),
        subject=rec.get("subject") or "",
        grade=rec.get("grade") or "",
        metadata=metadata,
    )


class ScienceQAFiles(ProblemSource):
    """The official ScienceQA release folder."""

    source = "scienceqa"

    def __init__(self, root: Path, *, allow_outside_images: bool = False) -> None:
        self.root = root
        self.allow_outside_images = allow_outside_images  # else images only from inside `root`
        self._roots = image_roots(root)
        self.problems_file = root / "problems.json"
        problems = load_json(self.problems_file)
        if not isinstance(problems, dict):
            raise InputError(
                "expected a JSON object mapping problem ids to problems", file=str(self.problems_file)
            )
        self.problems: dict[str, Any] = problems
        self.splits_file = root / "pid_splits.json"
        self.split_of: dict[str, str] = {}
        self.subsets: dict[str, set[str]] = {}  # pid -> other pid_splits.json lists naming it (minival...)
        if self.splits_file.exists():
            splits = load_json(self.splits_file)
            if not isinstance(splits, dict):
                raise InputError(
                    "expected a JSON object mapping split names to lists of problem ids",
                    file=str(self.splits_file),
                )
            ordered = [k for k in ("train", "val", "test") if k in splits] + sorted(
                set(splits) - {"train", "val", "test"}
            )
            for split in ordered:
                for pid in splits[split] if isinstance(splits[split], list) else []:
                    if self.split_of.setdefault(str(pid), split) != split:
                        self.subsets.setdefault(str(pid), set()).add(split)

    def params(self) -> dict[str, Any]:
        return {"path": str(self.root.resolve()), "layout": "official",
                **({"allow_outside_images": True} if self.allow_outside_images else {})}

    def _split(self, pid: str, rec: Any) -> str | None:
        if pid in self.split_of:
            return self.split_of[pid]
        return rec.get("split") if isinstance(rec, dict) and isinstance(rec.get("split"), str) else None

    def subsets_of(self, where: Where) -> set[str]:
        return self.subsets.get(str(where.row), set())

    def _image_path(self, pid: str, split: str | None, name: str) -> Path | None:
        candidates = [
            self.root / "images" / str(split) / pid / name,
            self.root / str(split) / pid / name,
            self.root / "images" / pid / name,
        ]
        return next((p for p in candidates if p.is_file()), None)

    def total(self) -> int:
        return len(self.problems)

    def input_files(self) -> list[Path]:
        files = [self.problems_file] + ([self.splits_file] if self.splits_file.exists() else [])
        for pid, rec in self.problems.items():
            if isinstance(rec, dict) and isinstance(rec.get("image"), str) and rec["image"]:
                path = self._image_path(pid, self._split(pid, rec), rec["image"])
                if usable_image(path, self._roots, self.allow_outside_images):
                    files.append(path)
        return files

    def records(self) -> Iterator[tuple[Where, Any]]:
        for pid, rec in self.problems.items():
            yield Where(str(self.problems_file), pid, self._split(pid, rec)), rec

    def convert(self, where: Where, raw: Any) -> dict[str, Any]:
        pid = str(where.row)
        if not isinstance(raw, dict):
            raise InputError(f"expected a JSON object, got {type(raw).__name__}", file=where.file, row=pid)
        if where.split is None:
            raise InputError(
                "no split: the problem is not in pid_splits.json and has no 'split'",
                file=where.file,
                row=pid,
                field="split",
            )
        image = None
        name = raw.get("image")
        if name:
            if not isinstance(name, str):
                raise InputError("expected an image file name", file=where.file, row=pid, field="image")
            path = self._image_path(pid, where.split, name)
            if path is None:
                raise InputError(
                    f"image '{name}' not found (looked in images/{where.split}/{pid}/, {where.split}/{pid}/ "
                    f"and images/{pid}/ under {self.root})",
                    file=where.file,
                    row=pid,
                    field="image",
                )
            check_image_inside(path, name, self._roots, where, "image", self.allow_outside_images)
            image = read_image(path, where)
        return scienceqa_row(pid, where.split, raw, where, image)


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[None]:
    """No `datasets` progress bars while loading: library code never prints (the CLI draws its own bar)."""
    from datasets.utils import logging as ds_logging

    was_enabled = ds_logging.is_progress_bar_enabled()
    ds_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            ds_logging.enable_progress_bar()


def split_from_name(path: Path) -> str | None:
    m = _SPLIT_FROM_NAME.match(path.name)
    return SPLIT_ALIASES.get(m.group(1), m.group(1)) if m else None


class ScienceQAParquet(ProblemSource):
    """The Hugging Face parquet layout of ScienceQA, loaded with `datasets.load_dataset("parquet")`."""

    source = "scienceqa"

    def __init__(self, path: Path) -> None:
        self.path = path
        files = sorted(path.rglob("*.parquet")) if path.is_dir() else [path]
        if not files:
            raise InputError(
                "no problems.json and no *.parquet files found",
                file=str(path),
                hint="pass the official ScienceQA folder or a folder of HF parquet files",
            )
        self.files: dict[str, list[Path]] = {}
        for f in files:
            split = split_from_name(f)
            if split is None:
                raise InputError(
                    "cannot tell the split from the file name",
                    file=str(f),
                    hint="name parquet files like train-00000-of-00001.parquet (or val-, test-)",
                )
            self.files.setdefault(split, []).append(f)
        folders = sorted({str(f.parent.relative_to(path)) for f in files} if path.is_dir() else [])
        if len(folders) > 1 and any(len({f.parent for f in fs}) > 1 for fs in self.files.values()):
            raise InputError(  # e.g. lmms-lab/ScienceQA: ScienceQA-FULL/ and ScienceQA-IMG/ (a subset)
                f"parquet files of the same split in several folders ({', '.join(folders)}): "
                "several copies or configurations of the dataset",
                file=str(path),
                hint="pass the one folder you want to ingest",
            )

    def params(self) -> dict[str, Any]:
        return {"path": str(self.path.resolve()), "layout": "parquet"}

    def total(self) -> int:
        import pyarrow.parquet as pq

        total = 0
        for f in self.input_files():
            try:
                total += pq.ParquetFile(f).metadata.num_rows
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for bad files
                raise InputError(f"cannot read parquet: {exc}", file=str(f)) from exc
        return total

    def input_files(self) -> list[Path]:
        return [f for fs in self.files.values() for f in fs]

    def records(self) -> Iterator[tuple[Where, Any]]:
        from datasets import Image, load_dataset

        with tempfile.TemporaryDirectory(prefix="ares-parquet-") as cache:
            for split, files in self.files.items():
                try:
                    with _quiet_datasets():
                        ds = load_dataset(
                            "parquet",
                            data_files={"data": [str(f) for f in files]},
                            split="data",
                            cache_dir=cache,
                        )
                except Exception as exc:  # noqa: BLE001 - pyarrow/datasets raise many types for bad files
                    raise InputError(f"cannot read parquet: {exc}", file=str(files[0])) from exc
                if "image" in ds.column_names and isinstance(ds.features["image"], Image):
                    ds = ds.cast_column("image", Image(decode=False))
                label = str(files[0]) if len(files) == 1 else f"{files[0].parent}/{split}-*.parquet"
                for i, rec in enumerate(ds):
                    yield Where(label, i, split), rec

    def convert(self, where: Where, raw: Any) -> dict[str, Any]:
        image = None
        img = raw.get("image")
        if isinstance(img, dict) and img.get("bytes"):
            image = {"bytes": check_image_bytes(img["bytes"], where), "path": None}
        elif isinstance(img, dict) and img.get("path"):
            raise InputError(
                f"image has a path ({img['path']}) but no bytes",
                file=where.file,
                row=where.row,
                field="image",
            )
        return scienceqa_row(f"{where.split}-{where.row}", str(where.split), raw, where, image)


def open_scienceqa(path: Path, *, allow_outside_images: bool = False) -> ScienceQAFiles | ScienceQAParquet:
    """The right reader for `path`: the official folder (has problems.json) or HF parquet files.
    `allow_outside_images`: let the official layout read image paths that leave its folder."""
    if not path.exists():
        raise InputError("no such file or folder", file=str(path))
    if path.is_dir():
        for folder in (path, path / "scienceqa", path / "data" / "scienceqa"):  # also the repo's root
            if (folder / "problems.json").exists():
                return ScienceQAFiles(folder, allow_outside_images=allow_outside_images)
    elif path.name == "problems.json":  # the official folder's main file: read the folder
        return ScienceQAFiles(path.parent, allow_outside_images=allow_outside_images)
    elif path.suffix.lower() != ".parquet":
        raise InputError(
            "not a ScienceQA folder or Parquet file",
            file=str(path),
            hint="pass the official ScienceQA folder (problems.json, pid_splits.json, images/), a folder of "
            "Hugging Face Parquet files (train-*.parquet, validation-*, test-*) or one such file; for "
            "problems in your own JSONL use `ares-data ingest jsonl FILE --map ...`",
        )
    return ScienceQAParquet(path)
