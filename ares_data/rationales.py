"""Rationale rows: content-hashed ids and sentence segmentation with exact offsets.

`build_rationale` is the one way to make a row of kind `rationales` (imports here, rollouts in ares_train):

    row = build_rationale("12", "Oil floats. So the answer is oil.", sample_index=0, round=0,
                          generator="llava-7b")

`import_rationales` reads a JSONL file of model outputs ({problem_id, text, sample_index?, generator?,
round?, generator_fingerprint?, generation_params?}), checks every problem_id against a problems dataset
(recorded as the parent) and publishes the segmented rows.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import InputError
from .schema import check_int_range
from .segment import drop_repeats as _drop_repeats
from .segment import segment
from .sources.base import count_lines, hash_files, jsonl_lines, parse_json_line
from .store import Store, Version

MAX_SKIPPED_LISTED = 1000


def rationale_id(problem_id: str, round: int, sample_index: int, text: str) -> str:
    """Content hash of (problem_id, round, sample_index, text): 16 hex characters."""
    blob = json.dumps([problem_id, round, sample_index, text], ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def build_rationale(
    problem_id: str,
    text: str,
    *,
    sample_index: int = 0,
    round: int = 0,
    generator: str = "",
    generator_fingerprint: str = "",
    generation_params: dict[str, Any] | str | None = None,
    prompt: str = "",
    token_ids: list[int] | None = None,
    drop_repeats: bool = False,
) -> dict[str, Any]:
    """A `rationales` row. Sentences index into `text` unchanged; with `drop_repeats`, repeated sentences
    are left out of `sentences` and listed in `dropped_sentences` (the text itself is kept whole)."""
    sentences = segment(text)
    dropped: list[Any] = []
    if drop_repeats:
        sentences, dropped = _drop_repeats(sentences)
    params = (
        generation_params
        if isinstance(generation_params, str)
        else json.dumps(generation_params or {}, sort_keys=True)
    )
    return {
        "rationale_id": rationale_id(problem_id, round, sample_index, text),
        "problem_id": problem_id,
        "sample_index": sample_index,
        "round": round,
        "text": text,
        "sentences": [s.as_dict() for s in sentences],
        "dropped_sentences": [s.as_dict() for s in dropped],
        "generator": generator,
        "generator_fingerprint": generator_fingerprint,
        "generation_params": params,
        "prompt": prompt,
        "token_ids": list(token_ids or []),
    }


def _opt(rec: dict[str, Any], key: str, kind: type, file: str, line: int) -> Any:
    value = rec.get(key)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        raise InputError(
            f"expected {kind.__name__}, got {type(value).__name__} ({value!r:.60})",
            file=file,
            row=line,
            field=key,
        )
    if kind is int:
        check_int_range(value, "int32", file=file, row=line, field=key)  # e.g. a sample_index of 2**40
    return value


class RationaleReader:
    """Parses and checks one JSONL line at a time; assigns sample indices in file order when absent."""

    def __init__(
        self, path: Path, known: set[str], *, generator: str, round: int, drop_repeats: bool
    ) -> None:
        self.path, self.known = path, known
        self.generator, self.round, self.drop_repeats = generator, round, drop_repeats
        self.next_index: dict[tuple[str, int], int] = {}
        self.seen: dict[tuple[str, int, int], int] = {}

    def row(self, line: int, raw: str) -> dict[str, Any]:
        f = str(self.path)
        rec = parse_json_line(raw, f, line)
        pid = self._problem_id(rec, f, line)
        text = _opt(rec, "text", str, f, line)
        if not text or not text.strip():
            raise InputError("missing or empty field", file=f, row=line, field="text")
        rnd = _opt(rec, "round", int, f, line)
        rnd = self.round if rnd is None else rnd
        index = self._sample_index(rec, pid, rnd, f, line)
        params = rec.get("generation_params")
        if params is not None and not isinstance(params, (dict, str)):
            raise InputError("expected an object", file=f, row=line, field="generation_params")
        return build_rationale(
            pid, text, sample_index=index, round=rnd,
            generator=_opt(rec, "generator", str, f, line) or self.generator,
            generator_fingerprint=_opt(rec, "generator_fingerprint", str, f, line) or "",
            generation_params=params, drop_repeats=self.drop_repeats,
        )  # fmt: skip

    def _problem_id(self, rec: dict[str, Any], f: str, line: int) -> str:
        pid = rec.get("problem_id")
        if pid is None:
            raise InputError("missing field", file=f, row=line, field="problem_id")
        pid = str(pid) if isinstance(pid, int) and not isinstance(pid, bool) else pid
        if not isinstance(pid, str):
            raise InputError(f"expected a string, got {type(pid).__name__}", file=f, row=line,
                             field="problem_id")
        if pid not in self.known:
            raise InputError(f"unknown problem_id '{pid}' (not in the problems dataset)", file=f, row=line,
                             field="problem_id")
        return pid

    def _sample_index(self, rec: dict[str, Any], pid: str, rnd: int, f: str, line: int) -> int:
        """The line's sample_index, or the next free one for (problem, round); duplicates are errors."""
        index = _opt(rec, "sample_index", int, f, line)
        index = self.next_index.get((pid, rnd), 0) if index is None else index
        first = self.seen.setdefault((pid, rnd, index), line)
        if first != line:
            raise InputError(f"duplicate sample_index {index} for problem '{pid}' round {rnd} (first at line "
                             f"{first})", file=f, row=line, field="sample_index")
        self.next_index[(pid, rnd)] = max(self.next_index.get((pid, rnd), 0), index + 1)
        return index


def problem_ids(problems: Version) -> set[str]:
    """The problem ids of a problems dataset, read without decoding images."""
    table = problems.load().data
    return set(table.column("problem_id").to_pylist())


def import_rationales(
    store: Store,
    name: str,
    path: Path,
    problems: Version,
    *,
    generator: str = "imported",
    round: int = 0,
    drop_repeats: bool = False,
    skip_invalid: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    command: list[str] | None = None,
) -> Version:
    """Publish the rationales in `path` (JSONL) as dataset `name`, with `problems` as the parent."""
    if not path.is_file():
        raise InputError("file not found", file=str(path))
    reader = RationaleReader(
        path, problem_ids(problems), generator=generator, round=round, drop_repeats=drop_repeats
    )
    params = {
        "path": str(path.resolve()),
        "content_sha256": hash_files([path]),
        "generator": generator,
        "round": round,
        "drop_repeats": drop_repeats,
        "skip_invalid": skip_invalid,
    }
    skipped: list[dict[str, Any]] = []
    total = count_lines(path)
    with store.writer(
        name, "rationales", parents=[problems], params=params, extra={"skipped": skipped}, command=command
    ) as w:
        w.counts.update({"skipped": 0, "sentences": 0, "dropped_sentences": 0})
        for done, (line, raw) in enumerate(jsonl_lines(path), 1):
            if progress is not None:
                progress(done, total)
            try:
                row = reader.row(line, raw)
            except InputError as exc:
                if not skip_invalid:
                    raise
                w.count("skipped")
                if len(skipped) < MAX_SKIPPED_LISTED:
                    skipped.append({"file": exc.file, "row": exc.row, "field": exc.field, "reason": str(exc)})
                continue
            w.write(row)
            w.count("sentences", len(row["sentences"]))
            w.count("dropped_sentences", len(row["dropped_sentences"]))
        if w.rows == 0:
            raise InputError(
                "no rationales to publish (the file is empty or every line was skipped)", file=str(path)
            )
    return w.result
