"""`GRPORunConfig`: the settings of `ares-train grpo`, derived from `PPORunConfig`.

Every PPO run setting that does not belong to the value model (model, datasets, reference, LoRA, epochs,
batch sizes, learning rate and schedule, dtype, checkpoints, ...) is a GRPO setting too, with the same help
text, default and validation, so a new PPO setting reaches `grpo` without a second copy. Left out: the value
model and GAE (`value_model`, `gamma`, `lam`, `cliprange_value`, `vf_coef`), PPO's reward placement
(`reward_level`, `reward_normalization`, `neutral_score`: the group mean removes any neutral score) and
`kl_estimator` (the KL is a loss term, where only k3 has a useful gradient). Added: `advantage`,
`scale_rewards`, and `kl_coef` with GRPO's meaning and DeepSeekMath's default.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ares_data.errors import ConfigError

from ..config import LoraFields, opt
from .grpo import ADVANTAGES, SCALES
from .run import PPORunConfig

# PPO settings with no meaning without a critic or with group-normalised rewards
PPO_ONLY = frozenset({
    "value_model", "gamma", "lam", "cliprange_value", "vf_coef", "reward_level", "reward_normalization",
    "neutral_score", "kl_estimator",
})
GRPO_FIELDS: list[tuple[str, type, Any]] = [
    ("advantage", str, opt("process", "process: each token gets the group-normalised rewards of the "
                           "sentences ending at or after it (DeepSeekMath 4.1.3); outcome: one normalised "
                           "score per rationale (its mean sentence score) on every token.")),
    ("scale_rewards", str, opt("group", "group: divide by the group's standard deviation; none: only "
                               "subtract the group mean.")),
    ("kl_coef", float, opt(0.04, "Weight of the k3 KL(policy || reference) loss term (DeepSeekMath: 0.04).")),
]
HELP = {  # PPO help texts that name the value model
    "lr": "Learning rate (AdamW) of the policy.",
    "seed": "Random seed (mini-batch order).",
    "max_grad_norm": "Gradient clipping norm of the policy (TRL: 1.0); 0 disables.",
    "ppo_epochs": "Epochs of clipped-ratio updates over each buffer (ARES paper's PPO: 3).",
}


def _validate(self: Any) -> list[str]:
    warnings = self.as_ppo().validate()
    if self.advantage not in ADVANTAGES:
        raise ConfigError(f"advantage must be one of {', '.join(ADVANTAGES)}, got {self.advantage!r}")
    if self.scale_rewards not in SCALES:
        raise ConfigError(f"scale_rewards must be one of {', '.join(SCALES)}, got {self.scale_rewards!r}")
    return warnings


def _as_ppo(self: Any) -> PPORunConfig:
    """The PPO run config with this config's shared settings (the value-model settings at their defaults,
    unused): what the shared PPO run code (loading, reference, trainer arguments) reads."""
    names = [f.name for f in dataclasses.fields(PPORunConfig) if hasattr(self, f.name)]
    shared = {name: getattr(self, name) for name in names}
    return PPORunConfig(**shared, kl_estimator="k3")


def _fields() -> list[tuple[str, Any, Any]]:
    own = {name for name, _, _ in GRPO_FIELDS}
    lora = {f.name for f in dataclasses.fields(LoraFields)}
    out = []
    for f in dataclasses.fields(PPORunConfig):
        if f.name in PPO_ONLY or f.name in own or f.name in lora:
            continue
        meta = {**f.metadata, "help": HELP.get(f.name, f.metadata.get("help", ""))}
        out.append((f.name, f.type, dataclasses.field(default=f.default, default_factory=f.default_factory,
                                                      metadata=meta)))
    return out + GRPO_FIELDS


GRPORunConfig = dataclasses.make_dataclass(
    "GRPORunConfig",
    _fields(),
    bases=(LoraFields,),
    namespace={
        "__doc__": "GRPO with group-normalised sentence rewards (no value model).",
        "__module__": __name__,
        "validate": _validate,
        "as_ppo": _as_ppo,
    },
)
