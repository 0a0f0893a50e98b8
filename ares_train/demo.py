"""`ares demo`: the whole ARES pipeline on the shipped sample, on CPU, in a few minutes.

1. ingest the shipped ScienceQA-format sample (60 problems) into OUT/store as `sqa`;
2. build a tiny random causal LM (`ares_train.tiny`) and warm-start it by SFT on the train problems'
   reference rationales (the gold solution + "So the answer is (X)."), published as the corrections-kind
   dataset `sqa-gold` so the ordinary SFT stage can train on it;
3. run the ARES loop (`ares_train.loop`, OUT/run) for `rounds` rounds of rollout -> score -> PPO and
   rollout -> correct -> SFT with the teacher, evaluating before the first round and after every round;
4. sample rationales from the final policy, have the teacher score them, and judge them against the first
   round's rationales of the warm-started policy (both presentation orders);
5. write OUT/report/report.json and OUT/report/rounds.png: reward and accuracy of the policy after each
   round, numbered as `loop` numbers rounds (round 0: the warm-started policy, before round 1; its reward
   is that of round 1's rollouts; see `policy_rounds`);
6. unless `learning` is off, the second part (`ares_train.demo_controlled`): a few rounds of sentence-level
   PPO on a controlled task with a programmatic checker, where the reward does rise; its per-round table
   goes into report.json ("learning") and OUT/report/learning.png.

Everything is resumable: running the demo again with the same OUT reuses what is done. The tiny model is
far too small to reason; the demo shows the machinery (datasets, teacher feedback, PPO, SFT, evaluation,
judging), not a capable model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from ares_data.store import Store, Version

from .demo_controlled import SCIENCEQA_MEASURES, plot_learning, run_controlled

GOLD_TEACHER = "gold:reference_rationale"


@dataclass
class DemoOptions:
    out: Path = Path("ares-demo")
    teacher: str = "reference"
    teacher_base_url: str = ""
    rounds: int = 2
    k: int = 4  # rationales per problem in each RL rollout
    max_new_tokens: int = 64
    limit: int = 0  # train problems used by the loop (0 = all 40)
    warm_epochs: float = 40.0
    eval_split: str = "val,test"
    threads: int = 1  # torch CPU threads: one is fastest for a model this small on a busy machine
    learning: bool = True  # the second part: sentence-level PPO on the controlled task (`demo_controlled`)
    learning_rounds: int = 6


class DemoReporter(Protocol):
    def phase(self, name: str) -> None: ...
    def progress(self, done: int, total: int | None) -> None: ...


def gold_text(problem: dict[str, Any]) -> str:
    """The warm-start target: the problem's solution (else its reference rationale) + the answer line."""
    meta = json.loads(problem.get("metadata") or "{}")
    solution = (meta.get("solution") or problem.get("reference_rationale") or "").strip()
    return f"{solution} So the answer is ({chr(65 + problem['answer_index'])})."


def gold_corrections(store: Store, problems: Version, name: str = "sqa-gold",
                     split: str = "train") -> Version:
    """A corrections-kind dataset whose 'corrections' are the reference rationales (for warm-start SFT)."""
    from ares_data.segment import segment

    ds = problems.load().remove_columns(["image"])
    rows = []
    for p in ds:
        if p["split"] != split or p["answer_index"] is None:
            continue
        text = gold_text(p)
        sents = [s.as_dict() for s in segment(text)]
        rows.append({"rationale_id": f"gold-{p['problem_id']}", "problem_id": p["problem_id"], "original": "",
                     "corrected": text, "corrected_sentences": sents, "kept": 0, "edited": 0,
                     "added": len(sents), "removed": 0, "status": "ok", "error": "", "raw_response": "",
                     "teacher": GOLD_TEACHER, "prompt_sha": "", "input_tokens": 0, "output_tokens": 0,
                     "cost_usd": 0.0, "attempts": 0, "cached": False})
    return store.publish(name, "corrections", rows, parents=[problems], params={"split": split,
                         "source": "reference_rationale"}, extra={"teacher": GOLD_TEACHER})


