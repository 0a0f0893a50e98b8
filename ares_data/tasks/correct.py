"""Correction feedback: the teacher's repaired rationale, segmented, with an edit summary."""

from __future__ import annotations

import difflib

from ..segment import segment
from ..teachers.base import Reply
from .base import Task, ValidationError, check_finished, reply_object, sentence_texts

EDITED_MIN_SIMILARITY = 0.5  # a replaced sentence at least this similar to the original counts as "edited"
_KEYS = ("corrected", "corrected_rationale", "rationale")


class CorrectTask(Task):
    kind = "corrections"
    name = "correct"
    default_prompt = "correct.txt"
    required_fields = {"rationale"}

    def schema(self) -> dict:
        return {
            "type": "object",
            "properties": {"corrected": {"type": "string"}},
            "required": ["corrected"],
            "additionalProperties": False,
        }

    def retry_hint(self) -> str:
        return ': the complete corrected rationale as {"corrected": "..."}'

    def parse(self, reply: Reply, problem: dict, rationale: dict) -> dict:
        check_finished(reply, "the corrected rationale")
        obj = reply_object(reply)
        if obj is not None:
            value = next((obj[k] for k in _KEYS if k in obj), None)
            if not isinstance(value, str):
                raise ValidationError('the reply has no "corrected" text')
            corrected = value.strip()
        else:
            corrected = (reply.text or "").strip()  # a server that ignored the schema answered in prose
        if not corrected:
            raise ValidationError("the corrected rationale is empty")
        sentences = segment(corrected)
        summary = edit_summary(
            sentence_texts(rationale) or [s.text for s in segment(rationale["text"])],
            [s.text for s in sentences],
        )
        return {
            "original": rationale.get("text") or "",
            "corrected": corrected,
            "corrected_sentences": [s.as_dict() for s in sentences],
            **summary,
        }

    def failed_fields(self, problem: dict, rationale: dict) -> dict:
        return {
            "original": rationale.get("text") or "",
            "corrected": "",
            "corrected_sentences": [],
            "kept": 0,
            "edited": 0,
            "added": 0,
            "removed": 0,
        }


def _norm(s: str) -> str:
    return " ".join(s.split())


def edit_summary(original: list[str], corrected: list[str]) -> dict[str, int]:
    """Count sentences kept / edited / added / removed between two segmented rationales (difflib).

    Unchanged sentences (whitespace-normalised) are kept. Inside a replaced block, the most similar
    original/corrected pairs are matched first; a pair at least EDITED_MIN_SIMILARITY similar counts as one
    edit. Unmatched original sentences are removed, unmatched corrected ones added."""
    a, b = [_norm(s) for s in original], [_norm(s) for s in corrected]
    counts = {"kept": 0, "edited": 0, "added": 0, "removed": 0}
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            counts["kept"] += i2 - i1
            continue
        edited = _match_edits(a[i1:i2], b[j1:j2])
        counts["edited"] += edited
        counts["removed"] += (i2 - i1) - edited
        counts["added"] += (j2 - j1) - edited
    return counts


def _match_edits(old: list[str], new: list[str]) -> int:
    """Greedy best-first matching of similar sentence pairs; returns the number of pairs matched."""
    pairs = sorted(
        (
            (difflib.SequenceMatcher(None, x, y).ratio(), i, j)
            for i, x in enumerate(old)
            for j, y in enumerate(new)
        ),
        reverse=True,
    )
    used_old: set[int] = set()
    used_new: set[int] = set()
    for ratio, i, j in pairs:
        if ratio < EDITED_MIN_SIMILARITY:
            break
        if i not in used_old and j not in used_new:
            used_old.add(i)
            used_new.add(j)
    return len(used_old)
