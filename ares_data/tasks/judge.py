"""Pairwise judging (the paper's rationale comparison): which of two rationales reasons better?

The item a JudgeTask works on is a *pair* (see `ares_data.judging.make_pairs`), passed where other tasks take
a rationale: ``{"pair_id", "problem_id", "sample_index", "order", "a": rationale, "b": rationale}``.
``order == "ab"`` shows dataset A's rationale as Option A; ``"ba"`` shows dataset B's rationale as Option A.
The template's ``{{rationale}}`` placeholder renders both options ("Option A:\\n...\\n\\nOption B:\\n...");
the other placeholders mean what they mean for scoring and correction.

The reply is ``{"preferred": "A" | "B" | "tie", "reason": "..."}``; a plain-text reply that names exactly
one of "Option A", "Option B" or "tie" is also accepted. `winner` maps the position back to the dataset.

The offline `reference` teacher judges with `reference_judgment`: each option's quality is the mean of the
reference teacher's own sentence scores for it (see `ares_data.teachers.reference`; an empty rationale
scores 0); the option with the higher mean wins when the means differ by at least REFERENCE_TIE_MARGIN,
otherwise it is a tie. The rule never looks at the position, so it is deterministic and order-consistent.
"""

from __future__ import annotations

import re
from typing import Any

from ..teachers.base import Reply
from .base import Task, ValidationError, check_finished, reply_object, sentence_texts

POSITIONS = ("A", "B", "tie")
REFERENCE_TIE_MARGIN = 0.05
_TEXT_CHOICE = re.compile(r"\b(?:option\s+([AB])\b|(tie))", re.I)


def shown(pair: dict) -> tuple[dict, dict]:
    """(rationale shown as Option A, rationale shown as Option B)."""
    return (pair["a"], pair["b"]) if pair.get("order", "ab") == "ab" else (pair["b"], pair["a"])


def winner_of(preferred: str, order: str) -> str:
    """Map the preferred position ("A"/"B"/"tie") back to the dataset that won ("a"/"b"/"tie")."""
    if preferred == "tie":
        return "tie"
    first = "a" if order == "ab" else "b"
    second = "b" if first == "a" else "a"
    return first if preferred == "A" else second


class JudgeTask(Task):
    kind = "judgments"
    name = "judge"
    default_prompt = "judge.txt"
    required_fields = {"rationale"}
    max_tokens = 256

    def values(self, problem: dict, rationale: dict) -> dict[str, str]:
        first, second = shown(rationale)
        values = super().values(problem, first)
        values["rationale"] = f"Option A:\n{first.get('text') or ''}\n\nOption B:\n{second.get('text') or ''}"
        return values

    def task_data(self, problem: dict, rationale: dict) -> dict:
        first, second = shown(rationale)
        data = super().task_data(problem, first)
        for key in ("sentences", "text"):
            data.pop(key, None)
        data["option_a"] = {"text": first.get("text") or "", "sentences": sentence_texts(first)}
        data["option_b"] = {"text": second.get("text") or "", "sentences": sentence_texts(second)}
        return data

    def row_ids(self, problem: dict, rationale: dict) -> dict[str, Any]:
        return {
            "pair_id": rationale["pair_id"],
            "problem_id": rationale["problem_id"],
            "sample_index": rationale.get("sample_index", 0),
            "order": rationale.get("order", "ab"),
            "rationale_id_a": rationale["a"].get("rationale_id"),
            "rationale_id_b": rationale["b"].get("rationale_id"),
        }

    def schema(self) -> dict:
        return {
            "type": "object",
            "properties": {
                "preferred": {"type": "string", "enum": list(POSITIONS)},
                "reason": {"type": "string"},
            },
            "required": ["preferred", "reason"],
            "additionalProperties": False,
        }

    def retry_hint(self) -> str:
        return ': {"preferred": "A", "B" or "tie", "reason": "..."}'

    def parse(self, reply: Reply, problem: dict, rationale: dict) -> dict:
        check_finished(reply)
        obj = reply_object(reply)
        if obj is not None:
            preferred, reason = obj.get("preferred"), obj.get("reason") or ""
        else:
            found = {(a or b).upper() for a, b in _TEXT_CHOICE.findall(reply.text or "")}
            if len(found) != 1:
                raise ValidationError('the reply must name exactly one of "Option A", "Option B" or "tie"')
            preferred, reason = found.pop(), (reply.text or "").strip()
        if isinstance(preferred, str):
            preferred = {"a": "A", "b": "B", "tie": "tie"}.get(preferred.strip().lower(), preferred)
        if preferred not in POSITIONS:
            raise ValidationError(f'"preferred" must be "A", "B" or "tie", got {preferred!r}')
        return {"preferred": preferred, "winner": winner_of(preferred, rationale.get("order", "ab")),
                "reason": str(reason)[:2000]}

    def failed_fields(self, problem: dict, rationale: dict) -> dict:
        return {"preferred": "", "winner": "", "reason": ""}


def reference_judgment(data: dict) -> dict:
    """The reference teacher's judgment of a judge task block (rule in the module docstring)."""
    from ..segment import segment
    from ..teachers.reference import score_sentences

    means = []
    for key in ("option_a", "option_b"):
        option = data.get(key) or {}
        sents = option.get("sentences") or [s.text for s in segment(option.get("text") or "")]
        scores = score_sentences({**data, "sentences": sents}) if sents else []
        means.append(sum(scores) / len(scores) if scores else 0.0)
    diff = means[0] - means[1]
    preferred = "tie" if abs(diff) < REFERENCE_TIE_MARGIN else ("A" if diff > 0 else "B")
    reason = f"mean sentence score A={means[0]:.2f}, B={means[1]:.2f}"
    return {"preferred": preferred, "reason": reason}