def loop_settings(opts: DemoOptions, model: str) -> Any:
    from .loop.config import LoopConfig, LoopSettings

    loop = LoopConfig(model=model, problems="sqa", teacher=opts.teacher,
                      teacher_base_url=opts.teacher_base_url, rounds=opts.rounds, schedule="rl,sft",
                      split="train", limit=opts.limit,
                      eval_split=opts.eval_split, name="demo", correct_k=1)
    loop.validate()
    rollout = {"k": opts.k, "max_new_tokens": opts.max_new_tokens, "temperature": 1.0, "batch_size": 32}
    ppo = {"ppo_epochs": 2, "mini_batch_size": 16, "lr": 5e-5, "kl_coef": 0.1, "save_checkpoints": False}
    sft = {"epochs": 1, "lr": 2e-4, "batch_size": 8, "logging_steps": 5, "save_steps": 10000}
    evl = {"max_new_tokens": opts.max_new_tokens, "answer_tokens": 6, "batch_size": 32}
    return LoopSettings(loop, rollout, ppo, sft, evl, source="ares demo")


def _phase(reporter: DemoReporter | None, name: str) -> None:
    if reporter is not None:
        reporter.phase(name)


def prepare(opts: DemoOptions, store: Store, reporter: DemoReporter | None) -> tuple[Version, Path]:
    """Steps 1-2: the problems dataset and the warm-started tiny model."""
    from ares_data.sample import SAMPLE_DIR
    from ares_data.sources import ingest, open_scienceqa

    from .checkpoint import read_checkpoint_manifest
    from .sft import SFTConfig, run_sft
    from .tiny import build_tiny_text_model

    _phase(reporter, "ingest the shipped sample")
    problems = ingest(store, "sqa", open_scienceqa(SAMPLE_DIR))
    init, warm = opts.out / "models" / "init", opts.out / "models" / "warm"
    _phase(reporter, "build a tiny model")
    if not (init / "config.json").is_file():
        build_tiny_text_model(init, seed=0)
    _phase(reporter, "warm-start it by SFT on the reference rationales")
    gold = gold_corrections(store, problems)
    done = read_checkpoint_manifest(warm)
    if done is None or gold.fingerprint not in {d["fingerprint"] for d in done.get("datasets", [])}:
        cfg = SFTConfig(model=str(init), corrections=gold.ref, output_dir=str(warm), epochs=opts.warm_epochs,
                        lr=3e-3, batch_size=8, logging_steps=10, save_steps=100000, warmup=0.05,
                        resume=warm.is_dir() and any(warm.glob("checkpoint-*")))
        run_sft(store, cfg, progress=reporter.progress if reporter else None)
    return problems, warm


