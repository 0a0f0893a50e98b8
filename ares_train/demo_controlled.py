"""The second part of `ares demo`: sentence-level PPO on a controlled task, where learning can be measured.

The ScienceQA part (`ares_train.demo`) runs the whole machinery with a heuristic teacher on a model far too
small to improve on it; its reward stays about flat. This part runs the learning runner
(`ares_train.tasks.learning`) on the chained-addition task for a few PPO rounds with one seed: a tiny
model warm-started by SFT on rationales with half their steps wrong, then rounds of rollout -> checker
scores (import-scores) -> sentence-level PPO. After each round the policy's rollouts are measured with the
checker's true scores (mean sentence score, share of right steps, final-answer accuracy) and the KL to the
warm start.

Everything lives under OUT/learning/<settings hash>/; the table is kept in its `learning.json`, so running
the demo again with the same settings reuses it (nothing resampled or retrained).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

SCIENCEQA_MEASURES = ("the machinery (datasets, teacher feedback, PPO, SFT, evaluation, judging) with the "
                      "offline heuristic `reference` teacher on ScienceQA; a model this small is not "
                      "expected to raise this reward (BENCHMARKS.md, \"Does the demo's tiny model learn?\")")
LEARNING_MEASURES = ("learning: sentence-level PPO on a programmatic checker's per-sentence scores "
                     "(chained additions); each row is the policy after PPO round r (0 = warm start), "
                     "measured on its own rollouts with the checker's true scores")
VARIANT = "ppo-sentence"


def controlled_settings(rounds: int) -> Any:
    """The learning test's setup (`quick_settings`, checked on seeds 0-3), `rounds` rounds, the KL column."""
    from .tasks.learning import quick_settings

    return dataclasses.replace(quick_settings(), rounds=rounds, measure_kl=True)


def settings_key(settings: Any, seed: int) -> dict[str, Any]:
    return json.loads(json.dumps({"settings": dataclasses.asdict(settings), "seed": seed, "variant": VARIANT},
                                 default=str))


def run_controlled(out: Path, rounds: int, seed: int = 0, reporter: Any = None) -> dict[str, Any]:
    """Run (or reuse) the controlled part under OUT/learning; returns its report section."""
    from .tasks.learning import VARIANTS, prepare, run_rounds

    settings = controlled_settings(rounds)
    key = settings_key(settings, seed)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    root = out / "learning" / digest
    saved = root / "learning.json"
    if saved.is_file():
        done = json.loads(saved.read_text())
        if done.get("key") == key:
            return done["report"]
    _phase(reporter, "controlled task: warm-start a tiny model by SFT on rationales, half their steps wrong")
    started = time.perf_counter()
    prep = prepare(root, settings, seed)
    runs = root / "ppo"
    if runs.exists():  # an interrupted run: the runner starts its rounds afresh
        shutil.rmtree(runs)
    rows = []
    _phase(reporter, f"controlled task: {rounds} x (rollout -> checker scores -> sentence-level PPO)")
    for stats in run_rounds(prep, settings, VARIANTS[VARIANT], runs, seed):
        rows.append(stats.as_dict())
        if reporter is not None:
            reporter.progress(stats.round + 1, rounds + 1)
    report = {"measures": LEARNING_MEASURES, "task": settings.task.__class__.__name__, "variant": VARIANT,
              "seed": seed, "problems": settings.problems, "k": settings.k, "rounds": rows,
              "seconds": round(time.perf_counter() - started, 1), "folder": str(root)}
    saved.write_text(json.dumps({"key": key, "report": report}, indent=2) + "\n")
    return report


def _phase(reporter: Any, name: str) -> None:
    if reporter is not None:
        reporter.phase(name)


def plot_learning(rows: list[dict[str, Any]], path: Path) -> Path:
    """Mean sentence score, right steps and answer accuracy (left axis) and KL (right axis) per round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    x = [r["round"] for r in rows]
    for col, style, label in (("mean_score", "s-", "mean sentence score (reward)"),
                              ("step_accuracy", "o--", "share of right steps"),
                              ("answer_accuracy", "^:", "final-answer accuracy")):
        ax.plot(x, [r[col] for r in rows], style, label=label)
    ax.set_xlabel("policy after PPO round r (0 = warm start)")
    ax.set_ylabel("checker score / share")
    ax.set_ylim(0, 1)
    ax.set_xticks(x)
    kl = ax.twinx()
    kl.plot(x, [r["kl"] for r in rows], "x-.", color="tab:gray", label="KL to warm start")
    kl.set_ylabel("KL to warm start (nats per rationale)")
    kl.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = kl.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="lower right", fontsize=8)
    ax.set_title("ARES demo, controlled task: sentence-level PPO on checker scores")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
