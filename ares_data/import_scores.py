"""Sentence scores from any external scorer (a programmatic verifier, another pipeline) as a `scores` version.

`import_scores` reads a JSONL file, one line per scored rationale:

    {"rationale_id": "3f2a...", "scores": [1.0, 0.0, 0.5]}

with exactly one number in [0, 1] per sentence of that rationale (its `sentences`, in order). A line may also
carry `problem_id` and `sentences` (the sentence texts); when present they must match the rationale, which
catches a scorer that segmented the text differently. Every rationale id must be in the rationales dataset
(recorded as the parent) and appear once. Rows are written in the rationales' order, one per rationale, in
the schema `ares-data score` writes, so `ares-train ppo`, `stats`, `export prm` and `push` take them as they
are. A rationale that no line scores becomes a failed row with the error "no score imported" (counted as
`missing`), as a teacher reply that failed would; PPO leaves it out and counts it. With `skip_invalid`, bad
lines are skipped and listed in the manifest, and their rationales (when the id is known) become failed rows
that name the skipped line.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InputError
from .rationales import MAX_SKIPPED_LISTED
from .sources.base import count_lines, hash_files, jsonl_lines, parse_json_line
from .store import Store, Version

FIELDS = ("rationale_id", "scores", "problem_id", "sentences")
NO_SCORE = "no score imported"


class ScoreLineReader:
    """Checks one JSONL line at a time against the rationales (id, sentence count, range, duplicates)."""

    def __init__(self, path: Path, rationales: dict[str, tuple[str, list[str]]]) -> None:
        self.file = str(path)
        self.rationales = rationales  # rationale_id -> (problem_id, sentence texts)
        self.seen: dict[str, int] = {}

    def read(self, line: int, raw: str) -> tuple[str, list[float]]:
        rec = parse_json_line(raw, self.file, line)
        unknown = sorted(set(rec) - set(FIELDS))
        if unknown:
            raise self._error(line, None, f"unknown field(s) {unknown}; a line holds {', '.join(FIELDS[:2])} "
                                          f"and optionally {', '.join(FIELDS[2:])}")
        rid = self.rationale_id(line, rec)
        problem_id, sentences = self.rationales[rid]
        if rec.get("problem_id") is not None and str(rec["problem_id"]) != problem_id:
            raise self._error(line, "problem_id", f"'{rec['problem_id']}' but rationale '{rid}' belongs to "
                                                  f"problem '{problem_id}'")
        if rec.get("sentences") is not None and rec["sentences"] != sentences:
            raise self._error(line, "sentences", f"differ from the {len(sentences)} sentences of rationale "
                                                 f"'{rid}' (segment with ares-data, or leave the field out)")
        scores = self.scores(line, rec, len(sentences), rid)
        self.seen[rid] = line
        return rid, scores

    def rationale_id(self, line: int, rec: dict[str, Any]) -> str:
        rid = rec.get("rationale_id")
        if rid is None:
            raise self._error(line, "rationale_id", "missing field")
        if not isinstance(rid, str):
            raise self._error(line, "rationale_id", f"expected a string, got {type(rid).__name__}")
        if rid not in self.rationales:
            raise self._error(line, "rationale_id", f"unknown rationale_id '{rid}' (not in the rationales "
                                                    "dataset)")
        if rid in self.seen:
            raise self._error(line, "rationale_id", f"duplicate rationale_id '{rid}' (first at line "
                                                    f"{self.seen[rid]})")
        return rid

    def scores(self, line: int, rec: dict[str, Any], n: int, rid: str) -> list[float]:
        values = rec.get("scores")
        if values is None:
            raise self._error(line, "scores", "missing field")
        if not isinstance(values, list):
            raise self._error(line, "scores", f"expected a list, got {type(values).__name__}")
        if len(values) != n:
            raise self._error(line, "scores", f"{len(values)} scores, but rationale '{rid}' has {n} "
                                              f"sentence{'s' if n != 1 else ''}")
        for i, v in enumerate(values):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                got = f"{type(v).__name__} ({v!r:.40})"
                raise self._error(line, f"scores[{i}]", f"expected a number, got {got}")
            if not (math.isfinite(v) and 0.0 <= v <= 1.0):
                raise self._error(line, f"scores[{i}]", f"{v} is outside [0, 1]")
        return [float(v) for v in values]

    def _error(self, line: int, field: str | None, message: str) -> InputError:
        return InputError(message, file=self.file, row=line, field=field)


def rationale_index(rationales: Version) -> dict[str, tuple[str, list[str]]]:
    """rationale_id -> (problem_id, sentence texts), read column-wise from the Arrow table."""
    table = rationales.load().data
    ids = table.column("rationale_id").to_pylist()
    problems = table.column("problem_id").to_pylist()
    sentences = table.column("sentences").to_pylist()
    return {rid: (pid, [s["text"] for s in sents or []])
            for rid, pid, sents in zip(ids, problems, sentences, strict=True)}


def score_row(rid: str, problem_id: str, sentences: list[str], scores: list[float] | None, scorer: str,
              error: str = "") -> dict[str, Any]:
    """A `scores` row: ok with the given scores, or failed (scores None) with `error`."""
    ok = scores is not None
    return {"rationale_id": rid, "problem_id": problem_id, "sentences": sentences,
            "scores": scores if ok else [], "status": "ok" if ok else "failed",
            "error": "" if ok else error, "raw_response": "", "teacher": scorer,
            "prompt_sha": "", "input_tokens": 0, "output_tokens": 0, "cost_usd": 0.0, "attempts": 0,
            "cached": False}


def import_scores(
    store: Store,
    name: str,
    path: Path,
    rationales: Version,
    *,
    scorer: str | None = None,
    skip_invalid: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    command: list[str] | None = None,
) -> Version:
    """Publish the sentence scores in `path` (JSONL) as dataset `name`, with `rationales` as the parent."""
    if not path.is_file():
        raise InputError("file not found", file=str(path))
    scorer = (scorer if scorer is not None else f"import:{path.name}").strip()
    if not scorer:
        raise InputError("the scorer name is empty", field="scorer", hint="pass --scorer NAME")
    index = rationale_index(rationales)
    lines = _read(ScoreLineReader(path, index), path, skip_invalid, progress)
    if not lines.scored:
        raise InputError("no scores to import (the file is empty or every line was skipped)", file=str(path))
    params = {"path": str(path.resolve()), "content_sha256": hash_files([path]), "scorer": scorer,
              "skip_invalid": skip_invalid}
    with store.writer(name, "scores", parents=[rationales], params=params, command=command,
                      extra={"teacher": scorer, "skipped": lines.listed, "cost_usd": 0.0}) as w:
        w.counts.update({"ok": 0, "failed": 0, "missing": 0, "skipped": lines.skipped, "sentences": 0})
        for rid, (pid, sentences) in index.items():
            scores = lines.scored.get(rid)
            w.write(score_row(rid, pid, sentences, scores, scorer, lines.errors.get(rid, NO_SCORE)))
            w.count("ok" if scores is not None else "failed")
            if scores is not None:
                w.count("sentences", len(scores))
            elif rid not in lines.errors:
                w.count("missing")
    return w.result


@dataclass
class ScoreLines:
    scored: dict[str, list[float]] = field(default_factory=dict)  # rationale id -> scores
    errors: dict[str, str] = field(default_factory=dict)  # rationale id -> why its (skipped) line failed
    skipped: int = 0
    listed: list[dict[str, Any]] = field(default_factory=list)  # the first MAX_SKIPPED_LISTED skipped lines


def _read(reader: ScoreLineReader, path: Path, skip_invalid: bool,
          progress: Callable[[int, int | None], None] | None) -> ScoreLines:
    out = ScoreLines()
    total = count_lines(path)
    for done, (line, raw) in enumerate(jsonl_lines(path), 1):
        if progress is not None:
            progress(done, total)
        try:
            rid, scores = reader.read(line, raw)
        except InputError as exc:
            if not skip_invalid:
                raise
            rid = _known_id(reader, raw)
            if rid is not None and rid not in out.scored:
                out.errors.setdefault(rid, f"score line {line} was skipped: {exc}")
            out.skipped += 1
            if len(out.listed) < MAX_SKIPPED_LISTED:
                out.listed.append({"file": exc.file, "row": exc.row, "field": exc.field, "reason": str(exc),
                                   "rationale_id": rid})
            continue
        out.scored[rid] = scores
        out.errors.pop(rid, None)
    return out


def _known_id(reader: ScoreLineReader, raw: str) -> str | None:
    """The rationale id of a bad line, when the line parses and names a known rationale."""
    try:
        rid = parse_json_line(raw, reader.file, 0).get("rationale_id")
    except InputError:
        return None
    return rid if isinstance(rid, str) and rid in reader.rationales else None
