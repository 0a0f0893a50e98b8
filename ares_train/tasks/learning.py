"""Does RL on sentence scores teach a policy anything? Rounds of rollout -> checker -> RL on a known task.

The learning benchmark (`bench/learning.py`) and the learning test (`tests/test_learning.py`) share this:

1. `prepare`: ingest the chained-addition problems (`ares_train.tasks.arithmetic`) into a store, import
   noisy warm-start rationales (a share `p_wrong` of the steps wrong), build a tiny config-built model whose
   tokenizer is trained on the task's text, and warm-start it by SFT on those rationales;
2. `run_rounds`: for each round, sample k rationales per problem from the current policy (`run_rollout`, the
   round's own seed), score every sentence with the task's checker, publish the scores through the
   `import-scores` path (`ares_data.import_scores`), and train the next policy with the variant's algorithm
   (PPO or another registered one), the reference pinned to the warm start and the critic carried on.

After each round (and before the first), the policy's rollouts are measured with the checker's true
scores: mean sentence score, share of right steps, final-answer accuracy, sentences per rationale, and
`kl`, the KL(policy || warm start) per rationale estimated on those rollouts (the mean over rationales of
sum_t log pi(y_t) - log pi_ref(y_t), response tokens and the stop token, at the sampling temperature).

`reward_sign` turns the checker's score c into neutral + sign * (c - neutral) before training: -1 flips the
reward, 0 zeroes it (controls for the test). The stats always use the true scores.

A variant is an algorithm name and its config overrides (`VARIANTS`); an algorithm maps to its run config
class and run function (`ALGORITHMS`). Adding one is one line in each.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ares_data.store import Store, Version

from . import arithmetic as arith

NEUTRAL = 0.5


def _ppo() -> tuple[type, Callable[..., Any]]:
    from ..ppo.run import PPORunConfig, run_ppo

    return PPORunConfig, run_ppo


def _grpo() -> tuple[type, Callable[..., Any]]:
    from ..ppo.grpo_config import GRPORunConfig
    from ..ppo.grpo_run import run_grpo

    return GRPORunConfig, run_grpo


ALGORITHMS: dict[str, Callable[[], tuple[type, Callable[..., Any]]]] = {"ppo": _ppo, "grpo": _grpo}


@dataclass(frozen=True)
class Variant:
    algorithm: str
    overrides: dict[str, Any] = field(default_factory=dict)


VARIANTS: dict[str, Variant] = {
    "ppo-sentence": Variant("ppo", {"reward_level": "sentence"}),
    "ppo-sequence": Variant("ppo", {"reward_level": "sequence"}),
    "grpo-process": Variant("grpo", {"advantage": "process"}),
    "grpo-outcome": Variant("grpo", {"advantage": "outcome"}),
}


@dataclass
class LearningSettings:
    """Everything a learning run depends on besides the seed (see the module doc)."""

    task: arith.ChainedAddition = field(default_factory=arith.ChainedAddition)
    problems: int = 64  # RL problems (split "train")
    warm_problems: int = 512  # SFT problems (split "warm"), one noisy rationale each
    p_wrong: float = 0.5  # share of wrong steps in the warm-start rationales
    hidden_size: int = 64
    num_layers: int = 2
    vocab_size: int = 300
    sft_epochs: float = 20.0
    sft_lr: float = 3e-3
    sft_batch_size: int = 16
    rounds: int = 3
    k: int = 4  # rationales per problem per round
    temperature: float = 1.0
    max_new_tokens: int = 40
    reward_sign: float = 1.0
    measure_kl: bool = True  # the KL column (two model loads and a forward pass per round)
    # settings of every algorithm's run config (those a config lacks are left out; variants override)
    train: dict[str, Any] = field(default_factory=lambda: {
        "lr": 3e-4, "ppo_epochs": 4, "mini_batch_size": 32, "kl_coef": 0.05, "lr_scheduler": "constant",
        "save_checkpoints": False})


def quick_settings(reward_sign: float = 1.0) -> LearningSettings:
    """The learning tests' setup: small enough for CI (half the problems, a weaker warm start, two rounds)."""
    return LearningSettings(problems=32, warm_problems=256, sft_epochs=24, sft_lr=5e-3, rounds=2, k=4,
                            reward_sign=reward_sign, measure_kl=False,
                            train={"lr": 3e-4, "ppo_epochs": 4, "mini_batch_size": 32, "kl_coef": 0.05,
                                   "lr_scheduler": "constant", "save_checkpoints": False})


