"""Correction feedback: the teacher's repaired rationale, segmented, with an edit summary."""

from __future__ import annotations

import difflib

from ..segment import segment
from ..teachers.base import Reply
from .base import Task, ValidationError, reply_object, sentence_texts

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
        if reply.truncated:
            raise ValidationError(f"the corrected rationale was cut off (stop reason {reply.stop_reason})")
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

    Unchanged sentences (whitespace-normalised) are kept; inside a replaced block, sentences are paired in
    order and a pair at least EDITED_MIN_SIMILARITY similar counts as one edit, otherwise as one removal plus
    one addition; unpaired sentences are added or removed."""
    a, b = [_norm(s) for s in original], [_norm(s) for s in corrected]
    counts = {"kept": 0, "edited": 0, "added": 0, "removed": 0}
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            counts["kept"] += i2 - i1
        elif op == "delete":
            counts["removed"] += i2 - i1
        elif op == "insert":
            counts["added"] += j2 - j1
        else:
            for x, y in zip(a[i1:i2], b[j1:j2], strict=False):
                if difflib.SequenceMatcher(None, x, y).ratio() >= EDITED_MIN_SIMILARITY:
                    counts["edited"] += 1
                else:
                    counts["removed"] += 1
                    counts["added"] += 1
            paired = min(i2 - i1, j2 - j1)
            counts["removed"] += (i2 - i1) - paired
            counts["added"] += (j2 - j1) - paired
    return counts
