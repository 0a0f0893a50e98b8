"""The one prompt formatter shared by exports and the trainer (torch-free).

`format_problem(problem)` turns a problems row (question, context, choices) into the text a policy model
sees before it writes its rationale. `ares_data.export` uses it for SFT / PRM / DPO records, and
`ares_train` should reuse it so that a model trained on an export sees exactly the prompts it is tested on.

Reading the answer back out of a rationale is `ares_data.answers.parse_answer` (one parser for eval and
`export dpo --pair-by answer`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

INSTRUCTION = "Explain your reasoning step by step, then finish with 'So the answer is <answer>.'"


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
