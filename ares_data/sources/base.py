"""Shared bookkeeping for problem sources: validation, skipped rows, split filters, counts, publishing.

A source yields raw records with where they came from (`records()`) and turns one record into a problems
row (`convert()`), raising `InputError` naming file/row/field. `ingest()` does the rest: it streams rows into
the store, skips bad rows with reasons when asked (recorded in the manifest as `skipped`), counts rows per
split and with images, and hashes the input files so the manifest says exactly what was read.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from ..errors import InputError
from ..schema import validate_row
from ..store import Store, Version
from .guards import check_text, deep_field, long_number_field

Progress = Callable[[int, int | None], None]  # (rows done, total rows or None)
MAX_SKIPPED_LISTED = 1000  # the manifest lists at most this many skipped rows; counts has them all


@dataclass(frozen=True)
class Where:
    """Where a record came from: file, row (line number, key or index) and its split when known early."""

    file: str
    row: int | str
    split: str | None = None


class ProblemSource(ABC):
    """One input format. Subclasses set `source` and implement `records`, `convert` and `input_files`."""

    source: ClassVar[str]

    @abstractmethod
    def records(self) -> Iterator[tuple[Where, Any]]:
        """Raw records in input order (a bad record is only detected by `convert`)."""

    @abstractmethod
    def convert(self, where: Where, raw: Any) -> dict[str, Any]:
        """One problems row, or InputError naming file/row/field."""

    @abstractmethod
    def input_files(self) -> list[Path]:
        """Every file the rows are made from (hashed into the manifest)."""

    def params(self) -> dict[str, Any]:
        """Options that change the output (recorded in the manifest and the build key)."""
        return {}

    def total(self) -> int | None:
        """Number of records, when cheap to know (for progress bars)."""
        return None

    def subsets_of(self, where: Where) -> set[str]:
        """Named subsets a record also belongs to beside its own split (ScienceQA's minival, trainval...):
        `--split` selects by these too, while the row keeps its own split."""
        return set()


def hash_files(paths: Iterable[Path]) -> str:
    """sha256 over (path relative to the files' common folder, content) of each file, in sorted order."""
    files = sorted({Path(p).resolve() for p in paths})
    root = Path(os.path.commonpath(files)) if files else Path("/")
    h = hashlib.sha256()
    for p in files:
        name = p.name if p == root else str(p.relative_to(root))
        h.update(name.encode() + b"\0")
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def jsonl_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line) for each non-blank line; InputError naming the file (and line) when unreadable."""
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise InputError("file not found", file=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", file=str(path)) from exc
    with f:
        lineno = 0
        try:
            for lineno, line in enumerate(f, 1):  # noqa: B007 - lineno is used in the error below
                if line.strip():
                    yield lineno, line
        except UnicodeDecodeError as exc:
            raise InputError(f"not UTF-8 text: {exc.reason}", file=str(path), row=lineno + 1) from exc


def parse_json_line(raw: str, file: str, line: int) -> dict[str, Any]:
    """One JSONL line as an object; InputError naming file and line when it is malformed or not an object,
    and the field when it nests too deeply or holds a lone surrogate (see `guards`)."""
    try:
        rec = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise InputError(f"malformed JSON line: {exc.msg} (column {exc.colno})", file=file, row=line) from exc
    except RecursionError:
        field = deep_field(raw)
        raise InputError("JSON nested too deeply to read", file=file, row=line, field=field) from None
    except ValueError as exc:  # a number with more digits than Python reads (sys.get_int_max_str_digits)
        field = long_number_field(raw)
        raise InputError(f"unreadable JSON: {exc}", file=file, row=line, field=field) from None
    if not isinstance(rec, dict):
        raise InputError(f"expected a JSON object, got {type(rec).__name__}", file=file, row=line)
    if "\\u" in raw:  # a lone surrogate can only come from an escape (the file itself is valid UTF-8)
        check_text(rec, file=file, row=line)
    return rec


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))


def read_image(path: Path, where: Where, field: str = "image") -> dict[str, Any]:
    """The image file as `{"bytes": ..., "path": None}` for the HF Image feature, checked to be readable."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"cannot read image {path}: {exc.strerror or exc}", file=where.file, row=where.row, field=field
        ) from exc
    return {"bytes": check_image_bytes(data, where, field, str(path)), "path": None}


def check_image_bytes(data: bytes, where: Where, field: str = "image", label: str = "image") -> bytes:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
    except Image.DecompressionBombError as exc:  # e.g. a tiny PNG declaring 20000x20000 pixels
        raise InputError(f"image {label} refused as a decompression bomb: {exc}", file=where.file,
                         row=where.row, field=field) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        why = "not an image file PIL can identify" if isinstance(exc, UnidentifiedImageError) else str(exc)
        raise InputError(
            f"unreadable image {label}: {why}", file=where.file, row=where.row, field=field
        ) from exc
    return data


def require(
    raw: dict[str, Any], key: str, types: type | tuple[type, ...], where: Where, field: str | None = None
) -> Any:
    """raw[key] checked for presence and type; InputError naming the field otherwise."""
    if key not in raw or raw[key] is None:
        raise InputError("missing field", file=where.file, row=where.row, field=field or key)
    value = raw[key]
    if not isinstance(value, types) or (types is int and isinstance(value, bool)):
        names = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
        raise InputError(
            f"expected {names}, got {type(value).__name__} ({value!r:.60})",
            file=where.file,
            row=where.row,
            field=field or key,
        )
    return value


