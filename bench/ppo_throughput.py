"""`ares-train ppo` tokens/s and peak memory on a config-built model (issue 14), before/after side by side.

Each repeat runs `ares-train ppo` in-process in a fresh child process (so peak memory is that run's own) on
the data of `bench/train_perf.py` (the shipped ScienceQA sample's problems, k responses each of about
--response-tokens tokens, random sentence scores). Resumable checkpoints are off (`[ppo] save_checkpoints =
false`): the time is the training itself (scoring passes + PPO epochs), measured around the trainer's
`train`. tokens/s = (prompt + response tokens of all rollouts) x ppo_epochs / train seconds. On CUDA the
run also reports mean GPU utilisation (nvidia-smi samples every 0.2 s) and an MFU estimate:

    model FLOPs = tokens x (2 x (N_policy + N_value + N_ref) + ppo_epochs x 6 x (N_policy + N_value))

with N the matmul parameters (the value model has no LM head), attention score FLOPs left out, over the
card's dense bf16 peak. One line of JSON per run goes to --record; the fastest run is printed.

    python bench/ppo_throughput.py --label before                       # CPU, ~100M model
    python bench/ppo_throughput.py --label after-ckpt --extra=--gradient-checkpointing
    python bench/ppo_throughput.py --preset gpu-0.5b --problems 60 --k 4 --response-tokens 242 \\
        --mini-batch-size 16 --ppo-epochs 2 --dtype bfloat16 --label gpu-before     # on a GPU
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_perf  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = train_perf.parser(__doc__)
    ap.add_argument("--mini-batch-size", type=int, default=8)
    ap.add_argument("--ppo-epochs", type=int, default=1)
    ap.add_argument("--forward-batch-size", type=int, default=16)
    return train_perf.parsed(ap, argv)


def model_flops(model: Path, tokens: int, epochs: int) -> float:
    body, head = train_perf.matmul_params(model)
    policy, value = body + head, body
    return tokens * (2 * (2 * policy + value) + epochs * 6 * (policy + value))


def child(a: argparse.Namespace) -> dict[str, Any]:
    from ares_train.ppo.trainer import SentencePPOTrainer

    box: dict[str, Any] = {}
    original_train = SentencePPOTrainer.train

    def count_tokens(self: Any, *args: Any, **kwargs: Any) -> Any:
        box["tokens"] = sum(int(r.prompt_ids.numel() + r.response_ids.numel()) for r in self.rollouts)
        box["rollouts"] = len(self.rollouts)
        return original_train(self, *args, **kwargs)

    SentencePPOTrainer.train = count_tokens  # type: ignore[method-assign]
    train_perf.timed(SentencePPOTrainer, "train", box)  # wraps count_tokens: the timing excludes counting
    model = a.work / "model"
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(f"[ppo]\nsave_checkpoints = false\nforward_batch_size = {a.forward_batch_size}\n")
        train_perf.cli(
            "ares_train.cli",
            [
                "--store",
                a.work / "store",
                "ppo",
                "--model",
                model,
                "--rationales",
                "perf-rationales",
                "--scores",
                "perf-scores",
                "-o",
                Path(tmp) / "out",
                "--mini-batch-size",
                a.mini_batch_size,
                "--ppo-epochs",
                a.ppo_epochs,
                "--dtype",
                a.dtype,
                "--config",
                config,
                *shlex.split(a.extra),
            ],
        )
    tokens = box["tokens"] * a.ppo_epochs
    return train_perf.result(box, tokens, model_flops(model, box["tokens"], a.ppo_epochs), a.peak_tflops)


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    train_perf.main(__file__, argv, a, child, command="ppo", mini_batch_size=a.mini_batch_size,
                    ppo_epochs=a.ppo_epochs, dtype=a.dtype)  # fmt: skip


if __name__ == "__main__":
    main()
