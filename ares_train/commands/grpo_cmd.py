"""`ares-train grpo`: critic-free RL on sentence scores (process-supervised GRPO).

The command shares `ppo`'s options: its signature is `ppo`'s, less the options GRPO does not have (the value
model and PPO's reward placement, see `ares_train.ppo.grpo_config`), plus --advantage and --scale-rewards,
with the help texts of `GRPORunConfig`. A flag added to `ppo` for a shared setting appears here by itself.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import typing
from typing import Annotated, Any, Optional

import typer

from ..ppo.grpo_config import GRPORunConfig
from . import ppo_cmd
from .train_common import config_option

app = typer.Typer()
COMMON = ("config", "store", "as_json")  # options of every training command, not config fields


def _option(name: str, like: inspect.Parameter | None) -> inspect.Parameter:
    """`ppo`'s option `like` with GRPO's help text, or a new option for a GRPO-only field."""
    if like is None:
        tp = typing.get_type_hints(GRPORunConfig)[name]
        annotation: Any = Annotated[Optional[tp], config_option(GRPORunConfig, name)]  # type: ignore[valid-type]
    else:
        base, info = typing.get_args(like.annotation)
        info = copy.copy(info)
        info.help = config_option(GRPORunConfig, name).help
        annotation = Annotated[base, info]
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)


def _signature() -> inspect.Signature:
    ppo_params = inspect.signature(ppo_cmd.ppo_cmd, eval_str=True).parameters
    fields = [f.name for f in dataclasses.fields(GRPORunConfig)]
    params = [_option(n, p) for n, p in ppo_params.items() if n in fields]
    params += [_option(n, None) for n in fields if n not in ppo_params]
    params += [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for n, p in ppo_params.items() if n in COMMON]
    return inspect.Signature(params)


def grpo_cmd(**options: Any) -> None:
    config, store, as_json = (options.pop(k) for k in COMMON)
    from ..deps import require_train_extra

    require_train_extra()
    from ares_data.commands.common import get_store

    from ..config import build_config
    from .train_common import print_warnings, progress_bar

    cfg, warnings = build_config(GRPORunConfig, config, options, section="grpo")
    print_warnings(warnings)
    from ..ppo.grpo_run import run_grpo

    with progress_bar("grpo", enabled=not as_json) as progress:
        result = run_grpo(cfg, get_store(store), on_step=progress)
    ppo_cmd.render_result(result, as_json, "GRPO")


grpo_cmd.__signature__ = _signature()  # type: ignore[attr-defined]
grpo_cmd.__annotations__ = {p.name: p.annotation for p in grpo_cmd.__signature__.parameters.values()}
grpo_cmd.__doc__ = """Train --model with GRPO on its own rollouts (--rationales) and the teacher's sentence
    scores (--scores), without a value model. The k rationales of each problem form a group; --advantage
    process (default) gives each token the group-normalised rewards of the sentences ending at or after it,
    outcome one normalised score per rationale. Loss: clipped policy ratio + kl_coef * k3 KL to the
    reference, averaged over tokens; a group whose rewards are all equal is not trained on (counted as
    constant_groups). Writes the policy (or LoRA adapter), ares-checkpoint.json and grpo_log.jsonl to
    -o OUTDIR; an interrupted run resumes when started again. Multi-GPU: accelerate launch -m
    ares_train.cli grpo ... Settings without a flag go in a \\[grpo] table of the --config file.

    Example: ares-train grpo --model ./policy --rationales rats --scores rats-scores -o ./policy-grpo"""
app.command("grpo")(grpo_cmd)
