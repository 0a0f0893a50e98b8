"""Does the demo's tiny model learn anything? Reward and accuracy of its policies, measured the same way.

    python bench/demo_learning.py [--out /tmp/ares-bench-learn] [--rl-rounds 6] [--ppo-lr 5e-5 3e-4]

Runs `ares demo` into OUT (or reuses it), then, for the random initial model, the warm-started model and
the demo's final model: reward = mean `reference` sentence score of k=8 sampled rationales per train
problem (temperature 1, the demo's rollout settings), the share of those whose last sentence states the
gold answer, and greedy accuracy on val+test (20 problems) and on train (40). Then, for each --ppo-lr, an
RL-only loop (schedule ["rl"]) from the warm-started model for --rl-rounds rounds, printing the reward of
each round's rollouts (round r = the policy after r-1 PPO steps).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ares_data.store import Store
from ares_train.demo import DemoOptions, loop_settings, run_demo
from ares_train.loop import stages as loop_stages


def measure(store: Store, out: Path, model: str, tag: str) -> dict:
    def ctx(eval_split: str) -> loop_stages.Context:
        settings = loop_settings(DemoOptions(out=out, eval_split=eval_split), model)
        settings.rollout["k"] = 8
        return loop_stages.Context(store, settings, out / "bench", f"bench-{tag}")

    rats, _ = loop_stages.rollout(ctx("val,test"), model, 50, 1)
    scores, metrics = loop_stages.teacher_stage(ctx("val,test"), "score", rats["rationales"])
    last = [s[-1] if s else 0.0 for s in store.resolve(scores["scores"]).load()["scores"]]
    _, held_out = loop_stages.evaluate(ctx("val,test"), model)
    _, train = loop_stages.evaluate(ctx("train"), model)
    gold = round(last.count(1.0) / len(last), 3)
    return {"model": tag, "reward": metrics["mean_score"], "last_sentence_gold": gold,
            "accuracy_val_test": held_out["accuracy"], "accuracy_train": train["accuracy"]}


def rl_only(store: Store, out: Path, warm: str, rounds: int, lr: float) -> list[float]:
    from ares_train.loop.run import LoopRun, round_table

    settings = loop_settings(DemoOptions(out=out, rounds=rounds), warm)
    settings.loop.schedule, settings.loop.eval_split, settings.loop.name = "rl", "", f"bench-rl-{lr:g}"
    settings.rollout["k"] = 8
    settings.ppo["lr"] = lr
    manifest = LoopRun(out / f"bench-rl-{lr:g}", settings, store).run()
    return [r["reward"] for r in round_table(manifest)]


def main() -> None:
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("/tmp/ares-bench-learn"))
    ap.add_argument("--rl-rounds", type=int, default=6)
    ap.add_argument("--ppo-lr", type=float, nargs="*", default=[5e-5, 3e-4])
    args = ap.parse_args()
    report = run_demo(DemoOptions(out=args.out))
    torch.set_num_threads(1)
    store = Store(args.out / "store")
    models = {"random init": args.out / "models" / "init", "warm start": args.out / "models" / "warm",
              "demo final": Path(report["final_model"])}
    for tag, path in models.items():
        print(json.dumps(measure(store, args.out, str(path), tag.replace(" ", "-"))), flush=True)
    for lr in args.ppo_lr:
        rewards = rl_only(store, args.out, str(models["warm start"]), args.rl_rounds, lr)
        print(json.dumps({"rl_only_ppo_lr": lr, "reward_per_round": rewards}), flush=True)


if __name__ == "__main__":
    main()
