"""Answer parsing for the trainer; the rules live in `ares_data.answers` (torch-free, shared)."""

from __future__ import annotations

from ares_data.answers import ParsedAnswer, option_letter, parse_answer, read_choice

__all__ = ["ParsedAnswer", "option_letter", "parse_answer", "read_choice"]
