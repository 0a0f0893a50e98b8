"""`ares-train sft` tokens/s and peak memory on the same config-built model and data as
`bench/ppo_throughput.py` (the corrections are the PPO benchmark's response texts), before/after side by side.

Each repeat runs `ares-train sft` in-process in a fresh child process; the time is TRL's `SFTTrainer.train`
(model loading, tokenization and saving left out). tokens/s = (prompt + completion tokens of the tokenized
training set, as TRL built it) x epochs / train seconds. On CUDA: mean GPU utilisation (nvidia-smi every
0.2 s) and MFU = 6 x N_policy x tokens / seconds / the card's dense bf16 peak.

    python bench/sft_throughput.py --label before
    python bench/sft_throughput.py --label after-ckpt --extra=--gradient-checkpointing
    python bench/sft_throughput.py --preset gpu-0.5b --problems 60 --k 4 --response-tokens 242 \\
        --batch-size 16 --epochs 2 --dtype bfloat16 --label gpu-before                    # on a GPU
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
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--epochs", type=int, default=1)
    return train_perf.parsed(ap, argv)


def _dataset_tokens(dataset: Any) -> int:
    """Tokens TRL trains on: the tokenized rows' lengths (packed or padding-free rows count the same)."""
    for column in ("input_ids", "seq_lengths"):
        if column in dataset.column_names:
            rows = dataset[column]
            return sum(len(r) if column == "input_ids" else sum(r) for r in rows)
    raise SystemExit(f"cannot count tokens: the training set has columns {dataset.column_names}")


def child(a: argparse.Namespace) -> dict[str, Any]:
    from trl import SFTTrainer

    box: dict[str, Any] = {}
    original_train = SFTTrainer.train

    def count_tokens(self: Any, *args: Any, **kwargs: Any) -> Any:
        box["tokens"] = _dataset_tokens(self.train_dataset)
        box["rows"] = len(self.train_dataset)
        return original_train(self, *args, **kwargs)

    SFTTrainer.train = count_tokens  # type: ignore[method-assign]
    train_perf.timed(SFTTrainer, "train", box)
    model = a.work / "model"
    with tempfile.TemporaryDirectory() as tmp:
        train_perf.cli("ares_train.cli", [
            "--store", a.work / "store", "sft", "--model", model, "--corrections", "perf-corrections",
            "-o", Path(tmp) / "out", "--batch-size", a.batch_size, "--epochs", a.epochs, "--dtype", a.dtype,
            "--save-steps", 1_000_000, "--logging-steps", 1, *shlex.split(a.extra)])  # fmt: skip
    tokens = box["tokens"] * a.epochs
    return train_perf.result(box, tokens, 6 * sum(train_perf.matmul_params(model)) * tokens, a.peak_tflops)


def main(argv: list[str] | None = None) -> None:
    a = parse(argv)
    train_perf.main(__file__, argv, a, child, command="sft", batch_size=a.batch_size, epochs=a.epochs,
                    dtype=a.dtype)  # fmt: skip


if __name__ == "__main__":
    main()
