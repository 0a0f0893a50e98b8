"""Peak memory and train time of `ares-train grpo` vs `ares-train ppo` on one config-built model and data.

Each run is `ares-train ppo|grpo` in-process in a fresh child process (so the peak RSS, and on CUDA torch's
max allocated memory, is that run's own: loading, reference, value model, optimizer state, training), on the
data of `bench/train_perf.py` (the shipped ScienceQA sample's problems, k responses of about
--response-tokens tokens, random sentence scores). Resumable checkpoints are off. Full fine-tuning and LoRA
(--lora-r) are measured for both methods; the time is the trainer's `train` (scoring passes + epochs).

    python bench/grpo_memory.py                                  # CPU, ~100M Qwen2-shaped model
    python bench/grpo_memory.py --preset tiny --repeats 1        # smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_perf  # noqa: E402

METHODS = ("ppo", "grpo")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = train_perf.parser(__doc__)
    ap.add_argument("--mini-batch-size", type=int, default=8)
    ap.add_argument("--ppo-epochs", type=int, default=1)
    ap.add_argument("--lora-r", type=int, default=16, help="the LoRA runs' rank (0: full fine-tuning only)")
    ap.add_argument("--method", choices=METHODS, default="ppo", help=argparse.SUPPRESS)  # the child's
    ap.add_argument("--lora", type=int, default=0, help=argparse.SUPPRESS)  # the child's rank
    return train_perf.parsed(ap, argv)


def child(a: argparse.Namespace) -> dict[str, Any]:
    from ares_train.ppo.trainer import SentencePPOTrainer

    box: dict[str, Any] = {}
    train_perf.timed(SentencePPOTrainer, "train", box)  # GRPOTrainer inherits train
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(f"[{a.method}]\nsave_checkpoints = false\n")
        out = train_perf.cli("ares_train.cli", [
            "--store", a.work / "store", a.method, "--model", a.work / "model", "--rationales",
            "perf-rationales", "--scores", "perf-scores", "-o", Path(tmp) / "out", "--mini-batch-size",
            a.mini_batch_size, "--ppo-epochs", a.ppo_epochs, "--dtype", a.dtype, "--lora-r", a.lora,
            "--config", config])  # fmt: skip
    return {**box, **train_perf.peak_memory(), **train_perf.device_info(None), "steps": out["steps"],
            "used": out["counts"]["used"]}


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    if a.child:
        print(json.dumps(child(a)))
        return
    model = train_perf.prepare(a)
    base = [x for x in (argv if argv is not None else sys.argv[1:]) if x != "--child"]
    rows = []
    for lora in sorted({0, a.lora_r}):
        for method in METHODS:
            runs = train_perf.child_runs(Path(__file__), [*base, "--method", method, "--lora", str(lora)],
                                         a.repeats)
            best = train_perf.summarise(f"{method} lora_r={lora}", runs, a.record, preset=a.preset,
                                        params=train_perf.n_params(model), problems=a.problems, k=a.k)
            best["min_peak_rss_mib"] = min(r["peak_rss_mib"] for r in runs)
            rows.append(best)
            print(json.dumps(best), flush=True)
    print("| run | peak RSS MiB (min over repeats) | CUDA max allocated MiB | train s (fastest) "
          "| train CPU s |")
    print("|---|---|---|---|---|")
    for r in rows:
        cuda = r.get("cuda_max_allocated_mib")
        print(f"| {r['label']} | {r['min_peak_rss_mib']:.0f} | {'-' if cuda is None else f'{cuda:.0f}'} | "
              f"{r['train_s']:.1f} | {r['min_train_cpu_s']:.1f} |")


if __name__ == "__main__":
    main()
