"""Generic JSONL problems with a field mapping, for users' own data.

`mapping` maps a problems column to a field of the input records (`{"question": "q", "answer": "label"}`;
dotted paths like `meta.grade` reach into objects). Columns not mapped are read from fields of the same
name when present. `answer` may be a choice index, the choice text or a letter (A, B, ...); without choices
it is kept as a free-form answer. `image` is a file path relative to the JSONL file (or `images_root`).
Fields the mapping does not use are kept in `metadata`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import InputError, UsageError
from .base import (
    ProblemSource,
    Where,
    check_choices,
    count_lines,
    jsonl_lines,
    parse_json_line,
    problem_row,
    read_image,
)
from .guards import check_image_inside, image_roots, usable_image

TARGETS = (
    "problem_id",
    "question",
    "choices",
    "answer",
    "answer_index",
    "context",
    "image",
    "reference_rationale",
    "subject",
    "grade",
    "split",
)
_MISSING = object()


def parse_mapping(items: list[str]) -> dict[str, str]:
    """`["question=q", "answer=label"]` -> {"question": "q", "answer": "label"}; UsageError when malformed."""
    mapping: dict[str, str] = {}
    for item in items:
        target, sep, field = item.partition("=")
        target, field = target.strip(), field.strip()
        if not sep or not target or not field:
            raise UsageError(f"bad --map '{item}'", hint="write --map COLUMN=FIELD, e.g. --map question=q")
        if target not in TARGETS:
            raise UsageError(
                f"--map {item}: unknown column '{target}'", hint=f"columns: {', '.join(TARGETS)}"
            )
        mapping[target] = field
    return mapping


def _get(rec: dict[str, Any], path: str) -> Any:
    cur: Any = rec
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _MISSING
        cur = cur[part]
    return cur


def _unused(rec: dict[str, Any], used: list[str]) -> dict[str, Any]:
    """`rec` without the (dotted) fields in `used`; objects left empty by that are dropped, so
    `--map grade=meta.grade` keeps the other `meta.*` fields."""
    nested: dict[str, list[str]] = {}
    for p in used:
        head, _, rest = p.partition(".")
        nested.setdefault(head, []).append(rest)  # "" when the whole field is used
    out: dict[str, Any] = {}
    for k, v in rec.items():
        if k not in nested:
            out[k] = v
        elif isinstance(v, dict) and all(nested[k]):
            inner = _unused(v, nested[k])
            if inner:
                out[k] = inner
    return out


class JsonlFile(ProblemSource):
    source = "jsonl"

    def __init__(
        self,
        path: Path,
        mapping: dict[str, str] | None = None,
        *,
        source_name: str = "jsonl",
        default_split: str = "train",
        images_root: Path | None = None,
        allow_outside_images: bool = False,
    ) -> None:
        if not path.is_file():
            raise InputError("file not found", file=str(path))
        self.path, self.mapping = path, dict(mapping or {})
        self.source_name, self.default_split = source_name, default_split
        self.images_root = images_root or path.parent
        self.allow_outside_images = allow_outside_images  # else only from images_root and the file's folder
        self._roots = image_roots(self.images_root, path.parent)

    def params(self) -> dict[str, Any]:
        return {
            "path": str(self.path.resolve()),
            "mapping": self.mapping,
            "source_name": self.source_name,
            "default_split": self.default_split,
            "images_root": str(self.images_root.resolve()),
            **({"allow_outside_images": True} if self.allow_outside_images else {}),
        }

    def total(self) -> int:
        return count_lines(self.path)

    def input_files(self) -> list[Path]:
        files = [self.path]
        field = self.mapping.get("image", "image")
        for _, line in jsonl_lines(self.path):
            try:
                value = _get(json.loads(line), field)
            except (ValueError, TypeError, RecursionError):  # the row itself reports it
                continue
            path = self.images_root / value if isinstance(value, str) and value else None
            if usable_image(path, self._roots, self.allow_outside_images):
                files.append(path)
        return files

    def records(self) -> Iterator[tuple[Where, Any]]:
        for lineno, line in jsonl_lines(self.path):
            yield Where(str(self.path), lineno), line

    def _field(self, rec: dict[str, Any], target: str) -> Any:
        return _get(rec, self.mapping.get(target, target))

    def convert(self, where: Where, raw: Any) -> dict[str, Any]:
        rec = parse_json_line(raw, where.file, int(where.row))
        values = {t: self._field(rec, t) for t in TARGETS}
        strings = self._strings(values, where)
        choices, index, answer = self._answer(values, where)
        image = self._image(values["image"], where)
        used = [self.mapping.get(t, t) for t in TARGETS if values[t] is not _MISSING]
        return problem_row(
            problem_id=strings.get("problem_id", f"{self.path.stem}-{where.row}"),
            source=self.source_name,
            split=strings.get("split", self.default_split),
            question=strings["question"],
            choices=choices,
            answer_index=index,
            answer=answer,
            context=strings.get("context", ""),
            image=image,
            reference_rationale=strings.get("reference_rationale", ""),
            subject=strings.get("subject", ""),
            grade=strings.get("grade", ""),
            metadata=_unused(rec, used),
        )

    def _strings(self, values: dict[str, Any], where: Where) -> dict[str, str]:
        """The text columns that are present, checked; `question` is required."""
        strings = {}
        for t in ("problem_id", "question", "context", "reference_rationale", "subject", "grade", "split"):
            v, field = values[t], self.mapping.get(t, t)
            if v is _MISSING or v is None:
                if t == "question":
                    raise InputError("missing field", file=where.file, row=where.row, field=field)
                continue
            if t in ("problem_id", "grade") and isinstance(v, int) and not isinstance(v, bool):
                v = str(v)
            if not isinstance(v, str):
                raise InputError(
                    f"expected a string, got {type(v).__name__}", file=where.file, row=where.row, field=field
                )
            if t == "question" and not v.strip():
                raise InputError("empty field", file=where.file, row=where.row, field=field)
            strings[t] = v
        return strings

    def _answer(self, values: dict[str, Any], where: Where) -> tuple[list[str], int | None, str]:
        choices = values["choices"]
        answer = values["answer_index"] if values["answer_index"] is not _MISSING else values["answer"]
        afield = (
            self.mapping.get("answer_index", "answer_index")
            if values["answer_index"] is not _MISSING
            else self.mapping.get("answer", "answer")
        )
        if choices is _MISSING or choices is None:
            if answer is _MISSING or answer is None:
                return [], None, ""
            if not isinstance(answer, str):
                raise InputError(
                    "without choices the answer must be text", file=where.file, row=where.row, field=afield
                )
            return [], None, answer
        cfield = self.mapping.get("choices", "choices")
        if answer is _MISSING or answer is None:
            raise InputError("missing field", file=where.file, row=where.row, field=afield)
        if isinstance(answer, str) and isinstance(choices, list):
            letter = answer.strip().upper()
            if answer in choices:  # the text of a choice wins, even a one-letter one ("b")
                answer = choices.index(answer)
            elif len(letter) == 1 and 0 <= ord(letter) - ord("A") < len(choices):  # "B" or "b"
                answer = ord(letter) - ord("A")
            else:
                letters = f" nor a letter A-{chr(ord('A') + len(choices) - 1)}" if choices else ""
                raise InputError(
                    f"answer {answer!r:.60} is not one of the choices{letters}",
                    file=where.file,
                    row=where.row,
                    field=afield,
                )
        choices, index = check_choices(choices, answer, where, choices_field=cfield, index_field=afield)
        return choices, index, choices[index]

    def _image(self, value: Any, where: Where) -> dict[str, Any] | None:
        if value is _MISSING or value is None or value == "":
            return None
        field = self.mapping.get("image", "image")
        if not isinstance(value, str):
            raise InputError("expected an image file path", file=where.file, row=where.row, field=field)
        path = check_image_inside(self.images_root / value, value, self._roots, where, field,
                                  self.allow_outside_images)
        if not path.is_file():
            raise InputError(f"image not found: {path}", file=where.file, row=where.row, field=field)
        return read_image(path, where, field=field)
