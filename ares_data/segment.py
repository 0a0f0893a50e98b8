"""Sentence segmentation with exact character offsets (`text[start:end] == sentence.text`).

The engine is a rule-based scanner chosen by measurement against pysbd, blingfire, nltk punkt and syntok
(see `bench/segment.py` and BENCHMARKS.md). One regex finds candidate boundaries (sentence punctuation
followed by whitespace, CJK full stops, a period glued to a capitalised word as in "layers.The", and line
breaks); small rules then decide each candidate. The conventions, also used by the gold set
(`bench/data/segment_gold.jsonl`):

- A period ends a sentence unless the next word starts in lower case, or the word before it is an
  abbreviation (Dr., e.g., Fig. 3, No. 4, approx. 5, ...), an initial (J. K. Rowling), an initialism not
  followed by a typical sentence opener (the U.S. Army / ... the U.S. The ...), or a list marker ("2." at
  the start of a line or sentence). Closing quotes and brackets after the period stay with the sentence.
- "?", "!" and ellipses end a sentence when the next word is not lower case; 。！？ always do.
- A line break ends a sentence, except after a short label line ("Solution:", "Step 2:") which stays
  attached to what follows, and inside a hard-wrapped sentence (next line starts in lower case and the
  line does not end in punctuation). A label on the same line ("Solution: The ...") stays attached too.
- Every non-space character belongs to exactly one sentence; sentences are trimmed of whitespace and
  an unfinished last sentence is kept as it is.
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


_CLOSERS = re.escape("\"')]}\u201d\u2019\u00bb")
_CANDIDATE = re.compile(
    r"(?=[.!?\u2026\u3002\uff01\uff1f\r\n])"  # cheap first-character filter, then the alternatives
    rf"(?:(?P<term>[.!?\u2026]+)[{_CLOSERS}]*(?=\s|\Z)"  # sentence punctuation before whitespace
    r"|(?P<cjk>[\u3002\uff01\uff1f]+)" + rf"[{_CLOSERS}\u300d\u300f]*"  # 。！？ need no space
    r"|(?<=[A-Za-z0-9)])(?<!\.[A-Za-z])(?P<glued>[.?!])(?=[A-Z][a-z])"  # "layers.The", not "U.S.The"
    r"|(?P<nl>\r?\n(?:[ \t]*\r?\n)*))"  # a line break (several: a blank line)
)
# Never end a sentence, whatever follows ("Dr. Smith", "e.g. Earth", "vs. liquids").
_NEVER_END = frozenset(
    "dr mr mrs ms prof st mt sgt capt gen rev hon e.g i.e vs cf viz fig figs eq eqs ca resp".split()
)
# Abbreviations before a number ("No. 4", "p. 12", "approx. 5").
_BEFORE_DIGIT = frozenset("no nos p pp vol ch sec fig figs eq eqs approx ca vs ref refs tab art".split())
# May end a sentence: they end one when the next word is capitalised ("etc. All of them ...").
_MAY_END = frozenset("etc approx al inc ltd co corp jr sr bros".split())
# Typical sentence openers: after an initialism (U.S., D.C., p.m.) or an initial they mean a new sentence.
_OPENERS = frozenset(
    """the this that these those it its he she they we you i a an in on at for from to by as if
    so thus therefore hence then since because but and or however also both each all every some many
    most there here when while after before finally first second next now only option answer
    choice one two three our my his her their what which who why how no yes with without during
    although though even unlike like using given let note remember recall consider look neither
    either instead otherwise overall similarly another other such none not""".split()
)
# Words before a capital letter that make it an answer choice, not an initial ("is B.", "option B.").
_ANSWER_CONTEXT = frozenset("is be was are were option choice answer choose select pick and or not".split())
_OPENING_QUOTES = "\"'(\u201c\u2018["
_INITIALISM = re.compile(r"(?:[A-Za-z]\.)+[A-Za-z]\Z")
_LABEL_LINE = re.compile(r"[*_#>\s-]*[\w'()]+(?:\s+[\w'()]+)?\s*:[*_\s]*\Z")
_LOOKBACK = 80
_NEXT_WORD = re.compile(r"\s*(\S{1,40})")
_EQUATION_LINE = re.compile(r"[ \t]*[\w^()]{1,12}[ \t]*=")
_TERMINAL = ".!?:;\u2026\u3002"


def segment(text: str) -> list[Sentence]:
    """Split `text` into trimmed sentences with exact offsets; whitespace-only input gives []."""
    out: list[Sentence] = []
    start = 0
    for m in _CANDIDATE.finditer(text):
        kind = m.lastgroup
        if kind == "nl":
            cut = m.start() if _newline_ends(text, start, m.start(), m.end()) else -1
        elif kind == "cjk":
            cut = m.end()
        elif kind == "glued":
            cut = m.end() if _period_ends(text, start, m.start(), m.end(), m.group()) else -1
        else:
            cut = m.end() if _period_ends(text, start, m.start(), m.end(), m.group("term")) else -1
        if cut > start:
            _add(text, start, cut, out)
            start = cut
    _add(text, start, len(text), out)
    return out


def _period_ends(text: str, start: int, pos: int, after: int, punct: str) -> bool:
    """Does the punctuation `punct` at text[pos:...] (candidate ending at `after`) end a sentence?"""
    nxt = _next_word(text, after)
    if not nxt:
        return False  # end of text: the final sentence ends anyway
    c = nxt[0]
    if c.islower():
        return False
    if punct != ".":
        if "\u2026" in punct or ".." in punct:  # an ellipsis before a number continues a sequence
            return c.isupper() or c in _OPENING_QUOTES
        return c not in "=<>"  # "?" or "!" before a capital, a digit, a quote; not "5! = 120"
    near = max(start, pos - _LOOKBACK)  # bounded look-back keeps very long sentences linear
    lo = max(text.rfind(" ", near, pos), text.rfind("\n", near, pos), text.rfind("\t", near, pos)) + 1
    lo = max(lo, near)
    raw = text[lo:pos]
    if not raw.isascii() and len(raw.split()) > 1:  # other spaces (a no-break space) inside
        raw = raw.split()[-1]
        lo = pos - len(raw)
    word = raw.lstrip("\"'([{\u201c\u2018*")
    low = word.lower()
    if low in _NEVER_END:
        return False
    if c.isdigit():
        return low not in _BEFORE_DIGIT
    if low in _MAY_END:
        return c.isalpha()
    if word.isdigit() and len(word) <= 3 and _starts_item(text, start, lo):
        return False  # list marker "2." / "Step 2." at the start of a line or sentence
    if len(word) == 1 and word.isupper():
        return not _is_initial(text, start, lo, nxt)
    if "." in word and _INITIALISM.match(word):
        return _bare(nxt).lower() in _OPENERS
    return True


def _is_initial(text: str, start: int, lo: int, nxt: str) -> bool:
    """`X.` is an initial when another initial follows (J. K.) or a name does (C. Darwin), unless it
    reads as an answer letter ("the answer is B. Copper ...", "Answer: B. ...")."""
    if len(nxt) >= 2 and nxt[0].isupper() and nxt[1] == ".":
        return True
    word = _bare(nxt)
    if not word or not word[0].isupper() or word.lower() in _OPENERS:
        return False
    prev = text[max(start, lo - _LOOKBACK):lo].split()
    if not prev:
        return False
    p = prev[-1]
    return not p.endswith(":") and p.lower() not in _ANSWER_CONTEXT


def _newline_ends(text: str, start: int, pos: int, after: int) -> bool:
    """A line break ends a sentence unless it follows a label line or wraps a sentence."""
    if text.count("\n", pos, after) > 1:
        return True  # blank line
    line_start = max(text.rfind("\n", start, pos) + 1, start)
    line = text[line_start:pos].rstrip()
    if not line:
        return False
    if line[-1] == ":" or line.endswith(":**"):
        return not _LABEL_LINE.match(line)
    nxt = _next_word(text, after)
    if not nxt or not nxt[0].islower() or line[-1] in _TERMINAL:
        return True
    # a hard-wrapped sentence continues on the next line, but lines of a list of equations don't
    return _EQUATION_LINE.match(line) is not None and _EQUATION_LINE.match(text, after) is not None


def _starts_item(text: str, start: int, lo: int) -> bool:
    """Is the number at `lo` a list marker: first on its line or sentence, or after one label word?"""
    near = max(start, lo - _LOOKBACK)
    line = text[max(text.rfind("\n", near, lo) + 1, near):lo].split()
    if lo - near == _LOOKBACK and "\n" not in text[near:lo]:
        return False  # the line is long: not a list marker
    return not line or (len(line) == 1 and line[0].isalpha() and line[0][0].isupper())


def _next_word(text: str, i: int) -> str:
    m = _NEXT_WORD.match(text, i)
    return m.group(1) if m else ""


def _bare(word: str) -> str:
    return word.strip("\"'()[]{}*\u201c\u201d\u2018\u2019.,;:!?")


def _add(text: str, start: int, end: int, out: list[Sentence]) -> None:
    piece = text[start:end]
    left = piece.lstrip()  # str.strip and str.isspace agree on what whitespace is
    if left:
        start += len(piece) - len(left)
        sent = left.rstrip()
        out.append(Sentence(sent, start, start + len(sent)))


def drop_repeats(sentences: list[Sentence]) -> tuple[list[Sentence], list[Sentence]]:
    """Remove sentences whose normalized text appeared before. Returns (kept, dropped)."""
    seen: set[str] = set()
    kept, dropped = [], []
    for s in sentences:
        key = " ".join(s.text.lower().split())
        (dropped if key in seen else kept).append(s)
        seen.add(key)
    return kept, dropped
