"""Every import of TRL's PPO internals (`trl.experimental.ppo`, removed in trl 1.13) lives here.

From TRL we use `PPOConfig` (hyper-parameters + TrainingArguments), `PPOTrainer`'s set-up (Accelerator,
optimizer and LR schedule, report_to callbacks, the frozen reference copy or the adapter-disabled LoRA
reference, saving), `PolicyAndValueWrapper`, and its masked mean/whiten and log-prob helpers. The rest of
`ares_train.ppo` imports them from this module only, so a TRL upgrade touches one file.
"""

from __future__ import annotations

import os
import warnings

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from trl.experimental.ppo import PPOConfig, PPOTrainer
    from trl.experimental.ppo.ppo_trainer import PolicyAndValueWrapper, masked_mean, masked_whiten
    from trl.trainer.utils import selective_log_softmax

__all__ = [
    "PPOConfig",
    "PPOTrainer",
    "PolicyAndValueWrapper",
    "masked_mean",
    "masked_whiten",
    "selective_log_softmax",
]
