"""The `ares-train` command. Heavy imports (torch, transformers, trl) happen inside commands only,
so `--help` is fast and a missing [train] extra gives a clear error instead of an ImportError."""

from __future__ import annotations

import sys

from ares_data.cli import compose_app, run_app

from .deps import install_help

# Command modules under ares_train/commands/, in --help order. Add a module here to add commands.
COMMAND_MODULES: list[str] = [
    "rollout_cmd",
    "sft_cmd",
    "ppo_cmd",
    "grpo_cmd",
    "eval_cmd",
    "loop_cmds",
]

app = compose_app(
    "ares-train",
    "Train with ARES: sample rationales (rollout), PPO with sentence-level teacher rewards, SFT on "
    f"teacher corrections, and the alternating loop. {install_help()}",
    __package__,
    COMMAND_MODULES,
)


def main() -> None:
    sys.exit(run_app(app, prog="ares-train"))


if __name__ == "__main__":
    main()
