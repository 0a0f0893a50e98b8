"""`ares-train grpo` as a library call: `run_grpo(GRPORunConfig(...))`.

The PPO run code (`ares_train.ppo.run.run_rl`: loading the policy, the reference, the rollouts and their
checks, resume, saving, manifests) with what GRPO changes: the rollouts get their group advantages first
(`grpo_trainer.group_rollouts`: over all rollouts, before they are shared by processes or split into
buffers; constant groups left out and counted), the trainer is `GRPOTrainer` (no value model is loaded,
trained or saved), the manifest's stage is `grpo` and the log OUTDIR/grpo_log.jsonl.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from ares_data.store import Store

from .grpo_config import GRPORunConfig
from .run import PPOResult, PPORunConfig, RLMethod, make_rl_trainer, run_rl

STAGE = "grpo"


def grpo_method(settings: Any) -> RLMethod:
    return RLMethod(STAGE, settings, partial(_make_trainer, settings), critic=False)


def run_grpo(
    cfg: Any, store: Store | None = None, on_step: Callable[[int, int], None] | None = None
) -> PPOResult:
    """Train and save (see the module doc); `cfg` is a GRPORunConfig."""
    if not isinstance(cfg, GRPORunConfig):
        raise TypeError(f"run_grpo takes a GRPORunConfig, got {type(cfg).__name__}")
    cfg.validate()
    return run_rl(cfg.as_ppo(), grpo_method(cfg), store, on_step)


def _make_trainer(
    settings: Any, cfg: PPORunConfig, outdir: Path, policy: Any, data: Any, collate_fn: Any, on_step: Any
) -> Any:
    from .grpo_trainer import GRPOTrainer, group_rollouts

    data.rollouts = group_rollouts(data.rollouts, data.counts, advantage=settings.advantage,
                                   scale_rewards=settings.scale_rewards)
    return make_rl_trainer(GRPOTrainer, cfg, outdir, policy, data, collate_fn, on_step,
                           log_file=f"{STAGE}_log.jsonl")