@dataclass(frozen=True)
class RoundStats:
    round: int  # RL rounds done (0 = the warm-started policy)
    mean_score: float
    step_accuracy: float
    answer_accuracy: float
    sentences: float
    kl: float
    train_seconds: float  # wall time of the RL step that made this policy (0 for the warm start)
    rollout_seconds: float
    train_peak_mib: float = 0.0  # peak RSS of this process during that RL step (sampled every 20 ms)

    def as_dict(self) -> dict[str, float]:
        return dataclasses.asdict(self)


class PeakRSS:
    """`with PeakRSS() as peak: ...` -> `peak.mib`, the largest resident set size of this process (MiB) seen
    by a thread reading /proc/self/statm every 20 ms while the block runs (Linux; 0 elsewhere)."""

    def __init__(self) -> None:
        self.mib = 0.0
        self._stop = threading.Event()

    @staticmethod
    def now() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            return 0.0

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.mib = max(self.mib, self.now())

    def __enter__(self) -> PeakRSS:
        self.mib = self.now()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.mib = round(max(self.mib, self.now()), 1)


@dataclass
class Prepared:
    store: Store
    problems: Version
    warm: Path


def prepare(root: Path, settings: LearningSettings, seed: int) -> Prepared:
    """Problems, warm-start rationales and the SFT-warm-started tiny model under `root` (reused if there)."""
    from ares_data.prompting import INSTRUCTION
    from ares_data.rationales import import_rationales
    from ares_data.sources import JsonlFile, ingest

    from ..tiny import build_tiny_text_model

    task, store = settings.task, Store(root / "store")
    rl = task.problems(settings.problems, seed, split="train")
    warm_rows = task.problems(settings.warm_problems, seed + 10_000, split="warm")
    problems = ingest(store, "add", JsonlFile(arith.write_jsonl(root / "problems.jsonl", rl + warm_rows)))
    records = arith.warm_start_records(task, warm_rows, 1, settings.p_wrong, seed)
    warm_file = arith.write_jsonl(root / "warm.jsonl", records)
    rationales = import_rationales(store, "add-warm", warm_file, problems)
    init, warm = root / "models" / "init", root / "models" / "warm"
    if not (warm / "config.json").is_file():
        texts = [*arith.corpus(task, seed=seed), INSTRUCTION, "Question:"]
        build_tiny_text_model(init, texts=texts, seed=seed, vocab_size=settings.vocab_size,
                              hidden_size=settings.hidden_size, num_layers=settings.num_layers)
        warm_start(store, settings, rationales, init, warm, seed)
    return Prepared(store, problems, warm)


def warm_start(store: Store, settings: LearningSettings, rationales: Version, init: Path, out: Path,
               seed: int) -> None:
    """`ares-train sft --rationales` on the noisy rationales."""
    from ..sft import SFTConfig, run_sft

    run_sft(store, SFTConfig(model=str(init), rationales=rationales.ref, output_dir=str(out),
                             epochs=settings.sft_epochs, lr=settings.sft_lr,
                             batch_size=settings.sft_batch_size, warmup=0.05, logging_steps=50,
                             save_steps=10**9, seed=seed))


def score_rollouts(store: Store, problems: Version, rationales: Version, path: Path, name: str,
                   sign: float = 1.0) -> tuple[Version, arith.RationaleStats]:
    """Check every sentence; publish neutral + sign * (score - neutral) via import-scores -> (scores, the
    stats of the true scores)."""
    from ares_data.import_scores import import_scores

    numbers = {p["problem_id"]: arith.numbers_of(p) for p in _problem_rows(problems)}
    lines, triples = [], []
    for row in rationales.load():
        texts = [s["text"] for s in row["sentences"]]
        scores = arith.score_sentences(numbers[row["problem_id"]], texts)
        triples.append((numbers[row["problem_id"]], texts, scores))
        lines.append({"rationale_id": row["rationale_id"], "scores": [NEUTRAL + sign * (c - NEUTRAL)
                                                                      for c in scores]})
    arith.write_jsonl(path, lines)
    version = import_scores(store, name, path, rationales, scorer=f"{arith.TASK_SOURCE}:checker*{sign:g}")
    return version, arith.summarize(triples)


