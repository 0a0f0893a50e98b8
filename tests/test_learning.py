"""RL on sentence scores learns: the controlled chained-addition task (ares_train.tasks).

The checker and the task's records, then the learning test: a tiny model warm-started by SFT on rationales
with half their steps wrong, then two rounds of rollout -> checker scores (import-scores) -> sentence-level
PPO. The same setup is run three times from the same warm start with the same rollout seeds: with the
checker's reward, with its sign flipped and with it zeroed. The mean sentence score must rise with the
checker's reward and end clearly above both controls, so a trainer that ignored the reward (no rise) or
flipped it (a fall) fails.
Margins were checked on seeds 0-3 (BENCHMARKS.md, Learning); the seed is fixed here.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from ares_data.segment import segment
from ares_train.tasks import arithmetic as arith

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def sentences(text: str) -> list[str]:
    return [s.text for s in segment(text)]


def test_checker_scores_each_sentence_on_its_own() -> None:
    numbers = [2, 3, 1]
    right = arith.right_rationale(numbers)
    assert right == "2 plus 3 is 5. 5 plus 1 is 6. So the answer is 6."
    # a step keeps its period; the answer counts only after the steps
    assert arith.score_sentences(numbers, right.split(". ")) == [0.0, 0.0, 0.0]
    cases = {
        ("2 plus 3 is 5.", "5 plus 1 is 6.", "So the answer is 6."): [1, 1, 1],
        ("2 plus 3 is 4.", "4 plus 1 is 5.", "So the answer is 5."): [0, 1, 0],  # right after a wrong step
        ("2 plus 3 is 5.", "5 plus 1 is 7.", "So the answer is 7."): [1, 0, 0],
        ("2 plus 3 is 5.", "5 plus 2 is 7.", "So the answer is 6."): [1, 0, 1],  # wrong operand
        ("3 plus 3 is 6.", "6 plus 1 is 7."): [0, 1],  # the first operand must be the first number
        ("2 plus 3 is 5.", "So the answer is 6."): [1, 0],  # answer before the last step
        ("2 plus 3 is 5.", "5 plus 1 is 6.", "6 plus 1 is 7.", "So the answer is 6."): [1, 1, 0, 1],  # extra
        ("2 plus 3 is 5.", "5 plus 1 is 6.", "So the answer is 6.", "So the answer is 6."): [1, 1, 1, 0],
        ("2 plus 3 is 5", "Five plus one is six.", "So the answer is six."): [0, 0, 0],
        (): [],
    }
    for texts, expected in cases.items():
        assert arith.score_sentences(numbers, list(texts)) == [float(x) for x in expected], texts


def test_noisy_rationales_have_the_asked_share_of_wrong_steps() -> None:
    task, rng = arith.ChainedAddition(n_numbers=4, high=5), random.Random(0)
    steps = []
    for _ in range(2000):
        numbers = task.sample_numbers(rng)
        text = task.noisy_rationale(numbers, rng, 0.3)
        scores = arith.score_sentences(numbers, sentences(text))
        assert len(scores) == 4  # three steps and the answer, each one segmented sentence
        steps += scores[:3]
    assert abs(sum(steps) / len(steps) - 0.7) < 0.02
    assert arith.score_sentences([1, 2], ["1 plus 2 is 3.", "So the answer is 3."]) == [1.0, 1.0]
    with pytest.raises(ValueError, match="n_numbers"):
        arith.ChainedAddition(n_numbers=1)


def test_problem_records_round_trip_through_ingest(tmp_path: Path) -> None:
    from ares_data.store import Store

    from .helpers import data

    records = arith.ChainedAddition().problems(5, seed=3)
    path = arith.write_jsonl(tmp_path / "p.jsonl", records)
    r = data(["--store", tmp_path / "store", "ingest", "jsonl", path, "-o", "add"])
    assert r.exit_code == 0, r.output
    rows = Store(tmp_path / "store").resolve("add").load()
    for rec, row in zip(records, rows, strict=True):
        assert arith.numbers_of(row) == rec["numbers"] and row["answer"] == str(sum(rec["numbers"]))
        assert arith.score_sentences(rec["numbers"], sentences(row["reference_rationale"])) == [1.0] * 3
    with pytest.raises(ValueError, match="no 'numbers'"):
        arith.numbers_of({"problem_id": "x", "metadata": "{}"})


@pytest.fixture
def one_thread() -> Iterator[None]:
    """A model this small trains fastest on one thread (busy machine: 104 s CPU on 2 threads, 39 s on 1)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_two_ppo_rounds_raise_the_reward_and_a_flipped_or_zeroed_reward_does_not(tmp_path: Path) -> None:
    from ares_train.tasks.learning import VARIANTS, prepare, quick_settings, run_rounds

    prep = prepare(tmp_path, quick_settings(), seed=0)
    runs = {}
    for sign in (1.0, -1.0, 0.0):
        out = tmp_path / f"run{sign:g}"
        rounds = list(run_rounds(prep, quick_settings(sign), VARIANTS["ppo-sentence"], out, seed=0))
        assert [r.round for r in rounds] == [0, 1, 2]
        runs[sign] = [r.mean_score for r in rounds]
    warm = runs[1.0][0]
    assert all(run[0] == warm for run in runs.values())  # one warm start, the same rollout seeds
    assert 0.1 < warm < 0.6, runs  # the warm start is a mixture of right and wrong steps
    up, down, zero = runs[1.0], runs[-1.0], runs[0.0]
    assert up[2] - warm >= 0.03, runs  # the reward rises
    assert up[2] - down[2] >= 0.12, runs  # ... far above the same setup with the sign flipped
    assert down[2] <= warm - 0.05, runs  # which lowers it
    # above the zeroed reward (whose policy does not change: its scores differ from the warm start's only
    # by sampling, rounds 1-2 averaged to halve that noise), and no systematic rise without a reward
    assert (up[1] + up[2]) - (zero[1] + zero[2]) >= 0.04, runs
    assert abs(zero[2] - warm) < 0.1, runs
