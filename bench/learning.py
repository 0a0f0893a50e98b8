"""The learning benchmark: does RL on sentence scores teach a tiny policy the controlled task?

    python bench/learning.py [--out /tmp/ares-bench-learning] [--seeds 0 1 2]
        [--variants ppo-sentence ppo-sequence] [--set rounds=3 k=4 ...] [--train lr=3e-4 ...] [--json]

For each seed: the chained-addition task (`ares_train.tasks.arithmetic`), a tiny model warm-started by SFT
on rationales with half their steps wrong, then for each variant (`ares_train.tasks.learning.VARIANTS`: an
algorithm and its settings; the same warm start and rollout seeds for every variant of a seed) `rounds`
rounds of rollout -> checker scores (import-scores) -> RL, the reference pinned to the warm start.

Prints, per variant and round (0 = the warm start), the mean over seeds with the standard deviation and
the min..max of: mean sentence score, share of right steps, final-answer accuracy, sentences per rationale
and KL(policy || warm start) per rationale, with the mean wall time of the RL step that made the round's
policy and its largest peak RSS (process-wide, sampled; 0 for the warm start); then, for each pair of
variants, the per-seed paired
differences of the mean sentence score; then the machine's load average and this process's CPU time.
Results are kept in OUT/results.json per (seed, variant): running again reuses them (delete OUT to redo).
`--set` changes a `LearningSettings` field, `--train` a setting of every variant's run config.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from ares_train.tasks.learning import VARIANTS, LearningSettings, prepare, run_rounds

METRICS = ("mean_score", "step_accuracy", "answer_accuracy", "sentences", "kl")


def parse_pairs(items: list[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, _, raw = item.partition("=")
        try:
            out[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            out[key] = raw
    return out


def build_settings(sets: dict[str, Any], train: dict[str, Any]) -> LearningSettings:
    settings = LearningSettings()
    names = {f.name for f in dataclasses.fields(settings)}
    unknown = sorted(set(sets) - names)
    if unknown:
        raise SystemExit(f"Error: --set {unknown}: not a LearningSettings field ({', '.join(sorted(names))})")
    settings = dataclasses.replace(settings, **sets)
    settings.train.update(train)
    return settings


def spread(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{mean:.3f} ± {std:.3f} [{min(values):.3f}..{max(values):.3f}]"


def round_table(variant: str, runs: dict[int, list[dict[str, float]]]) -> list[str]:
    lines = [f"### {variant} ({len(runs)} seeds: mean ± std [min..max])", "",
             "| round | " + " | ".join(METRICS) + " | train s | train peak RSS MiB |",
             "|" + "---|" * (len(METRICS) + 3)]
    for r in range(min(len(rows) for rows in runs.values())):
        cells = [spread([rows[r][m] for rows in runs.values()]) for m in METRICS]
        secs = statistics.fmean(rows[r]["train_seconds"] for rows in runs.values())
        peak = max(rows[r].get("train_peak_mib", 0.0) for rows in runs.values())
        lines.append(f"| {r} | " + " | ".join(cells) + f" | {secs:.0f} | {peak:.0f} |")
    return lines


def paired_table(a: str, b: str, results: dict[str, dict[int, list[dict[str, float]]]]) -> list[str]:
    seeds = sorted(set(results[a]) & set(results[b]))
    rounds = min(len(results[v][s]) for v in (a, b) for s in seeds)
    lines = [f"### paired: mean sentence score, {a} - {b}, per seed", "",
             "| round | " + " | ".join(f"seed {s}" for s in seeds) + f" | {a} ahead |",
             "|" + "---|" * (len(seeds) + 2)]
    for r in range(1, rounds):
        diffs = [results[a][s][r]["mean_score"] - results[b][s][r]["mean_score"] for s in seeds]
        lines.append(f"| {r} | " + " | ".join(f"{d:+.3f}" for d in diffs)
                     + f" | {sum(d > 0 for d in diffs)}/{len(diffs)} |")
    return lines


def run_seed(out: Path, settings: LearningSettings, seed: int, variants: list[str],
             done: dict[str, Any]) -> None:
    prep = None
    for variant in variants:
        key = f"{seed}/{variant}"
        if key in done:
            continue
        prep = prep or prepare(out / f"seed{seed}", settings, seed)
        started = time.perf_counter()
        rows = [s.as_dict() for s in run_rounds(prep, settings, VARIANTS[variant],
                                                 out / f"seed{seed}" / variant, seed)]
        done[key] = {"rounds": rows, "wall_seconds": time.perf_counter() - started}
        (out / "results.json").write_text(json.dumps(done, indent=1))
        print(json.dumps({"seed": seed, "variant": variant,
                          "mean_score": [round(r["mean_score"], 3) for r in rows]}), flush=True)


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/ares-bench-learning"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--variants", nargs="+", default=["ppo-sentence", "ppo-sequence"],
                    choices=sorted(VARIANTS))
    ap.add_argument("--set", nargs="*", default=[], help="LearningSettings fields, e.g. rounds=3 k=4")
    ap.add_argument("--train", nargs="*", default=[], help="run-config settings, e.g. lr=3e-4 ppo_epochs=4")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    settings = build_settings(parse_pairs(args.set), parse_pairs(args.train))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "results.json"
    done = json.loads(path.read_text()) if path.is_file() else {}
    load_before, started = os.getloadavg(), time.perf_counter()
    for seed in args.seeds:
        run_seed(args.out, settings, seed, args.variants, done)
    results = {v: {s: done[f"{s}/{v}"]["rounds"] for s in args.seeds} for v in args.variants}
    lines = [f"settings: {json.dumps(dataclasses.asdict(settings), default=str)}", ""]
    for variant in args.variants:
        lines += [*round_table(variant, results[variant]), ""]
    for i, a in enumerate(args.variants):
        for b in args.variants[i + 1:]:
            lines += [*paired_table(a, b, results), ""]
    cpu = os.times()
    lines.append(f"wall {time.perf_counter() - started:.0f} s, CPU {cpu.user + cpu.system:.0f} s (this "
                 f"process), load average (1/5/15 min) before {load_before}, after {os.getloadavg()}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