def _problem_rows(problems: Version) -> Any:
    ds = problems.load()
    return ds.remove_columns(["image"]) if "image" in ds.column_names else ds


def policy_kl(store: Store, policy_dir: Path, ref_dir: Path, rationales: Version, scores: Version) -> float:
    """Mean over the rationales of sum_t log pi(y_t) - log pi_ref(y_t) (k1 estimate of the sequence KL)."""
    import torch

    from ..modeling import load_policy
    from ..ppo.algorithm import response_logprobs
    from ..ppo.data import collate, load_rollouts

    policy, ref = load_policy(policy_dir, dtype="float32"), load_policy(ref_dir, dtype="float32")
    data = load_rollouts(store, rationales, scores, policy)
    total = 0.0
    with torch.no_grad():
        for i in range(0, len(data.rollouts), 64):
            inputs, responses, mask, _, plen = collate(data.rollouts[i:i + 64], "cpu",
                                                       policy.tokenizer.pad_token_id)
            sl = slice(plen - 1, plen - 1 + responses.shape[1])
            lp = response_logprobs(policy.model(**inputs).logits[:, sl], responses, data.temperature)
            lr = response_logprobs(ref.model(**inputs).logits[:, sl], responses, data.temperature)
            total += float(((lp - lr) * mask).sum())
    return total / max(len(data.rollouts), 1)


def run_rounds(prep: Prepared, settings: LearningSettings, variant: Variant, out: Path,
               seed: int) -> Iterator[RoundStats]:
    """Yield the stats of the warm start (round 0) and of the policy after each of `settings.rounds`."""
    from ..rollout import RolloutConfig, run_rollout

    config_cls, run = ALGORITHMS[variant.algorithm]()
    names = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(variant.overrides) - names)
    if unknown:
        raise ValueError(f"{config_cls.__name__} has no setting(s) {unknown}")
    shared = {k: v for k, v in settings.train.items() if k in names}
    model, value, train_seconds, peak = prep.warm, None, 0.0, PeakRSS()
    tag = out.name
    for r in range(settings.rounds + 1):
        started = time.perf_counter()
        rationales = run_rollout(prep.store, RolloutConfig(
            model=str(model), problems=prep.problems.ref, output=f"{tag}-rationales", k=settings.k,
            split="train", round=r + 1, max_new_tokens=settings.max_new_tokens,
            temperature=settings.temperature, batch_size=64, seed=seed * 1000 + r))
        rollout_seconds = time.perf_counter() - started
        scores, stats = score_rollouts(prep.store, prep.problems, rationales, out / f"scores-{r + 1}.jsonl",
                                       f"{tag}-scores", settings.reward_sign)
        kl = policy_kl(prep.store, model, prep.warm, rationales, scores) if r and settings.measure_kl else 0.0
        yield RoundStats(r, stats.mean_score, stats.step_accuracy, stats.answer_accuracy, stats.sentences,
                         kl, train_seconds, rollout_seconds, peak.mib)
        if r == settings.rounds:
            return
        nxt = out / f"policy-{r + 1}"
        cfg = config_cls(model=str(model), rationales=rationales.ref, scores=scores.ref, output_dir=str(nxt),
                         ref_model=str(prep.warm), seed=seed, **shared, **variant.overrides)
        if value is not None and "value_model" in names:
            cfg.value_model = str(value)
        started = time.perf_counter()
        with PeakRSS() as peak:
            run(cfg, prep.store)
        train_seconds = time.perf_counter() - started
        model = nxt
        value = nxt / "value" if (nxt / "value").is_dir() else None

