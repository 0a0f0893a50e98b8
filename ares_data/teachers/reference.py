"""The reference teacher: an offline, deterministic HEURISTIC (no network, no key, no model).

It exists so the demo, the tests and the fake teacher server run anywhere. It is not a language model and its
feedback is only as good as the rules below. It reads the `<ares_task_data>` block that every task embeds in
its prompt (question, choices, gold answer, reference rationale, sentences) and answers through the same
`send(Request) -> Reply` path as a real provider.

Scoring rules, first match wins, for sentence i:
  1. it repeats an earlier sentence (case/space-insensitive)                          -> 0.0
  2. it asserts an answer (cue such as "answer", "so", "therefore", "option") naming a
     wrong choice, not the gold one, without a negation ("not", "n't", "never")         -> 0.0
  3. it is the last sentence and has no closing punctuation (unfinished), even when it
     names the gold answer ("So the sum is 0.75 and the answer is")                     -> 0.2
  4. it asserts the gold answer                                                        -> 1.0
  5. it only sets up the reasoning (starts "Let's", "To answer", "We need", ..., has no
     content words, or mostly restates the question without support)                  -> 0.5
  6. otherwise 0.3 + 0.7 * (share of its content words found in the reference rationale
     and gold answer; the question, choices and hint when there is no reference), to 0.1
Correction rules: drop repeated sentences; drop sentences that assert a wrong answer; drop an unfinished
last sentence when it ends on a connective or has fewer than 4 words; end every other sentence that lacks
closing punctuation with a period; capitalise each sentence; append "The answer is <gold answer>." unless
a kept sentence already asserts it.
Token counts are estimates (characters / 4).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

from .base import FatalTeacherError, Reply, Request, Teacher

_WORD = re.compile(r"[a-z0-9]+")
_CUE = re.compile(
    r"\b(answers?|correct|therefore|thus|so|hence|choose|chose|option|select|must be|should be|is the)\b",
    re.I,
)
_LETTER = re.compile(r"\((?P<a>[A-Z])\)|\b(?:option|choice|answer is)\s+(?P<b>[A-Z])\b")
_SETUP = re.compile(
    r"^\s*(let'?s|let us|to (answer|solve|determine|find|decide)|we (need|have) to|first,?|"
    r"the question (asks|is)|look at|think about|in order to)\b",
    re.I,
)
_NEGATION = re.compile(r"\b(not|no|never|cannot)\b|n't\b", re.I)
_FINISHED = re.compile(r"[.!?:;][\"')\]]*\s*$")
STOPWORDS = frozenset(
    "a an the of to in on at by for with from and or but if then so as is are was were be been being "
    "this that these those it its they them their there here which who whom what when where why how not "
    "no yes can could will would should may might must do does did has have had we you he she i our your "
    "his her than also very into about over under more most less least each every some any all both "
    "either neither".split()
)
_CONNECTIVES = STOPWORDS | {"because", "since", "while", "although", "however", "therefore", "thus"}


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def content_words(text: str) -> set[str]:
    return {w for w in words(text) if w not in STOPWORDS and len(w) > 1}


def _contains(haystack: list[str], needle: list[str]) -> bool:
    n = len(needle)
    return n > 0 and any(haystack[i : i + n] == needle for i in range(len(haystack) - n + 1))


class _Problem:
    """The gold facts of one task block, with helpers to judge what a sentence claims."""

    def __init__(self, data: dict) -> None:
        self.choices: list[str] = list(data.get("choices") or [])
        idx = data.get("answer_index")
        self.gold_index = idx if isinstance(idx, int) and 0 <= idx < len(self.choices) else None
        gold = self.choices[self.gold_index] if self.gold_index is not None else data.get("answer")
        self.gold: str = gold or ""
        support = " ".join([data.get("reference") or "", self.gold])
        if not (data.get("reference") or "").strip():
            support += " " + " ".join([data.get("question") or "", *self.choices])
        self.support = content_words(support)
        self.question = content_words(" ".join([data.get("question") or "", *self.choices]))

    def mentioned(self, sentence: str) -> tuple[bool, bool]:
        """(mentions the gold answer, mentions a wrong choice)."""
        toks = words(sentence)
        letters = {m.group("a") or m.group("b") for m in _LETTER.finditer(sentence)}
        gold_letter = chr(65 + self.gold_index) if self.gold_index is not None else None
        gold = _contains(toks, words(self.gold)) or (gold_letter in letters)
        wrong = any(
            i != self.gold_index and (_contains(toks, words(c)) or chr(65 + i) in letters)
            for i, c in enumerate(self.choices)
        )
        if not self.choices:  # free-form: "the answer is X" naming something else is wrong
            m = re.search(r"answer is\s+(.+)", sentence, re.I)
            wrong = bool(m) and not _contains(words(m.group(1)), words(self.gold))
        return gold, wrong

    def asserts(self, sentence: str) -> str | None:
        """ "gold" / "wrong" when the sentence states an answer, else None."""
        if not _CUE.search(sentence):
            return None
        gold, wrong = self.mentioned(sentence)
        if wrong and not gold:
            return None if _NEGATION.search(sentence) else "wrong"  # "A frog is not a mammal." is fine
        return "gold" if gold else None


def _key(sentence: str) -> str:
    return " ".join(sentence.lower().split())


def score_sentences(data: dict) -> list[float]:
    prob, seen, out = _Problem(data), set(), []
    sentences = list(data.get("sentences") or [])
    for i, s in enumerate(sentences):
        key = _key(s)
        claim = prob.asserts(s)
        cw = content_words(s)
        support = len(cw & prob.support) / len(cw) if cw else 0.0
        if key in seen:
            score = 0.0
        elif claim == "wrong":
            score = 0.0
        elif i == len(sentences) - 1 and not _FINISHED.search(s):
            score = 0.2
        elif claim == "gold":
            score = 1.0
        elif not cw or _SETUP.search(s) or (len(cw & prob.question) >= 0.6 * len(cw) and support < 0.5):
            score = 0.5
        else:
            score = round(0.3 + 0.7 * support, 1)
        seen.add(key)
        out.append(score)
    return out


def correct_rationale(data: dict) -> str:
    prob, seen, kept = _Problem(data), set(), []
    sentences = list(data.get("sentences") or [])
    for i, s in enumerate(sentences):
        key = _key(s)
        if key in seen or prob.asserts(s) == "wrong":
            seen.add(key)
            continue
        seen.add(key)
        s = s.strip()
        if not _FINISHED.search(s):
            toks = words(s)
            last = i == len(sentences) - 1
            if last and (len(toks) < 4 or toks[-1] in _CONNECTIVES or s.endswith(",")):
                continue
            s = s.rstrip(",;- ") + "."
        kept.append(s[:1].upper() + s[1:])
    if prob.gold and not any(prob.asserts(s) == "gold" for s in kept):
        kept.append(f"The answer is {prob.gold}.")
    return " ".join(kept)


def answer_task(data: dict) -> dict:
    """The structured reply for a task block: {"scores": [...]} or {"corrected": "..."}."""
    task = data.get("task")
    if task == "score":
        return {"scores": [{"sentence": i, "score": s} for i, s in enumerate(score_sentences(data), 1)]}
    if task == "correct":
        return {"corrected": correct_rationale(data)}
    if task == "judge":  # rule documented in ares_data.tasks.judge
        from ..tasks.judge import reference_judgment

        return reference_judgment(data)
    raise ValueError(f"the reference teacher cannot answer task {task!r}")


def task_block(request: Request) -> dict | None:
    from ..tasks.base import extract_data

    for m in request.messages:
        for b in m["content"]:
            if m["role"] == "user" and b.get("type") == "text":
                data = extract_data(b["text"])
                if data is not None:
                    return data
    return None


class ReferenceTeacher(Teacher):
    """Offline heuristic teacher (see the module docstring for its rules). Not a language model."""

    provider = "reference"
    key_env_var = None
    default_model = "heuristic-v1"
    supports_batch = True

    def reply_for(self, request: Request) -> Reply:
        data = task_block(request)
        if data is None:
            raise FatalTeacherError(
                "the reference teacher only answers ARES task prompts (no <ares_task_data> block found)",
                hint="use a real teacher (anthropic:MODEL / openai:MODEL) for custom requests",
            )
        try:
            obj = answer_task(data)
        except ValueError as e:
            raise FatalTeacherError(str(e)) from None
        text = json.dumps(obj, ensure_ascii=False)
        return Reply(
            text=text,
            data=obj,
            input_tokens=len(request.text()) // 4 + 1,
            output_tokens=len(text) // 4 + 1,
            stop_reason="end_turn",
            extra={"heuristic": True},
        )

    async def send(self, request: Request) -> Reply:
        return self.reply_for(request)

    # Offline "batches": answered at submit time and kept as a JSON file so another process can collect.
    @staticmethod
    def batch_dir() -> Path:
        default = Path(tempfile.gettempdir()) / "ares-ref-batches"
        return Path(os.environ.get("ARES_REFERENCE_BATCH_DIR") or default)

    async def submit_batch(self, items: list[tuple[str, Request]]) -> str:
        results: dict[str, dict | str] = {}
        for cid, req in items:
            try:
                results[cid] = self.reply_for(req).to_dict()
            except FatalTeacherError as e:
                results[cid] = f"errored: {e}"
        blob = json.dumps(results, sort_keys=True)
        batch_id = "refbatch_" + hashlib.sha256(blob.encode()).hexdigest()[:24]
        path = self.batch_dir() / f"{batch_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(blob)
        tmp.replace(path)
        return batch_id

    def _load(self, batch_id: str) -> dict:
        path = self.batch_dir() / f"{batch_id}.json"
        if not re.fullmatch(r"refbatch_[0-9a-f]{24}", batch_id) or not path.exists():
            raise FatalTeacherError(f"unknown reference batch {batch_id!r} (looked in {self.batch_dir()})")
        return json.loads(path.read_text())

    async def batch_status(self, batch_id: str) -> dict:
        results = self._load(batch_id)
        ok = sum(1 for v in results.values() if isinstance(v, dict))
        counts = {"succeeded": ok, "errored": len(results) - ok, "processing": 0}
        return {"state": "ended", "counts": counts, "provider_status": "ended"}

    async def batch_results(self, batch_id: str) -> dict[str, Reply | str]:
        return {k: Reply.from_dict(v) if isinstance(v, dict) else v for k, v in self._load(batch_id).items()}
