"""`ares-train ppo`: PPO with sentence-level teacher rewards on a rationales + scores dataset pair."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from ares_data.commands.common import JsonOpt, StoreOpt, emit_json, err_console, get_store

from ..ppo.run import PPORunConfig
from .train_common import ConfigOpt, config_option, print_warnings, progress_bar

app = typer.Typer()


def _o(name: str, *decls: str) -> typer.models.OptionInfo:
    return config_option(PPORunConfig, name, *decls)


@app.command("ppo")
def ppo_cmd(
    model: Annotated[Optional[str], _o("model")] = None,
    rationales: Annotated[Optional[str], _o("rationales")] = None,
    scores: Annotated[Optional[str], _o("scores")] = None,
    output_dir: Annotated[Optional[str], _o("output_dir", "-o", "--output-dir")] = None,
    ref_model: Annotated[Optional[str], _o("ref_model")] = None,
    value_model: Annotated[Optional[str], _o("value_model")] = None,
    kl_coef: Annotated[Optional[float], _o("kl_coef")] = None,
    kl_estimator: Annotated[Optional[str], _o("kl_estimator")] = None,
    neutral_score: Annotated[Optional[float], _o("neutral_score")] = None,
    reward_level: Annotated[Optional[str], _o("reward_level")] = None,
    reward_normalization: Annotated[Optional[str], _o("reward_normalization")] = None,
    cliprange_value: Annotated[Optional[float], _o("cliprange_value")] = None,
    ppo_epochs: Annotated[Optional[int], _o("ppo_epochs")] = None,
    mini_batch_size: Annotated[Optional[int], _o("mini_batch_size")] = None,
    micro_batch_size: Annotated[Optional[int], _o("micro_batch_size")] = None,
    forward_batch_size: Annotated[Optional[int], _o("forward_batch_size")] = None,
    gradient_checkpointing: Annotated[
        Optional[bool], _o("gradient_checkpointing", "--gradient-checkpointing/--no-gradient-checkpointing")
    ] = None,
    buffer_size: Annotated[Optional[int], _o("buffer_size")] = None,
    lr: Annotated[Optional[float], _o("lr")] = None,
    lora_r: Annotated[Optional[int], _o("lora_r")] = None,
    lora_alpha: Annotated[Optional[int], _o("lora_alpha")] = None,
    lora_dropout: Annotated[Optional[float], _o("lora_dropout")] = None,
    lora_target_modules: Annotated[Optional[str], _o("lora_target_modules")] = None,
    merge: Annotated[Optional[bool], _o("merge", "--merge/--no-merge")] = None,
    allow_off_policy: Annotated[Optional[bool], _o("allow_off_policy", "--allow-off-policy")] = None,
    report_to: Annotated[Optional[str], _o("report_to")] = None,
    seed: Annotated[Optional[int], _o("seed")] = None,
    dtype: Annotated[Optional[str], _o("dtype")] = None,
    save_dtype: Annotated[Optional[str], _o("save_dtype")] = None,
    config: ConfigOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train --model with PPO on its own rollouts (--rationales) rewarded at each sentence end by the
    teacher's sentence scores (--scores): reward = score - neutral_score on the token holding the sentence's
    last character, minus kl_coef * KL to the reference on every token. The reference is --ref-model (an
    ARES run's starting model; `ares-train loop` passes it every round), else the initial policy; the output
    says which. Writes the policy (float32 unless --save-dtype; or the LoRA adapter), the value model
    (OUTDIR/value: give it as --value-model to the next round), ares-checkpoint.json and ppo_log.jsonl to
    -o OUTDIR; an interrupted run resumes when started again. Every default says where it comes from
    (paper = the authors' released code, TRL = TRL's PPOConfig).
    Multi-GPU: accelerate launch -m ares_train.cli ppo ... (see ares_train/configs). Settings without a
    flag (gamma, lam, cliprange, vf_coef, optim, ...) go in a \\[ppo] table of the --config file.

    Example: ares-train ppo --model ./policy --rationales rats --scores rats-scores -o ./policy-rl"""
    overrides = {k: v for k, v in locals().items() if k not in ("config", "store", "as_json")}
    from ..deps import require_train_extra

    require_train_extra()
    from ..config import build_config
    from ..ppo.run import run_ppo

    cfg, warnings = build_config(PPORunConfig, config, overrides, section="ppo")
    print_warnings(warnings)
    with progress_bar("ppo", enabled=not as_json) as progress:
        result = run_ppo(cfg, get_store(store), on_step=progress)
    render_result(result, as_json, "PPO")


def render_result(result: Any, as_json: bool, method: str) -> None:
    """The summary of a PPO or GRPO run (`PPOResult`): JSON on stdout, or two lines on stderr."""
    last = result.history[-1] if result.history else {}
    summary = {
        "output_dir": str(result.output_dir),
        "manifest": str(result.manifest),
        "counts": result.counts,
        "resumed": result.resumed,
        "steps": last.get("step"),
        "final": last,
        "reference": result.reference,
    }
    if result.value_start:
        saved = str(result.output_dir / "value")
        summary["value_model"] = {"started_from": result.value_start, "saved": saved}
    if as_json:
        emit_json(summary)
        return
    c = result.counts
    left_out = [f"{c.get('scores_failed', 0)} with failed scores", f"{c.get('no_score', 0)} unscored"]
    if c.get("constant_group_rollouts"):
        left_out.append(f"{c['constant_group_rollouts']} in {c['constant_groups']} groups of equal rewards")
    if c.get("uneven_remainder"):
        left_out.append(f"{c['uneven_remainder']} beyond a multiple of the process count")
    err_console().print(
        f"saved {result.output_dir} after {summary['steps']} {method} steps on {c.get('used', 0)} rollouts "
        f"({', '.join(left_out)} left out); "
        f"loss {last.get('loss/total', float('nan')):.4f}, "
        f"sentence reward {last.get('reward/sentence', 0):.4f}, "
        f"KL to the reference {last.get('objective/kl_current', 0):.4f}",
        highlight=False,
    )
    ref = result.reference
    err_console().print(f"reference: {ref.get('model')} ({ref.get('how')})", highlight=False, soft_wrap=True)
