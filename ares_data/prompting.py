"""The one prompt formatter shared by exports and the trainer (torch-free).

`format_problem(problem)` turns a problems row (question, context, choices) into the text a policy model
sees before it writes its rationale. `ares_data.export` uses it for SFT / PRM / DPO records, and
`ares_train` should reuse it so that a model trained on an export sees exactly the prompts it is tested on.

`extract_answer(text, choices)` reads the final answer back out of a rationale ("... So the answer is
repel." / "The answer is (B).") as a choice index, for `export dpo --pair-by answer`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

INSTRUCTION = "Explain your reasoning step by step, then finish with 'So the answer is <answer>.'"
_ANSWER_RE = re.compile(r"answer is[:\s]*(?P<ans>.+?)\s*\.?\s*$", re.I | re.S)
_LETTER_RE = re.compile(r"^\(?([A-Z])\)?(?:[\s.:]|$)")


def letter(i: int) -> str:
    return chr(ord("A") + i) if 0 <= i < 26 else str(i + 1)


def format_problem(problem: Mapping[str, Any]) -> str:
    """The policy prompt for one problem: question, context, lettered options, instruction."""
    lines = [f"Question: {(problem.get('question') or '').strip()}"]
    context = (problem.get("context") or "").strip()
    if context:
        lines.append(f"Context: {context}")
    choices = list(problem.get("choices") or [])
    if choices:
        lines.append("Options: " + " ".join(f"({letter(i)}) {c}" for i, c in enumerate(choices)))
    lines.append(INSTRUCTION)
    return "\n".join(lines)


def _norm(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", s.lower()).strip()


def extract_answer(text: str, choices: list[str] | None) -> int | None:
    """The choice index a rationale ends on, or None when it gives no recognisable answer."""
    tail = text.strip()[-400:]
    found = None
    for m in re.finditer(r"answer is", tail, re.I):
        found = m
    if found is None:
        return None
    m = _ANSWER_RE.match(tail[found.start():])
    if not m:
        return None
    ans = m.group("ans").strip()
    choices = list(choices or [])
    norm = _norm(ans)
    for i, c in enumerate(choices):
        if norm and norm == _norm(c):
            return i
    lm = _LETTER_RE.match(ans)
    if lm and ord(lm.group(1)) - ord("A") < len(choices):
        return ord(lm.group(1)) - ord("A")
    for i, c in enumerate(choices):  # "the answer is repel each other" -> contains the choice
        if _norm(c) and re.search(rf"\b{re.escape(_norm(c))}\b", norm):
            return i
    return None