def run_demo(opts: DemoOptions, reporter: Any = None) -> dict[str, Any]:
    """Run (or resume) the whole demo; returns the report (also written to OUT/report/report.json)."""
    import torch

    from ares_data.judging import run_judge
    from ares_data.teachers import make_teacher

    from .loop import stages as loop_stages
    from .loop.run import LoopRun, check_teacher, round_table

    check_teacher(loop_settings(opts, str(opts.out / "models" / "warm")).loop)  # before minutes of work
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the demo draws its own bars
    opts.out.mkdir(parents=True, exist_ok=True)
    store = Store(opts.out / "store")
    problems, warm = prepare(opts, store, reporter)
    _phase(reporter, f"ARES loop: {opts.rounds} x (rollout -> score -> PPO, rollout -> correct -> SFT)")
    settings = loop_settings(opts, str(warm))
    run = LoopRun(opts.out / "run", settings, store)
    manifest = run.run(reporter)
    _phase(reporter, "judge the final policy's rationales against the first round's")
    tick = reporter.progress if reporter else None
    ctx = loop_stages.Context(store, settings, run.run_dir, run.prefix, tick)
    final_out, _ = loop_stages.rollout(ctx, manifest["final_model"], opts.rounds + 1, 1)
    final_scores, final_metrics = loop_stages.teacher_stage(ctx, "score", final_out["rationales"])
    first = next(s for s in manifest["stages"] if s["kind"] == "rollout")["outputs"]["rationales"]
    teacher = make_teacher(opts.teacher, base_url=opts.teacher_base_url or None)
    judgments, summary = run_judge(store, final_out["rationales"], first, teacher, name="demo-judge",
                                   on_progress=(lambda s: tick(s.done, s.total)) if tick else None)
    rounds = policy_rounds(round_table(manifest), final_metrics["mean_score"])
    report = {"options": {k: str(v) for k, v in asdict(opts).items()}, "measures": SCIENCEQA_MEASURES,
              "rounds": rounds,
              "final_scores": final_scores["scores"],
              "judge": {"a": final_out["rationales"], "b": first, "ref": judgments.ref, **summary},
              "final_model": manifest["final_model"], "paths": {}}
    if opts.learning:
        report["learning"] = run_controlled(opts.out, opts.learning_rounds, reporter=reporter)
    report["paths"] = write_report(opts.out, report, store, warm, problems)
    return report


def policy_rounds(rows: list[dict[str, Any]], final_reward: float | None) -> list[dict[str, Any]]:
    """One row per policy, numbered as `loop` numbers its rounds: round 0 is the warm-started policy (before
    round 1), round r the policy after round r. A policy's reward is the mean sentence score of the next
    round's rollouts, which it samples (`rollouts_round`: the loop records round r+1's reward on them); the
    last policy's are the final rollouts, sampled and scored by the demo as round R+1 (`final_reward`)."""
    rewards = [r["reward"] for r in rows[1:]] + [final_reward]
    return [{**row, "reward": reward, "rollouts_round": row["round"] + 1}
            for row, reward in zip(rows, rewards, strict=True)]


def write_report(out: Path, report: dict[str, Any], store: Store, warm: Path, problems: Version) -> dict:
    folder = out / "report"
    folder.mkdir(parents=True, exist_ok=True)
    plot = plot_rounds(report["rounds"], folder / "rounds.png")
    paths = {"report": str(folder / "report.json"), "plot": str(plot), "store": str(store.root),
             "run_manifest": str(out / "run" / "run.json"), "warm_model": str(warm),
             "final_model": report["final_model"], "problems": problems.ref,
             "datasets": [f"{n}@v{v}" for n in store.names() for v in store.versions(n)]}
    if "learning" in report:
        paths["learning_plot"] = str(plot_learning(report["learning"]["rounds"], folder / "learning.png"))
    (folder / "report.json").write_text(json.dumps({**report, "paths": paths}, indent=2, default=str) + "\n")
    return paths


def plot_rounds(rounds: list[dict[str, Any]], path: Path) -> Path:
    """Reward (mean teacher sentence score of the policy's rollouts) and accuracy per round, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=100)
    acc = [(r["round"], r["accuracy"]) for r in rounds if r["accuracy"] is not None]
    rew = [(r["round"], r["reward"]) for r in rounds if r["reward"] is not None]
    if acc:
        ax.plot(*zip(*acc, strict=True), "o-", color="tab:blue", label="accuracy (eval)")
    if rew:
        ax.plot(*zip(*rew, strict=True), "s--", color="tab:orange", label="reward (mean sentence score)")
    ax.set_xlabel("policy after round r (0 = warm start); reward from round r+1's rollouts")
    ax.set_ylabel("mean sentence score / accuracy")
    ax.set_ylim(0, 1)
    ax.set_xticks([r["round"] for r in rounds])
    ax.set_title("ARES demo: reward and accuracy per round")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