def check_choices(
    choices: Any, index: Any, where: Where, *, choices_field: str = "choices", index_field: str = "answer"
) -> tuple[list[str], int]:
    """Validate a multiple-choice list and its answer index."""
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        raise InputError(
            "expected a non-empty list of strings", file=where.file, row=where.row, field=choices_field
        )
    if not isinstance(index, int) or isinstance(index, bool):
        raise InputError(
            f"expected an integer answer index, got {index!r:.60}",
            file=where.file,
            row=where.row,
            field=index_field,
        )
    if not 0 <= index < len(choices):
        raise InputError(
            f"answer index {index} out of range for {len(choices)} choices",
            file=where.file,
            row=where.row,
            field=index_field,
        )
    return list(choices), index


def problem_row(**fields: Any) -> dict[str, Any]:
    """A problems row with every column present (defaults: empty strings, no image, `{}` metadata)."""
    row: dict[str, Any] = {
        "problem_id": "",
        "source": "",
        "split": "",
        "question": "",
        "choices": [],
        "answer_index": None,
        "answer": "",
        "context": "",
        "image": None,
        "reference_rationale": "",
        "subject": "",
        "grade": "",
        "metadata": {},
    }
    unknown = set(fields) - set(row)
    if unknown:
        raise ValueError(f"unknown problems columns: {sorted(unknown)}")
    row.update(fields)
    if not isinstance(row["metadata"], str):
        row["metadata"] = json.dumps(row["metadata"], ensure_ascii=False, sort_keys=True, default=str)
    return row


@dataclass
class _Run:
    source: ProblemSource
    skip_invalid: bool
    splits: set[str] | None
    skipped: list[dict[str, Any]]
    records: int = 0  # records read, before any filter
    in_split: int = 0  # records the split filter kept (valid or not)
    splits_seen: set[str] = field(default_factory=set)  # every split (and pid_splits subset) met

    def rows(self, count: Callable[[str], None], progress: Progress | None) -> Iterator[dict[str, Any]]:
        seen: dict[str, Where] = {}
        total = self.source.total()
        for done, (where, raw) in enumerate(self.source.records(), 1):
            self.records = done
            if progress is not None:
                progress(done, total)
            self.splits_seen |= self.source.subsets_of(where) | ({where.split} - {None})
            wanted = self.splits is None or bool(self.splits & self.source.subsets_of(where))
            if not wanted and where.split is not None and where.split not in self.splits:
                continue
            try:
                row = self.source.convert(where, raw)
                self.splits_seen.add(row["split"])
                if not wanted and row["split"] not in self.splits:
                    continue
                validate_row("problems", row, file=where.file, index=where.row)
                if row["problem_id"] in seen:
                    first = seen[row["problem_id"]]
                    raise InputError(
                        f"duplicate problem_id '{row['problem_id']}' (first at row {first.row})",
                        file=where.file,
                        row=where.row,
                        field="problem_id",
                    )
            except InputError as exc:
                if not self.skip_invalid:
                    raise
                self.in_split += wanted or where.split is None or where.split in self.splits
                count("skipped")
                if len(self.skipped) < MAX_SKIPPED_LISTED:
                    self.skipped.append(
                        {"file": exc.file, "row": exc.row, "field": exc.field, "reason": str(exc)}
                    )
                continue
            seen[row["problem_id"]] = where
            self.in_split += 1
            count(f"split.{row['split']}")
            if row["image"] is not None:
                count("with_image")
            yield row


def ingest(
    store: Store,
    name: str,
    source: ProblemSource,
    *,
    skip_invalid: bool = False,
    splits: Iterable[str] | None = None,
    progress: Progress | None = None,
    command: list[str] | None = None,
) -> Version:
    """Publish `source` as a problems dataset `name` (atomic; an identical re-ingest reuses the version)."""
    wanted = sorted(set(splits)) if splits else None
    files = source.input_files()
    params = {
        "source": source.source,
        **source.params(),
        "content_sha256": hash_files(files),
        "input_files": len(files),
        "splits": wanted,
        "skip_invalid": skip_invalid,
    }
    skipped: list[dict[str, Any]] = []
    run = _Run(source, skip_invalid, set(wanted) if wanted else None, skipped)
    with store.writer(name, "problems", params=params, extra={"skipped": skipped}, command=command) as w:
        w.counts["skipped"] = 0
        for row in run.rows(w.count, progress):
            w.write(row)
        if w.rows == 0:
            raise _nothing_to_publish(run, w.counts["skipped"])
    return w.result


def _nothing_to_publish(run: _Run, n_skipped: int) -> InputError:
    """Why an ingest found no row to publish: an empty input, a split it does not have, or every row
    skipped as invalid (with the first reasons)."""
    where = str(run.source.params().get("path", run.source.source))
    if run.records == 0:
        return InputError("the input holds no records: nothing to ingest", file=where)
    if run.splits is not None and run.in_split == 0:
        asked = ", ".join(sorted(run.splits))
        have = ", ".join(sorted(run.splits_seen)) or "none"
        return InputError(f"no split {asked} in the input; its splits: {have}", file=where,
                          hint="pass --split with one of those (or leave --split out for all of them)")
    reasons = "; ".join(s["reason"] for s in run.skipped[:3])
    rows = f"every row that could be in split {', '.join(sorted(run.splits))}" if run.splits else "every row"
    return InputError(f"{rows} was skipped as invalid ({n_skipped} skipped); the first: {reasons}",
                      file=where, hint="fix those rows or drop --skip-invalid to stop at the first")
