"""Chained addition: a controlled task where the truth of every sentence is known exactly.

A problem lists a few small numbers ("Add 2, 3 and 1."). The right rationale adds them one step a sentence
and ends with the answer sentence:

    2 plus 3 is 5. 5 plus 1 is 6. So the answer is 6.

The checker (`score_sentences`) scores each sentence 1.0 (right) or 0.0 (wrong) on its own:

- step i (i = 1 .. n-1), "A plus B is C.": right iff A is the running value stated before it (the first
  number for step 1, the C that the previous sentence states otherwise, whether or not that C was right),
  B is the problem's (i+1)-th number and C == A + B. So a step can be right after a wrong one, and wrong
  after a right one: steps are right or wrong independently of each other.
- the answer sentence, "So the answer is X.": right iff X is the sum of the numbers (the final answer),
  and it comes after all n-1 steps.
- anything else (a sentence that does not parse, a step beyond the n-1 there are, a step after the
  answer) is wrong.

Warm-start rationales (`noisy_rationale`) state a wrong result in each step with probability `p_wrong`
(the next step carries the stated value on; the answer sentence repeats the last stated value), so a policy
fine-tuned on them is a genuine mixture of right and wrong steps that sentence-level rewards can sharpen.
The vocabulary is a few words and numbers, so a tiny transformer can represent the right steps.

Torch-free: the records are plain dicts, written as JSONL for `ares-data ingest jsonl`,
`ares-data import-rationales` and `ares-data import-scores`.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_STEP = re.compile(r"(\d+) plus (\d+) is (\d+)\.")
_ANSWER = re.compile(r"So the answer is (\d+)\.")
TASK_SOURCE = "chained-addition"


@dataclass(frozen=True)
class ChainedAddition:
    """The task's shape: `n_numbers` numbers drawn from [low, high]; a wrong step misses by 1..spread."""

    n_numbers: int = 3
    low: int = 1
    high: int = 4
    spread: int = 2

    def __post_init__(self) -> None:
        if self.n_numbers < 2 or not 0 <= self.low <= self.high or self.spread < 1:
            raise ValueError(f"need n_numbers >= 2, 0 <= low <= high and spread >= 1, got {self}")

    def sample_numbers(self, rng: random.Random) -> list[int]:
        return [rng.randint(self.low, self.high) for _ in range(self.n_numbers)]

    def problems(self, n: int, seed: int, *, split: str = "train",
                 prefix: str = "add") -> list[dict[str, Any]]:
        """`n` problem records (JSONL rows for `ares-data ingest jsonl`), the numbers kept in `numbers`."""
        rng = random.Random(seed)
        return [problem_record(f"{prefix}-{split}-{i}", self.sample_numbers(rng), split) for i in range(n)]

    def wrong_value(self, right: int, rng: random.Random) -> int:
        """A stated result that misses `right` by 1..spread (never negative)."""
        options = [right + d for d in range(-self.spread, self.spread + 1) if d and right + d >= 0]
        return rng.choice(options)

    def noisy_rationale(self, numbers: Sequence[int], rng: random.Random, p_wrong: float) -> str:
        """A rationale whose steps each state a wrong result with probability `p_wrong`."""
        value, sentences = numbers[0], []
        for b in numbers[1:]:
            stated = value + b if rng.random() >= p_wrong else self.wrong_value(value + b, rng)
            sentences.append(step_sentence(value, b, stated))
            value = stated
        return " ".join([*sentences, answer_sentence(value)])


def question(numbers: Sequence[int]) -> str:
    head = ", ".join(str(x) for x in numbers[:-1])
    return f"Add {head} and {numbers[-1]}."


def step_sentence(a: int, b: int, c: int) -> str:
    return f"{a} plus {b} is {c}."


def answer_sentence(x: int) -> str:
    return f"So the answer is {x}."


def right_rationale(numbers: Sequence[int]) -> str:
    return ChainedAddition(len(numbers)).noisy_rationale(numbers, random.Random(0), 0.0)


