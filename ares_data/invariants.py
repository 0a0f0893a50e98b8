"""What every row of a kind satisfies when the toolkit builds it, checked on rows that come from elsewhere.

Local builds make these true by construction (`build_rationale` offsets, the score task's one
score in [0, 1] per sentence, ...). `pull` runs `check_batch` on every pulled batch, so data from a Hub repo
is held to the same rules, and `derived_counts` recomputes the manifest counts from the rows themselves.
Errors name the file, the row (1-based over the whole config) and the field.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from .errors import InputError

STATUSES = ("ok", "failed")
_TEACHER_NONNEGATIVE = ("input_tokens", "output_tokens", "cost_usd", "attempts")


def _offsets(text: str | None, sentences: list[dict] | None, field: str) -> tuple[str, str] | None:
    text = text or ""
    for i, s in enumerate(sentences or []):
        start, end = s.get("start"), s.get("end")
        if start is None or end is None or not 0 <= start <= end <= len(text):
            return f"{field}[{i}]", f"offsets {start}..{end} are outside the text ({len(text)} characters)"
        if text[start:end] != s.get("text"):
            piece = text[start:end]
            return f"{field}[{i}]", f"text[{start}:{end}] is {piece!r:.60}, not {s.get('text')!r:.60}"
    return None


def _teacher(row: dict[str, Any]) -> tuple[str, str] | None:
    if row.get("status") not in STATUSES:
        return "status", f"{row.get('status')!r} is not one of {', '.join(STATUSES)}"
    for key in _TEACHER_NONNEGATIVE:
        value = row.get(key)
        if value is not None and (value < 0 or (isinstance(value, float) and not math.isfinite(value))):
            return key, f"{value!r} is negative or not finite"
    return None


def _scores(row: dict[str, Any]) -> tuple[str, str] | None:
    bad = _teacher(row)
    if bad:
        return bad
    scores, sentences = row.get("scores") or [], row.get("sentences") or []
    if row["status"] == "failed":
        return ("scores", f"a failed row has {len(scores)} scores (none expected)") if scores else None
    if len(scores) != len(sentences):
        return "scores", f"{len(scores)} scores for {len(sentences)} sentences"
    for i, x in enumerate(scores):
        if x is None or not (0.0 <= x <= 1.0):
            return f"scores[{i}]", f"{x!r} is outside [0, 1]"
    return None


def _corrections(row: dict[str, Any]) -> tuple[str, str] | None:
    bad = _teacher(row)
    if bad:
        return bad
    for key in ("kept", "edited", "added", "removed"):
        if (row.get(key) or 0) < 0:
            return key, f"{row[key]} is negative"
    return _offsets(row.get("corrected"), row.get("corrected_sentences"), "corrected_sentences")


def _rationales(row: dict[str, Any]) -> tuple[str, str] | None:
    for field in ("sentences", "dropped_sentences"):
        bad = _offsets(row.get("text"), row.get(field), field)
        if bad:
            return bad
    return None


def _problems(row: dict[str, Any]) -> tuple[str, str] | None:
    choices, index = row.get("choices") or [], row.get("answer_index")
    if choices and index is not None and not 0 <= index < len(choices):
        return "answer_index", f"{index} is not an index into {len(choices)} choices"
    return None


def _judgments(row: dict[str, Any]) -> tuple[str, str] | None:
    bad = _teacher(row)
    allowed = {"order": ("ab", "ba"), "preferred": ("A", "B", "tie", ""), "winner": ("a", "b", "tie", "")}
    for key, values in allowed.items():
        if not bad and row.get(key) not in values:
            bad = key, f"{row.get(key)!r} is not one of {values}"
    return bad


CHECKS: dict[str, Callable[[dict[str, Any]], tuple[str, str] | None]] = {
    "scores": _scores, "corrections": _corrections, "rationales": _rationales, "problems": _problems,
    "judgments": _judgments,
}
_SKIP = {"problems": ("image",)}  # columns no invariant reads: not converted to Python


def check_batch(kind: str, batch: pa.RecordBatch | pa.Table, first_row: int, file: str) -> None:
    """Raise InputError naming the file, row (1-based, counting from `first_row` + 1) and field of the first
    row in `batch` that breaks its kind's invariants."""
    check = CHECKS.get(kind)
    if check is None:
        return
    names = [n for n in batch.schema.names if n not in _SKIP.get(kind, ())]
    for i, row in enumerate(batch.select(names).to_pylist()):
        bad = check(row)
        if bad:
            raise InputError(bad[1], file=file, row=first_row + i + 1, field=bad[0])


def derived_counts(kind: str, batch: pa.RecordBatch | pa.Table) -> dict[str, float]:
    """The manifest counts a batch contributes, computed from its rows."""
    import pyarrow.compute as pc

    out: dict[str, float] = {}
    names = batch.schema.names
    if "status" in names:
        ok = pc.sum(pc.equal(batch.column("status"), "ok")).as_py() or 0
        out.update(ok=ok, failed=batch.num_rows - ok)
        for key, column in (("cached", "cached"), ("attempts", "attempts")):
            out[key] = pc.sum(pc.cast(batch.column(column), pa.int64())).as_py() or 0
        for key in ("input_tokens", "output_tokens", "cost_usd"):
            out[key] = pc.sum(batch.column(key)).as_py() or 0
    if kind == "rationales":
        for key in ("sentences", "dropped_sentences"):
            out[key] = pc.sum(pc.list_value_length(batch.column(key))).as_py() or 0
    return out
