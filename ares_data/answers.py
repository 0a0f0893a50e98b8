"""Which option did the model choose? Robust parsing of a multiple-choice answer from free text.

Rules, applied in order (the first that decides wins):

1. **Explicit statements.** Every "answer is X", "answer: X", "answer - X", "answer would be X" (any case,
   "the correct answer is", "final answer:", "the correct option is", "choice: X", ...) is a candidate; the
   LAST one whose X names an option decides, so a rationale that corrects itself ("... the answer is (A).
   No wait, the answer is (B).") counts as B.
   What follows the statement is read by `read_choice` below.
2. **A leading option label.** An output that starts with an option label, as in "B) because ...",
   "(B) ...", "B. ...", "B: ..." or just "B", chose that option.
3. **The whole output is an option.** An output that, without surrounding punctuation, equals the text of
   one option (case-insensitive) chose it.
4. Otherwise no option was chosen: `None` (counted as wrong, never guessed).

Markdown emphasis markers (`*`, as in "**Answer:** B") are removed before the rules apply.

`read_choice` (what follows a statement): the text of an option wins when the statement starts with it
("the answer is a 150-gram cup" picks that option, not letter A; the longest matching option wins);
otherwise an option label: "(B)", "B)", "B.", "B" followed by a non-letter, or lowercase "b" when it is
bracketed or followed by punctuation or the end of the text (so the article "a" in "the answer is a dog"
is not read as option A), or "b".."z" followed by a word ("the answer is b because"). Labels beyond the
number of options are ignored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_STATEMENT = re.compile(
    r"\b(?:answers?|option|choice)\b"
    r"(?:\s+(?:is|was|would\s+be|should\s+be|will\s+be|must\s+be)\b\s*[:=\-]?|\s*[:=\-])\s*"
    r"(?:(?:option|choice)\s+)?",
    re.I,
)
# A label at the start of a string: "(B)", "[B]", "B)", "B.", "B:", "B" + non-letter/end.
_LABEL = re.compile(
    r"^\s*[\(\[]\s*([A-Za-z])\s*[\)\]]|^\s*([A-Z])(?![A-Za-z])|^\s*([a-z])(?=\s*[).:,;!?]|\s*$)"
)
_TRIM = " \t\n\r.,;:!?\"'`*()[]"


@dataclass(frozen=True)
class ParsedAnswer:
    index: int | None  # 0-based option index, or None when no option was chosen
    rule: str  # "statement" | "leading-label" | "option-text" | "none"


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("*", "")).strip().lower()  # options are compared without "*" too


def _option_prefix(text: str, choices: list[str]) -> int | None:
    """Index of the longest option whose text starts `text` (followed by a word boundary)."""
    low = _norm(text).lstrip(_TRIM)
    best, best_len = None, 0
    for i, choice in enumerate(choices):
        c = _norm(choice).strip(_TRIM)
        if not c or not low.startswith(c):
            continue
        rest = low[len(c):]
        if rest and (rest[0].isalnum() or rest[0] in "-_'"):
            continue
        if len(c) > best_len:
            best, best_len = i, len(c)
    return best


def _label(text: str, n_choices: int) -> int | None:
    m = _LABEL.match(text)
    if not m:
        return None
    letter = next(g for g in m.groups() if g)
    idx = ord(letter.upper()) - ord("A")
    return idx if 0 <= idx < n_choices else None


def read_choice(text: str, choices: list[str]) -> int | None:
    """The option chosen by the text right after an answer statement (see module rules)."""
    by_text = _option_prefix(text, choices)
    if by_text is not None:
        # "(B) attract": an explicit bracketed label still wins over an option that happens to start "b"
        bracketed = re.match(r"^\s*[\(\[]\s*([A-Za-z])\s*[\)\]]", text)
        return _label(text, len(choices)) if bracketed else by_text
    idx = _label(text, len(choices))
    if idx is not None:
        return idx
    m = re.match(r"\s*([b-z])\s+[a-z]", text)  # "the answer is b because": only "a" can be an article
    if m and ord(m.group(1)) - ord("a") < len(choices):
        return ord(m.group(1)) - ord("a")
    # "(B) attract" where the label is out of range but the option text follows
    stripped = re.sub(r"^\s*[\(\[]?\s*[A-Za-z]\s*[\)\].:]\s*", "", text, count=1)
    return _option_prefix(stripped, choices) if stripped != text else None


def parse_answer(text: str | None, choices: list[str]) -> ParsedAnswer:
    """Apply the module's rules to a model output; never raises."""
    if not text or not choices:
        return ParsedAnswer(None, "none")
    text = text.replace("*", "")
    for m in reversed(list(_STATEMENT.finditer(text))):
        idx = read_choice(text[m.end():], choices)
        if idx is not None:
            return ParsedAnswer(idx, "statement")
    idx = _label(text, len(choices))
    if idx is not None:
        return ParsedAnswer(idx, "leading-label")
    whole = _norm(text).strip(_TRIM)
    for i, choice in enumerate(choices):
        if whole and whole == _norm(choice).strip(_TRIM):
            return ParsedAnswer(i, "option-text")
    return ParsedAnswer(None, "none")


def option_letter(index: int | None) -> str:
    return "" if index is None else chr(ord("A") + index)