def problem_record(problem_id: str, numbers: Sequence[int], split: str = "train") -> dict[str, Any]:
    return {"problem_id": problem_id, "question": question(numbers), "answer": str(sum(numbers)),
            "reference_rationale": right_rationale(numbers), "split": split, "source": TASK_SOURCE,
            "numbers": list(numbers)}


def numbers_of(problem: Mapping[str, Any]) -> list[int]:
    """The numbers of a problem record, or of a problems-dataset row (kept in its metadata JSON)."""
    if "numbers" in problem:
        return [int(x) for x in problem["numbers"]]
    meta = problem.get("metadata") or "{}"
    found = (json.loads(meta) if isinstance(meta, str) else meta).get("numbers")
    if not found:
        raise ValueError(f"problem {problem.get('problem_id')!r} has no 'numbers' "
                         f"(not a {TASK_SOURCE} problem)")
    return [int(x) for x in found]


def score_sentences(numbers: Sequence[int], sentences: Sequence[str]) -> list[float]:
    """One score per sentence: 1.0 right, 0.0 wrong (see the module doc for what right means)."""
    scores: list[float] = []
    value, step, answered = numbers[0], 0, False
    for text in sentences:
        text = text.strip()
        m, a = _STEP.fullmatch(text), _ANSWER.fullmatch(text)
        if m and not answered and step < len(numbers) - 1:
            x, y, z = (int(g) for g in m.groups())
            scores.append(float(x == value and y == numbers[step + 1] and z == x + y))
            value, step = z, step + 1
        elif a and not answered:
            scores.append(float(step == len(numbers) - 1 and int(a.group(1)) == sum(numbers)))
            answered = True
        else:
            scores.append(0.0)
    return scores


@dataclass(frozen=True)
class RationaleStats:
    """What the learning benchmark reports for a set of scored rationales."""

    mean_score: float  # mean over rationales of their mean sentence score
    step_accuracy: float  # share of right step sentences (the answer sentence excluded)
    answer_accuracy: float  # share of rationales whose answer sentence is right
    sentences: float  # mean sentences per rationale
    rationales: int


def summarize(rows: Iterable[tuple[Sequence[int], Sequence[str], Sequence[float]]]) -> RationaleStats:
    """Stats of (numbers, sentence texts, scores) triples; empty rationales score 0 and count."""
    means, steps, answers, lengths = [], [], [], []
    for _numbers, texts, scores in rows:
        means.append(sum(scores) / len(scores) if scores else 0.0)
        lengths.append(len(texts))
        is_answer = [bool(_ANSWER.fullmatch(t.strip())) for t in texts]
        steps += [s for s, a in zip(scores, is_answer, strict=True) if not a]
        answers.append(any(s == 1.0 and a for s, a in zip(scores, is_answer, strict=True)))
    n = len(means)

    def avg(xs: Sequence[float]) -> float:
        return sum(xs) / len(xs) if xs else 0.0

    return RationaleStats(avg(means), avg(steps), avg([float(a) for a in answers]), avg(lengths), n)


def write_jsonl(path: Path, records: Iterable[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")
    return path


def warm_start_records(task: ChainedAddition, problems: Sequence[Mapping[str, Any]], k: int,
                       p_wrong: float, seed: int) -> list[dict[str, Any]]:
    """`k` noisy rationales per problem (JSONL rows for `ares-data import-rationales`)."""
    rng = random.Random(seed)
    return [{"problem_id": p["problem_id"], "text": task.noisy_rationale(numbers_of(p), rng, p_wrong),
             "sample_index": s, "generator": f"{TASK_SOURCE}:p_wrong={p_wrong}"}
            for p in problems for s in range(k)]


def corpus(task: ChainedAddition, n: int = 400, seed: int = 0) -> list[str]:
    """Texts to train a tiny tokenizer on: questions and (right and wrong) rationales of the task."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        numbers = task.sample_numbers(rng)
        texts += [question(numbers), task.noisy_rationale(numbers, rng, 0.5)]
    return texts
