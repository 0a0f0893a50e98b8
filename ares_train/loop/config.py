"""The `ares-train loop` config: one TOML/YAML file with a `[loop]` table and one table per stage.

    [loop]                      # LoopConfig below
    model = "runs/init"         # the starting policy
    problems = "sqa"
    teacher = "reference"
    max_tokens = 2048           # teacher reply budget (optional; as `ares-data score --max-tokens`)
    rounds = 2
    schedule = ["rl", "sft"]    # steps of every round: "rl" = rollout -> score -> ppo,
                                # "grpo" = rollout -> score -> grpo (critic-free, ares-train grpo),
                                # "sft" = rollout -> correct -> sft; ["rl"] and ["sft"] are the ablations,
                                # ["rl", "rl", "sft"] runs two RL steps before each correction step
    [rollout]                   # RolloutConfig fields (k, max_new_tokens, temperature, ...)
    [ppo]                       # PPORunConfig fields (kl_coef, ppo_epochs, lr, lora_r, ...)
    [grpo]                      # GRPORunConfig fields (advantage, scale_rewards, kl_coef, lr, ...)
    [sft]                       # SFT config fields (epochs, lr, lora_r, ...)
    [eval]                      # max_new_tokens, answer_tokens, batch_size, limit

Fields that the loop sets itself (which model, which datasets, output folders, the round) are not allowed
in the stage tables; an unknown key anywhere is a ConfigError naming the key, its table and the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ares_data.errors import ConfigError

from ..config import BaseConfig, load_config, opt, read_config_file

STEPS = ("rl", "grpo", "sft")
# [loop] keys that may change when a run is continued: they do not change what a stage makes
OPERATIONAL = ("rounds", "concurrency", "rpm", "tpm", "timeout", "max_attempts", "max_cost",
               "teacher_base_url")
SECTIONS = ("loop", "rollout", "ppo", "grpo", "sft", "eval")
# stage-table keys the loop sets itself
MANAGED = {
    "rollout": {"model", "problems", "output", "round", "split", "limit", "seed"},
    "ppo": {"model", "rationales", "scores", "output_dir"},
    "grpo": {"model", "rationales", "scores", "output_dir"},
    "sft": {"model", "output_dir", "corrections", "rationales", "resume"},
    "eval": {"split"},
}


@dataclass
class LoopConfig(BaseConfig):
    """The alternating ARES loop (the `[loop]` table)."""

    model: str = opt("", "Starting policy: a model folder, hub id or LoRA adapter folder.")
    problems: str = opt("", "Problems dataset (NAME or NAME@vN).")
    teacher: str = opt("reference", "Teacher for scores and corrections: anthropic:MODEL, openai:MODEL, "
                       "reference.")
    teacher_base_url: str = opt("", "API base URL of the teacher (default: the SDK's).")
    rounds: int = opt(2, "Number of rounds.")
    schedule: str = opt("rl,sft", "Steps of each round, comma-separated: rl (rollout -> score -> ppo), "
                        "grpo (rollout -> score -> grpo), sft (rollout -> correct -> sft). 'rl' or 'sft' "
                        "alone are the ablations.")
    correct_k: int = opt(0, "Rationales sampled per problem for a correction step (0 = [rollout] k).")
    split: str = opt("train", "Problems split to train on.")
    limit: int = opt(0, "Use only the first N problems of the split (0 = all).")
    eval_split: str = opt("test", "Split to evaluate after every round ('' = no evaluation).")
    eval_initial: bool = opt(True, "Also evaluate the starting policy (round 0).")
    name: str = opt("", "Prefix of the dataset names the run publishes (default: the run folder's name).")
    seed: int = opt(0, "Base random seed (each rollout gets seed + 1000 * round + step).")
    concurrency: int = opt(8, "Teacher requests in flight.")
    rpm: float | None = opt(None, "Client-side teacher requests/min limit.")
    tpm: float | None = opt(None, "Client-side teacher tokens/min limit.")
    timeout: float = opt(60.0, "Seconds per teacher request attempt.")
    max_attempts: int = opt(5, "HTTP attempts per teacher request.")
    max_tokens: int | None = opt(None, "Teacher reply budget in tokens per request (default: the task's, "
                                 "1024); like `ares-data score --max-tokens`, a new value is a new build.")
    max_cost: float | None = opt(None, "Stop before the teacher calls of one `loop` invocation spend more "
                                 "USD (stops cleanly; rerun to continue, cached replies are free).")
    images: bool = opt(True, "Send problem images to the teacher.")
    score_prompt: str = opt("", "Score prompt template file (default: the shipped one).")
    correct_prompt: str = opt("", "Correction prompt template file (default: the shipped one).")

    def steps(self) -> list[str]:
        return [s.strip() for s in self.schedule.split(",") if s.strip()]

    def validate(self) -> list[str]:
        for key in ("model", "problems", "teacher"):
            if not getattr(self, key):
                raise ConfigError(f"the loop needs '{key}'", hint=f"set {key} in the [loop] table or pass it "
                                  "as a flag")
        bad = [s for s in self.steps() if s not in STEPS]
        if bad or not self.steps():
            raise ConfigError(f"schedule {self.schedule!r}: steps must be 'rl', 'grpo' or 'sft'",
                              hint='e.g. schedule = ["rl", "sft"], ["grpo", "sft"], ["rl"], ["sft"] or '
                              '["rl", "rl", "sft"]')
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError(f"max_tokens must be >= 1, got {self.max_tokens}",
                              hint="leave it out for the task's default (1024)")
        return []


@dataclass
class LoopSettings:
    """Everything a loop run needs: the loop table plus the raw stage tables (validated)."""

    loop: LoopConfig
    rollout: dict[str, Any]
    ppo: dict[str, Any]
    sft: dict[str, Any]
    eval: dict[str, Any]
    source: str = ""
    grpo: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {"loop": self.loop.to_dict(), "rollout": self.rollout, "ppo": self.ppo, "sft": self.sft,
               "eval": self.eval}
        if self.grpo:  # only when set: run folders started before [grpo] existed keep their settings hash
            out["grpo"] = self.grpo
        return out

    def sha(self, *, ignore: tuple[str, ...] = OPERATIONAL) -> str:
        """Hash of the settings that decide what each stage makes (more rounds may extend a run; limits,
        budget and the teacher's URL may change between invocations)."""
        d = self.to_dict()
        d["loop"] = {k: v for k, v in d["loop"].items() if k not in ignore}
        return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _stage_class(section: str) -> type:
    from ..eval import EvalOptions
    from ..ppo.grpo_config import GRPORunConfig
    from ..ppo.run import PPORunConfig
    from ..rollout import RolloutConfig

    if section == "sft":
        from .stages import sft_config_class

        return sft_config_class()
    classes = {"rollout": RolloutConfig, "ppo": PPORunConfig, "grpo": GRPORunConfig, "eval": EvalOptions}
    return classes[section]


def check_section(section: str, table: dict[str, Any], where: str) -> dict[str, Any]:
    """Normalise keys (dashes -> underscores), reject unknown or loop-managed keys, check value types."""
    cls = _stage_class(section)
    known = {f.name for f in dataclasses.fields(cls)} - MANAGED[section]
    out = {}
    for key, value in table.items():
        name = key.replace("-", "_")
        if name in MANAGED[section]:
            raise ConfigError(f"'{key}' in [{section}] of {where} is set by the loop",
                              hint="leave it out; the loop chains models and datasets itself")
        if name not in known:
            raise ConfigError(f"unknown key '{key}' in [{section}] of {where}",
                              hint=f"known keys: {', '.join(sorted(known))}")
        out[name] = value
    try:
        cfg = load_config(cls, None, out)
    except ConfigError as e:
        raise ConfigError(str(e).replace("command line", f"[{section}] of {where}")) from None
    return {k: getattr(cfg, k) for k in out}


def load_loop_settings(file: Path | None, overrides: dict[str, Any] | None = None) -> LoopSettings:
    """Read and validate a loop config file; `overrides` are [loop] values from flags."""
    data: dict[str, Any] = read_config_file(Path(file)) if file is not None else {}
    where = str(file) if file is not None else "the command line"
    for key, value in data.items():
        if key not in SECTIONS:
            raise ConfigError(f"unknown key '{key}' in {where}",
                              hint=f"a loop config has the tables {', '.join(f'[{s}]' for s in SECTIONS)}")
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}' in {where} must be a table ([{key}])")
    if "loop" in data:
        loop = load_config(LoopConfig, Path(file), overrides, section="loop")  # type: ignore[arg-type]
    else:
        loop = load_config(LoopConfig, None, overrides)
    loop.validate()
    sections = {s: check_section(s, data.get(s, {}), where) for s in SECTIONS[1:]}
    return LoopSettings(loop, sections["rollout"], sections["ppo"], sections["sft"], sections["eval"],
                        source=where, grpo=sections["grpo"])
