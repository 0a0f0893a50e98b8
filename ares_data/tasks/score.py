"""Sentence scoring (the paper's nuanced feedback): one score in [0, 1] per rationale sentence."""

from __future__ import annotations

import math
import re
from typing import Any

from ..teachers.base import Reply
from .base import Task, ValidationError, check_finished, reply_object, sentence_texts

_LINE = re.compile(r"^\s*(?:[-*]\s*)?(?:sentence\s*)?#?(\d+)\s*[:=)\-]\s*(-?\d+(?:\.\d+)?)\b", re.I | re.M)


class ScoreTask(Task):
    kind = "scores"
    name = "score"
    default_prompt = "score.txt"
    required_fields = {"sentences"}

    def schema(self) -> dict:
        item = {
            "type": "object",
            "properties": {"sentence": {"type": "integer"}, "score": {"type": "number"}},
            "required": ["sentence", "score"],
            "additionalProperties": False,
        }
        return {
            "type": "object",
            "properties": {"scores": {"type": "array", "items": item}},
            "required": ["scores"],
            "additionalProperties": False,
        }

    def retry_hint(self) -> str:
        return ": exactly one score between 0.0 and 1.0 for each numbered sentence"

    def parse(self, reply: Reply, problem: dict, rationale: dict) -> dict:
        sents = sentence_texts(rationale)
        check_finished(reply)
        pairs = _pairs(reply)
        return {"sentences": sents, "scores": validate_scores(pairs, len(sents))}

    def failed_fields(self, problem: dict, rationale: dict) -> dict:
        return {"sentences": sentence_texts(rationale), "scores": []}


def _pairs(reply: Reply) -> list[tuple[Any, Any]]:
    """(sentence key, score) pairs from a structured object or, failing that, "Sentence 1: 0.8" lines."""
    obj = reply_object(reply)
    if obj is not None:
        scores = obj.get("scores")
        if isinstance(scores, list) and all(isinstance(x, dict) for x in scores):
            return [(x.get("sentence"), x.get("score")) for x in scores]
        if isinstance(scores, list):  # a bare positional list
            return list(enumerate(scores, 1))
        if isinstance(scores, dict):
            return list(scores.items())
        raise ValidationError('the reply has no "scores" list')
    found = [(int(k), float(v)) for k, v in _LINE.findall(reply.text or "")]
    if not found:
        raise ValidationError("the reply contains neither JSON nor 'Sentence N: score' lines")
    return found


def validate_scores(pairs: list[tuple[Any, Any]], n: int) -> list[float]:
    """Exactly one number in [0, 1] for each sentence 1..n; nothing is coerced or invented."""
    by_index: dict[int, float] = {}
    for key, value in pairs:
        try:
            idx = int(key) if not isinstance(key, bool) and str(key).strip().isdigit() else None
        except (TypeError, ValueError):
            idx = None
        if idx is None:
            raise ValidationError(f"sentence key {key!r} is not a sentence number")
        if not 1 <= idx <= n:
            raise ValidationError(f"score for sentence {idx}, but the rationale has {n} sentences")
        if idx in by_index:
            raise ValidationError(f"sentence {idx} was scored twice")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValidationError(f"the score of sentence {idx} is not a number: {value!r}")
        if not 0.0 <= value <= 1.0:
            raise ValidationError(f"the score of sentence {idx} is {value}, outside [0, 1]")
        by_index[idx] = float(value)
    missing = [i for i in range(1, n + 1) if i not in by_index]
    if missing:
        shown = ", ".join(map(str, missing[:10]))
        raise ValidationError(f"expected {n} scores, got {len(by_index)}; missing sentence(s) {shown}")
    return [by_index[i] for i in range(1, n + 1)]
