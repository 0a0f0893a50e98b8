"""Sentence segmentation with exact character offsets (`text[start:end] == sentence`).

Placeholder rules; the engine is chosen by measurement in bench/segment.py (see BENCHMARKS.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Sentence:
    text: str
    start: int
    end: int

    def as_dict(self) -> dict[str, object]:
        return {"text": self.text, "start": self.start, "end": self.end}


_BOUNDARY = re.compile(r"(?<=[.!?])\s+|\n+")


def segment(text: str) -> list[Sentence]:
    out: list[Sentence] = []
    pos = 0
    for m in _BOUNDARY.finditer(text):
        _add(text, pos, m.start(), out)
        pos = m.end()
    _add(text, pos, len(text), out)
    return out


def _add(text: str, start: int, end: int, out: list[Sentence]) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:
        out.append(Sentence(text[start:end], start, end))


def drop_repeats(sentences: list[Sentence]) -> tuple[list[Sentence], list[Sentence]]:
    """Remove sentences whose normalized text appeared before. Returns (kept, dropped)."""
    seen: set[str] = set()
    kept, dropped = [], []
    for s in sentences:
        key = " ".join(s.text.lower().split())
        (dropped if key in seen else kept).append(s)
        seen.add(key)
    return kept, dropped
